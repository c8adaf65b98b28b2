#!/usr/bin/env bash
# Session 52's first call (issue 25): small blocks before and after the gate's bar and the
# forward by block (bf16, H 16, D 128), the CUDA grid of the new tree, ncu of the passes.
# Carry .gl, .device/s12, .device/cubecl-cache.tgz.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
xz -dc .device/s12/moba.xz > .device/moba && chmod +x .device/moba
xz -dc .device/s12/moba-new.xz > /tmp/moba-new && chmod +x /tmp/moba-new
xz -dc .device/s12/cuda-tests-new.xz > /tmp/cuda-tests && chmod +x /tmp/cuda-tests
source scripts/device-env.sh
export MOBA_CACHE_DIR=$PWD/.device/cubecl-cache
step() { echo "=== $* ($(date +%T))"; }
B="--cuda --dtype bf16 --heads 16 --head-dim 128 --no-dense"
step cuda grid of the new tree
timeout 240 /tmp/cuda-tests --test-threads 1 > $OUT/cuda-tests-new.log 2>&1; echo "rc $?"
grep -E "^test |test result" $OUT/cuda-tests-new.log | head -20
grep -E "panicked" -A6 $OUT/cuda-tests-new.log | head -30
for s in "131072 --block-size 128 --top-k 8" "131072 --block-size 64 --top-k 16"; do
  step before and after: $s
  timeout 100 .device/moba bench $B --seq-lens $s --runs 3 --backward --out $OUT/before.jsonl 2>&1 | tail -2 | cut -c1-300
  timeout 100 /tmp/moba-new bench $B --seq-lens $s --runs 3 --backward --out $OUT/after.jsonl 2>&1 | tail -2 | cut -c1-300
done
step after: 32K block 512 top 3 and 512K block 128 top 8
timeout 60 /tmp/moba-new bench $B --seq-lens 32768 --block-size 512 --top-k 3 --runs 3 --backward --out $OUT/after.jsonl 2>&1 | tail -1 | cut -c1-300
timeout 100 /tmp/moba-new bench $B --seq-lens 524288 --block-size 128 --top-k 8 --runs 2 --out $OUT/after.jsonl 2>&1 | tail -1 | cut -c1-300
NCU=/opt/nvidia/nsight-compute/2025.3.1/ncu
SECTIONS="--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis"
for k in moba:attention_pass:3 new:attention_blocks:0 new:gate_topk:0; do
  bin=${k%%:*}; rest=${k#*:}; name=${rest%%:*}; skip=${rest##*:}
  [ $bin = new ] && exe=/tmp/moba-new || exe=.device/moba
  step ncu $name
  timeout 100 $NCU --kernel-name regex:"^$name\$" --launch-skip $skip --launch-count 1 $SECTIONS \
    $exe bench $B --seq-lens 131072 --block-size 128 --top-k 8 --runs 1 > $OUT/ncu-$name.log 2>&1; echo "rc $?"
  grep -E "Duration|DRAM Throughput|Memory Throughput|L2 Hit|Compute \(SM\) Throughput|Achieved Occupancy|Registers Per|Warp Cycles Per Issued" $OUT/ncu-$name.log | head -12
done
python3 - $OUT/before.jsonl $OUT/after.jsonl <<'PY'
import json,sys
for f in sys.argv[1:]:
    for l in open(f):
        r=json.loads(l); print(f.split('/')[-1][:6], r['seq_len'], r['block_size'], r['top_k'], 'fwd %.2f'%r['moba_ms'], 'step', r.get('step_ms') and round(r['step_ms'],2), 'stages', [round(x,2) for x in r['stage_ms']], 'bwd', [round(x,2) for x in (r.get('backward_stage_ms') or [])], 'err %.1e/%.1e'%(r['o_error'],r['o_bound']), r['passed'])
PY
