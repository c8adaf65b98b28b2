# The cooperative WGSL kernels (this commit's shaders/wgsl through MOBA_WGSL_DIR), the
# portable ones, the CUDA path and PyTorch's peers in one call.
source scripts/device-env.sh
for deb in .gl/*.deb; do dpkg -x "$deb" / 2>/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export MOBA_WGSL_DIR=$PWD/shaders/wgsl
records=$OUT/moba.jsonl
shape=(--heads 16 --head-dim 128 --no-dense --out "$records")
run() { echo "== moba $*"; start=$(date +%s); timeout 200 .device/moba "$@" "${shape[@]}" >> "$OUT/bench.log" 2>&1; echo "   exit $? after $(($(date +%s) - start)) s"; }
run --api vulkan bench --kernel cooperative --seq-lens 32768 --block-size 512 --top-k 3 --runs 5 --backward
run --api vulkan bench --kernel cooperative --seq-lens 524288 --block-size 4096 --top-k 12 --runs 1
run --api vulkan bench --kernel portable --seq-lens 32768 --block-size 512 --top-k 3 --runs 3 --backward
run bench --cuda --dtype bf16 --seq-lens 32768 --block-size 512 --top-k 3 --runs 5 --backward
run bench --cuda --dtype bf16 --seq-lens 524288 --block-size 4096 --top-k 12 --runs 3
echo "== PyTorch peers"
start=$(date +%s)
CFGS=32768:512:3,524288:4096:12 OUT=$OUT PYTHONUNBUFFERED=1 timeout 300 python3 .device/peers_torch.py > "$OUT/peers.log" 2>&1
echo "   exit $? after $(($(date +%s) - start)) s"
.device/moba bench report "$records" --peers "$OUT/peers.log" --plots "$OUT" > "$OUT/report.md" 2>&1
python3 - "$records" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    f = lambda xs: [round(x, 2) for x in xs] if xs else None
    print(r["backend"], r["kernel"], r["seq_len"], round(r["moba_ms"], 2), r.get("step_ms") and round(r["step_ms"], 1), f(r.get("stage_ms")), f(r.get("backward_stage_ms")), r["passed"])
PY
grep -E '^\{' "$OUT/peers.log"
