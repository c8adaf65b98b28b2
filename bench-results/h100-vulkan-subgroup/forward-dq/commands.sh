# One call on the lent H100 (driver 580.159.04), commit be85740 (the subgroup kernels for the
# attention and dq passes; dk/dv still the portable kernel): .device/callB.sh, i.e.
#   the backward grid (.device/tests/backward: the host API's backward runs the subgroup
#   kernels there, 15/15), then
KERNELS="subgroup portable cooperative" LONG_S= MOBA_TEST_SKIP_GL=1 scripts/device-vulkan.sh
#   (moba --api vulkan bench --kernel K --heads 16 --head-dim 128 --seq-lens 32768
#    --block-size 512 --top-k 3 --runs 3 --backward --no-dense), and PyTorch's peers:
CFGS=32768:512:3 python3 peers_torch.py
