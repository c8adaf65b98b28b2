#!/usr/bin/env bash
# f32-committed-32k.jsonl came from the call that also timed NSA with the shared top-k:
# ../../h100-nsa/shared-top-k/call4-commands.sh (its first step, the f32 kernels at 32K).
exec "$(dirname "$0")/../../h100-nsa/shared-top-k/call4-commands.sh"
