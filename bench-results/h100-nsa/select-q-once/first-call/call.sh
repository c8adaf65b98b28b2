#!/usr/bin/env bash
# Session 51's first call (issue 24), most important first:
# 1. the NSA CUDA tests (tests/cuda.rs, filter nsa_): pad_rows and the 3x row bound;
# 2. NSA's 8K training step under MOBA_NSA_PROFILE=1: which stage holds the 500 ms of host;
# 3. ncu on nsa_selected at 64K: is the selected branch L2-bound or latency-bound.
# Carry .gl, .device/s5 (and .device/cubecl-cache.tgz when there is one).
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
xz -dc .device/s5/moba.xz > .device/moba && chmod +x .device/moba
xz -dc .device/s5/cuda-tests.xz > /tmp/cuda-tests && chmod +x /tmp/cuda-tests
source scripts/device-env.sh
export MOBA_CACHE_DIR=$PWD/.device/cubecl-cache
step() { echo "=== $* ($(date +%T))"; }
step nsa cuda tests
timeout 300 /tmp/cuda-tests --test-threads 1 --nocapture nsa_ > $OUT/cuda-nsa-tests.log 2>&1; echo "rc $?"
grep -E "^test |test result|panicked" $OUT/cuda-nsa-tests.log | head -20
NSA="--attention nsa --heads 64 --kv-heads 4 --head-dim 128 --compress-block 32 --stride 16 --select-block 64 --top-n 16 --window 512"
step profile of the 8K step
MOBA_NSA_PROFILE=1 timeout 150 .device/moba bench $NSA --runs 1 --cuda --dtype bf16 --backward --seq-lens 8192 --out $OUT/step-8k.jsonl > $OUT/nsa-profile.log 2>&1; echo "rc $?"
grep '^| cuda' $OUT/nsa-profile.log | cut -c1-300
# The marks of the last compressed step (forward and backward) and of the last whole step.
grep "moba nsa" $OUT/nsa-profile.log | tail -40
step host sampling tools
which perf gdb nsys py-spy 2>&1 | head; ls /opt/nvidia 2>&1
if which perf >/dev/null 2>&1; then
  timeout 150 perf record -F 499 -g -o /tmp/perf.data .device/moba bench $NSA --runs 1 --cuda --dtype bf16 --backward --seq-lens 8192 > /dev/null 2>&1
  perf report -i /tmp/perf.data --stdio --no-children --sort dso,sym --percent-limit 1.5 -g none 2>/dev/null | grep -v "^$" | head -60 > $OUT/perf-top.txt; head -60 $OUT/perf-top.txt
elif which gdb >/dev/null 2>&1; then
  .device/moba bench $NSA --runs 3 --cuda --dtype bf16 --backward --seq-lens 8192 > /dev/null 2>&1 &
  pid=$!; sleep 45
  for i in $(seq 1 12); do gdb -p $pid -batch -ex "thread apply all bt 25" 2>/dev/null | grep -E "^#" ; echo ----; sleep 1.5; done > $OUT/gdb-samples.txt
  kill $pid; grep -c ---- $OUT/gdb-samples.txt
fi
step ncu nsa_select and nsa_selected 64K
timeout 240 /opt/nvidia/nsight-compute/2025.3.1/ncu --kernel-name regex:nsa_select --launch-skip 2 --launch-count 2 \
  --section SpeedOfLight --section Occupancy --section MemoryWorkloadAnalysis --section LaunchStats --section WarpStateStats --section SchedulerStats \
  .device/moba bench $NSA --runs 1 --cuda --dtype bf16 --seq-lens 65536 > $OUT/ncu-select.log 2>&1; echo "rc $?"
grep -E "^  nsa_select|Duration|Memory Throughput|DRAM Throughput|L2 Hit|L1/TEX Hit|Compute \(SM\)|Achieved Occupancy|Theoretical Occupancy|Registers Per|Dynamic Shared|Block Limit (Reg|Shared)|Warp Cycles Per Issued|Issued Warp|No Eligible|One or More" $OUT/ncu-select.log | head -60
grep -E "Stall|stall" $OUT/ncu-select.log | head -20
