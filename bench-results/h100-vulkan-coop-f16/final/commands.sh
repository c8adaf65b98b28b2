#!/usr/bin/env bash
# Issue 22, final: the committed cooperative kernels (f16 copies, merged barrier) through their
# tests (cooperative, the backward grid on Vulkan), the 32K step and 512K forward, PyTorch's peers.
set -u
final=$OUT
export OUT=/tmp/r
mkdir -p $OUT
source scripts/device-env.sh
for deb in .gl/*.deb; do dpkg -x "$deb" / 2>/dev/null; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export MOBA_TEST_SKIP_GL=1
start=$(date +%s)
t() { echo "   at $(( $(date +%s) - start )) s"; }
for test in cooperative backward; do
  gunzip -kf .device/tests/$test.gz && chmod +x .device/tests/$test
  timeout 200 .device/tests/$test --test-threads=1 --include-ignored > $OUT/$test.log 2>&1
  grep -E "test result|panicked|FAILED" $OUT/$test.log | head -5
done
t
B=".device/moba --api vulkan bench --heads 16 --head-dim 128 --no-dense --kernel cooperative --out $OUT/moba.jsonl"
timeout 150 $B --seq-lens 32768 --block-size 512 --top-k 3 --runs 5 --backward >> $OUT/bench.log 2>&1; echo "32K: $?"
timeout 200 $B --seq-lens 524288 --block-size 4096 --top-k 12 --runs 1 >> $OUT/bench.log 2>&1; echo "512K: $?"
t
CFGS=32768:512:3,524288:4096:12 OUT=$OUT timeout 200 python3 .device/peers_torch.py > $OUT/peers.log 2>&1; t
python3 - $OUT/moba.jsonl $OUT/peers.log <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line); f = lambda xs: "/".join(f"{x:.2f}" for x in xs) if xs else "-"
    print(f"moba S={r['seq_len']}: fwd {r['moba_ms']:.2f} step {r.get('step_ms') or 0:.1f} | {f(r.get('stage_ms'))} | {f(r.get('backward_stage_ms'))} | err {r.get('o_error'):.1e}")
for line in open(sys.argv[2]):
    if line.startswith("{"):
        r = json.loads(line)
        print(f"peers S={r['S']}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items() if k.endswith("_ms")))
PY
tar czf $final/r.tgz -C /tmp r
