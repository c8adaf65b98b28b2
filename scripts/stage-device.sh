#!/usr/bin/env bash
# Builds what the lent GPU runs (release, stripped) into .device/ (git-ignored): the moba
# binary with the CUDA path, the GPU test binaries (the CUDA grid and the decoders' tests
# with `--features cuda`; the other wgpu ones as CI builds them), and a copy of the PyTorch
# peers script.
set -eu
cd "$(dirname "$0")/.."
mkdir -p .device/tests
rm -f .device/moba* .device/tests/*
cargo build --release --features cuda
# Copied now: building tests without the feature rebuilds target/release/moba.
cp target/release/moba .device/moba
# The path of test binary $1 built with the cargo flags that follow.
test_binary() {
    local name=$1
    shift
    cargo test --release --no-run --test "$name" "$@" --message-format=json 2>/dev/null \
        | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["kind"] == ["test"] \
            and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$name"
}
for test in cuda decoder; do
    cp "$(test_binary "$test" --features cuda)" ".device/tests/$test"
done
for test in backward cooperative varlen subgroup_f16; do
    cp "$(test_binary "$test")" ".device/tests/$test"
done
# The call carries at most 64 MiB: the binaries travel gzipped (scripts/device-*.sh unpack).
gzip -9 -f .device/moba .device/tests/*
scripts/stage-corpus.sh
cp ../shared/anchors/peers_torch.py .device/ 2>/dev/null || echo "no ../shared/anchors/peers_torch.py: peers skipped"
ls -la .device .device/tests
