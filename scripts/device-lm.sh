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
# PRETRAIN (`moba train` flags): first train one run with them (on the first GPU) and
# start both arms from its weights (`--init-from`): a lookup learned where steps are cheap
# (short sequences; MoBA with one block is full attention there), then both arms at the
# full length. Skipped when runs/pretrain already holds a model.
# RUNS_BACK=1: also pack the run folders, checkpoints included, into $OUT/runs.tgz (small
# models only; in 15 MiB pieces when larger); put it at .device/lm-runs.tgz with FRESH=0 to
# continue them in a later call.
# CONTINUE=1 (with FRESH=0 and an earlier call's runs.tgz as .device/lm-runs.tgz): each arm
# starts from the same arm of the task's earlier comparison (`moba compare --continue-from`;
# that comparison moves to $task-earlier), with a fresh schedule. Not with PRETRAIN.
# ARMS (default "moba full"): the arms of `moba compare` (moba, full, hybrid).
# On a machine with two GPUs or more, the arms train side by side, one per GPU (sharing
# GPUs when there are more arms than GPUs); SIDE_BY_SIDE=1 runs them side by side on a single GPU
# too (a small model leaves most of an H200 idle; their bytes/s are then shares of one GPU),
# SIDE_BY_SIDE=0 one after the other.
# What comes back stays small: the checkpoints stay on the device; $OUT gets the log and
# one archive of each task's tables, plots, metrics and configs.
set -u
OUT=${OUT:-results/device-lm}
TASKS=${TASKS:-recall text}
PRESET=${PRESET:-8k}
STEPS=${STEPS:-200}
BATCH=${BATCH:-8}
source scripts/device-env.sh
runs=/tmp/moba-lm
arms=${ARMS:-moba full}
side_by_side=${SIDE_BY_SIDE:-$([ "$gpus" -ge 2 ] && echo 1 || echo 0)}
# A fresh start each call unless FRESH=0 (the machine may still hold an earlier call's runs).
[ "${FRESH:-1}" = 1 ] && rm -rf "$runs"
mkdir -p "$runs"
[ "${FRESH:-1}" = 0 ] && [ -f .device/lm-runs.tgz ] && tar xzf .device/lm-runs.tgz -C "$runs"
if [ -n "${PRETRAIN:-}" ]; then
    if [ ! -f "$runs/pretrain/model.mpk" ]; then
        echo "== pretrain: moba train $PRETRAIN"
        rm -rf "$runs/pretrain"
        # shellcheck disable=SC2086
        CUDA_VISIBLE_DEVICES=0 timeout "${PRETRAIN_LIMIT:-300}" .device/moba train --backend cuda \
            --lines --run "$runs/pretrain" $PRETRAIN > "$OUT/pretrain.log" 2>&1
        echo "pretrain: exit $?"
        .device/moba eval --backend cuda --run "$runs/pretrain" > "$OUT/pretrain-eval.log" 2>&1
        grep -E '^epoch [0-9]+/[0-9]+ validation' "$OUT/pretrain.log" | tail -3
        grep -E 'validation loss|recall at' "$OUT/pretrain-eval.log"
    fi
    EXTRA="${EXTRA:-} --init-from $runs/pretrain"
fi
for task in $TASKS; do
    task_flags=()
    [ "$task" = text ] && task_flags=(--text "$repo/.device/python-stdlib.txt")
    if [ "${CONTINUE:-0}" = 1 ]; then
        [ -d "$runs/$task" ] || { echo "CONTINUE=1: no earlier $task comparison in $runs"; exit 1; }
        rm -rf "$runs/$task-earlier"
        mv "$runs/$task" "$runs/$task-earlier"
        task_flags+=(--continue-from "$runs/$task-earlier")
    fi
    echo "== $task: moba compare, preset $PRESET, $STEPS steps of $BATCH sequences"
    # shellcheck disable=SC2206
    compare=(compare --backend cuda --out "$runs/$task" --preset "$PRESET" --steps "$STEPS"
        --batch-size "$BATCH" "${task_flags[@]}" ${EXTRA:-})
    start=$(date +%s)
    if [ "$side_by_side" = 1 ]; then
        # The arms side by side (one per GPU while there are enough), each in a working
        # directory of its own with the cubecl.toml of device-env.sh; then the report.
        arm_index=0
        for arm in $arms; do
            gpu=$((arm_index % gpus))
            mkdir -p "/tmp/moba-arm-$arm"
            cp cubecl.toml "/tmp/moba-arm-$arm/"
            (cd "/tmp/moba-arm-$arm" && CUDA_VISIBLE_DEVICES=$gpu timeout "${LIMIT:-560}" \
                "$repo/.device/moba" "${compare[@]}" --arms "$arm" > "$OUT/$task-$arm.log" 2>&1
                echo "$arm: exit $? after $(($(date +%s) - start)) s") &
            arm_index=$((arm_index + 1))
        done
        wait
        for arm in $arms; do cat "$OUT/$task-$arm.log"; done > "$OUT/$task.log"
        "$repo/.device/moba" compare --report-only --out "$runs/$task" --arms "${arms// /,}" \
            >> "$OUT/$task.log" 2>&1
    else
        timeout "${LIMIT:-560}" "$repo/.device/moba" "${compare[@]}" --arms "${arms// /,}" \
            > "$OUT/$task.log" 2>&1
        echo "exit $? after $(($(date +%s) - start)) s"
    fi
    grep -E '^(device|== |\| |- )' "$OUT/$task.log" | grep -v '^== .*: evaluating'
    grep -E '^epoch [0-9]+/[0-9]+ validation' "$OUT/$task.log" | tail -2
    (cd "$runs" && tar czf - --exclude=checkpoint --exclude='*.mpk' "$task") > "$OUT/$task.tar.gz"
done
if [ "${RUNS_BACK:-0}" = 1 ]; then
    # Not the earlier comparisons CONTINUE=1 started from: they came with the carried archive.
    (cd "$runs" && tar czf "$OUT/runs.tgz" --exclude='./*-earlier' .)
    # A returned file may not pass 16 MiB: larger archives come back in pieces
    # (`cat runs.tgz.part-* > runs.tgz` joins them).
    if [ "$(stat -c %s "$OUT/runs.tgz")" -gt $((15 * 1024 * 1024)) ]; then
        split -b 15M "$OUT/runs.tgz" "$OUT/runs.tgz.part-" && rm "$OUT/runs.tgz"
    fi
fi
