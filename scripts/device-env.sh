# Sourced by the scripts/device-*.sh that run the CUDA build on the lent GPU: unpacks the
# carried binary and corpus (once: another of these scripts may be running the binary in
# the background), points cudarc at the CUDA toolkit, and prints the GPU.
# cubecl autotunes burn's matmuls on first use: at its default level that took 4 minutes of
# a 5-minute sizing run on an H200, so the minimal level is asked for.
# burn-cuda's first step also compiles its fused kernels with NVRTC (about 3 minutes). The
# PTX and the autotune results are kept in .device/cubecl-cache (cubecl.toml, written here
# and copied into any other working directory a script uses) and packed into
# $OUT/cubecl-cache.tgz on exit: put at .device/cubecl-cache.tgz and carried, it is unpacked
# here and spares the next call that time (packed: the language-model caches grow to
# hundreds of MB). The scripts that source this file set OUT first; it is made here.
# Defined here for the scripts: repo, the repository root (for commands run in working
# directories of their own), and gpus, the number of GPUs (for runs spread over them).
mkdir -p "$OUT"
repo=$PWD
gpus=$(nvidia-smi -L | wc -l)
[ -x .device/moba ] || { gunzip -kf .device/moba.gz && chmod +x .device/moba; }
if [ -f .device/python-stdlib.txt.gz ] && [ ! -f .device/python-stdlib.txt ]; then
    gunzip -kf .device/python-stdlib.txt.gz
fi
export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
export LD_LIBRARY_PATH="$CUDA_PATH/lib64:${LD_LIBRARY_PATH:-}"
export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-minimal}
cubecl_cache=$PWD/.device/cubecl-cache
if [ -f .device/cubecl-cache.tgz ] && [ ! -d "$cubecl_cache" ]; then
    tar xzf .device/cubecl-cache.tgz -C .device
fi
mkdir -p "$cubecl_cache"
printf '[compilation]\ncache = { file = "%s" }\n\n[autotune]\ncache = { file = "%s" }\n' \
    "$cubecl_cache" "$cubecl_cache" > cubecl.toml
trap 'tar czf "$OUT/cubecl-cache.tgz" -C .device cubecl-cache' EXIT
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
