#!/usr/bin/env bash
# Session 55, call 1. Carry .device/s1 and .device/cubecl-cache.tgz if any.
# 1. issue 24: NSA forward at 32K/128K, committed nsa_select (with the gated-sum fix) and
#    variant C (floor-ranked survivors, .device/s1/C); C's 8K training step.
# 2. issue 26: train the page's 8K model with what time is left, eval, sample, export --half.
set -u
t0=$(date +%s)
export OUT
xz -dc .device/s1/moba.xz > .device/moba && chmod +x .device/moba
[ -f .device/s1/python-stdlib.txt.gz ] && cp .device/s1/python-stdlib.txt.gz .device/
source scripts/device-env.sh
trap - EXIT
step() { echo "=== $* ($(( $(date +%s) - t0 )) s)"; }
NSA="--attention nsa --heads 64 --kv-heads 4 --head-dim 128 --compress-block 32 --stride 16 --select-block 64 --top-n 16 --window 512"
summary() { python3 -c "
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    st = ' '.join('%s %.2f' % (s['stage'], s['ms']) for s in r['stages'] + r.get('step_stages', []))
    print(sys.argv[2], r['seq_len'], 'fwd %.2f' % r['forward_ms'], 'step %s' % r.get('step_ms'), st, 'err %.1e/%.1e' % (r['o_error'], r['o_bound']), 'wrong', r['wrong_selections'], r['passed'])
" "$@"; }
for variant in committed C; do
  step nsa forward $variant
  dir=.device/s1/$variant; [ $variant = committed ] && dir=/nonexistent
  MOBA_CUDA_DIR=$dir timeout 110 .device/moba bench $NSA --runs 3 --cuda --dtype bf16 --seq-lens 32768,131072 --out /tmp/nsa-$variant.jsonl > /tmp/nsa-$variant.log 2>&1; echo "rc $?"
  grep -iE "error|panick" /tmp/nsa-$variant.log | head -3
  summary /tmp/nsa-$variant.jsonl $variant
done
step nsa 8k step C
MOBA_CUDA_DIR=.device/s1/C timeout 80 .device/moba bench $NSA --runs 2 --cuda --dtype bf16 --backward --seq-lens 8192 --out /tmp/nsa-8k-C.jsonl > /tmp/nsa-8k.log 2>&1; echo "rc $?"
summary /tmp/nsa-8k-C.jsonl C-step
cat /tmp/nsa-*.jsonl > $OUT/nsa.jsonl
# The page's model: 8K bytes, d 320, 5 query heads over 1 kv head, SwiGLU 864, MoBA block 512 top-3.
left=$(( 545 - ($(date +%s) - t0) - 45 ))
step web model train, limit $left s
run=/tmp/web-model
timeout $left .device/moba train --backend cuda --preset 8k --d-model 320 --heads 5 --kv-heads 1 --d-ff 864 \
  --text .device/python-stdlib.txt --steps 1000 --valid-every 125 --batch-size 8 --lr 2e-3 --run $run > $OUT/train.log 2>&1
echo "train rc $?"
grep -E 'validation|on Cuda' $OUT/train.log | tail -12 | cut -c1-160
tail -2 $OUT/train.log | cut -c1-200
weights=$run/model.mpk
if [ ! -f $weights ]; then last=$(ls -t $run/checkpoint/model-*.mpk | head -1); echo "stopped: using $last"; cp $last $weights; fi
step eval
timeout 25 .device/moba eval --backend cuda --run $run > $OUT/eval.log 2>&1; echo "rc $?"; tail -3 $OUT/eval.log
timeout 10 .device/moba generate --backend cuda --run $run --prompt 'def main():
    ' --max-new 300 --seed 1 > $OUT/sample.txt 2>&1; head -c 600 $OUT/sample.txt; echo
mkdir -p $OUT/web && .device/moba export --run $run --out $OUT/web --half 2>&1 | tail -2
rm -f $OUT/web/*.crc32; cp $run/summary.json $OUT/web/ 2>/dev/null
ls -la $OUT $OUT/web
step done
