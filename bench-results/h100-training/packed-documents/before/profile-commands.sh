#!/usr/bin/env bash
# cubecl's per-kernel profile of 8 training steps: one long sequence against packed documents.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
source scripts/device-env.sh
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
mkdir -p /tmp/docs && split -b 6000 -d -a 5 .device/python-stdlib.txt /tmp/docs/doc-
for corpus in .device/python-stdlib.txt /tmp/docs; do
    name=$(basename $corpus)
    rm -rf /tmp/prof-$name
    CUBECL_DEBUG_LOG=/tmp/profile-$name.log CUBECL_DEBUG_OPTION=profile timeout 100 .device/moba --api vulkan train --backend wgpu --preset 8k --text $corpus \
        --steps 8 --batch-size 1 --run /tmp/prof-$name > /tmp/trainp-$name.log 2>&1
    echo "profiled $name rc $?: $(tail -1 /tmp/trainp-$name.log)"
    ls -la /tmp/profile-$name.log; head -c 1500 /tmp/profile-$name.log
    gzip -c /tmp/profile-$name.log > $OUT/profile-$name.log.gz
done
ls -la $OUT
