#!/usr/bin/env bash
# Session 53, call 1 (issue 25): the committed forward by block (inversion in chunks of
# rows) through the whole CUDA grid; its timings at 128K; the two staged variants
# (MOBA_CUDA_DIR) on the bf16 grid and at 128K; the peers last.
# Carry .gl, .device/s14, .device/cubecl-cache.tgz.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
xz -dc .device/s14/moba.xz > .device/moba && chmod +x .device/moba
xz -dc .device/s14/cuda-tests.xz > /tmp/cuda-tests && chmod +x /tmp/cuda-tests
source scripts/device-env.sh
export MOBA_CACHE_DIR=$PWD/.device/cubecl-cache
step() { echo "=== $* ($(date +%T))"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
step cuda tests
timeout 230 /tmp/cuda-tests --test-threads 1 bf16_grid f16_grid f32_inputs decode_with training varlen nsa_in_bf16 > $OUT/cuda-tests.log 2>&1; echo "rc $?"
grep -E "^test |test result" $OUT/cuda-tests.log | head -12
grep -E "panicked" -A6 $OUT/cuda-tests.log | head -20
B="--cuda --dtype bf16 --heads 16 --head-dim 128 --no-dense"
for s in "131072 --block-size 128 --top-k 8" "131072 --block-size 64 --top-k 16"; do
  step bench $s
  timeout 50 .device/moba bench $B --seq-lens $s --runs 3 --backward --out $OUT/moba.jsonl 2>&1 | tail -1 | cut -c1-200
done
for v in gate-bf16 tile-search; do
  step variant $v
  MOBA_CUDA_DIR=.device/s14/$v timeout 45 /tmp/cuda-tests --test-threads 1 bf16_grid > $OUT/cuda-tests-$v.log 2>&1; echo "rc $?"
  grep -E "test result" $OUT/cuda-tests-$v.log; grep -E "panicked" -A4 $OUT/cuda-tests-$v.log | head -8
  MOBA_CUDA_DIR=.device/s14/$v timeout 30 .device/moba bench $B --seq-lens 131072 --block-size 128 --top-k 8 --runs 3 --out $OUT/$v.jsonl 2>&1 | tail -1 | cut -c1-200
done
python3 - $OUT/moba.jsonl $OUT/gate-bf16.jsonl $OUT/tile-search.jsonl <<'PY'
import json,sys,os
for f in sys.argv[1:]:
    if not os.path.exists(f): continue
    for l in open(f):
        r=json.loads(l); print(f.split('/')[-1][:11], r['seq_len'], r['block_size'], r['top_k'], 'fwd %.2f'%r['moba_ms'], 'step', r.get('step_ms') and round(r['step_ms'],2), 'stages', [round(x,2) for x in r['stage_ms']], 'bwd', [round(x,2) for x in (r.get('backward_stage_ms') or [])], 'err %.1e/%.1e'%(r['o_error'],r['o_bound']), r['passed'])
PY
step peers
cd .device/s14 && CFGS=131072:128:8 TRAIN_MAX_S=131072 timeout 120 python3 peers_torch.py > $OUT/peers.txt 2>&1; echo "rc $?"; tail -8 $OUT/peers.txt
