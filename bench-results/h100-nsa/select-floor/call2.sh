#!/usr/bin/env bash
# Session 55, call 2: the page's 8K model (600 steps; the first step compiles burn-cuda's
# kernels for minutes, during which the NSA 8K step is timed committed vs C on the idle GPU).
set -u
t0=$(date +%s)
export OUT
xz -dc .device/s1/moba.xz > .device/moba && chmod +x .device/moba
cp .device/s1/python-stdlib.txt.gz .device/ 2>/dev/null
source scripts/device-env.sh
trap - EXIT
step() { echo "=== $* ($(( $(date +%s) - t0 )) s)"; }
run=/tmp/web-model
step web model train
timeout $(( 540 - ($(date +%s) - t0) )) .device/moba train --backend cuda --preset 8k --d-model 320 --heads 5 --kv-heads 1 --d-ff 864 \
  --text .device/python-stdlib.txt --steps 600 --valid-every 100 --batch-size 8 --lr 2e-3 --run $run > $OUT/train.log 2>&1 &
train=$!
NSA="--attention nsa --heads 64 --kv-heads 4 --head-dim 128 --compress-block 32 --stride 16 --select-block 64 --top-n 16 --window 512"
for variant in committed C; do
  dir=.device/s1/$variant; [ $variant = committed ] && dir=/nonexistent
  MOBA_CUDA_DIR=$dir timeout 60 .device/moba bench $NSA --runs 3 --cuda --dtype bf16 --backward --seq-lens 8192 --out /tmp/nsa-8k-$variant.jsonl > /tmp/nsa-8k-$variant.log 2>&1
  python3 -c "
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l); print(sys.argv[2], 'fwd %.2f step %.2f' % (r['forward_ms'], r['step_ms']), ' '.join('%s %.2f' % (s['stage'], s['ms']) for s in r['stages'] + r['step_stages']), r['passed'])
" /tmp/nsa-8k-$variant.jsonl $variant
done
step "nsa done; train log:"; tail -1 $OUT/train.log | cut -c1-160
cat /tmp/nsa-8k-*.jsonl > $OUT/nsa-8k.jsonl
wait $train; echo "train rc $?"
grep -E 'validation' $OUT/train.log | cut -c1-160
weights=$run/model.mpk
if [ ! -f $weights ]; then last=$(ls -t $run/checkpoint/model-*.mpk | head -1); echo "stopped: using $last"; cp $last $weights; fi
step eval
timeout 30 .device/moba eval --backend cuda --run $run > $OUT/eval.log 2>&1; echo "rc $?"; tail -1 $OUT/eval.log
mkdir -p $OUT/web && .device/moba export --run $run --out $OUT/web --half 2>&1 | tail -1
rm -f $OUT/web/*.crc32; cp $run/summary.json $run/metrics.jsonl $OUT/web/ 2>/dev/null
ls -la $OUT/web
step done
