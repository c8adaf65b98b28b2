#!/usr/bin/env bash
# Builds the demo and serves web/ on http://localhost:8000 (WebGPU needs localhost or https).
set -euo pipefail
cd "$(dirname "$0")"
./build.sh
port="${PORT:-8000}"
echo "open http://localhost:$port/"
exec python3 -m http.server "$port" --bind 127.0.0.1
