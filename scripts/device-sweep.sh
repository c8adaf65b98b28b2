#!/usr/bin/env bash
# One call on the lent NVIDIA GPU for the cross-vendor benchmark (BENCHMARKS.md): `moba bench`
# through Vulkan (MoBA with the f16 tensor-core kernel and with the f32 portable kernel, the
# dense WGSL kernel, burn's own attention op) and through CUDA (bf16, f16, f32), then
# PyTorch's peers (shared/anchors/peers_torch.py) for the same lengths in the same call, then
# one report of everything. Stage first on the development machine:
#   scripts/stage-device.sh            # the binary with CUDA and the peers script into .device/
# then run from the repository root on the device with `.gl` and `.device` carried.
# Environment: OUT (results folder, default results/device-sweep), TRAIN_S (block 512, top-3,
# forward and training step; default 2048,8192,32768), LONG_S (block 4096, top-12, forward;
# default 131072,524288).
set -u
OUT=${OUT:-results/device-sweep}
TRAIN_S=${TRAIN_S:-2048,8192,32768}
LONG_S=${LONG_S:-131072,524288}
# The Vulkan loader is not installed on the device machine: unpack the carried debs.
for deb in .gl/*.deb; do dpkg -x "$deb" / 2>/dev/null; done
ldconfig
source scripts/device-env.sh

records="$OUT/moba.jsonl"
shape=(--heads 16 --head-dim 128)
# One `moba bench` (its arguments), its progress into bench.log, stopped after 200 s.
bench() {
    echo "== moba $*" | tee -a "$OUT/bench.log"
    start=$(date +%s)
    timeout 200 .device/moba "$@" "${shape[@]}" --out "$records" >> "$OUT/bench.log" 2>&1
    echo "   exit $? after $(($(date +%s) - start)) s"
}

bench --api vulkan bench --seq-lens "$TRAIN_S" --block-size 512 --top-k 3 --runs 3 --backward --burn-baseline
bench --api vulkan bench --seq-lens "$TRAIN_S" --block-size 512 --top-k 3 --runs 3 --kernel portable --no-dense
bench --api vulkan bench --seq-lens "$LONG_S" --block-size 4096 --top-k 12 --runs 1 --no-dense
for dtype in bf16 f16 f32; do
    bench bench --cuda --dtype "$dtype" --seq-lens "$TRAIN_S" --block-size 512 --top-k 3 --runs 5 --backward --no-dense
done
bench bench --cuda --dtype bf16 --seq-lens "$LONG_S" --block-size 4096 --top-k 12 --runs 3 --no-dense

peers=()
if [ -f .device/peers_torch.py ]; then
    echo "== PyTorch peers, S = $TRAIN_S,$LONG_S"
    start=$(date +%s)
    ONLY_S="$TRAIN_S,$LONG_S" OUT="$OUT" PYTHONUNBUFFERED=1 timeout 240 python3 .device/peers_torch.py \
        > "$OUT/peers.log" 2>&1
    echo "   exit $? after $(($(date +%s) - start)) s"
    peers=(--peers "$OUT/peers.log")
fi
.device/moba bench report "$records" "${peers[@]}" --plots "$OUT" | tee "$OUT/report.md"
