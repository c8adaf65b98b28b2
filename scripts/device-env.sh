# Sourced by the scripts/device-*.sh that run the CUDA build on the lent GPU: unpacks the
# carried binary and corpus (once: another of these scripts may be running the binary in
# the background), points cudarc at the CUDA toolkit, and prints the GPU.
# cubecl autotunes burn's matmuls on first use: at its default level that took 4 minutes of
# a 5-minute sizing run on an H200, so the minimal level is asked for.
[ -x .device/moba ] || { gunzip -kf .device/moba.gz && chmod +x .device/moba; }
if [ -f .device/python-stdlib.txt.gz ] && [ ! -f .device/python-stdlib.txt ]; then
    gunzip -kf .device/python-stdlib.txt.gz
fi
export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
export LD_LIBRARY_PATH="$CUDA_PATH/lib64:${LD_LIBRARY_PATH:-}"
export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-minimal}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
