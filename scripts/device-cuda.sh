#!/usr/bin/env bash
# One call on the lent NVIDIA GPU for the CUDA path: the correctness grid (tests/cuda.rs,
# bf16 / f16 / f32 against the f64 reference), then `moba bench --cuda` (bf16, H=16,
# D=128) at the training shapes (forward + backward) and the long forward shapes, then
# PyTorch's peers in the same call. Stage first on the development machine:
#   scripts/stage-device.sh
# then run from the repository root on the device with `.device` carried.
# Environment: OUT (default results/device-cuda), TRAIN_S (default 8192,32768), LONG_S
# (default 32768,131072,524288), PEERS (1: also run the peers), GRID (0: skip the grid).
set -u
OUT=${OUT:-results/device-cuda}
TRAIN_S=${TRAIN_S:-8192,32768}
LONG_S=${LONG_S:-32768,131072,524288}
# The binaries travel gzipped (scripts/stage-device.sh).
for packed in .device/*.gz .device/tests/*.gz; do gunzip -kf "$packed"; done
# gunzip gives each file its archive's mode: make sure the binaries can run.
chmod +x .device/moba .device/tests/*
# NVRTC and the CUDA headers burn-cuda compiles with.
source scripts/device-env.sh

if [ "${GRID:-1}" = 1 ]; then
    echo "== CUDA correctness grid (error / bound per output)"
    .device/tests/cuda --test-threads=1 --nocapture > "$OUT/cuda-tests.log" 2>&1
    grep -E '^\| |^test |test result|panicked|autodiff' "$OUT/cuda-tests.log"
fi

echo "== moba bench --cuda: training step, block 512, top-3, S = $TRAIN_S"
.device/moba bench --cuda --dtype bf16 --seq-lens "$TRAIN_S" --heads 16 --head-dim 128 \
    --block-size 512 --top-k 3 --runs 5 --backward --no-dense --out "$OUT/cuda.jsonl" \
    2> "$OUT/cuda-train.log" || tail -5 "$OUT/cuda-train.log"
echo "== moba bench --cuda: forward, block 4096, top-12, S = $LONG_S"
.device/moba bench --cuda --dtype bf16 --seq-lens "$LONG_S" --heads 16 --head-dim 128 \
    --block-size 4096 --top-k 12 --runs 3 --no-dense --out "$OUT/cuda.jsonl" \
    2> "$OUT/cuda-long.log" || tail -5 "$OUT/cuda-long.log"

if [ "${PEERS:-1}" = 1 ] && [ -f .device/peers_torch.py ]; then
    echo "== PyTorch peers"
    ONLY_S="$TRAIN_S,$LONG_S" OUT="$OUT" python3 .device/peers_torch.py > "$OUT/peers.log" 2>&1
    grep -E '^\{' "$OUT/peers.log"
fi
if [ -s "$OUT/peers.log" ]; then
    echo "== our records beside the peers"
    .device/moba bench report "$OUT/cuda.jsonl" --peers "$OUT/peers.log" --plots "$OUT"
fi
echo "== our records (stages: gate/inversion/attention/finalize; bwd: row terms/inversion/dq/dk dv, ms)"
python3 - "$OUT/cuda.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    stages = "/".join(f"{x:.2f}" for x in r["stage_ms"])
    back = "/".join(f"{x:.2f}" for x in r["backward_stage_ms"]) if r.get("backward_stage_ms") else "-"
    step = f'{r["step_ms"]:.2f}' if r.get("step_ms") else "-"
    print(f'S={r["seq_len"]} bs={r["block_size"]} k={r["top_k"]} fwd={r["moba_ms"]:.2f}ms '
          f'({r["moba_tflops"]:.0f} TFLOP/s) stages={stages} step={step}ms bwd={back} '
          f'density={r["density"]:.3f} err={r["o_error"]:.1e}')
PY
