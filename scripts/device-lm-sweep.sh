#!/usr/bin/env bash
# One call on the lent NVIDIA GPUs for a sweep of small `moba train` runs on the recall task:
# small models leave a GPU mostly idle, so PER_GPU runs share each GPU side by side. Every
# run trains until LIMIT seconds (its cosine schedule sized by its own --steps), then
# `moba eval` measures its last checkpoint. Stage first as for scripts/device-lm.sh.
# Input: SPECS, a file of lines `NAME ARGS...` (ARGS: `moba train` flags; lines starting
# with # are skipped). Environment: OUT (default results/device-lm-sweep), LIMIT (seconds
# of training per run, default 420), PER_GPU (default 4), EVAL_LIMIT (default 60).
# Prints a table last: run, progress, last validation loss, recall over all distances; the
# logs come back in $OUT/logs.tgz.
set -u
OUT=${OUT:-results/device-lm-sweep}
LIMIT=${LIMIT:-420}
PER_GPU=${PER_GPU:-4}
source scripts/device-env.sh
runs=/tmp/moba-sweep
rm -rf "$runs"
mkdir -p "$runs"
# The spec lines without blanks and comments, read twice: to launch, then for the table.
specs=$(grep -vE '^[[:space:]]*(#|$)' "$SPECS")

slot=0
while read -r name args; do
    gpu=$((slot % gpus))
    slot=$((slot + 1))
    # Each run in a working directory of its own, with its own copy of cubecl's caches (runs
    # side by side would write one cache file at once).
    mkdir -p "$runs/$name.work"
    cp -r .device/cubecl-cache "$runs/$name.work/"
    sed "s|$PWD/.device/cubecl-cache|$runs/$name.work/cubecl-cache|g" cubecl.toml \
        > "$runs/$name.work/cubecl.toml"
    # shellcheck disable=SC2086
    (cd "$runs/$name.work" && export CUDA_VISIBLE_DEVICES=$gpu &&
        timeout "$LIMIT" "$repo/.device/moba" train --backend cuda --lines --run "$runs/$name" \
            $args > "$OUT/$name.log" 2>&1
        timeout "${EVAL_LIMIT:-60}" "$repo/.device/moba" eval --backend cuda --run "$runs/$name" \
            > "$OUT/$name-eval.log" 2>&1) &
    if [ $((slot % (gpus * PER_GPU))) = 0 ]; then wait; fi
done <<< "$specs"
wait

printf '| run | progress (epoch, sequences) | last validation loss | recall (all distances) |\n|---|---|---|---|\n'
while read -r name _; do
    progress=$(grep -oE '^epoch [0-9]+/[0-9]+ sequences [0-9]+/[0-9]+' "$OUT/$name.log" | tail -1)
    loss=$(grep -E '^epoch [0-9]+/[0-9]+ validation' "$OUT/$name.log" | tail -1 |
        grep -oE 'Loss [0-9.]+' | cut -d' ' -f2)
    recall=$(grep -oE '^  recall at .*\(([0-9]+) of ([0-9]+)\)' "$OUT/$name-eval.log" |
        sed -E 's/.*\(([0-9]+) of ([0-9]+)\)/\1 \2/' | awk '{n += $1; d += $2} END {if (d) printf "%d of %d", n, d}')
    echo "| $name | ${progress:-none} | ${loss:-none} | ${recall:-none} |"
done <<< "$specs"
# One archive: only so many files come back from a call.
(cd "$OUT" && tar czf logs.tgz -- *.log && rm -f -- *.log)
