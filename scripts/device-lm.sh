#!/usr/bin/env bash
# One call on the lent NVIDIA GPU for the language-model results (RESULTS.md): `moba
# compare` trains MoBA and full attention with the same seed, data and steps on the
# synthetic recall task and on the text corpus, then evaluates both. Stage first on the
# development machine with scripts/stage-device.sh (or, for this script alone, `cargo
# build --release --features cuda && mkdir -p .device && gzip -9c target/release/moba >
# .device/moba.gz && scripts/stage-corpus.sh`); run from the repository root with
# `.device` carried.
# Environment: OUT (default results/device-lm), TASKS (default "recall text"), PRESET
# (default 8k), STEPS (default 200), BATCH (default 8), EXTRA (more `moba compare` flags),
# LIMIT (seconds per task before it is stopped, default 560), FRESH (default 1; 0 keeps the
# runs of an earlier call on the same warm machine, so that `moba compare` resumes them).
# What comes back stays small: the checkpoints stay on the device; $OUT gets the log and
# one archive of each task's tables, plots, metrics and configs.
set -u
OUT=${OUT:-results/device-lm}
TASKS=${TASKS:-recall text}
PRESET=${PRESET:-8k}
STEPS=${STEPS:-200}
BATCH=${BATCH:-8}
mkdir -p "$OUT"
source scripts/device-env.sh
runs=/tmp/moba-lm
# A fresh start each call unless FRESH=0 (the machine may still hold an earlier call's runs).
[ "${FRESH:-1}" = 1 ] && rm -rf "$runs"
mkdir -p "$runs"
for task in $TASKS; do
    data=()
    [ "$task" = text ] && data=(--text .device/python-stdlib.txt)
    echo "== $task: moba compare, preset $PRESET, $STEPS steps of $BATCH sequences"
    start=$(date +%s)
    # shellcheck disable=SC2086
    timeout "${LIMIT:-560}" .device/moba compare --backend cuda --out "$runs/$task" --preset "$PRESET" \
        --steps "$STEPS" --batch-size "$BATCH" "${data[@]}" ${EXTRA:-} \
        > "$OUT/$task.log" 2>&1
    echo "exit $? after $(($(date +%s) - start)) s"
    grep -E '^(device|== |\| |- )' "$OUT/$task.log" | grep -v '^== .*: evaluating'
    grep -E '^epoch [0-9]+/[0-9]+ validation' "$OUT/$task.log" | tail -2
    (cd "$runs" && tar czf - --exclude=checkpoint --exclude='*.mpk' "$task") > "$OUT/$task.tar.gz"
done
