#!/usr/bin/env bash
# Installs what `cargo test --release` needs on a fresh Debian or Ubuntu machine that has
# only the Rust toolchain, and says what it installs; what is already there is left alone.
#   - Mesa's CPU drivers: Vulkan (lavapipe) and OpenGL (llvmpipe, through EGL). The GPU tests
#     run on both, since wgpu falls back to GL where a machine has no Vulkan driver.
#   - The browser demo's test (tests/browser.rs runs web/test.sh): Debian's Chromium and its
#     driver (never a downloaded browser), node and npm, the wasm32 target, the
#     wasm-bindgen-cli that matches Cargo.lock, and playwright-core from web/package-lock.json.
#   - NVRTC alone (no GPU, no driver), for the CUDA kernels' compile test (scripts/test.sh):
#     PyPI's wheel of it (nvidia-cuda-nvrtc-cu12, fetched with pip from Debian's python3-pip),
#     unpacked into target/nvrtc.
# apt-get runs as root, or through sudo where that exists.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "setup: $*" >&2; }

apt_install() {
    command -v apt-get >/dev/null || {
        say "this machine has no apt-get: install the equivalents of $* with its package manager"
        say "(Mesa's Vulkan and EGL drivers, Chromium and its WebDriver, Node.js and npm), then run this again"
        exit 1
    }
    local sudo=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || {
            say "installing $* needs root: run  apt-get install -y $*  as root, then this again"
            exit 1
        }
        sudo=(sudo)
    fi
    say "installing $* (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq "$@" >/dev/null
}

packages=()
if [ "$(uname -s)" = Linux ]; then
    ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || packages+=(mesa-vulkan-drivers libvulkan1)
    ls /usr/lib/*/libEGL_mesa.so.0 >/dev/null 2>&1 || packages+=(libegl1 libegl-mesa0)
fi
[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || packages+=(chromium chromium-driver)
command -v npm >/dev/null || packages+=(nodejs npm)
if [ ${#packages[@]} -gt 0 ]; then
    apt_install "${packages[@]}"
fi

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    say "adding the wasm32-unknown-unknown target (rustup)"
    rustup target add wasm32-unknown-unknown
fi
wasm_bindgen=$(cargo pkgid -p wasm-bindgen | sed 's/.*@//')
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $wasm_bindgen" ]; then
    say "installing wasm-bindgen-cli $wasm_bindgen (cargo install: a few minutes)"
    cargo install --quiet wasm-bindgen-cli --version "$wasm_bindgen"
fi
# Again whenever web/package-lock.json changed since the last install.
if [ ! -d web/node_modules/playwright-core ] || [ web/package-lock.json -nt web/node_modules/.package-lock.json ]; then
    say "installing web/'s npm packages (npm ci)"
    (cd web && npm ci --no-audit --no-fund --silent)
fi
# NVRTC's libraries, unpacked from its wheel (pip only downloads it: nothing is installed
# into Python).
nvrtc=target/nvrtc/nvidia/cuda_nvrtc/lib
if [ ! -e "$nvrtc/libnvrtc.so" ]; then
    command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    say "fetching NVRTC (PyPI's nvidia-cuda-nvrtc-cu12 wheel) into target/nvrtc"
    rm -rf target/nvrtc-wheel
    python3 -m pip download --quiet --no-deps --dest target/nvrtc-wheel nvidia-cuda-nvrtc-cu12==12.9.86
    python3 -m zipfile -e target/nvrtc-wheel/nvidia_cuda_nvrtc_cu12-*.whl target/nvrtc
    ln -sf libnvrtc.so.12 "$nvrtc/libnvrtc.so"
fi
