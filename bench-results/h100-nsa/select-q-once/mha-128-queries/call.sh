#!/usr/bin/env bash
# Session 51's seventh call (issue 24):
# 1. the NSA CUDA tests: nsa_select holds up to 128 queries a thread block for small groups;
# 2. the 16 query / 16 kv heads setting (groups of 1): the forward at 128K with the sixth
#    call's binary and this one, the step at 64K with this one.
# Carry .gl, .device/s11, .device/cubecl-cache.tgz.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
xz -dc .device/s11/moba.xz > .device/moba && chmod +x .device/moba
xz -dc .device/s11/moba-before.xz > /tmp/moba-old && chmod +x /tmp/moba-old
xz -dc .device/s11/cuda-tests.xz > /tmp/cuda-tests && chmod +x /tmp/cuda-tests
source scripts/device-env.sh
export MOBA_CACHE_DIR=$PWD/.device/cubecl-cache
step() { echo "=== $* ($(date +%T))"; }
step nsa cuda tests
timeout 200 /tmp/cuda-tests --test-threads 1 --nocapture nsa_ > $OUT/cuda-nsa-tests.log 2>&1; echo "rc $?"
grep -E "FAIL|test result|panicked" $OUT/cuda-nsa-tests.log | cut -c1-200 | head; grep -c PASS $OUT/cuda-nsa-tests.log
MHA="--attention nsa --heads 16 --kv-heads 16 --head-dim 128 --compress-block 32 --stride 16 --select-block 64 --top-n 16 --window 512"
step 16/16 forward 128K, before and after
timeout 100 /tmp/moba-old bench $MHA --runs 2 --cuda --dtype bf16 --seq-lens 131072 --out $OUT/mha-before.jsonl 2>&1 | grep "^| cuda" | cut -c1-300
timeout 100 .device/moba bench $MHA --runs 2 --cuda --dtype bf16 --seq-lens 131072 --out $OUT/mha.jsonl 2>&1 | grep "^| cuda" | cut -c1-300
step 16/16 step 64K
timeout 150 .device/moba bench $MHA --runs 2 --cuda --dtype bf16 --backward --seq-lens 65536 --out $OUT/mha.jsonl 2>&1 | grep "^| cuda" | cut -c1-300
step triton setting forward 64K
NSA="--attention nsa --heads 64 --kv-heads 4 --head-dim 128 --compress-block 32 --stride 16 --select-block 64 --top-n 16 --window 512"
timeout 60 .device/moba bench $NSA --runs 2 --cuda --dtype bf16 --seq-lens 65536 --out $OUT/nsa.jsonl 2>&1 | grep "^| cuda" | cut -c1-300
