#!/usr/bin/env bash
# The test command of the README: installs what is missing (scripts/setup.sh says what),
# then runs the whole suite. Arguments go to `cargo test` (a test name, say).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo test --release "$@"
