#!/usr/bin/env bash
# The CUDA decoder (issue 23): its test against the model's own forward (and the wgpu
# decoder's tests on Vulkan), then `moba generate` on every backend (scripts/device-generate.sh).
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
source scripts/device-env.sh
gunzip -kf .device/tests/decoder.gz; chmod +x .device/tests/decoder
MOBA_TEST_SKIP_GL=1 timeout 240 .device/tests/decoder --test-threads 1 --nocapture > $OUT/decoder-tests.log 2>&1; echo "decoder tests rc $?"
grep -E "test result|FAILED|panicked|decoder error" $OUT/decoder-tests.log | head -40
mkdir -p $OUT/generate
STEPS=1 OUT=$OUT/generate timeout 400 scripts/device-generate.sh
grep -h "bytes/s\|error" $OUT/generate/*.log | head -20
