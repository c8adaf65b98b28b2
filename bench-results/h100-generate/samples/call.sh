#!/usr/bin/env bash
# Session 53, call 2: the batched decoders (issue 23: tests/decoder.rs with the CUDA
# decoder, moba generate --samples on CUDA and Vulkan) and the bf16 gate committed (issue
# 25: the CUDA grid's bf16 paths, the 128K timings); the peers last where time is left.
# Carry .gl, .device/s15, .device/cubecl-cache.tgz.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
for b in moba cuda-tests decoder-tests; do xz -dc .device/s15/$b.xz > /tmp/$b && chmod +x /tmp/$b; done
cp /tmp/moba .device/moba
source scripts/device-env.sh
export MOBA_CACHE_DIR=$PWD/.device/cubecl-cache
# The committed kernels (the gate's staging was refactored after these binaries were built).
export MOBA_CUDA_DIR=$PWD/shaders/cuda
step() { echo "=== $* ($(date +%T))"; }
step decoder tests
MOBA_TEST_SKIP_GL=1 timeout 150 /tmp/decoder-tests --test-threads 1 > $OUT/decoder-tests.log 2>&1; echo "rc $?"
grep -E "^test |test result" $OUT/decoder-tests.log | head -12
grep -E "panicked" -A6 $OUT/decoder-tests.log | head -16
step generate
mkdir -p /tmp/run && tar xzf .device/s15/run.tgz -C /tmp/run
for backend in cuda wgpu; do for n in 1 16 64; do
  timeout 60 /tmp/moba --api vulkan generate --backend $backend --run /tmp/run/run --max-new 256 --seed 1 --prompt 'def main():' --samples $n > $OUT/generate-$backend-$n.txt 2> $OUT/generate-$backend-$n.log
  echo "$backend samples $n: rc $? $(grep -E 'prefill|rror' $OUT/generate-$backend-$n.log | tail -1)"
done; done
step cuda tests
timeout 200 /tmp/cuda-tests --test-threads 1 bf16_grid decode_with training varlen nsa_in_bf16 > $OUT/cuda-tests.log 2>&1; echo "rc $?"
grep -E "^test |test result" $OUT/cuda-tests.log | head -8
grep -E "panicked" -A6 $OUT/cuda-tests.log | head -16
B="--cuda --dtype bf16 --heads 16 --head-dim 128 --no-dense"
for s in "131072 --block-size 128 --top-k 8" "131072 --block-size 64 --top-k 16"; do
  step bench $s
  timeout 50 /tmp/moba bench $B --seq-lens $s --runs 3 --backward --out $OUT/moba.jsonl 2>&1 | tail -1 | cut -c1-200
done
python3 - $OUT/moba.jsonl <<'PY'
import json,sys,os
for f in sys.argv[1:]:
    if not os.path.exists(f): continue
    for l in open(f):
        r=json.loads(l); print(r['adapter'], r['seq_len'], r['block_size'], r['top_k'], 'fwd %.2f'%r['moba_ms'], 'step', r.get('step_ms') and round(r['step_ms'],2), 'stages', [round(x,2) for x in r['stage_ms']], 'bwd', [round(x,2) for x in (r.get('backward_stage_ms') or [])], 'err %.1e/%.1e'%(r['o_error'],r['o_bound']), r['passed'])
PY
step variant stage32
MOBA_CUDA_DIR=.device/s15/stage32 timeout 45 /tmp/cuda-tests --test-threads 1 bf16_grid > $OUT/cuda-tests-stage32.log 2>&1; echo "rc $?"; grep -E "test result|panicked" -A3 $OUT/cuda-tests-stage32.log | head -6
MOBA_CUDA_DIR=.device/s15/stage32 timeout 30 /tmp/moba bench $B --seq-lens 131072 --block-size 128 --top-k 8 --runs 3 --out $OUT/stage32.jsonl 2>&1 | tail -1 | cut -c1-200
python3 -c "
import json
for l in open('$OUT/stage32.jsonl'):
    r=json.loads(l); print('stage32', r['seq_len'], r['block_size'], r['top_k'], 'fwd %.2f'%r['moba_ms'], [round(x,2) for x in r['stage_ms']], r['passed'])
"
step peers
(cd .device/s15 && CFGS=131072:128:8 TRAIN_MAX_S=131072 timeout 110 python3 peers_torch.py > $OUT/peers.txt 2>&1; echo "rc $?"); grep '"S"' $OUT/peers.txt | cut -c1-220
