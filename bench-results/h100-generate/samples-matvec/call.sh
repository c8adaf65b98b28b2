#!/usr/bin/env bash
# Session 54, call 1 (binaries built from 5da11d9 plus nsa_select's variant, see README):
# 1. issue 23: tests/decoder.rs with the CUDA decoder (the batch check's slack, the matvec
#    and read-back changes), then moba generate --samples 1/16/64 on CUDA and Vulkan;
# 2. issue 24: NSA's CUDA tests (bf16, f16, f32 under the per-row bound), then the 8K
#    training step with the variant below;
# 3. where the Vulkan NSA step's time goes (every kernel profiled), and the 128K CUDA
#    forward's burn kernels between NSA's marks;
# 4. nsa_select's variant (.device/s17/select; the committed one in .device/s17/committed): the NSA
#    tests and the forward at 32K and 128K with each.
# Carry .gl, .device/s17, .device/cubecl-cache.tgz (if any).
set -u
# PART=1: the decoder tests, generate, the NSA tests; PART=2: NSA's 8K step and forwards;
# all (the default): both.
PART=${PART:-all}
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
for b in moba cuda-tests decoder-tests; do xz -dc .device/s17/$b.xz > /tmp/$b && chmod +x /tmp/$b; done
cp /tmp/moba .device/moba
source scripts/device-env.sh
export MOBA_CACHE_DIR=$PWD/.device/cubecl-cache
# The built-in nsa.cu is a broken draft of the variant: every run reads a carried one.
export MOBA_CUDA_DIR=.device/s17/committed
step() { echo "=== $* ($(date +%T))"; }
echo "tools: $(for t in perf gdb nsys py-spy eu-stack; do command -v $t >/dev/null && echo -n "$t "; done)"
if [ "$PART" != 2 ]; then
step decoder tests
MOBA_TEST_SKIP_GL=1 timeout 150 /tmp/decoder-tests --test-threads 1 > $OUT/decoder-tests.log 2>&1; echo "rc $?"
grep -E "^test |test result" $OUT/decoder-tests.log | head -12
grep -E "panicked" -A6 $OUT/decoder-tests.log | head -16
step generate
mkdir -p /tmp/run && tar xzf .device/s17/run.tgz -C /tmp/run
for backend in cuda wgpu; do for n in 1 16 64; do
  timeout 35 /tmp/moba --api vulkan generate --backend $backend --run /tmp/run/run --max-new 256 --seed 1 --prompt 'def main():' --samples $n > $OUT/generate-$backend-$n.txt 2> $OUT/generate-$backend-$n.log
  echo "$backend samples $n: rc $? $(grep -E 'prefill|rror' $OUT/generate-$backend-$n.log | tail -1)"
done; done
for variant in select; do
  step nsa cuda tests, $variant nsa_select
  dir=.device/s17/$variant
  MOBA_CUDA_DIR=$dir timeout 120 /tmp/cuda-tests --test-threads 1 nsa_ > $OUT/cuda-tests-$variant.log 2>&1; echo "rc $?"
  grep -E "^test |test result" $OUT/cuda-tests-$variant.log | head -8
  grep -E "panicked" -A6 $OUT/cuda-tests-$variant.log | head -16
done
fi
NSA="--attention nsa --heads 64 --kv-heads 4 --head-dim 128 --compress-block 32 --stride 16 --select-block 64 --top-n 16 --window 512"
[ "$PART" = 1 ] && exit 0
for variant in committed select; do
  step nsa forward, $variant nsa_select
  dir=.device/s17/$variant
  MOBA_CUDA_DIR=$dir timeout 100 /tmp/moba bench $NSA --runs 2 --cuda --dtype bf16 --seq-lens 32768,131072 --out $OUT/nsa-$variant.jsonl 2>&1 | tail -1 | cut -c1-200
  python3 -c "
import json
for l in open('$OUT/nsa-$variant.jsonl'):
    r=json.loads(l); print('$variant', r['seq_len'], 'fwd %.2f' % r['forward_ms'], [(s['stage'], round(s['ms'],2)) for s in r['stages']], 'err %.1e/%.1e' % (r['o_error'], r['o_bound']), r['passed'])
"
done
step nsa 8k step through Vulkan, every kernel profiled
NSA="--attention nsa --heads 64 --kv-heads 4 --head-dim 128 --compress-block 32 --stride 16 --select-block 64 --top-n 16 --window 512"
CUBECL_DEBUG_LOG=stderr CUBECL_DEBUG_OPTION=profile timeout 150 /tmp/moba --api vulkan bench $NSA --runs 1 \
    --backward --seq-lens 8192 --out "$OUT/nsa-vulkan.jsonl" > /tmp/nsa-vulkan.log 2>&1
echo "vulkan nsa rc $?"
grep '^| wgpu' /tmp/nsa-vulkan.log | cut -c1-300
python3 .device/s17/kernels.py /tmp/nsa-vulkan.log 30
step nsa 8k step, select variant
MOBA_CUDA_DIR=.device/s17/select timeout 120 /tmp/moba bench $NSA --runs 2 --cuda --dtype bf16 --backward --seq-lens 8192 --out $OUT/nsa-8k.jsonl > $OUT/nsa-8k.log 2>&1
echo "rc $?"
python3 -c "
import json
for l in open('$OUT/nsa-8k.jsonl'):
    r=json.loads(l); print('nsa 8k fwd %.2f step %.2f' % (r['forward_ms'], r['step_ms']), [(s['stage'], round(s['ms'],2)) for s in r['stages']+r['step_stages']], r['passed'])
"
step nsa 128k forward, burn kernels profiled between the marks
MOBA_NSA_PROFILE=1 CUBECL_DEBUG_LOG=stderr CUBECL_DEBUG_OPTION=profile MOBA_CUDA_DIR=.device/s17/select timeout 90 /tmp/moba bench $NSA --runs 1 --cuda --dtype bf16 --seq-lens 131072 --out $OUT/nsa-profiled.jsonl > $OUT/nsa-profiled.log 2>&1
echo "rc $?"
python3 - $OUT/nsa-profiled.log <<'PY'
import sys
lines = open(sys.argv[1], errors="replace").read().splitlines()
starts = [i for i, l in enumerate(lines) if "moba nsa: before NSA" in l]
if not starts: sys.exit("no marks")
last = starts[-1]
end = next((i for i in range(last, len(lines)) if "moba nsa: gated sum" in lines[i]), len(lines) - 1)
shown = [l for l in lines[last:end + 1] if len(l) < 220 and l.strip()]
print("\n".join(shown[:120]))
PY
