#!/usr/bin/env bash
# Second call: the cooperative tests on this commit's shaders, NSA on the CUDA path, the
# built-in 512K forward (the full-tile fast path).
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
[ -f .device/cubecl-cache.tgz ] || true
source scripts/device-env.sh
gunzip -kf .device/tests/cooperative.gz; chmod +x .device/tests/cooperative
step() { echo "=== $* ($(date +%T))"; }
step cooperative on this commit shaders
MOBA_WGSL_DIR=shaders/wgsl timeout 150 .device/tests/cooperative --include-ignored --test-threads 1 > $OUT/coop-tests.log 2>&1; echo "rc $?"; grep -E "^test |test result" $OUT/coop-tests.log | head -12
NSA="--attention nsa --heads 64 --kv-heads 4 --head-dim 128 --compress-block 32 --stride 16 --select-block 64 --top-n 16 --window 512 --backward --runs 3"
step nsa cuda
timeout 240 .device/moba bench $NSA --cuda --dtype bf16 --seq-lens 8192,16384,32768 --out $OUT/nsa-cuda.jsonl 2>&1 | tail -6
step 512K built in
timeout 150 .device/moba --api vulkan bench --kernel cooperative --heads 16 --head-dim 128 --no-dense \
    --seq-lens 524288 --block-size 4096 --top-k 12 --runs 1 --out /tmp/v/512k.jsonl 2>&1 | tail -3
cp /tmp/v/512k.jsonl $OUT/512k-built-in.jsonl
