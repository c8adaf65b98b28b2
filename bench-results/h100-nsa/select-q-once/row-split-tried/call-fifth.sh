#!/usr/bin/env bash
# Session 51's fifth call (issue 24): the 8K step's branches under MOBA_CUDA_PROFILE=1 with
# the dk/dv walk split over rows (the fourth call's binary): MoBA's kernels by GPU time.
# Carry .gl, .device/s9, .device/cubecl-cache.tgz.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export OUT
xz -dc .device/s9/moba.xz > .device/moba && chmod +x .device/moba
source scripts/device-env.sh
export MOBA_CACHE_DIR=$PWD/.device/cubecl-cache
NSA="--attention nsa --heads 64 --kv-heads 4 --head-dim 128 --compress-block 32 --stride 16 --select-block 64 --top-n 16 --window 512"
for S in 8192 65536; do
MOBA_CUDA_PROFILE=1 timeout 120 .device/moba bench $NSA --runs 1 --cuda --dtype bf16 --backward --seq-lens $S --out $OUT/step.jsonl > /tmp/profile-$S.log 2>&1; echo "rc $?"
grep '^| cuda' /tmp/profile-$S.log | cut -c1-300
python3 - /tmp/profile-$S.log $OUT/step-$S-kernels.txt <<'PY'
import re, sys, collections
lines = open(sys.argv[1]).read().splitlines()
start = max(i for i, l in enumerate(lines) if "the step's branches" in l)
tot, cnt, each = collections.Counter(), collections.Counter(), collections.defaultdict(list)
for l in lines[start:]:
    m = re.match(r"moba cuda: (\S+) grid (\S+) x (\d+) threads: ([\d.]+) ms", l)
    if m:
        k = (m.group(1), m.group(2)); tot[k] += float(m.group(4)); cnt[k] += 1; each[k].append(float(m.group(4)))
with open(sys.argv[2], "w") as f:
    f.write("# The step's branches (compressed, selected, window; warm-up and timed runs): MoBA's CUDA kernels by total GPU time (MOBA_CUDA_PROFILE=1); launches; the largest and smallest launch\n")
    for k, ms in sorted(tot.items(), key=lambda kv: -kv[1]):
        f.write(f"{ms:9.3f} ms  {cnt[k]:4d} launches  max {max(each[k]):8.3f}  min {min(each[k]):8.3f}  {k[0]:20s} grid {k[1]}\n")
print(open(sys.argv[2]).read()[:1800])
PY
done
