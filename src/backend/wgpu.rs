//! MoBA on burn's wgpu backend: the same WGSL kernels and the same [`Schedule`] as the wgpu
//! runtime (planned by the same functions from the same [`DeviceCaps`], so the cooperative
//! tensor-core forward runs where the device has it), launched through burn's `template`
//! kernels on burn's own device and queue, on the memory of burn tensors (no host round trip).

use burn::backend::wgpu::{
    BoolElement, CubeBackend, CubeTensor, FloatElement, KernelSource, SourceKernel, SourceTemplate,
    WgpuDevice, WgpuRuntime, into_contiguous,
};
use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::{Handle, KernelArguments};
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::DType;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn_cubecl::kernel::cast;

use super::cube::{
    KernelBackend, empty, nsa_select_inputs, padded_backward, padded_config, padded_forward,
    padding, problem_shape,
};
use super::wgpu_device::burn_device_caps;
use super::{
    ForwardGiven, MobaBackend, MobaForwardOutput, MobaGradients, MobaSaved, forward_per_head,
    nsa_selection_fits_a_chunk,
};
use crate::config::{MobaConfig, NsaConfig, Shape};
use crate::error::{MobaError, Result};
use crate::gpu::buffers::fold_grid;
use crate::gpu::host::HEAD_DIM_MULTIPLE;
use crate::gpu::kernels::{Kernel, KernelConstants};
use crate::gpu::plan::{check_buffer_sizes, kernel_set};
use crate::gpu::schedule::{Binding, Given, Schedule};
use crate::gpu::{AttentionKernel, DeviceCaps};
use crate::kernel_params::KernelParams;
use crate::memory::bytes_of;

type Tensor = CubeTensor<WgpuRuntime>;

/// Why the launches cannot fail: `MobaBackend::moba_prepare` checked this problem.
const PREPARED: &str = "moba_prepare checked the plan and the grids of this problem";

/// One of our WGSL kernels as burn template source; compiled once per (kernel, constants).
struct MobaKernelSource {
    kernel: Kernel,
    constants: KernelConstants,
}

impl KernelSource for MobaKernelSource {
    fn source(&self) -> SourceTemplate {
        // burn sub-allocates tensors from shared buffers, and wgpu forbids a buffer bound
        // read-only and read-write in one dispatch: every binding becomes read-write.
        // KernelSource cannot fail: a malformed marked loop (a MOBA_WGSL_DIR file) panics here.
        let source = self
            .kernel
            .source(&self.constants)
            .unwrap_or_else(|e| panic!("{e}"));
        SourceTemplate::new(source.replace("var<storage, read>", "var<storage, read_write>"))
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.kernel, self.constants))
    }
}

/// Launches every step of `schedule` on the queue of `io[0]`'s device; `io` are contiguous
/// tensors in the schedule's io order.
fn launch(schedule: &Schedule, io: &[&Tensor], limits: &wgpu::Limits) {
    let client = &io[0].client;
    let params: Vec<Handle> = schedule
        .params
        .iter()
        .map(|params| client.create_from_slice(bytemuck::bytes_of(params)))
        .collect();
    let scratch: Vec<Handle> = schedule
        .scratch
        .iter()
        .map(|scratch| {
            let bytes = scratch.bytes.max(4) as usize;
            match scratch.zeroed {
                true => client.create_from_slice(&vec![0u8; bytes]),
                false => client.empty(bytes),
            }
        })
        .collect();
    let handle = |binding: &Binding| match *binding {
        Binding::Params(n) => params[n].clone(),
        Binding::Io(kind) => {
            let at = schedule.io.iter().position(|&i| i == kind);
            io[at.expect("a schedule binds only its own io")]
                .handle
                .clone()
        }
        Binding::Scratch(n) => scratch[n].clone(),
    };
    for step in &schedule.launches {
        let (kernel, constants) = schedule.kernels[step.kernel];
        let source = MobaKernelSource { kernel, constants };
        let (x, y) = fold_grid(step.workgroups, limits.max_compute_workgroups_per_dimension)
            .expect(PREPARED);
        let arguments = KernelArguments::new()
            .with_buffers(step.bindings.iter().map(|b| handle(b).binding()).collect());
        client.launch(
            Box::new(SourceKernel::new(
                source,
                CubeDim::new_1d(constants.workgroup_size),
            )),
            CubeCount::Static(x, y, 1),
            arguments,
        );
    }
}

