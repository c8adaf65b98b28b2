# moba train --preset 32k on burn's wgpu backend (Vulkan, the cooperative kernels forward and
# backward, this commit's shaders/wgsl), 40 steps on the text corpus.
source scripts/device-env.sh
for deb in .gl/*.deb; do dpkg -x "$deb" / 2>/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export MOBA_WGSL_DIR=$PWD/shaders/wgsl
source bench-results/h200-vulkan-coop/train-wgpu.sh
train_32k_wgpu 330 "" 5
cat "$OUT/summary.json" 2>/dev/null | head -40
