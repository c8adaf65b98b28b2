#!/usr/bin/env bash
# Session 51's third call (issue 24), most important first:
# 1. the NSA CUDA tests: nsa_select's ranking spread over a thread per (query, block); NSA's
#    near-tie allowance (3 rows in 100);
# 2. NSA's forward at 8K, 64K and 128K (bf16, Triton setting): the selection's new time;
# 3. the 8K step's MoBA kernels by GPU time (MOBA_CUDA_PROFILE): where the selected
#    branch's backward goes.
# Carry .gl, .device/s7, .device/cubecl-cache.tgz.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
xz -dc .device/s7/moba.xz > .device/moba && chmod +x .device/moba
xz -dc .device/s7/cuda-tests.xz > /tmp/cuda-tests && chmod +x /tmp/cuda-tests
source scripts/device-env.sh
export MOBA_CACHE_DIR=$PWD/.device/cubecl-cache
step() { echo "=== $* ($(date +%T))"; }
step nsa cuda tests
timeout 200 /tmp/cuda-tests --test-threads 1 --nocapture nsa_ > $OUT/cuda-nsa-tests.log 2>&1; echo "rc $?"
grep -E "FAIL|test result|panicked" $OUT/cuda-nsa-tests.log | cut -c1-200 | head -20
grep -c "PASS" $OUT/cuda-nsa-tests.log
NSA="--attention nsa --heads 64 --kv-heads 4 --head-dim 128 --compress-block 32 --stride 16 --select-block 64 --top-n 16 --window 512"
step nsa forward 8K-128K
timeout 150 .device/moba bench $NSA --runs 2 --cuda --dtype bf16 --seq-lens 8192,65536,131072 --out $OUT/nsa.jsonl 2>&1 | grep "^| cuda" | cut -c1-300
step profile of the 8K step
MOBA_CUDA_PROFILE=1 timeout 100 .device/moba bench $NSA --runs 1 --cuda --dtype bf16 --backward --seq-lens 8192 --out $OUT/step-8k.jsonl > $OUT/profile.log 2>&1; echo "rc $?"
grep '^| cuda' $OUT/profile.log | cut -c1-300
# The last selected-branch step (its forward and backward): kernels by GPU time.
python3 - $OUT/profile.log <<'PY'
import re, sys, collections
lines = open(sys.argv[1]).read().splitlines()
start = max(i for i, l in enumerate(lines) if "the step's branches" in l)
total = collections.OrderedDict()
for l in lines[start:]:
    m = re.match(r"moba cuda: (\S+) grid (\S+) x (\d+) threads: ([\d.]+) ms", l)
    if m:
        key = (m.group(1), m.group(2))
        total[key] = total.get(key, 0.0) + float(m.group(4))
for (name, grid), ms in sorted(total.items(), key=lambda kv: -kv[1])[:25]:
    print(f"{ms:9.3f} ms  {name:24s} grid {grid}")
PY