/// The attention kernels burn's wgpu path runs at `head_dim` on `device` for tensors of
/// `dtype`, forward and backward: on a device `burn_wgpu_device` opened, the cooperative
/// (tensor-core) ones where it has them, else the subgroup ones where it has subgroups (for
/// f16 tensors their f16 variant where it has shader-f16); the portable ones otherwise.
pub fn attention_kernel(device: &WgpuDevice, head_dim: usize, dtype: DType) -> AttentionKernel {
    let padded = head_dim.next_multiple_of(HEAD_DIM_MULTIPLE);
    kernel_for(&burn_device_caps(device), padded, dtype)
}

/// The fastest kernel for tensors of `dtype`: f16 tensors are exact in the f16 variant's
/// tiles, so it computes what the f32 subgroup kernels do on them, faster.
fn kernel_for(caps: &DeviceCaps, head_dim: usize, dtype: DType) -> AttentionKernel {
    match dtype {
        DType::F16 => AttentionKernel::best_for_f16_inputs(caps, head_dim),
        _ => AttentionKernel::best(caps, head_dim),
    }
}

/// The forward (with what its caller gives) and backward schedules of a problem (head dim
/// padded) on `device`, for tensors of `dtype`.
fn schedules(
    shape: &Shape,
    config: &MobaConfig,
    caps: &DeviceCaps,
    given: Given,
    dtype: DType,
) -> Result<(Schedule, Schedule)> {
    let kernel = kernel_for(caps, shape.head_dim, dtype);
    let (kernels, _) = kernel_set(caps, shape, config, kernel)?;
    Ok((
        Schedule::forward(shape, config, kernels, given),
        Schedule::backward(shape, config, kernels),
    ))
}

/// What `moba_prepare` checks: the tile plan, every buffer of the forward and the backward
/// within the device's largest binding, and every grid within its workgroup counts. (burn
/// runs a problem in one call: no tensor of burn's exceeds that binding, so only a scratch
/// buffer could, and that is an error here rather than a split.)
fn prepare(shape: &Shape, config: &MobaConfig, device: &WgpuDevice, dtype: DType) -> Result<()> {
    let caps = burn_device_caps(device);
    let (config, pad) = padded_config(shape.head_dim, HEAD_DIM_MULTIPLE, config);
    let shape = Shape {
        head_dim: pad,
        ..*shape
    };
    // The selection first: a schedule holds one pass per slot, so a huge top-k is refused
    // before one is built.
    let selection = bytes_of(&[shape.q_rows(), config.top_k], 4).unwrap_or(u64::MAX);
    check_buffer_sizes(&caps.limits, &[("selection", selection)])?;
    // A forward with given inputs binds the same buffers, some of them the caller's.
    let (forward, backward) = schedules(&shape, &config, &caps, Given::default(), dtype)?;
    for schedule in [&forward, &backward] {
        check_buffer_sizes(&caps.limits, &schedule.buffer_sizes(&shape, &config))?;
        for step in &schedule.launches {
            fold_grid(
                step.workgroups,
                caps.limits.max_compute_workgroups_per_dimension,
            )?;
        }
    }
    Ok(())
}

/// Float types the kernels take: f32, which they read, and f16, which is widened to f32
/// before them and narrowed after (on adapters with `shader-f16`, where burn runs f16).
fn check_float_type(dtype: DType) -> Result<()> {
    match dtype {
        DType::F32 | DType::F16 => Ok(()),
        _ => Err(MobaError::Unsupported(format!(
            "{dtype:?} tensors on the wgpu path (f32, f16)"
        ))),
    }
}

/// MoBA forward on burn-wgpu tensors (f32 or f16, head dim a multiple of 4), with the
/// keys' block means (padded like k), the sequence starts and the selection where given:
/// `(o, lse, selection)`, o in q's float type, lse in f32.
fn forward(
    qkv: [Tensor; 3],
    means: Option<Tensor>,
    starts: Option<Tensor>,
    selection: Option<Tensor>,
    config: &MobaConfig,
) -> [Tensor; 3] {
    let dtype = qkv[0].dtype;
    let [q, k, v] = qkv.map(|t| into_contiguous(cast(t, DType::F32)));
    let means = means.map(|t| into_contiguous(cast(t, DType::F32)));
    // i32 block ids, which the kernel reads as u32: the same bits.
    let starts = starts.map(into_contiguous);
    let shape = problem_shape(&q, &k);
    let caps = burn_device_caps(&q.device);
    let given = Given {
        means: means.is_some(),
        sequence_starts: starts.is_some(),
        selection: selection.is_some(),
    };
    let (schedule, _) = schedules(&shape, config, &caps, given, dtype).expect(PREPARED);
    let rows = vec![shape.batch, shape.q_heads, shape.q_len];
    let o = empty(&q, q.meta.shape().to_vec(), DType::F32);
    let lse = empty(&q, rows.clone(), DType::F32);
    let selection = match selection {
        Some(given) => into_contiguous(given),
        None => empty(&q, [rows, vec![config.top_k]].concat(), DType::I32),
    };
    let mut io = vec![&q, &k, &v, &o, &lse, &selection];
    io.extend(means.as_ref());
    io.extend(starts.as_ref());
    launch(&schedule, &io, &caps.limits);
    [cast(o, dtype), lse, selection]
}

