#!/usr/bin/env bash
# The test command of the README: installs what is missing (scripts/setup.sh says what),
# then runs the whole suite, then (with no arguments) the CUDA path's unit tests, which
# compile every CUDA program with NVRTC for sm_80 and sm_90a: no GPU is needed for that.
# Arguments go to the first `cargo test` (a test name, say).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --release "$@"
if [ $# -eq 0 ]; then
    nvrtc=$PWD/target/nvrtc/nvidia/cuda_nvrtc/lib
    LD_LIBRARY_PATH="$nvrtc${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        cargo test --release --features cuda --lib cuda::
fi
