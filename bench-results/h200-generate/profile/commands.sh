# One call on the lent H200 (driver 580.159.04), binary of commit 8d3eb6d: where a decode
# step's time goes (issue 23). The model is the `--preset 32k` architecture (4 layers, d 256,
# block 2048, top-3) trained 1 step here on ndarray with `--seq-len 1024` (the weights do not
# change the speed): moba train --backend ndarray --preset 32k --seq-len 1024 --steps 1 ...
# Per backend: a warm-up run (compiles, fills cubecl's cache), 512 bytes timed, then 32 bytes
# with cubecl's kernel profiler (CUBECL_DEBUG_OPTION=profile: every burn/cubecl kernel with
# its time, synchronised one by one, so its times include each launch's host work).
run=.device/genrun
for b in cuda wgpu; do
  .device/moba --api vulkan generate --backend $b --run $run --max-new 64 --prompt 'def main():' > /dev/null 2> $b-warm.log
  .device/moba --api vulkan generate --backend $b --run $run --max-new 512 --prompt 'def main():' > /dev/null 2> $b-512.log
  CUBECL_DEBUG_LOG=$b-profile.log CUBECL_DEBUG_OPTION=profile .device/moba --api vulkan generate \
    --backend $b --run $run --max-new 32 --prompt 'def main():' > /dev/null 2> $b-profiled.log
done
# kernels-per-step.txt: launches and profiled time per kernel family, over the 32 steps
# (1 prefill + 31 decode steps) of each profiled run:
for b in cuda wgpu; do
  zcat $b-profile.log.gz | grep '^| [0-9]' | awk -F'|' '{n=$3; gsub(/ /,"",n); t=$2; gsub(/ /,"",t); v=t+0;
    if (t ~ /µs/) v/=1000; else if (t ~ /ns/) v/=1e6; c[n]++; s[n]+=v; C++; S+=v}
    END {for (n in c) printf "%-18s %6d launches %9.3f ms\n", n, c[n], s[n]; printf "%-18s %6d launches %9.3f ms\n", "all", C, S}'
done