/// MoBA backward on burn-wgpu tensors from a forward's saved outputs: `(dq, dk, dv)`, each
/// in the float type of its input.
fn backward(saved: [Tensor; 6], dout: Tensor, config: &MobaConfig) -> [Tensor; 3] {
    let [q, k, v, o, lse, selection] = saved;
    let dtypes = [q.dtype, k.dtype, v.dtype];
    let [q, k, v, o, dout] = [q, k, v, o, dout].map(|t| into_contiguous(cast(t, DType::F32)));
    let [lse, selection] = [lse, selection].map(into_contiguous);
    let shape = problem_shape(&q, &k);
    let caps = burn_device_caps(&q.device);
    let (_, schedule) =
        schedules(&shape, config, &caps, Given::default(), dtypes[0]).expect(PREPARED);
    let dq = empty(&q, q.meta.shape().to_vec(), DType::F32);
    let dk = empty(&q, k.meta.shape().to_vec(), DType::F32);
    let dv = empty(&q, k.meta.shape().to_vec(), DType::F32);
    launch(
        &schedule,
        &[&q, &k, &v, &o, &lse, &selection, &dout, &dq, &dk, &dv],
        &caps.limits,
    );
    let [dq_type, dk_type, dv_type] = dtypes;
    [cast(dq, dq_type), cast(dk, dk_type), cast(dv, dv_type)]
}

/// Threads per workgroup of the NSA selection kernel (one query row each).
const NSA_SELECT_WORKGROUP: u32 = 64;
/// NSA's selection on burn-wgpu tensors (`nsa_select.wgsl`): q `[B, Hq, S, D]`, the pooled
/// keys `[B, Hkv, nc, D]`, the compressed branch's lse `[B, Hq, S]`; Int `[B, Hkv, S,
/// top_n]`. One thread per (group, query); no importance matrix.
fn nsa_select<B: KernelBackend<WgpuRuntime>>(
    q: Tensor,
    pooled_keys: Tensor,
    lse: Tensor,
    kv_len: usize,
    config: &NsaConfig,
) -> Tensor {
    let inputs = nsa_select_inputs::<WgpuRuntime, B>(
        [q, pooled_keys, lse],
        kv_len,
        config,
        HEAD_DIM_MULTIPLE,
        DType::F32,
    );
    let shape = inputs.shape;
    let params = KernelParams::new(&shape, &inputs.config);
    let compression = [config.compress_block, config.stride, inputs.pooled, 0].map(|x| x as u32);
    let constants = KernelConstants {
        head_dim: shape.head_dim as u32,
        top_k: config.top_n as u32,
        workgroup_size: NSA_SELECT_WORKGROUP,
        // No tiles: one thread per row.
        key_tile: 1,
        query_tile: 1,
        subgroups: 1,
    };
    let compression = inputs
        .q
        .client
        .create_from_slice(bytemuck::cast_slice(&compression));
    let rows = (shape.groups() * shape.q_len) as u64;
    launch_one(
        Kernel::NsaSelect,
        constants,
        rows.div_ceil(NSA_SELECT_WORKGROUP as u64),
        &params,
        [
            &inputs.q.handle,
            &inputs.pooled_keys.handle,
            &inputs.lse.handle,
            &compression,
            &inputs.selection.handle,
        ],
        &inputs.q,
    );
    inputs.selection
}

