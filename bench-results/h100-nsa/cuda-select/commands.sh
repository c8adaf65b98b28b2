#!/usr/bin/env bash
# The later commands of this stop's device calls (after call16.sh and call17.sh), on the same
# warm H100 with the same binary (main + cuda-nsa-select, built for --features cuda):
export OUT; source scripts/device-env.sh
NSA="--attention nsa --heads 64 --kv-heads 4 --head-dim 128 --compress-block 32 --stride 16 --select-block 64 --top-n 16 --window 512"
# The 8K training step with cubecl's kernel profile (burn's ops only: the CUDA path's own
# kernels are launched through cudarc, outside it):
CUBECL_DEBUG_LOG=/tmp/prof.log CUBECL_DEBUG_OPTION=profile .device/moba bench $NSA --runs 1 \
    --cuda --dtype bf16 --backward --seq-lens 8192 --out /tmp/p.jsonl
# The forward at 16K, 32K and 64K:
.device/moba bench $NSA --runs 3 --cuda --dtype bf16 --seq-lens 16384,32768,65536 \
    --out $OUT/nsa-cuda-fwd.jsonl
