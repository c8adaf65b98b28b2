#!/usr/bin/env bash
# Session 50's second call (issues 24, 25), most important first:
# 1. the CUDA grid (tests/cuda.rs): MoBA's forward now shares RowPairSoftmax and the key
#    walk with NSA's new group-centric selected branch (nsa_selected in nsa.cu), which the
#    NSA tests check in bf16, f16 and f32 under the per-row bound; the dk/dv walk split
#    over a group's heads where the grid is small (new grid case 20, NSA's compressed
#    branch);
# 2. NSA's 8K training step under MOBA_CUDA_PROFILE, with each MoBA call's host times
#    (where the compressed branch's 500 ms go: its kernels take 11 ms);
# 3. NSA's forward at 8K-128K in bf16 (Triton setting), the selected branch's new time.
# Carry .gl, .device/s3, .device/cubecl-cache.tgz.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
xz -dc .device/s3/moba.xz > .device/moba && chmod +x .device/moba
xz -dc .device/s3/cuda-tests.xz > /tmp/cuda-tests && chmod +x /tmp/cuda-tests
source scripts/device-env.sh
export MOBA_CACHE_DIR=$PWD/.device/cubecl-cache
step() { echo "=== $* ($(date +%T))"; }
step cuda tests
timeout 200 /tmp/cuda-tests --test-threads 1 --nocapture > $OUT/cuda-tests.log 2>&1; echo "rc $?"
grep -E "test result|FAILED|panicked" $OUT/cuda-tests.log | head -12
grep -E "^NSA" $OUT/cuda-tests.log | awk '{print $NF}' | sort | uniq -c
NSA="--attention nsa --heads 64 --kv-heads 4 --head-dim 128 --compress-block 32 --stride 16 --select-block 64 --top-n 16 --window 512"
step profile of the 8K step
MOBA_CUDA_PROFILE=1 timeout 100 .device/moba bench $NSA --runs 1 --cuda --dtype bf16 --backward --seq-lens 8192 --out $OUT/nsa-profiled.jsonl > $OUT/profile.log 2>&1
grep '^| cuda' $OUT/profile.log | cut -c1-400
grep "call of" $OUT/profile.log | awk '{s+=$7; q+=$14; o+=$17} END {print "calls", NR, "between", s, "queue", q, "ours", o}'
# The calls around the compressed branch's second backward (its dk/dv grid is 8x4): each
# call's first kernel, then its host times.
python3 - $OUT/profile.log <<'PY'
import sys
calls, first, owner = [], None, []
for l in open(sys.argv[1]).read().splitlines():
    if l.startswith("moba cuda: call of"):
        calls.append((first, l[len("moba cuda: "):])); first = None
    elif l.startswith("moba cuda: "):
        first = first or l.split(" x ")[0][len("moba cuda: "):]
        if "dkdv grid 8x4" in l: owner.append(len(calls))
for o in owner[1:2]:
    for i in range(max(0, o - 4), min(len(calls), o + 4)):
        print(i, calls[i][0], "|", calls[i][1])
PY
step nsa forward 8k-128k
timeout 150 .device/moba bench $NSA --runs 2 --cuda --dtype bf16 --seq-lens 8192,32768,65536,131072 --out $OUT/nsa.jsonl 2>&1 | tail -5
