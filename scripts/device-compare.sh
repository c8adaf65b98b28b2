#!/usr/bin/env bash
# One call on the lent GPU comparing two builds of moba: the CUDA correctness grid and the
# Vulkan checks of the new build, then `moba bench` (CUDA bf16 and Vulkan cooperative) of
# each build alternately (before, after, before, after) at the same shapes, and a table of
# the medians. Stage the
# new build with scripts/stage-device.sh and the old one with
#   scripts/stage-before.sh <commit>
# then run from the repository root on the device with `.device` and `.gl` carried.
# Environment: OUT (default results/device-compare), ROUNDS (default 2).
set -u
OUT=${OUT:-results/device-compare}
ROUNDS=${ROUNDS:-2}
for packed in .device/*.gz .device/tests/*.gz .device/before/*.gz; do
    [ -f "$packed" ] && gunzip -kf "$packed"
done
chmod +x .device/moba .device/tests/* .device/before/moba
source scripts/device-env.sh
# The Vulkan loader is not installed on the device machine: unpack the carried debs.
for deb in .gl/*.deb; do dpkg -x "$deb" / 2>/dev/null; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json

# The lent machines' EGL cannot open the GPU: the wgpu grids run on Vulkan alone.
export MOBA_TEST_SKIP_GL=${MOBA_TEST_SKIP_GL:-1}
if [ -x .device/tests/cuda ]; then
    echo "== CUDA correctness grid (new build)"
    .device/tests/cuda --test-threads=1 > "$OUT/cuda-tests.log" 2>&1
    grep -E '^test |test result|panicked' "$OUT/cuda-tests.log"
fi
echo "== Vulkan: the wgpu tests on the GPU (new build)"
for test in .device/tests/*; do
    case $test in *cuda*|*.gz) continue ;; esac
    "$test" --test-threads=1 --include-ignored 2>&1 | grep -E "^test |test result|panicked" | tee -a "$OUT/vulkan-tests.log"
done
for kernel in cooperative portable; do
    .device/moba --api vulkan demo --kernel "$kernel" --no-dense 2>&1 \
        | grep -E "kernel|check|moba " | tee -a "$OUT/vulkan-demo.log"
done

# Each run: the arguments of one `moba` benchmark (H 16, D 128): the CUDA path in bf16, then
# the Vulkan path with the cooperative kernels.
runs=(
    "bench --cuda --dtype bf16 --seq-lens 32768 --block-size 512 --top-k 3 --runs 5 --backward"
    "bench --cuda --dtype bf16 --seq-lens 131072 --block-size 128 --top-k 8 --runs 5 --backward"
    "bench --cuda --dtype bf16 --seq-lens 524288 --block-size 4096 --top-k 12 --runs 3"
    "--api vulkan bench --kernel cooperative --seq-lens 32768 --block-size 512 --top-k 3 --runs 3 --backward"
)
for round in $(seq "$ROUNDS"); do
    for build in before after; do
        binary=.device/moba
        [ "$build" = before ] && binary=.device/before/moba
        for run in "${runs[@]}"; do
            # shellcheck disable=SC2086
            timeout 300 "$binary" $run --heads 16 --head-dim 128 --no-dense \
                --out "$OUT/$build.jsonl" 2>> "$OUT/$build.log" \
                || { echo "$build failed: $run"; tail -3 "$OUT/$build.log"; }
        done
    done
done

echo "== medians over $ROUNDS rounds (ms; error of sampled rows)"
python3 - "$OUT" <<'PY'
import json, statistics, sys
out = sys.argv[1]
rows = {}
for build in ("before", "after"):
    for line in open(f"{out}/{build}.jsonl"):
        r = json.loads(line)
        key = (r["backend"], r["seq_len"], r["block_size"], r["top_k"])
        entry = rows.setdefault(key, {}).setdefault(build, {"fwd": [], "step": [], "err": []})
        entry["fwd"].append(r["moba_ms"])
        if r.get("step_ms"):
            entry["step"].append(r["step_ms"])
        entry["err"].append(r["o_error"])
med = lambda xs: f"{statistics.median(xs):.2f}" if xs else "-"
print("| backend | S | block | top-k | fwd before | fwd after | step before | step after | o error before | o error after |")
print("|---|---|---|---|---|---|---|---|---|---|")
for (backend, s, b, k), e in sorted(rows.items()):
    bf, af = e.get("before", {}), e.get("after", {})
    print(f"| {backend} | {s} | {b} | {k} | {med(bf.get('fwd', []))} | {med(af.get('fwd', []))} | "
          f"{med(bf.get('step', []))} | {med(af.get('step', []))} | "
          f"{max(bf.get('err', [0])):.1e} | {max(af.get('err', [0])):.1e} |")
PY
