# The cooperative tests (dout scaling), the step with scaled dout, the CUDA path beside it,
# and moba train --preset 32k on burn's wgpu backend (cooperative forward and backward).
source scripts/device-env.sh
for deb in .gl/*.deb; do dpkg -x "$deb" / 2>/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export MOBA_TEST_SKIP_GL=1
gunzip -kf .device/tests/cooperative.gz; chmod +x .device/tests/cooperative
timeout 120 .device/tests/cooperative --test-threads=1 --nocapture > "$OUT/cooperative.log" 2>&1
grep -E "^test |test result|panicked|DIFFER|NOT|dq " "$OUT/cooperative.log" | cut -c1-220
records=$OUT/moba.jsonl
shape=(--heads 16 --head-dim 128 --no-dense --out "$records")
timeout 60 .device/moba --api vulkan bench --kernel cooperative --seq-lens 32768 --block-size 512 --top-k 3 --runs 5 --backward "${shape[@]}" > "$OUT/bench.log" 2>&1; echo "vulkan exit $?"
timeout 120 .device/moba bench --cuda --dtype bf16 --seq-lens 32768 --block-size 512 --top-k 3 --runs 5 --backward "${shape[@]}" >> "$OUT/bench.log" 2>&1; echo "cuda exit $?"
python3 - "$records" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    f = lambda xs: [round(x, 2) for x in xs] if xs else None
    print(r["backend"], r["kernel"], r["seq_len"], round(r["moba_ms"], 2), r.get("step_ms") and round(r["step_ms"], 2), f(r.get("stage_ms")), f(r.get("backward_stage_ms")), r["passed"])
PY
source bench-results/h200-vulkan-coop/train-wgpu.sh
train_32k_wgpu 150 "train " 2
