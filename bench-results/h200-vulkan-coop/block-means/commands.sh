#!/usr/bin/env bash
# The call behind these records (lent H200, repository root, .device and .gl carried): this
# commit's shaders (the block_means that splits a block's keys over lanes) through
# MOBA_WGSL_DIR in the binary of the `unrolled` call; Vulkan decode at 8K and 128K (batch 1,
# H 16 over 2 kv heads, D 128) and the cooperative prefill at 32K (with the step) and 512K.
export OUT=${OUT:-results/block-means}
source scripts/device-env.sh
for deb in .gl/*.deb; do dpkg -x "$deb" / 2>/dev/null; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export MOBA_WGSL_DIR=$PWD/shaders/wgsl
common="--decode --heads 16 --kv-heads 2 --head-dim 128 --batch 1 --no-dense --out $OUT/decode.jsonl"
.device/moba --api vulkan bench $common --seq-lens 8192 --block-size 512 --top-k 3 --runs 10
.device/moba --api vulkan bench $common --seq-lens 131072 --block-size 4096 --top-k 12 --runs 5
prefill="--kernel cooperative --heads 16 --head-dim 128 --no-dense --out $OUT/prefill.jsonl"
.device/moba --api vulkan bench $prefill --seq-lens 32768 --block-size 512 --top-k 3 --runs 5 --backward
.device/moba --api vulkan bench $prefill --seq-lens 524288 --block-size 4096 --top-k 12 --runs 1
