#!/usr/bin/env bash
# Issue 22, third call: the committed cooperative kernels (subgroup-local row work, batched
# staging) built in: the cooperative tests, the 32K step and the 512K forward; the f32
# kernels (subgroup, portable) with their staging batched (`batch`, a MOBA_WGSL_DIR variant)
# against the built-in ones, and the backward grid on it; PyTorch's peers at 32K.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
source scripts/device-env.sh
for t in cooperative backward; do gunzip -kf .device/tests/$t.gz; chmod +x .device/tests/$t; done
V=.device/variants
step() { echo "=== $* ($(date +%T))"; }
mkdir -p /tmp/v
step cooperative tests
timeout 150 .device/tests/cooperative --include-ignored --test-threads 1 > $OUT/coop-tests.log 2>&1; echo "rc $?"; grep -E "test result|FAILED|panicked" $OUT/coop-tests.log | head -5
step backward grid, batch
timeout 200 env MOBA_WGSL_DIR=$V/batch .device/tests/backward --test-threads 4 > $OUT/backward-batch.log 2>&1; echo "rc $?"; grep -E "test result|FAILED|panicked" $OUT/backward-batch.log | head -5
step cooperative 32K step and 512K forward
S32="--heads 16 --head-dim 128 --no-dense --seq-lens 32768 --block-size 512 --top-k 3 --backward"
timeout 100 .device/moba --api vulkan bench --kernel cooperative $S32 --runs 5 --out /tmp/v/32k-cooperative.jsonl 2>&1 | grep -iE "error" | head -3
timeout 150 .device/moba --api vulkan bench --kernel cooperative --heads 16 --head-dim 128 --no-dense --seq-lens 524288 --block-size 4096 --top-k 12 --runs 1 --out /tmp/v/512k-cooperative.jsonl 2>&1 | grep -iE "error" | head -3
step f32 kernels 32K step
for kernel in subgroup portable; do
  for variant in builtin batch; do
    dir=""; [ $variant != builtin ] && dir=$V/$variant
    env ${dir:+MOBA_WGSL_DIR=$dir} timeout 120 .device/moba --api vulkan bench --kernel $kernel $S32 --runs 3 --out /tmp/v/32k-$kernel-$variant.jsonl 2>&1 | grep -iE "error" | head -3
  done
done
for size in 32k 512k; do
  for f in /tmp/v/$size-*.jsonl; do
    python3 -c 'import json, sys
name = sys.argv[1].split("/")[-1][:-6].split("-", 1)[1]
for line in open(sys.argv[1]):
    r = json.loads(line); r["variant"] = name; print(json.dumps(r))' "$f"
  done > $OUT/$size.jsonl
done
step peers
CFGS=32768:512:3 TRAIN_MAX_S=32768 OUT=/tmp timeout 150 python3 .device/peers_torch.py 2>&1 | grep -v "^check" | tee $OUT/peers.log | cut -c1-200
step table
cat $OUT/32k.jsonl $OUT/512k.jsonl | python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    f = lambda x: None if x is None else [round(v, 2) for v in x]
    print(r["variant"], r["seq_len"], "ms", round(r["moba_ms"], 2), "step", r.get("step_ms") and round(r["step_ms"], 2), "stages", f(r.get("stage_ms")), "bwd", f(r.get("backward_stage_ms")), "err", r["o_error"], r["passed"])'
