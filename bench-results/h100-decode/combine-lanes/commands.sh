# One call on the lent H100 (driver 580.159.04), commit 38212a1 (the combine in 16 lanes,
# the CUDA scratch in one allocation): the CUDA grid (7 decode cases among 15), then
# scripts/device-decode.sh twice, PyTorch SDPA decode in the same call each time.
.device/tests/cuda --test-threads=1 --nocapture > cuda-tests.log
OUT=gqa scripts/device-decode.sh                       # H 16 over 2 kv heads, batch 1 and 16
OUT=mha KV_HEADS=16 BATCHES=1 scripts/device-decode.sh   # H 16 over 16 kv heads, batch 1
