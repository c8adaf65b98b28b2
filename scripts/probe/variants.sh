#!/usr/bin/env bash
# Kernel A/B on the lent GPU, without the Rust build: times attention_pass and gate_topk of
# several versions of shaders/cuda side by side (scripts/probe/harness.cu: one attention
# slot at 128K, non-causal, every 128-row tile against a whole 4096-key block; the causal
# gate at 512K rows per head; H 16, D 128, bf16, sm_90a).
# Usage on the device: bash scripts/probe/variants.sh DIR, where DIR holds one folder per
# version (each a copy of common.cuh, attention.cu and gate.cu with an edit), carried in
# .device (for example .device/probe/kern). Prints per version: ptxas registers and spills
# of attention_pass and gate_topk, ms and TFLOP/s of the attention slot (4·D FLOP per pair) with a
# checksum of its output, ms of the gate with a checksum of its selection. Checksums must
# agree between versions that compute the same thing.
set -u
dir=${1:?a folder of kernel versions}
harness=$(cd "$(dirname "$0")" && pwd)/harness.cu
NVCC=/usr/local/cuda/bin/nvcc
for version in "$dir"/*/; do
    name=$(basename "$version")
    { printf '#define HEAD_DIM 128\n#define ELEM_KIND 2\n#define TOP_K 12\n#define WGMMA 1\n'
      cat "$version/common.cuh" "$version/attention.cu" "$version/gate.cu"; } > "/tmp/$name.cuh"
    $NVCC -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a -Xptxas -v \
        -DVARIANT="\"/tmp/$name.cuh\"" "$harness" -o "/tmp/probe-$name" 2> "/tmp/$name.ptxas" &
done
wait
# Two rounds over the versions, so that a version timed late (on a hotter GPU) shows it.
for round in 1 2; do
    for version in "$dir"/*/; do
        name=$(basename "$version")
        regs=""
        for kernel in attention_pass gate_topk; do
            regs+="$kernel $(grep -A2 "$kernel" "/tmp/$name.ptxas" |
                grep -oE "[0-9]+ bytes spill stores|Used [0-9]+ registers" | tr '\n' ' ')"
        done
        if [ -x "/tmp/probe-$name" ]; then
            echo "$name: $regs| $("/tmp/probe-$name" | tr '\n' ' ')"
        elif [ $round = 1 ]; then
            echo "$name: build failed"
            grep -m3 error "/tmp/$name.ptxas"
        fi
    done
done
