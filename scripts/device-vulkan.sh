#!/usr/bin/env bash
# One call on the lent NVIDIA GPU for the WGSL path through Vulkan: the wgpu test binaries
# staged in .device/tests (the cooperative-matrix and backward grids) on the GPU, then
# `moba bench --api vulkan` with each attention kernel (forward and training step at TRAIN_S,
# block 512, top-3; the cooperative forward at LONG_S, block 4096, top-12; H 16, D 128), and a table of the
# forward and backward stage times. Stage first (scripts/stage-device.sh), then run from the
# repository root on the device with `.gl` and `.device` carried. For the peers beside CUDA
# and PyTorch, run scripts/device-sweep.sh.
# Kernel experiments: every folder under VARIANTS (default .device/wgsl-variants) is a set of
# WGSL files that replace the built-in ones (MOBA_WGSL_DIR); each is timed like the
# cooperative kernel (a folder named portable-* or subgroup-*: like that kernel) at TRAIN_S
# (forward and step), with VARIANT_LONG=1 the cooperative ones also at LONG_S (forward), and
# gets rows of its own.
# Environment: OUT (default results/device-vulkan), TRAIN_S (default 32768), LONG_S (default
# 524288; empty skips it), KERNELS (default "cooperative portable"), VARIANTS, VARIANT_LONG.
set -u
OUT=${OUT:-results/device-vulkan}
TRAIN_S=${TRAIN_S:-32768}
LONG_S=${LONG_S-524288}
KERNELS=${KERNELS-cooperative portable}
VARIANTS=${VARIANTS:-.device/wgsl-variants}
VARIANT_LONG=${VARIANT_LONG:-}
for packed in .device/tests/*.gz; do gunzip -kf "$packed"; done
chmod +x .device/tests/*
source scripts/device-env.sh
# The Vulkan loader is not installed on the device machine: unpack the carried debs.
for deb in .gl/*.deb; do dpkg -x "$deb" / 2>/dev/null; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
# The lent machines' EGL cannot open the GPU: the wgpu grids run on Vulkan alone.
export MOBA_TEST_SKIP_GL=1

echo "== the wgpu tests on the GPU"
for test in .device/tests/*; do
    case $test in *cuda*|*.gz) continue ;; esac
    timeout 300 "$test" --test-threads=1 --nocapture --include-ignored > "$OUT/$(basename "$test").log" 2>&1
    grep -E "^test |test result|panicked|error|bound|DIFFER" "$OUT/$(basename "$test").log" | head -40
done

records="$OUT/moba.jsonl"
for kernel in $KERNELS; do
    echo "== moba bench, $kernel kernel"
    timeout 240 .device/moba --api vulkan bench --kernel "$kernel" --heads 16 --head-dim 128 \
        --seq-lens "$TRAIN_S" --block-size 512 --top-k 3 --runs 3 --backward --no-dense \
        --out "$records" >> "$OUT/bench.log" 2>&1 || { echo "failed"; tail -5 "$OUT/bench.log"; }
    # The portable kernel takes minutes at LONG_S.
    if [ -n "$LONG_S" ] && [ "$kernel" = cooperative ]; then
        timeout 240 .device/moba --api vulkan bench --kernel "$kernel" --heads 16 --head-dim 128 \
            --seq-lens "$LONG_S" --block-size 4096 --top-k 12 --runs 1 --no-dense \
            --out "$records" >> "$OUT/bench.log" 2>&1 || { echo "failed"; tail -5 "$OUT/bench.log"; }
    fi
done
for variant in "$VARIANTS"/*/; do
    [ -d "$variant" ] || continue
    name=$(basename "$variant")
    # A variant named portable-* or subgroup-* replaces those kernels; every other, cooperative ones.
    kernel=cooperative
    case $name in portable*) kernel=portable ;; subgroup*) kernel=subgroup ;; esac
    echo "== variant $name ($kernel): $(ls "$variant" | tr '\n' ' ')"
    MOBA_WGSL_DIR=$variant timeout 120 .device/moba --api vulkan bench --kernel "$kernel" \
        --heads 16 --head-dim 128 --seq-lens "$TRAIN_S" --block-size 512 --top-k 3 --runs 3 \
        --backward --no-dense --out "$OUT/variant-$name.jsonl" >> "$OUT/bench.log" 2>&1 \
        || echo "   (check failed or error: see bench.log)"
    if [ -n "$VARIANT_LONG" ] && [ -n "$LONG_S" ] && [ "$kernel" = cooperative ]; then
        MOBA_WGSL_DIR=$variant timeout 240 .device/moba --api vulkan bench --kernel cooperative \
            --heads 16 --head-dim 128 --seq-lens "$LONG_S" --block-size 4096 --top-k 12 --runs 1 \
            --no-dense --out "$OUT/variant-$name.jsonl" >> "$OUT/bench.log" 2>&1 \
            || echo "   (check failed or error: see bench.log)"
    fi
done
python3 - "$records" "$OUT"/variant-*.jsonl <<'PY'
import json, os, sys
print("| kernel | S | block | top-k | fwd ms | step ms | fwd stages ms | bwd stages ms (rows, inversion, dq, dk dv) | o error | bound |")
print("|---|---|---|---|---|---|---|---|---|---|")
for path in sys.argv[1:]:
  if not os.path.exists(path):
    continue
  for line in open(path):
    r = json.loads(line)
    if "variant-" in path:
        r["kernel"] = os.path.basename(path)[len("variant-"):-len(".jsonl")]
    fmt = lambda xs: " / ".join(f"{x:.2f}" for x in xs) if xs else "-"
    step = f"{r['step_ms']:.1f}" if r.get("step_ms") else "-"
    error = f"{r['o_error']:.1e}" if r.get("o_error") is not None else "-"
    print(f"| {r['kernel']} | {r['seq_len']} | {r['block_size']} | {r['top_k']} | {r['moba_ms']:.2f} | {step} | "
          f"{fmt(r.get('stage_ms'))} | {fmt(r.get('backward_stage_ms'))} | {error} | {r.get('o_bound') or 0:.1e} |")
PY
