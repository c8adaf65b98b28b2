#!/usr/bin/env bash
# One call on the lent NVIDIA GPU: trains the browser demo's model (web/lm/) on the text
# corpus with the CUDA path, evaluates it, samples from it, and puts what web/lm/ needs
# (train.json, model.mpk) with the log into $OUT. Stage first on the development machine:
#   cargo build --release --features cuda && mkdir -p .device \
#     && gzip -9c target/release/moba > .device/moba.gz && scripts/stage-corpus.sh
# then run from the repository root on the device with `.device` carried.
# Environment: OUT (default results/device-web-model), STEPS (default 3000), BATCH (16),
# LIMIT (seconds before training is stopped, default 420).
set -u
OUT=${OUT:-results/device-web-model}
STEPS=${STEPS:-3000}
BATCH=${BATCH:-16}
source scripts/device-env.sh
run=/tmp/moba-web-model
rm -rf "$run"
echo "== moba train: preset small (2K bytes, block 128, top-3), $STEPS steps of $BATCH sequences"
start=$(date +%s)
timeout "${LIMIT:-420}" .device/moba train --backend cuda --preset small --text .device/python-stdlib.txt \
    --steps "$STEPS" --batch-size "$BATCH" --lr 2e-3 --run "$run" > "$OUT/train.log" 2>&1
echo "exit $? after $(($(date +%s) - start)) s"
grep -E '^epoch [0-9]+/[0-9]+ validation' "$OUT/train.log" | tail -3
tail -4 "$OUT/train.log"
.device/moba eval --backend cuda --run "$run" > "$OUT/eval.log" 2>&1
cat "$OUT/eval.log"
.device/moba generate --backend cuda --run "$run" --prompt 'def main():
    ' --max-new 300 --seed 1 > "$OUT/sample.txt" 2>&1
cat "$OUT/sample.txt"
# A run stopped by LIMIT has no model.mpk: its latest checkpoint is the model.
weights="$run/model.mpk"
[ -f "$weights" ] || weights=$(ls -t "$run"/checkpoint/model-*.mpk | head -1)
echo "weights: $weights"
cp "$run/train.json" "$OUT/" && cp "$weights" "$OUT/model.mpk"
ls -la "$OUT"
