# The training step that dout-scaled/commands.sh and train-32k-wgpu/commands.sh both ran,
# written once; they source it and call it with their own time limit and output lines.
# `train_32k_wgpu LIMIT LABEL TAIL`: moba train --preset 32k on burn's wgpu backend (Vulkan),
# 40 steps on the text corpus, stopped after LIMIT seconds; prints "LABELexit <status> after
# <seconds> s" and the last TAIL lines of the log, and copies the run's summary.json and
# train.json into $OUT.
train_32k_wgpu() {
    start=$(date +%s)
    timeout "$1" .device/moba --api vulkan train --backend wgpu --preset 32k --steps 40 --valid-every 40 \
        --text .device/python-stdlib.txt --run /tmp/run-wgpu --lines > "$OUT/train-wgpu.log" 2>&1
    echo "${2}exit $? after $(($(date +%s) - start)) s"
    tail -"$3" "$OUT/train-wgpu.log"
    cp /tmp/run-wgpu/summary.json /tmp/run-wgpu/train.json "$OUT/" 2>/dev/null
}
