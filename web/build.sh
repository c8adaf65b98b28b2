#!/usr/bin/env bash
# Builds the demo into web/pkg: the moba-web crate for wasm32 (settings in web/.cargo), then
# wasm-bindgen's JS glue.
set -euo pipefail
cd "$(dirname "$0")"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    echo "error: the wasm32 target is missing: rustup target add wasm32-unknown-unknown" >&2
    exit 1
fi
# wasm-bindgen-cli must match the wasm-bindgen crate in Cargo.lock.
version=$(cargo pkgid -p wasm-bindgen | sed 's/.*@//')
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $version" ]; then
    echo "error: wasm-bindgen $version is needed: cargo install wasm-bindgen-cli --version $version" >&2
    exit 1
fi

cargo build --release
wasm-bindgen --target web --no-typescript --out-dir pkg \
    ../target/web/wasm32-unknown-unknown/release/moba_web.wasm
echo "built web/pkg"
