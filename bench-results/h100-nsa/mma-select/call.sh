#!/usr/bin/env bash
# Session 49's device call (issue 24), most important first:
# 1. the CUDA grid with NSA's new tests (tests/cuda.rs: the tensor-core selection, nsa.cu;
#    the dk/dv walk past causal rows before a tile, backward.cu);
# 2. NSA's 8K training step with the step's branches alone (fwd+bwd): this tree, then the
#    binary of the session's start (s1/moba.xz: the scalar selection, the full dk/dv walk);
# 3. NSA's forward at 16K-128K in bf16, 64K in f16;
# 4. MoBA analogs of the branches' backward, with the CUDA kernel split.
# Carry .gl, .device/s1, .device/cubecl-cache.tgz.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
xz -dc .device/s1/moba-new.xz > .device/moba && chmod +x .device/moba
xz -dc .device/s1/moba.xz > /tmp/moba-old && chmod +x /tmp/moba-old
xz -dc .device/s1/cuda-tests.xz > /tmp/cuda-tests && chmod +x /tmp/cuda-tests
source scripts/device-env.sh
export MOBA_CACHE_DIR=$PWD/.device/cubecl-cache
step() { echo "=== $* ($(date +%T))"; }
step cuda tests
timeout 170 /tmp/cuda-tests --test-threads 1 --nocapture > $OUT/cuda-tests.log 2>&1; echo "rc $?"
grep -E "^NSA|test result|FAILED|panicked" $OUT/cuda-tests.log | grep -v "^NSA.*PASS" | head -12
grep -c "^NSA.*PASS" $OUT/cuda-tests.log
NSA="--attention nsa --heads 64 --kv-heads 4 --head-dim 128 --compress-block 32 --stride 16 --select-block 64 --top-n 16 --window 512"
step nsa 8k step, new
timeout 100 .device/moba bench $NSA --runs 2 --cuda --dtype bf16 --backward --seq-lens 8192 --out $OUT/nsa.jsonl 2>&1 | tail -1
step nsa 8k step, old
timeout 80 /tmp/moba-old bench $NSA --runs 1 --cuda --dtype bf16 --backward --seq-lens 8192 --out $OUT/nsa-old.jsonl 2>&1 | tail -1
step nsa forward 16k-128k
timeout 120 .device/moba bench $NSA --runs 2 --cuda --dtype bf16 --seq-lens 32768,65536,131072 --out $OUT/nsa.jsonl 2>&1 | tail -4
step 64k f16
timeout 60 .device/moba bench $NSA --runs 2 --cuda --dtype f16 --seq-lens 65536 --out $OUT/nsa.jsonl 2>&1 | tail -1
M="--cuda --dtype bf16 --no-dense --backward --runs 3 --head-dim 128"
step analogs
timeout 40 .device/moba bench $M --heads 1024 --kv-heads 4 --block-size 511 --top-k 1 --seq-lens 511 --out $OUT/analog.jsonl > /dev/null 2>&1
timeout 40 .device/moba bench $M --heads 64 --kv-heads 4 --block-size 64 --top-k 16 --seq-lens 8192 --out $OUT/analog.jsonl > /dev/null 2>&1
python3 -c '
import json,sys
for l in open(sys.argv[1]):
    r=json.loads(l); print({k:v for k,v in r.items() if "_ms" in k or k in ("q_heads","seq_len","block_size","top_k")})' $OUT/analog.jsonl
