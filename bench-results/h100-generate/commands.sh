# One call on the lent H100 (driver 580.159.04), commit 38212a1: scripts/device-generate.sh
# (a --preset 32k model trained 4 steps through Vulkan, then moba generate --max-new 512
# twice per backend: the first run compiles, the second starts from the caches), then the
# Vulkan test binaries (cooperative 7/7, varlen 3/3, backward 15/15 with
# MOBA_TEST_SKIP_GL=1). The long-prompt runs of that call failed on a script error (fixed).
OUT=. STEPS=4 MAX_NEW=512 scripts/device-generate.sh
