#!/usr/bin/env bash
# Issue 23: the split decode gate, 64 lanes merged pairwise in workgroup memory (`after`, this commit)
# against 64 lanes merged by lane 0 (`before`, b301943), `moba bench --decode` at 128K
# and 1M (block 4096, top-12, H 16, D 128, batch 1) for 16 kv heads (every head its own
# blocks) and 2 (GQA 8); dense decode over the same cache beside `after`; PyTorch's SDPA
# decode in the same call.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
source scripts/device-env.sh
gunzip -kf .device/moba-before.gz; chmod +x .device/moba-before
step() { echo "=== $* ($(date +%T))"; }
mkdir -p /tmp/v
common="--decode --heads 16 --head-dim 128 --batch 1 --seq-lens 131072,1048576 --block-size 4096 --top-k 12 --runs 5"
for kv in 16 2; do
  step before kv $kv
  timeout 200 .device/moba-before --api vulkan bench $common --kv-heads $kv --no-dense --out /tmp/v/before-kv$kv.jsonl 2>&1 | grep -iE "error|fail" | head -3
  step after kv $kv
  timeout 240 .device/moba --api vulkan bench $common --kv-heads $kv --out /tmp/v/after-kv$kv.jsonl 2>&1 | grep -iE "error|fail" | head -3
done
for f in /tmp/v/*.jsonl; do
  python3 -c 'import json, sys
name = sys.argv[1].split("/")[-1][:-6]
for line in open(sys.argv[1]):
    r = json.loads(line); r["variant"] = name; print(json.dumps(r))' "$f"
done > $OUT/decode.jsonl
step peers
for kv in 16 2; do
  DECODE_CACHES=131072,1048576 DECODE_KV_HEADS=$kv DECODE_BATCHES=1 timeout 120 python3 scripts/decode_peers.py
done | tee $OUT/peers.jsonl
step table
python3 -c '
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    f = lambda x: None if x is None else [round(v, 3) for v in x]
    print(r["variant"], r["kv_len"], "ms", round(r["moba_ms"], 3), "dense", r.get("dense_ms") and round(r["dense_ms"], 3), "stages", f(r.get("stage_ms")), "err", "%.1e" % r["o_error"], r["passed"])' $OUT/decode.jsonl
