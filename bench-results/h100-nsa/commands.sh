#!/usr/bin/env bash
# This session's device call: the CUDA grid (key window, NSA), the cooperative tests, NSA's
# bench on Vulkan and CUDA with SDPA (64 heads) beside it, and the 512K forward variant.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
source scripts/device-env.sh
for t in cuda cooperative; do gunzip -kf .device/tests/$t.gz; chmod +x .device/tests/$t; done
export PYTHONUNBUFFERED=1
step() { echo "=== $* ($(date +%T))"; }
step cuda grid
timeout 240 .device/tests/cuda --test-threads 1 > $OUT/cuda-tests.log 2>&1; echo "rc $?"; grep -E "^test |test result" $OUT/cuda-tests.log | tail -40
step cooperative
timeout 120 .device/tests/cooperative --test-threads 1 > $OUT/coop-tests.log 2>&1; echo "rc $?"; grep -E "test result|FAILED|panicked" $OUT/coop-tests.log | head
NSA="--attention nsa --heads 64 --kv-heads 4 --head-dim 128 --compress-block 32 --stride 16 --select-block 64 --top-n 16 --window 512 --backward --runs 3"
step nsa vulkan
timeout 200 .device/moba --api vulkan bench $NSA --seq-lens 8192,16384,32768 --out $OUT/nsa.jsonl 2>&1 | tail -8
timeout 120 .device/moba --api vulkan bench $NSA --seq-lens 65536 --out $OUT/nsa.jsonl 2>&1 | tail -4
step nsa cuda
timeout 150 .device/moba bench $NSA --cuda --dtype bf16 --seq-lens 8192,16384 --out $OUT/nsa.jsonl 2>&1 | tail -6
step sdpa 64 heads
H=64 CFGS=8192:512:3,16384:512:3,32768:512:3 TRAIN_MAX_S=32768 OUT=/tmp timeout 150 python3 .device/peers_torch.py 2>&1 | grep -v "^check" | tee $OUT/peers-h64.log | cut -c1-200
step 512K base and mask
for variant in base mask; do
  dir=""; [ $variant = mask ] && dir=.device/variants-512/mask
  env ${dir:+MOBA_WGSL_DIR=$dir} timeout 170 .device/moba --api vulkan bench --kernel cooperative --heads 16 --head-dim 128 --no-dense \
    --seq-lens 524288 --block-size 4096 --top-k 12 --runs 1 --out /tmp/v/512k-$variant.jsonl 2>&1 | tail -3
  cp /tmp/v/512k-$variant.jsonl $OUT/ 2>/dev/null
done
