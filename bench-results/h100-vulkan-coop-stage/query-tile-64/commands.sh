#!/usr/bin/env bash
# Issue 22 variants: subgroup-local row work (sglocal: forward; sglocal-dq: forward and dq),
# and a 64-row query tile (qt64 binary), against the built-in kernels; cooperative tests on
# the variants; PyTorch's peers at 32K.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
source scripts/device-env.sh
for t in cooperative; do gunzip -kf .device/tests/$t.gz; chmod +x .device/tests/$t; done
[ -f .device/moba-qt64.gz ] && { gunzip -kf .device/moba-qt64.gz; chmod +x .device/moba-qt64; }
V=.device/variants
step() { echo "=== $* ($(date +%T))"; }
mkdir -p /tmp/v
step cooperative tests
for variant in sglocal-dq; do
  dir=""; [ $variant != builtin ] && dir=$V/$variant
  env ${dir:+MOBA_WGSL_DIR=$dir} timeout 150 .device/tests/cooperative --include-ignored --test-threads 1 > $OUT/coop-$variant.log 2>&1; echo "$variant rc $?"; grep -E "test result|FAILED|panicked" $OUT/coop-$variant.log | head -5
done
step 32K step
S32="--kernel cooperative --heads 16 --head-dim 128 --no-dense --seq-lens 32768 --block-size 512 --top-k 3 --runs 5 --backward"
for variant in builtin sglocal sglocal-dq; do
  dir=""; [ $variant != builtin ] && dir=$V/$variant
  env ${dir:+MOBA_WGSL_DIR=$dir} timeout 100 .device/moba --api vulkan bench $S32 --out /tmp/v/32k-$variant.jsonl 2>&1 | tail -2
done
[ -x .device/moba-qt64 ] && MOBA_WGSL_DIR=$V/sglocal timeout 100 .device/moba-qt64 --api vulkan bench ${S32/--backward/} --out /tmp/v/32k-qt64-sglocal.jsonl 2>&1 | tail -2
step 512K forward
S512="--kernel cooperative --heads 16 --head-dim 128 --no-dense --seq-lens 524288 --block-size 4096 --top-k 12 --runs 1"
for variant in builtin sglocal qt64-sglocal qt64-builtin; do
  bin=.device/moba; dir=""
  case $variant in *qt64*) bin=.device/moba-qt64;; esac
  case $variant in *sglocal) dir=$V/sglocal;; esac
  [ -x $bin ] || continue
  env ${dir:+MOBA_WGSL_DIR=$dir} timeout 170 $bin --api vulkan bench $S512 --out /tmp/v/512k-$variant.jsonl 2>&1 | tail -2
done
cat /tmp/v/32k-*.jsonl > $OUT/32k.jsonl; cat /tmp/v/512k-*.jsonl > $OUT/512k.jsonl
step peers
CFGS=32768:512:3 TRAIN_MAX_S=32768 OUT=/tmp timeout 150 python3 .device/peers_torch.py 2>&1 | grep -v "^check" | tee $OUT/peers.log | cut -c1-200
step table
for f in /tmp/v/*.jsonl; do python3 -c '
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(sys.argv[1].split("/")[-1], r["pass"], r["seq_len"], "ms", r["moba_ms"], "step", r.get("step_ms"), "stages", r.get("stage_ms"), "bwd", r.get("backward_stage_ms"), "err", r["o_error"], r["passed"])
' "$f"; done
