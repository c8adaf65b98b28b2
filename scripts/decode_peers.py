"""PyTorch's dense decode beside `moba bench --decode`: one query per sequence attending
every cached key through `scaled_dot_product_attention` (bf16, GQA without copying the
cache), timed with CUDA events. One JSON line per setting:
{"cache", "batch", "Hq", "Hkv", "D", "sdpa_ms", "tokens_per_s"}.

Settings: DECODE_CACHES (comma-separated cache lengths), DECODE_BATCHES, DECODE_HEADS
(query heads), DECODE_KV_HEADS, DECODE_HEAD_DIM, DECODE_RUNS (median of this many).
"""

import json
import os
import statistics

import torch
import torch.nn.functional as F


def setting(name, default):
    return [int(x) for x in os.environ.get(name, default).split(",")]


def median_ms(run, runs):
    run()  # warm-up
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main():
    caches = setting("DECODE_CACHES", "8192,131072,1048576")
    batches = setting("DECODE_BATCHES", "1,16")
    (heads,) = setting("DECODE_HEADS", "16")
    (kv_heads,) = setting("DECODE_KV_HEADS", "2")
    (head_dim,) = setting("DECODE_HEAD_DIM", "128")
    (runs,) = setting("DECODE_RUNS", "10")
    for cache in caches:
        for batch in batches:
            dtype, device = torch.bfloat16, "cuda"
            try:
                q = torch.randn(batch, heads, 1, head_dim, dtype=dtype, device=device)
                k = torch.randn(batch, kv_heads, cache, head_dim, dtype=dtype, device=device)
                v = torch.randn_like(k)
                # The query is the newest position: it sees every cached key (no mask).
                ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), runs)
            except torch.OutOfMemoryError:
                print(json.dumps({"cache": cache, "batch": batch, "error": "out of memory"}), flush=True)
                continue
            finally:
                q = k = v = None
                torch.cuda.empty_cache()
            print(json.dumps({
                "cache": cache, "batch": batch, "Hq": heads, "Hkv": kv_heads, "D": head_dim,
                "sdpa_ms": round(ms, 4), "tokens_per_s": round(batch / ms * 1e3),
            }), flush=True)


if __name__ == "__main__":
    main()