/// Launches one of our kernels over `workgroups` (folded into x and y) on `like`'s device,
/// with `params` at binding 0 and `buffers` after it.
fn launch_one<const N: usize>(
    kernel: Kernel,
    constants: KernelConstants,
    workgroups: u64,
    params: &KernelParams,
    buffers: [&Handle; N],
    like: &Tensor,
) {
    let client = &like.client;
    let caps = burn_device_caps(&like.device);
    let (x, y) = fold_grid(workgroups, caps.limits.max_compute_workgroups_per_dimension)
        .unwrap_or_else(|e| panic!("{}: {e}", kernel.name()));
    let params = client.create_from_slice(bytemuck::bytes_of(params));
    let buffers = std::iter::once(&params)
        .chain(buffers)
        .map(|handle| handle.clone().binding())
        .collect();
    let source = MobaKernelSource { kernel, constants };
    client.launch(
        Box::new(SourceKernel::new(
            source,
            CubeDim::new_1d(constants.workgroup_size),
        )),
        CubeCount::Static(x, y, 1),
        KernelArguments::new().with_buffers(buffers),
    );
}

/// Threads per workgroup of `nsa_selected.wgsl`: the keys of a tile.
const NSA_SELECTED_WORKGROUP: usize = 64;
/// The most query heads one workgroup of it holds.
const NSA_SELECTED_MAX_HEADS: usize = 16;
/// The smallest GQA group it runs: with fewer heads a workgroup per query has too little
/// work, and the per-head path was faster (lavapipe, `bench-results/lavapipe-nsa/
/// group-selected/`: 2.1x at 2 heads per kv head, 1.3x at 4, even at 8; 16 ran 1.4x faster
/// on the kernel).
const NSA_SELECTED_MIN_GROUP: usize = 8;

/// Query heads per workgroup of `nsa_selected.wgsl` for GQA groups of `group_size` heads at
/// head dim `head_dim` (padded) on a device of `limits`: the largest divisor of the group up
/// to [`NSA_SELECTED_MAX_HEADS`] whose tiles fit its workgroup memory. `None` where the
/// kernel does not take the problem: a group under [`NSA_SELECTED_MIN_GROUP`], a head dim
/// whose vectors do not divide its threads.
fn nsa_selected_heads(limits: &wgpu::Limits, head_dim: usize, group_size: usize) -> Option<usize> {
    let vectors = head_dim / 4;
    if group_size < NSA_SELECTED_MIN_GROUP
        || vectors == 0
        || !NSA_SELECTED_WORKGROUP.is_multiple_of(vectors)
    {
        return None;
    }
    // Queries, scores, each row's state (8 bytes) and rescale (4), the slot's block.
    let bytes = |heads: usize| heads * (head_dim + NSA_SELECTED_WORKGROUP) * 4 + heads * 12 + 4;
    (1..=group_size.min(NSA_SELECTED_MAX_HEADS))
        .rev()
        .find(|&heads| {
            group_size.is_multiple_of(heads)
                && bytes(heads) <= limits.max_compute_workgroup_storage_size as usize
        })
}

/// NSA's selected branch on burn-wgpu tensors (`nsa_selected.wgsl`, head dim padded): q, k,
/// v and the group's selection `[B, Hkv, S, top_k]`, `heads` query heads per workgroup;
/// `(o, lse, selection per head)` as [`forward`] returns them.
fn nsa_selected(
    qkv: [Tensor; 3],
    selection: Tensor,
    config: &MobaConfig,
    heads: usize,
) -> [Tensor; 3] {
    let dtype = qkv[0].dtype;
    let [q, k, v] = qkv.map(|t| into_contiguous(cast(t, DType::F32)));
    let selection = into_contiguous(selection);
    let shape = problem_shape(&q, &k);
    let constants = KernelConstants {
        head_dim: shape.head_dim as u32,
        top_k: config.top_k as u32,
        workgroup_size: NSA_SELECTED_WORKGROUP as u32,
        key_tile: NSA_SELECTED_WORKGROUP as u32,
        query_tile: heads as u32,
        subgroups: 1,
    };
    let rows = vec![shape.batch, shape.q_heads, shape.q_len];
    let o = empty(&q, q.meta.shape().to_vec(), DType::F32);
    let lse = empty(&q, rows.clone(), DType::F32);
    let per_head = empty(&q, [rows, vec![config.top_k]].concat(), DType::I32);
    let workgroups = shape.groups() * shape.q_len * (shape.group_size() / heads);
    launch_one(
        Kernel::NsaSelected,
        constants,
        workgroups as u64,
        &KernelParams::new(&shape, config),
        [
            &q.handle,
            &k.handle,
            &v.handle,
            &selection.handle,
            &o.handle,
            &lse.handle,
            &per_head.handle,
        ],
        &q,
    );
    [cast(o, dtype), lse, per_head]
}

