#!/usr/bin/env bash
# Issues 24 and 25 on the lent GPU, most important first (each step with its own timeout):
# 1. the cooperative tests (the key-window start in the cooperative passes);
# 2. the CUDA grid (tests/cuda.rs, this tree: the key-window start in attention.cu and
#    backward.cu, a window longer than a row tile);
# 3. NSA on the CUDA path with its selection on the device (nsa.cu), the Triton project's
#    setting, forward and training step, bf16;
# 4. NSA through Vulkan in the same setting at 32K: this tree (moba-new: the group kernel for
#    groups of 8+, the key-window start, the compressed branch in one pass),
#    e8d1c69 (moba-before: the per-head path, 16 compressed passes).
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
for f in .device/moba-before .device/new/moba .device/new/cuda-tests .device/new/cooperative-tests; do
  [ -f $f.xz ] && xz -dkf $f.xz && chmod +x $f
done
mv .device/new/moba .device/moba-new
source scripts/device-env.sh
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export MOBA_TEST_SKIP_GL=1 MOBA_CACHE_DIR=$PWD/.device/cubecl-cache
step() { echo "=== $* ($(date +%T))"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
step cooperative
timeout 70 .device/new/cooperative-tests --include-ignored --test-threads 1 > $OUT/coop-tests.log 2>&1; echo "rc $?"
grep -E "test result|FAILED|panicked" $OUT/coop-tests.log | head -6
step cuda grid
timeout 100 .device/new/cuda-tests --test-threads 1 bf16_grid > $OUT/cuda-tests.log 2>&1; echo "rc $?"
grep -E "test result|FAILED|panicked|KeyWindow" $OUT/cuda-tests.log | head -8
SET="--attention nsa --head-dim 128 --compress-block 32 --stride 16 --select-block 64 --top-n 16 --window 512 --runs 3"
NSA="--heads 64 --kv-heads 4 $SET"
step nsa cuda
timeout 80 .device/moba-new bench $NSA --backward --cuda --dtype bf16 --seq-lens 8192 --out $OUT/nsa-cuda.jsonl > $OUT/nsa-cuda.log 2>&1; echo "rc $?"; tail -6 $OUT/nsa-cuda.log
for bin in moba-new moba-before; do
  step vulkan $bin
  timeout 40 .device/$bin --api vulkan bench $NSA --seq-lens 32768 --out $OUT/paper-$bin.jsonl > /tmp/p.log 2>&1; echo "rc $?"; tail -1 /tmp/p.log
done
