#!/usr/bin/env bash
# Packed documents against one long sequence (issue 23): 40 steps each, then 5 profiled
# steps each (cubecl's per-kernel log).
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
source scripts/device-env.sh
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
mkdir -p /tmp/docs && split -b 6000 -d -a 5 .device/python-stdlib.txt /tmp/docs/doc-
for corpus in .device/python-stdlib.txt /tmp/docs; do
    name=$(basename $corpus)
    timeout 100 .device/moba --api vulkan train --backend wgpu --preset 8k --text $corpus \
        --steps 40 --batch-size 1 --run /tmp/run-$name > $OUT/train-$name.log 2>&1
    echo "train $name rc $?: $(tail -1 $OUT/train-$name.log)"
    CUBECL_DEBUG_LOG=$OUT/profile-$name.log CUBECL_DEBUG_OPTION=profile timeout 100 .device/moba --api vulkan train --backend wgpu --preset 8k --text $corpus \
        --steps 5 --batch-size 1 --run /tmp/prof-$name > $OUT/trainp-$name.log 2>&1
    echo "profiled $name rc $?: $(tail -1 $OUT/trainp-$name.log)"
done
cd $OUT && tar czf logs.tgz *.log /tmp/run-*/ 2>/dev/null; rm -f *.log; ls -la
