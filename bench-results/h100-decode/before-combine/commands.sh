# One call on the lent H100 (driver 580.159.04), commit 0e5d6e4 (the first NVRTC compile of
# shaders/cuda/decode.cu): the CUDA grid, then scripts/device-decode.sh (GQA 8: H 16 over 2
# kv heads, D 128; CUDA bf16 and Vulkan f32; PyTorch SDPA decode in the same call).
.device/tests/cuda --test-threads=1 --nocapture > cuda-tests.log
OUT=. scripts/device-decode.sh
