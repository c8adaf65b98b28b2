#!/usr/bin/env bash
# Builds what the lent GPU runs (release, stripped) into .device/ (git-ignored): the moba
# binary with the CUDA path, the GPU test binaries (the CUDA grid with `--features cuda`;
# the wgpu ones as CI builds them), and a copy of the PyTorch peers script.
set -eu
cd "$(dirname "$0")/.."
cargo build --release --features cuda
mkdir -p .device/tests
rm -f .device/tests/*
# The path of a test binary built with the given cargo flags.
test_binary() {
    cargo test --release --no-run "$@" --message-format=json 2>/dev/null \
        | grep -o '"executable":"[^"]*"' | cut -d'"' -f4 | tail -1
}
cp "$(test_binary --features cuda --test cuda)" .device/tests/cuda
for test in backward cooperative; do
    cp "$(test_binary --test "$test")" ".device/tests/$test"
done
cp target/release/moba .device/moba
cp ../shared/anchors/peers_torch.py .device/ 2>/dev/null || echo "no ../shared/anchors/peers_torch.py: peers skipped"
ls -la .device .device/tests
