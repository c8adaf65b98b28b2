#!/usr/bin/env bash
# Issue 22: f16 copies of k and v for the cooperative passes (built in), forward variants
# (merged flags, direct loads), against the previous binary (f32 staging); subgroup step.
set -u
final=$OUT
export OUT=/tmp/r
mkdir -p $OUT
source scripts/device-env.sh
gunzip -kf .device/moba-base.gz && chmod +x .device/moba-base
for deb in .gl/*.deb; do dpkg -x "$deb" / 2>/dev/null; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export MOBA_TEST_SKIP_GL=1
start=$(date +%s)
t() { echo "   at $(( $(date +%s) - start )) s"; }
gunzip -kf .device/tests/cooperative.gz && chmod +x .device/tests/cooperative
timeout 200 .device/tests/cooperative --test-threads=1 --include-ignored > $OUT/cooperative.log 2>&1
grep -E "^test |test result|panicked" $OUT/cooperative.log | head -20; t
B="--api vulkan bench --heads 16 --head-dim 128 --no-dense"
short="--seq-lens 32768 --block-size 512 --top-k 3"
long="--seq-lens 524288 --block-size 4096 --top-k 12 --runs 1"
run() { # name, binary, env dir or -, args...
  local name=$1 bin=$2 dir=$3; shift 3
  if [ "$dir" = - ]; then timeout 150 $bin $B "$@" --out $OUT/$name.jsonl >> $OUT/bench.log 2>&1
  else MOBA_WGSL_DIR=$dir timeout 150 $bin $B "$@" --out $OUT/$name.jsonl >> $OUT/bench.log 2>&1; fi
  echo "$name $*: $?"; }
run base .device/moba-base - --kernel cooperative $short --runs 3 --backward
run f16 .device/moba - --kernel cooperative $short --runs 3 --backward
for v in merged direct direct2; do run $v .device/moba .device/variants-f16/$v --kernel cooperative $short --runs 5; done
t
run base .device/moba-base - --kernel cooperative $long
run f16 .device/moba - --kernel cooperative $long
for v in merged direct direct2; do run $v .device/moba .device/variants-f16/$v --kernel cooperative $long; done
t
run subgroup .device/moba - --kernel subgroup $short --runs 3 --backward
t
CFGS=32768:512:3,524288:4096:12 OUT=$OUT timeout 200 python3 .device/peers_torch.py > $OUT/peers.log 2>&1; grep -v "^check" $OUT/peers.log | tail -8; t
python3 - $OUT/*.jsonl <<'PY'
import json, os, sys
print("| run | S | fwd ms | step ms | fwd stages | bwd stages | o error | bound |")
for path in sys.argv[1:]:
  for line in open(path):
    r = json.loads(line); f = lambda xs: "/".join(f"{x:.2f}" for x in xs) if xs else "-"
    print(f"| {os.path.basename(path)[:-6]} | {r['seq_len']} | {r['moba_ms']:.2f} | {r.get('step_ms') or 0:.1f} | {f(r.get('stage_ms'))} | {f(r.get('backward_stage_ms'))} | {r.get('o_error') or 0:.1e} | {r.get('o_bound') or 0:.1e} |")
PY
tar czf $final/r.tgz -C /tmp r
