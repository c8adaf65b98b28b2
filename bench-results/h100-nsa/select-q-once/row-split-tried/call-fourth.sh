#!/usr/bin/env bash
# Session 51's fourth call (issues 24, 25), most important first:
# 1. the whole CUDA grid (tests/cuda.rs): the dk/dv walk now splits each key tile's rows 8
#    ways wherever the scratch holds the partials (every GQA backward of the grid and NSA's);
# 2. NSA's forward and step at 8K, 32K and 64K (bf16, Triton setting): the selected
#    branch's backward without block 0's single-thread-block walk;
# 3. the 128K forward under MOBA_NSA_PROFILE=1: where the 130 ms outside the stages go.
# Carry .gl, .device/s8, .device/cubecl-cache.tgz.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
xz -dc .device/s8/moba.xz > .device/moba && chmod +x .device/moba
xz -dc .device/s8/cuda-tests.xz > /tmp/cuda-tests && chmod +x /tmp/cuda-tests
source scripts/device-env.sh
export MOBA_CACHE_DIR=$PWD/.device/cubecl-cache
step() { echo "=== $* ($(date +%T))"; }
step cuda tests
timeout 330 /tmp/cuda-tests --test-threads 1 --nocapture > $OUT/cuda-tests.log 2>&1; echo "rc $?"
grep -E "^test .*(ok|FAILED)$|test result|FAIL:|panicked" $OUT/cuda-tests.log | cut -c1-160 | head -30
NSA="--attention nsa --heads 64 --kv-heads 4 --head-dim 128 --compress-block 32 --stride 16 --select-block 64 --top-n 16 --window 512"
step nsa forward and step 8K-64K
timeout 150 .device/moba bench $NSA --runs 2 --cuda --dtype bf16 --backward --seq-lens 8192,32768,65536 --out $OUT/nsa.jsonl 2>&1 | grep "^| cuda" | cut -c1-300
step nsa forward 128K profiled
MOBA_NSA_PROFILE=1 timeout 100 .device/moba bench $NSA --runs 1 --cuda --dtype bf16 --seq-lens 131072 --out $OUT/nsa-128k.jsonl > $OUT/nsa-128k-profile.log 2>&1; echo "rc $?"
grep '^| cuda' $OUT/nsa-128k-profile.log | cut -c1-300
# The marks of the last whole forward (the check's run after the stages).
grep "moba nsa" $OUT/nsa-128k-profile.log | tail -12
