#!/usr/bin/env bash
# Issue 22/24, fourth call: the f32 kernels with the committed batched key staging
# (`key_tiles.wgsl` through MOBA_WGSL_DIR; the binary has everything else of this commit
# built in) at 32K; NSA (paper sizes, 64 query / 4 kv heads) on Vulkan with the new
# cooperative kernels beside SDPA at 64 heads.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
source scripts/device-env.sh
V=.device/variants
step() { echo "=== $* ($(date +%T))"; }
mkdir -p /tmp/v
export PYTHONUNBUFFERED=1
step f32 kernels 32K step, committed staging
S32="--heads 16 --head-dim 128 --no-dense --seq-lens 32768 --block-size 512 --top-k 3 --backward --runs 3"
for kernel in subgroup portable; do
  MOBA_WGSL_DIR=$V/committed timeout 120 .device/moba --api vulkan bench --kernel $kernel $S32 --out /tmp/v/f32.jsonl 2>&1 | grep -iE "error" | head -3
done
cp /tmp/v/f32.jsonl $OUT/f32-32k.jsonl
step nsa vulkan
NSA="--attention nsa --heads 64 --kv-heads 4 --head-dim 128 --compress-block 32 --stride 16 --select-block 64 --top-n 16 --window 512 --backward --runs 3"
timeout 240 .device/moba --api vulkan bench $NSA --seq-lens 8192,16384,32768 --out /tmp/v/nsa.jsonl 2>&1 | tail -4
cp /tmp/v/nsa.jsonl $OUT/nsa.jsonl
step sdpa 64 heads
H=64 CFGS=8192:512:3,16384:512:3,32768:512:3 TRAIN_MAX_S=32768 OUT=/tmp timeout 150 python3 .device/peers_torch.py 2>&1 | grep -v "^check" | tee $OUT/peers-h64.log | cut -c1-160
step table
cat $OUT/f32-32k.jsonl | python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    f = lambda x: None if x is None else [round(v, 2) for v in x]
    print(r["kernel"], r["seq_len"], "ms", round(r["moba_ms"], 2), "step", r.get("step_ms") and round(r["step_ms"], 2), "stages", f(r.get("stage_ms")), "bwd", f(r.get("backward_stage_ms")), "err", r["o_error"], r["passed"])'
cat $OUT/nsa.jsonl | cut -c1-400