/// burn's wgpu backend with f32 or f16 floats and i32 ints. `Fusion` of it (burn's default
/// `Wgpu`, and `Wgpu<f16>`) reaches it through `super::fusion`.
impl<F: FloatElement, BT: BoolElement> MobaBackend for CubeBackend<WgpuRuntime, F, i32, BT> {
    fn moba_prepare(shape: &Shape, config: &MobaConfig, device: &WgpuDevice) -> Result<()> {
        check_float_type(F::dtype())?;
        prepare(shape, config, device, F::dtype())
    }

    fn moba_forward_given(
        qkv: [FloatTensor<Self>; 3],
        given: ForwardGiven<Self>,
        config: &MobaConfig,
    ) -> MobaForwardOutput<Self> {
        let (_, pad) = padding::<Self>(qkv[0].meta.shape()[3], HEAD_DIM_MULTIPLE, config);
        let means = given.means.map(pad);
        padded_forward::<WgpuRuntime, Self>(qkv, config, HEAD_DIM_MULTIPLE, |qkv, config| {
            forward(qkv, means, given.sequence_starts, given.selection, config)
        })
    }

    /// `nsa_selected.wgsl` where it takes the problem (causal, no key-window mask: NSA's
    /// selected branch), else each head given its copy.
    fn moba_forward_group_selection(
        qkv: [FloatTensor<Self>; 3],
        selection: IntTensor<Self>,
        config: &MobaConfig,
    ) -> MobaForwardOutput<Self> {
        let [_, q_heads, _, head_dim] = qkv[0].meta.shape().dims::<4>();
        let group_size = q_heads / selection.meta.shape()[1];
        let padded = head_dim.next_multiple_of(HEAD_DIM_MULTIPLE);
        let limits = burn_device_caps(&qkv[0].device).limits;
        let heads = nsa_selected_heads(&limits, padded, group_size)
            .filter(|_| config.masks_causally_only());
        match heads {
            Some(heads) => padded_forward::<WgpuRuntime, Self>(
                qkv,
                config,
                HEAD_DIM_MULTIPLE,
                |qkv, config| nsa_selected(qkv, selection, config, heads),
            ),
            None => forward_per_head::<Self>(qkv, selection, config),
        }
    }

    fn moba_backward(
        saved: MobaSaved<Self>,
        dout: FloatTensor<Self>,
        config: &MobaConfig,
    ) -> MobaGradients<Self> {
        padded_backward::<WgpuRuntime, Self>(saved, dout, config, HEAD_DIM_MULTIPLE, backward)
    }

    fn nsa_selects_on_device(_: &Shape, config: &NsaConfig) -> bool {
        nsa_selection_fits_a_chunk(config)
    }

    fn moba_moves_between_devices() -> bool {
        false
    }

    fn nsa_select(
        q: FloatTensor<Self>,
        pooled_keys: FloatTensor<Self>,
        compressed_lse: FloatTensor<Self>,
        kv_len: usize,
        config: &NsaConfig,
    ) -> IntTensor<Self> {
        nsa_select::<Self>(q, pooled_keys, compressed_lse, kv_len, config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The selected-branch kernel holds whole groups up to 16 heads where they fit WebGPU's
    /// default 16 KiB of workgroup memory, fewer heads at a wider head dim, and refuses
    /// groups under 8 heads and a head dim whose vectors do not divide its 64 threads.
    #[test]
    fn nsa_selected_heads_fit_the_group_and_the_memory() {
        let limits = wgpu::Limits {
            max_compute_workgroup_storage_size: 16384,
            ..wgpu::Limits::default()
        };
        assert_eq!(nsa_selected_heads(&limits, 128, 16), Some(16));
        assert_eq!(nsa_selected_heads(&limits, 128, 64), Some(16));
        assert_eq!(nsa_selected_heads(&limits, 128, 12), Some(12));
        assert_eq!(nsa_selected_heads(&limits, 128, 8), Some(8));
        assert_eq!(nsa_selected_heads(&limits, 128, 4), None);
        assert_eq!(nsa_selected_heads(&limits, 128, 1), None);
        // 16 heads at 256 need 20,676 bytes: 8 heads, 10,340.
        assert_eq!(nsa_selected_heads(&limits, 256, 16), Some(8));
        assert_eq!(nsa_selected_heads(&limits, 96, 16), None);
    }
}
