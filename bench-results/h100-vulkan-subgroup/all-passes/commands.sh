# One call on the lent H100 (driver 580.159.04): the subgroup kernels for the attention, dq
# and dk/dv passes, as built in (key loops unrolled, dk/dv computing for every thread), and
# as MOBA_WGSL_DIR variants (`*-rolled`: key loops rolled, dk/dv skipping threads past the
# block's keys and rows that cannot see a key), beside the portable and cooperative kernels
# and PyTorch's peers. .device/callB.sh:
#   the backward grid (.device/tests/backward: the host API's backward runs the subgroup
#   kernels there, 15/15), then
KERNELS="subgroup portable cooperative" LONG_S= MOBA_TEST_SKIP_GL=1 scripts/device-vulkan.sh
#   (moba --api vulkan bench --kernel K --heads 16 --head-dim 128 --seq-lens 32768
#    --block-size 512 --top-k 3 --runs 3 --backward --no-dense; each variant folder the same
#    with MOBA_WGSL_DIR), and
CFGS=32768:512:3 python3 peers_torch.py
