# moba train --preset 32k on burn's wgpu backend (Vulkan, the cooperative kernels forward and
# backward, this commit's shaders/wgsl), 40 steps on the text corpus.
source scripts/device-env.sh
for deb in .gl/*.deb; do dpkg -x "$deb" / 2>/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export MOBA_WGSL_DIR=$PWD/shaders/wgsl
start=$(date +%s)
timeout 330 .device/moba --api vulkan train --backend wgpu --preset 32k --steps 40 --valid-every 40 \
    --text .device/python-stdlib.txt --run /tmp/run-wgpu --lines > "$OUT/train-wgpu.log" 2>&1
echo "exit $? after $(($(date +%s) - start)) s"
tail -5 "$OUT/train-wgpu.log"
cp /tmp/run-wgpu/summary.json /tmp/run-wgpu/train.json "$OUT/" 2>/dev/null
cat "$OUT/summary.json" 2>/dev/null | head -40
