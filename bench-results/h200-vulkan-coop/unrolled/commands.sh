#!/usr/bin/env bash
# One call on the lent H200 (run from the repository root with .device and .gl carried,
# after scripts/stage-device.sh): the cooperative tests and the WGSL kernels through Vulkan
# (scripts/device-vulkan.sh: cooperative and portable at 32K with the step, cooperative at
# 512K, the portable-unroll variant), then the CUDA path and PyTorch's peers in the same call.
set -u
export OUT=${OUT:-results/unrolled}
scripts/device-vulkan.sh
source scripts/device-env.sh > /dev/null
records=$OUT/moba.jsonl
shape=(--heads 16 --head-dim 128 --no-dense --out "$records")
run() { echo "== moba $*"; timeout 200 .device/moba "$@" "${shape[@]}" >> "$OUT/bench.log" 2>&1; echo "   exit $?"; }
run bench --cuda --dtype bf16 --seq-lens 32768 --block-size 512 --top-k 3 --runs 5 --backward
run bench --cuda --dtype bf16 --seq-lens 524288 --block-size 4096 --top-k 12 --runs 3
echo "== PyTorch peers"
CFGS=32768:512:3,524288:4096:12 PYTHONUNBUFFERED=1 timeout 300 python3 .device/peers_torch.py > "$OUT/peers.log" 2>&1
echo "   exit $?"
.device/moba bench report "$records" --peers "$OUT/peers.log" --plots "$OUT" > "$OUT/report.md" 2>&1
tail -30 "$OUT/report.md"
