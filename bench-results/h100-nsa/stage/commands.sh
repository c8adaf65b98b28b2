#!/usr/bin/env bash
# Issue 24: NSA (paper sizes, 64 query / 4 kv heads) on Vulkan with this commit's kernels:
# the cooperative kernels built in, the top-k kernels of this commit (inline again, with the
# shared chunk constant) through MOBA_WGSL_DIR; SDPA at 64 heads of call 4 is the peer.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
source scripts/device-env.sh
NSA="--attention nsa --heads 64 --kv-heads 4 --head-dim 128 --compress-block 32 --stride 16 --select-block 64 --top-n 16 --window 512 --backward --runs 3"
MOBA_WGSL_DIR=.device/variants/final-select timeout 240 .device/moba --api vulkan bench $NSA --seq-lens 8192,16384,32768 --out /tmp/nsa.jsonl 2>&1 | tail -4
cp /tmp/nsa.jsonl $OUT/nsa.jsonl
