#!/usr/bin/env bash
# The call behind these records (lent H200, repository root, .device and .gl carried; no
# test binaries staged): this commit's shaders through MOBA_WGSL_DIR in the binary of the
# `unrolled` call, the cooperative and portable kernels at 32K (forward and step), and two
# variants (.device/wgsl-variants: portable-scores, the f32 forward's key loop unrolled too;
# shuffle, the cooperative forward's row partners exchanging through a subgroup shuffle).
export OUT=${OUT:-results/unrolled-final}
export MOBA_WGSL_DIR=$PWD/shaders/wgsl
KERNELS="cooperative portable" LONG_S= scripts/device-vulkan.sh
