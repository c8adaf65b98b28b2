#!/usr/bin/env bash
# Builds moba (release, CUDA path) at an older commit into .device/before/ for
# scripts/device-compare.sh: a worktree of that commit, built in this checkout's target
# folder (the dependencies are shared; only moba compiles again). Run it before
# scripts/stage-device.sh: the old binary is removed from target/release afterwards, so the
# next build puts the current one back.
set -eu
commit=${1:?usage: scripts/stage-before.sh <commit>}
cd "$(dirname "$0")/.."
root=$PWD
tree=$(mktemp -d)/before
git worktree add --detach "$tree" "$commit"
trap 'git worktree remove --force "$tree"' EXIT
(cd "$tree" && CARGO_TARGET_DIR="$root/target" cargo build --release --features cuda)
mkdir -p .device/before
cp target/release/moba .device/before/moba
rm target/release/moba
gzip -9 -f .device/before/moba
echo "staged moba at $(git rev-parse --short "$commit") in .device/before/"
