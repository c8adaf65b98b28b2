#!/usr/bin/env bash
# One call on the lent H200 (repository root, .device and .gl carried): `moba train --preset
# 32k`, 40 steps on the text corpus, on burn's wgpu backend through Vulkan (the cooperative
# WGSL kernels forward and backward) and on the CUDA backend, one after the other.
set -u
export OUT=${OUT:-results/unrolled-train}
source scripts/device-env.sh
for deb in .gl/*.deb; do dpkg -x "$deb" / 2>/dev/null; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
for backend in wgpu cuda; do
    start=$(date +%s)
    timeout "${LIMIT:-280}" .device/moba --api vulkan train --backend "$backend" --preset 32k \
        --steps 40 --valid-every 40 --text .device/python-stdlib.txt --run "/tmp/run-$backend" \
        --lines > "$OUT/train-$backend.txt" 2>&1
    echo "$backend: exit $? after $(($(date +%s) - start)) s"
    tail -3 "$OUT/train-$backend.txt"
    cp "/tmp/run-$backend/summary.json" "$OUT/summary-$backend.json" 2>/dev/null
    python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(sys.argv[2], round(s["tokens_per_second"]), "bytes/s")' \
        "$OUT/summary-$backend.json" "$backend" 2>/dev/null
done
