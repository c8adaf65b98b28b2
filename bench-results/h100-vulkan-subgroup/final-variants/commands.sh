# The next call on the same warm H100, same binary: the `*-final` variants (key loops rolled;
# dk/dv skipping only the threads past the block's keys, behind a branch) with
# KERNELS= LONG_S= scripts/device-vulkan.sh. The committed dk/dv keeps that branch only
# where a key is one thread (`is_key || LANES > 1`): with lanes the branch made dk/dv
# 60.5 ms against 44.5 ms without it (all-passes/moba.jsonl).
