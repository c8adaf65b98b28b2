#!/usr/bin/env bash
# One call on the lent GPU measuring decode (issue 23): `moba bench --decode` (one query per
# sequence over a cache) on the CUDA path (bf16) and through Vulkan (the cooperative kernel
# where the adapter has it, dense beside it), at caches of 8K, 128K and 1M keys for batch 1
# and 16, with PyTorch's dense decode (scripts/decode_peers.py) in the same call. Stage the
# build with scripts/stage-device.sh (or only the binary: .device/moba.gz), then run from the
# repository root on the device with `.device` and `.gl` carried.
# Environment: OUT (default results/device-decode), KV_HEADS (default 2: GQA 8; 16 is
# multi-head attention, where every head reads its own blocks), BATCHES (default "1 16").
set -u
OUT=${OUT:-results/device-decode}
source scripts/device-env.sh
for deb in .gl/*.deb; do dpkg -x "$deb" / 2>/dev/null; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json

# H 16 query heads over KV_HEADS kv heads, D 128; block 512 top-3 at 8K, block 4096
# top-12 beyond (the MoBA paper's long-context setting).
kv_heads=${KV_HEADS:-2}
batches=${BATCHES:-1 16}
common="--decode --heads 16 --kv-heads $kv_heads --head-dim 128"
settings=(
    "--seq-lens 8192 --block-size 512 --top-k 3"
    "--seq-lens 131072,1048576 --block-size 4096 --top-k 12"
)
for batch in $batches; do
    for setting in "${settings[@]}"; do
        echo "== CUDA bf16, batch $batch: $setting"
        # shellcheck disable=SC2086
        timeout 240 .device/moba bench --cuda --dtype bf16 $common --batch "$batch" $setting \
            --runs 10 --no-dense --out "$OUT/cuda.jsonl" > /dev/null 2>> "$OUT/cuda.log" \
            || { echo "failed"; tail -3 "$OUT/cuda.log"; }
    done
done
# Vulkan: f32 caches; batch 16 at 1M (32 GiB of random keys made on the host) is left out.
for setting in "${settings[@]}"; do
    echo "== Vulkan, batch 1: $setting"
    # shellcheck disable=SC2086
    timeout 240 .device/moba --api vulkan bench $common --batch 1 $setting --runs 5 \
        --out "$OUT/vulkan.jsonl" > /dev/null 2>> "$OUT/vulkan.log" \
        || { echo "failed"; tail -3 "$OUT/vulkan.log"; }
done
if [[ " $batches " == *" 16 "* ]]; then
    echo "== Vulkan, batch 16: 8K and 128K"
    timeout 240 .device/moba --api vulkan bench $common --batch 16 --seq-lens 8192 \
        --block-size 512 --top-k 3 --runs 5 --out "$OUT/vulkan.jsonl" > /dev/null 2>> "$OUT/vulkan.log" \
        || { echo "failed"; tail -3 "$OUT/vulkan.log"; }
    timeout 240 .device/moba --api vulkan bench $common --batch 16 --seq-lens 131072 \
        --block-size 4096 --top-k 12 --runs 5 --out "$OUT/vulkan.jsonl" > /dev/null 2>> "$OUT/vulkan.log" \
        || { echo "failed"; tail -3 "$OUT/vulkan.log"; }
fi

echo "== PyTorch SDPA decode (bf16, dense over the same caches)"
DECODE_KV_HEADS=$kv_heads DECODE_BATCHES=${batches// /,} python3 scripts/decode_peers.py | tee "$OUT/peers.jsonl"

echo "== moba"
.device/moba bench report "$OUT/cuda.jsonl" "$OUT/vulkan.jsonl" --plots "$OUT" 2>/dev/null \
    | sed '/^$/q'
