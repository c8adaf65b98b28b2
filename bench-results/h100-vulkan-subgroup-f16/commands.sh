#!/usr/bin/env bash
# Issue 22 item 3: the subgroup kernels' f16 variant (f16 tiles, f32 arithmetic) against
# the f32 subgroup kernels at 32K (block 512, top-3, H 16, D 128), each built in and with
# the attention tile's key loops written out (`unroll`, a MOBA_WGSL_DIR variant); its tests
# and the cooperative tests (their helpers moved to tests/common); PyTorch's peers at 32K.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
source scripts/device-env.sh
for t in subgroup_f16 cooperative; do gunzip -kf .device/tests/$t.gz; chmod +x .device/tests/$t; done
V=.device/variants
step() { echo "=== $* ($(date +%T))"; }
mkdir -p /tmp/v
step subgroup_f16 tests
MOBA_TEST_SKIP_GL=1 timeout 150 .device/tests/subgroup_f16 --test-threads 1 --nocapture > $OUT/subgroup-f16-tests.log 2>&1; echo "rc $?"; grep -E "test result|FAILED|panicked" $OUT/subgroup-f16-tests.log | head -5
step cooperative tests
timeout 150 .device/tests/cooperative --include-ignored --test-threads 1 > $OUT/coop-tests.log 2>&1; echo "rc $?"; grep -E "test result|FAILED|panicked" $OUT/coop-tests.log | head -5
S32="--heads 16 --head-dim 128 --no-dense --seq-lens 32768 --block-size 512 --top-k 3"
for kernel in subgroup subgroup-f16; do
  for variant in builtin unroll; do
    step $kernel $variant
    dir=""; [ $variant != builtin ] && dir=$V/$variant
    env ${dir:+MOBA_WGSL_DIR=$dir} timeout 120 .device/moba --api vulkan bench --kernel $kernel $S32 --backward --runs 3 --out /tmp/v/32k-$kernel-$variant.jsonl 2>&1 | grep -iE "error|fail" | head -3
  done
done
for variant in builtin unroll; do
  step portable $variant
  dir=""; [ $variant != builtin ] && dir=$V/$variant
  env ${dir:+MOBA_WGSL_DIR=$dir} timeout 120 .device/moba --api vulkan bench --kernel portable $S32 --runs 2 --out /tmp/v/32k-portable-$variant.jsonl 2>&1 | grep -iE "error|fail" | head -3
done
for f in /tmp/v/32k-*.jsonl; do
  python3 -c 'import json, sys
name = sys.argv[1].split("/")[-1][:-6].split("-", 1)[1]
for line in open(sys.argv[1]):
    r = json.loads(line); r["variant"] = name; print(json.dumps(r))' "$f"
done > $OUT/32k.jsonl
step peers
CFGS=32768:512:3 TRAIN_MAX_S=32768 OUT=/tmp timeout 150 python3 .device/peers_torch.py 2>&1 | grep -v "^check" | tee $OUT/peers.log | cut -c1-200
step table
python3 -c '
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    f = lambda x: None if x is None else [round(v, 2) for v in x]
    print(r["variant"], r["kernel"], "fwd", round(r["moba_ms"], 2), "step", r.get("step_ms") and round(r["step_ms"], 2), "stages", f(r.get("stage_ms")), "bwd", f(r.get("backward_stage_ms")), "err", "%.2e/%.2e" % (r["o_error"], r["o_bound"]), r["passed"])' $OUT/32k.jsonl
