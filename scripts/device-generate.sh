#!/usr/bin/env bash
# One call on the lent NVIDIA GPU measuring generation (issue 23): trains a `--preset 32k`
# model for a few steps through Vulkan (the weights do not change the speed), then runs
# `moba generate` twice on each backend (wgpu through Vulkan: the GPU decoder, then burn's
# ops with `--decode burn`; then CUDA: its decoder, then burn's ops): the first run pays
# kernel compilation, the second starts from the caches (NVRTC's and cubecl's, kept in
# .device/cubecl-cache by scripts/device-env.sh).
# Also one prefill of a long prompt.
# Stage the binary and corpus with scripts/stage-device.sh, then run from the repository
# root on the device with `.device` and `.gl` carried.
# Environment: OUT (default results/device-generate), STEPS (default 4), MAX_NEW (512),
# PROMPT_BYTES (the long prompt, default 16384), BACKENDS (default "wgpu wgpu-burn cuda
# cuda-burn"),
# RUN (a trained run to generate from instead of training one), PROFILE=1
# (then one more run of 32 bytes per backend logs every burn (cubecl) kernel it launches,
# with its time, to $OUT/BACKEND-profile.log: what a decode step costs besides MoBA's own;
# the `wgpu` entry, the GPU decoder, launches none of burn's).
set -u
OUT=${OUT:-results/device-generate}
STEPS=${STEPS:-4}
MAX_NEW=${MAX_NEW:-512}
source scripts/device-env.sh
for deb in .gl/*.deb; do dpkg -x "$deb" / 2>/dev/null; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
run=${RUN:-/tmp/moba-generate}
if [ -z "${RUN:-}" ]; then
    rm -rf "$run"
    echo "== moba train --preset 32k: $STEPS steps of one sequence (Vulkan)"
    timeout 240 .device/moba --api vulkan train --backend wgpu --preset 32k \
        --text .device/python-stdlib.txt --steps "$STEPS" --batch-size 1 --run "$run" \
        > "$OUT/train.log" 2>&1 || { echo "train failed"; tail -5 "$OUT/train.log"; exit 1; }
    tail -1 "$OUT/train.log"
fi
head -c "${PROMPT_BYTES:-16384}" .device/python-stdlib.txt > "$OUT/long-prompt.txt"

# flags BACKEND: the `moba generate` flags of a BACKENDS entry.
flags() {
    case $1 in
        wgpu-burn) echo "--backend wgpu --decode burn" ;;
        cuda-burn) echo "--backend cuda --decode burn" ;;
        *) echo "--backend $1" ;;
    esac
}
# generate BACKEND LABEL BYTES [moba generate flags]: one run of BYTES new bytes, its
# summary line and wall time.
generate() {
    local backend=$1 label=$2 bytes=$3
    shift 3
    local start
    start=$(date +%s%N)
    # shellcheck disable=SC2046 # the flags are words
    timeout 240 .device/moba --api vulkan generate $(flags "$backend") --run "$run" \
        --max-new "$bytes" --seed 1 "$@" > "$OUT/$label.txt" 2> "$OUT/$label.log"
    local status=$?
    printf '%-22s exit %s, wall %s ms: %s\n' "$label" "$status" \
        "$((($(date +%s%N) - start) / 1000000))" "$(grep -E 'prefill|error|Error' "$OUT/$label.log" | tail -1)"
}
for backend in ${BACKENDS:-wgpu wgpu-burn cuda cuda-burn}; do
    generate "$backend" "$backend-first" "$MAX_NEW" --prompt 'def main():'
    generate "$backend" "$backend-cached" "$MAX_NEW" --prompt 'def main():'
    generate "$backend" "$backend-long-prompt" 64 --prompt-file "$OUT/long-prompt.txt"
done
if [ "${PROFILE:-0}" = 1 ]; then
    for backend in ${BACKENDS:-wgpu wgpu-burn cuda cuda-burn}; do
        CUBECL_DEBUG_LOG="$OUT/$backend-profile.log" CUBECL_DEBUG_OPTION=profile \
            generate "$backend" "$backend-profiled" 32 --prompt 'def main():'
    done
fi
