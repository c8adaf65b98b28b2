#!/usr/bin/env bash
# Issue 24's quality study on the lent GPU: the NSA arm of RESULTS.md's text comparison
# (preset 8k, 600 steps of 8, seed 42, the Python standard library), on the CUDA backend with
# the staged binary (main + cuda-nsa-select: NSA's selection on the device). The MoBA and full
# arms of RESULTS.md ran the same settings on an H200. FRESH=0 on a warm machine resumes it.
set -u
export OUT
[ -x .device/moba ] || { xz -dkc .device/new/moba.xz > .device/moba && chmod +x .device/moba; }
OUT=$OUT TASKS=text ARMS=nsa STEPS=600 BATCH=8 SIDE_BY_SIDE=0 LIMIT=${LIMIT:-530} \
    FRESH=${FRESH:-1} scripts/device-lm.sh
