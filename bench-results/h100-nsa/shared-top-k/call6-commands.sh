#!/usr/bin/env bash
# Issue 24: the shared top-k in private storage (built in) against function scope (top-ptr)
# and the top-k kernels of ebcdd5c (old-select): NSA 8K forward, twice.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
source scripts/device-env.sh
V=.device/variants
mkdir -p /tmp/v
NSA="--attention nsa --heads 64 --kv-heads 4 --head-dim 128 --compress-block 32 --stride 16 --select-block 64 --top-n 16 --window 512 --runs 5 --seq-lens 8192"
for pass in 1 2; do
  for variant in builtin top-ptr old-select; do
    dir=""; [ $variant != builtin ] && dir=$V/$variant
    env ${dir:+MOBA_WGSL_DIR=$dir} timeout 100 .device/moba --api vulkan bench $NSA --out /tmp/v/nsa-$variant.jsonl 2>&1 | grep -E "Cooperative|rror" | sed "s/^/$variant: /"
  done
done
for f in /tmp/v/nsa-*.jsonl; do
  python3 -c 'import json, sys
name = sys.argv[1].split("/")[-1][4:-6]
for line in open(sys.argv[1]):
    r = json.loads(line); r["variant"] = name; print(json.dumps(r))' "$f"
done > $OUT/nsa-8k.jsonl
