#!/usr/bin/env bash
# One call on the lent GPU: correctness of the kernels on its driver, then `moba bench` and
# PyTorch's peers (shared/anchors/peers_torch.py) side by side, so every ratio is measured in
# the same session. Build and stage first on the development machine:
#   scripts/stage-device.sh            # binaries and the peers script into .device/
# then run this from the repository root on the device with `.gl` and `.device` carried.
# Environment: OUT (results folder, default results/device), SEQ_LENS (default 8192,32768),
# PEERS (1: also run the PyTorch peers for SEQ_LENS).
set -u
OUT=${OUT:-results/device}
SEQ_LENS=${SEQ_LENS:-8192,32768}
mkdir -p "$OUT"
# The binaries travel gzipped (scripts/stage-device.sh).
for packed in .device/*.gz .device/tests/*.gz; do gunzip -kf "$packed"; done
# The Vulkan loader is not installed on the device machine: unpack the carried debs.
for deb in .gl/*.deb; do dpkg -x "$deb" / 2>/dev/null; done
ldconfig
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

for test in .device/tests/*; do
    echo "== $(basename "$test")"
    "$test" --test-threads=1 --include-ignored 2>&1 | grep -E "^test |test result" | tee -a "$OUT/tests.log"
done

echo "== moba bench (forward and training step), S = $SEQ_LENS"
.device/moba bench --seq-lens "$SEQ_LENS" --heads 16 --head-dim 128 --block-size 512 --top-k 3 \
    --runs 5 --backward --no-dense --out "$OUT/moba.jsonl" 2> "$OUT/moba.log"
tail -3 "$OUT/moba.log"

if [ "${PEERS:-1}" = 1 ] && [ -f .device/peers_torch.py ]; then
    echo "== PyTorch peers, S = $SEQ_LENS"
    ONLY_S="$SEQ_LENS" OUT="$OUT" python3 .device/peers_torch.py > "$OUT/peers.log" 2>&1
    grep -E '^\{' "$OUT/peers.log"
fi
peers=()
[ -s "$OUT/peers.log" ] && peers=(--peers "$OUT/peers.log")
.device/moba bench report "$OUT/moba.jsonl" "${peers[@]}" --plots "$OUT"
