#!/usr/bin/env bash
# Builds what the lent GPU runs (release, stripped) into .device/ (git-ignored): the moba
# binary, the GPU test binaries, and a copy of the PyTorch peers script.
set -eu
cd "$(dirname "$0")/.."
cargo build --release
mkdir -p .device/tests
rm -f .device/tests/*
for test in backward cooperative; do
    binary=$(cargo test --release --no-run --test "$test" --message-format=json 2>/dev/null \
        | grep -o '"executable":"[^"]*"' | cut -d'"' -f4 | tail -1)
    cp "$binary" ".device/tests/$test"
done
cp target/release/moba .device/moba
cp ../shared/anchors/peers_torch.py .device/ 2>/dev/null || echo "no ../shared/anchors/peers_torch.py: peers skipped"
ls -la .device .device/tests
