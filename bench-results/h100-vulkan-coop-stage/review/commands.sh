#!/usr/bin/env bash
# Issue 22, last call: this commit's shaders (the review's barrier before the forward's
# rescale, const_asserts on the staging rounds) through MOBA_WGSL_DIR on the binary of the
# calls before: the cooperative tests, the 32K step and the 512K forward.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
source scripts/device-env.sh
gunzip -kf .device/tests/cooperative.gz; chmod +x .device/tests/cooperative
export MOBA_WGSL_DIR=.device/variants/final
timeout 150 .device/tests/cooperative --include-ignored --test-threads 1 > $OUT/coop-tests.log 2>&1; echo "rc $?"; grep -E "test result|FAILED|panicked" $OUT/coop-tests.log | head -5
timeout 100 .device/moba --api vulkan bench --kernel cooperative --heads 16 --head-dim 128 --no-dense --seq-lens 32768 --block-size 512 --top-k 3 --backward --runs 5 --out /tmp/v/cooperative.jsonl 2>&1 | grep -iE "error" | head -3
timeout 150 .device/moba --api vulkan bench --kernel cooperative --heads 16 --head-dim 128 --no-dense --seq-lens 524288 --block-size 4096 --top-k 12 --runs 1 --out /tmp/v/cooperative.jsonl 2>&1 | grep -iE "error" | head -3
cp /tmp/v/cooperative.jsonl $OUT/
python3 -c '
import json
for line in open("/tmp/v/cooperative.jsonl"):
    r = json.loads(line)
    f = lambda x: None if x is None else [round(v, 2) for v in x]
    print(r["seq_len"], "ms", round(r["moba_ms"], 2), "step", r.get("step_ms") and round(r["step_ms"], 2), "stages", f(r.get("stage_ms")), "bwd", f(r.get("backward_stage_ms")), "err", r["o_error"], r["passed"])'
