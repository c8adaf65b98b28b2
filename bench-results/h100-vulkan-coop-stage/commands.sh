#!/usr/bin/env bash
# Issue 22, second call: staging loads batched (stage), subgroup-local row work in the
# forward and dq (sglocal-dq), both (sglocal-stage), against the built-in kernels; the
# cooperative tests on sglocal-stage; PyTorch's peers at 32K.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
source scripts/device-env.sh
for t in cooperative; do gunzip -kf .device/tests/$t.gz; chmod +x .device/tests/$t; done
V=.device/variants
step() { echo "=== $* ($(date +%T))"; }
mkdir -p /tmp/v
step cooperative tests
for variant in sglocal-stage; do
  timeout 150 env MOBA_WGSL_DIR=$V/$variant .device/tests/cooperative --include-ignored --test-threads 1 > $OUT/coop-$variant.log 2>&1; echo "$variant rc $?"; grep -E "test result|FAILED|panicked" $OUT/coop-$variant.log | head -5
done
step 32K step
S32="--kernel cooperative --heads 16 --head-dim 128 --no-dense --seq-lens 32768 --block-size 512 --top-k 3 --runs 5 --backward"
for variant in builtin stage sglocal-dq sglocal-stage; do
  dir=""; [ $variant != builtin ] && dir=$V/$variant
  env ${dir:+MOBA_WGSL_DIR=$dir} timeout 100 .device/moba --api vulkan bench $S32 --out /tmp/v/32k-$variant.jsonl 2>&1 | grep -E "error|Error" | head -3
done
step 512K forward
S512="--kernel cooperative --heads 16 --head-dim 128 --no-dense --seq-lens 524288 --block-size 4096 --top-k 12 --runs 1"
for variant in builtin stage sglocal-stage; do
  dir=""; [ $variant != builtin ] && dir=$V/$variant
  env ${dir:+MOBA_WGSL_DIR=$dir} timeout 150 .device/moba --api vulkan bench $S512 --out /tmp/v/512k-$variant.jsonl 2>&1 | grep -E "error|Error" | head -3
done
# One file per size, each record tagged with its variant.
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
for f in /tmp/v/*.jsonl; do python3 -c '
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    f = lambda x: None if x is None else [round(v, 2) for v in x]
    print(sys.argv[1].split("/")[-1], r["seq_len"], "ms", round(r["moba_ms"], 2), "step", r.get("step_ms") and round(r["step_ms"], 2), "stages", f(r.get("stage_ms")), "bwd", f(r.get("backward_stage_ms")), "err", r["o_error"], r["passed"])
' "$f"; done
