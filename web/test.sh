#!/usr/bin/env bash
# The demo's tests in Debian's Chromium (SwiftShader WebGPU where there is no GPU): the
# wasm-bindgen tests of the wasm API, then the page driven by playwright-core.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
command -v node >/dev/null || missing+=("node (apt-get install -y nodejs)")
[ -x /usr/bin/chromium ] || missing+=("/usr/bin/chromium (apt-get install -y chromium)")
[ -x /usr/bin/chromedriver ] || missing+=("/usr/bin/chromedriver (apt-get install -y chromium-driver)")
[ -d node_modules/playwright-core ] || missing+=("playwright-core (cd web && npm ci)")
if [ ${#missing[@]} -gt 0 ]; then
    printf 'error: missing %s\n' "${missing[@]}" >&2
    echo "scripts/setup.sh installs all of it (scripts/test.sh runs it before the tests)" >&2
    exit 1
fi

./build.sh
cargo test --release
node tests/browser.mjs
