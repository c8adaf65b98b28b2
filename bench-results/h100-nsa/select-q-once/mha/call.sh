#!/usr/bin/env bash
# Session 51's sixth call (issue 24):
# 1. the NSA CUDA tests: nsa_select spreads a small group's m-tiles over its warps;
# 2. the 16 query / 16 kv heads setting (groups of 1): the forward at 128K with the third
#    call's binary and this one, the step at 32K and 64K with this one; SDPA (16 heads).
# Carry .gl, .device/s10, .device/cubecl-cache.tgz.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
xz -dc .device/s10/moba.xz > .device/moba && chmod +x .device/moba
xz -dc .device/s10/moba-old.xz > /tmp/moba-old && chmod +x /tmp/moba-old
xz -dc .device/s10/cuda-tests.xz > /tmp/cuda-tests && chmod +x /tmp/cuda-tests
source scripts/device-env.sh
export MOBA_CACHE_DIR=$PWD/.device/cubecl-cache
step() { echo "=== $* ($(date +%T))"; }
step nsa cuda tests
timeout 200 /tmp/cuda-tests --test-threads 1 --nocapture nsa_ > $OUT/cuda-nsa-tests.log 2>&1; echo "rc $?"
grep -E "FAIL|test result|panicked" $OUT/cuda-nsa-tests.log | cut -c1-200 | head; grep -c PASS $OUT/cuda-nsa-tests.log
MHA="--attention nsa --heads 16 --kv-heads 16 --head-dim 128 --compress-block 32 --stride 16 --select-block 64 --top-n 16 --window 512"
step 16/16 forward 128K, before and after
timeout 100 /tmp/moba-old bench $MHA --runs 2 --cuda --dtype bf16 --seq-lens 131072 --out $OUT/mha-before.jsonl 2>&1 | grep "^| cuda" | cut -c1-300
timeout 100 .device/moba bench $MHA --runs 2 --cuda --dtype bf16 --seq-lens 131072 --out $OUT/mha.jsonl 2>&1 | grep "^| cuda" | cut -c1-300
step 16/16 step 32K and 64K
timeout 150 .device/moba bench $MHA --runs 2 --cuda --dtype bf16 --backward --seq-lens 32768,65536 --out $OUT/mha.jsonl 2>&1 | grep "^| cuda" | cut -c1-300
step sdpa 16 heads
timeout 100 python3 - <<'PY' 2>&1 | tee $OUT/sdpa-h16.log
import torch, torch.nn.functional as F, json
def timeit(fn, reps=3, warm=1):
    for _ in range(warm): fn()
    torch.cuda.synchronize(); ts = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True); b = torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); torch.cuda.synchronize(); ts.append(a.elapsed_time(b))
    return sorted(ts)[len(ts) // 2]
for S in (32768, 65536, 131072):
    q, k, v = (torch.randn(1, 16, S, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    do = torch.randn_like(q)
    fwd = timeit(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
    def step():
        F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(do)
    print(json.dumps(dict(S=S, H=16, D=128, sdpa_ms=fwd, sdpa_fwdbwd_ms=timeit(step), device=torch.cuda.get_device_name())), flush=True)
    del q, k, v, do; torch.cuda.empty_cache()
PY
