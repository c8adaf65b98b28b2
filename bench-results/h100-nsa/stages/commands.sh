#!/usr/bin/env bash
# Issue 23: the decoders' test (the CUDA decoder now tiles prompts by default), CUDA
# generation of a short and a 16K prompt, training bytes/s on one long sequence against
# packed documents (rows moved by a gather both ways). Issue 24: NSA's forward stages alone.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
source scripts/device-env.sh
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
gunzip -kf .device/tests/decoder.gz; chmod +x .device/tests/decoder
MOBA_TEST_SKIP_GL=1 timeout 150 .device/tests/decoder --test-threads 1 --nocapture > $OUT/decoder-tests.log 2>&1; echo "decoder tests rc $?"
grep -E "test result|FAILED|panicked" $OUT/decoder-tests.log | head
mkdir -p $OUT/generate
STEPS=1 BACKENDS="cuda" OUT=$OUT/generate timeout 150 scripts/device-generate.sh
mkdir -p /tmp/docs && split -b 6000 -d -a 5 .device/python-stdlib.txt /tmp/docs/doc-
for corpus in .device/python-stdlib.txt /tmp/docs; do
    name=$(basename $corpus)
    timeout 100 .device/moba --api vulkan train --backend wgpu --preset 8k --text $corpus \
        --steps 40 --batch-size 1 --run /tmp/run-$name > $OUT/train-$name.log 2>&1
    echo "train $name rc $?: $(tail -1 $OUT/train-$name.log)"
    cp /tmp/run-$name/experiment.log $OUT/experiment-$name.log
done
NSA="--attention nsa --heads 64 --kv-heads 4 --head-dim 128 --compress-block 32 --stride 16 --select-block 64 --top-n 16 --window 512 --runs 3"
timeout 150 .device/moba --api vulkan bench $NSA --seq-lens 8192,32768 --out $OUT/nsa.jsonl 2>&1 | tail -5
cd $OUT && tar czf logs.tgz *.log generate/*.log generate/*.txt && rm -f *.log generate/*.txt generate/*.log
