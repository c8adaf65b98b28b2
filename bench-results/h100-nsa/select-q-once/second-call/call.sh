#!/usr/bin/env bash
# Session 51's second call (issue 24), most important first:
# 1. the NSA CUDA tests: the row bound relative to each row's |o|; nsa_select rewritten
#    (every head of a query in one tensor-core pass, the q tile read once); nsa_selected at
#    two thread blocks per SM;
# 2. NSA's forward and training step at 8K-64K, forward at 128K (bf16, Triton setting);
# 3. SDPA (64 heads) at 64K and 128K beside it;
# 4. ncu of the two selection kernels at 64K.
# Carry .gl, .device/s6, .device/cubecl-cache.tgz.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
xz -dc .device/s6/moba.xz > .device/moba && chmod +x .device/moba
xz -dc .device/s6/cuda-tests.xz > /tmp/cuda-tests && chmod +x /tmp/cuda-tests
source scripts/device-env.sh
export MOBA_CACHE_DIR=$PWD/.device/cubecl-cache
export PYTHONUNBUFFERED=1
step() { echo "=== $* ($(date +%T))"; }
step nsa cuda tests
timeout 200 /tmp/cuda-tests --test-threads 1 --nocapture nsa_ > $OUT/cuda-nsa-tests.log 2>&1; echo "rc $?"
grep -E "^NSA|test result|panicked" $OUT/cuda-nsa-tests.log | cut -c1-150 | head -40
NSA="--attention nsa --heads 64 --kv-heads 4 --head-dim 128 --compress-block 32 --stride 16 --select-block 64 --top-n 16 --window 512"
step nsa forward and step 8K-64K
timeout 200 .device/moba bench $NSA --runs 2 --cuda --dtype bf16 --backward --seq-lens 8192,32768,65536 --out $OUT/nsa.jsonl 2>&1 | grep "^| cuda" | cut -c1-300
step nsa forward 128K
timeout 100 .device/moba bench $NSA --runs 2 --cuda --dtype bf16 --seq-lens 131072 --out $OUT/nsa.jsonl 2>&1 | grep "^| cuda" | cut -c1-300
step sdpa 64 heads
timeout 150 python3 - <<'PY' 2>&1 | tee $OUT/sdpa-h64.log
import torch, torch.nn.functional as F, json
def timeit(fn, reps=5, warm=2):
    for _ in range(warm): fn()
    torch.cuda.synchronize(); ts = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True); b = torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); torch.cuda.synchronize(); ts.append(a.elapsed_time(b))
    return sorted(ts)[len(ts) // 2]
for S in (8192, 32768, 65536, 131072):
    q, k, v = (torch.randn(1, 64, S, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    do = torch.randn_like(q)
    fwd = timeit(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), reps=3)
    def step():
        F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(do)
    print(json.dumps(dict(S=S, H=64, D=128, sdpa_ms=fwd, sdpa_fwdbwd_ms=timeit(step, reps=3, warm=1), device=torch.cuda.get_device_name())), flush=True)
    del q, k, v, do; torch.cuda.empty_cache()
PY
step ncu nsa_select and nsa_selected 64K
timeout 150 /opt/nvidia/nsight-compute/2025.3.1/ncu --kernel-name regex:nsa_select --launch-skip 2 --launch-count 2 \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
  .device/moba bench $NSA --runs 1 --cuda --dtype bf16 --seq-lens 65536 > $OUT/ncu-select.log 2>&1; echo "rc $?"
grep -E "^  nsa_select|Duration|Memory Throughput|DRAM Throughput|Compute \(SM\)|Achieved Occupancy|Registers Per|Local" $OUT/ncu-select.log | head -30
