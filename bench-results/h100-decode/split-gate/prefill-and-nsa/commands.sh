#!/usr/bin/env bash
# Issue 23/24: does the gate's shared ranking function (keep_best, arrays through function
# pointers: this commit, `after`) cost the prefill gate or NSA's forward what a shared top-k
# cost NSA before (bench-results/h100-nsa/shared-top-k/)? Against `before` (3d49d07's
# binary, the insertion inline) and `inline` (this commit with the stream's insertion
# inline again, a MOBA_WGSL_DIR variant): the MoBA 32K forward (cooperative and subgroup:
# the gate is stage 2) and NSA's 8K forward, twice each.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
source scripts/device-env.sh
gunzip -kf .device/moba-before.gz; chmod +x .device/moba-before
mkdir -p /tmp/v
S32="--heads 16 --head-dim 128 --no-dense --seq-lens 32768 --block-size 512 --top-k 3 --runs 5"
NSA="--attention nsa --heads 64 --kv-heads 4 --head-dim 128 --compress-block 32 --stride 16 --select-block 64 --top-n 16 --window 512 --runs 5 --seq-lens 8192"
run() { # variant, then the bench arguments
  local variant=$1; shift
  local bin=.device/moba dir=""
  [ $variant = before ] && bin=.device/moba-before
  [ $variant = inline ] && dir=.device/variants/inline
  env ${dir:+MOBA_WGSL_DIR=$dir} timeout 100 $bin --api vulkan bench "$@" 2>&1 | grep -iE "rror|FAIL" | head -2
}
for pass in 1 2; do
  for variant in before after inline; do
    echo "=== pass $pass $variant ($(date +%T))"
    for kernel in cooperative subgroup; do
      run $variant --kernel $kernel $S32 --out /tmp/v/moba-$variant.jsonl
    done
    run $variant $NSA --out /tmp/v/nsa-$variant.jsonl
  done
done
for f in /tmp/v/*.jsonl; do
  python3 -c 'import json, sys
name = sys.argv[1].split("/")[-1][:-6]
for line in open(sys.argv[1]):
    r = json.loads(line); r["variant"] = name; print(json.dumps(r))' "$f"
done > $OUT/gate.jsonl
python3 -c '
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("attention") == "nsa":
        print(r["variant"], "nsa fwd", round(r["forward_ms"], 2), r["passed"])
    else:
        print(r["variant"], r["kernel"], "fwd", round(r["moba_ms"], 2), "stages", [round(x, 3) for x in r["stage_ms"]], r["passed"])' $OUT/gate.jsonl
