#!/usr/bin/env bash
# The 512K runs came from the same call as the NSA numbers: ../../h100-nsa/commands.sh
# (its last step, "512K base and mask").
exec "$(dirname "$0")/../../h100-nsa/commands.sh"
