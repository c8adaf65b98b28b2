//! MoBA on burn's wgpu backend: the same WGSL kernels and the same [`Schedule`] as the wgpu
//! runtime (planned by the same functions from the same [`DeviceCaps`], so the cooperative
//! tensor-core forward runs where the device has it), launched through burn's `template`
//! kernels on burn's own device and queue, on the memory of burn tensors (no host round trip).

use burn::backend::wgpu::{
    BoolElement, CubeBackend, CubeTensor, KernelSource, SourceKernel, SourceTemplate, WgpuDevice,
    WgpuRuntime, into_contiguous,
};
use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::{Handle, KernelArguments};
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::DType;
use burn::tensor::ops::FloatTensor;

use super::cube::{empty, padded_backward, padded_config, padded_forward, problem_shape};
use super::wgpu_device::burn_device_caps;
use super::{MobaBackend, MobaForwardOutput, MobaGradients, MobaSaved};
use crate::config::{MobaConfig, Shape};
use crate::error::Result;
use crate::gpu::buffers::fold_grid;
use crate::gpu::host::HEAD_DIM_MULTIPLE;
use crate::gpu::kernels::{Kernel, KernelConstants};
use crate::gpu::plan::{check_buffer_sizes, kernel_set};
use crate::gpu::schedule::{Binding, Schedule};
use crate::gpu::{AttentionKernel, DeviceCaps};
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

/// The attention kernels burn's wgpu path runs at `head_dim` on `device`, forward and
/// backward: the cooperative (tensor-core) ones where the device has them (a device
/// `burn_wgpu_device` opened), the portable ones otherwise.
pub fn attention_kernel(device: &WgpuDevice, head_dim: usize) -> AttentionKernel {
    let padded = head_dim.next_multiple_of(HEAD_DIM_MULTIPLE);
    AttentionKernel::best(&burn_device_caps(device), padded)
}

/// The forward and backward schedules of a problem (head dim padded) on `device`.
fn schedules(
    shape: &Shape,
    config: &MobaConfig,
    caps: &DeviceCaps,
) -> Result<(Schedule, Schedule)> {
    let kernel = AttentionKernel::best(caps, shape.head_dim);
    let (kernels, _) = kernel_set(caps, shape, config, kernel)?;
    Ok((
        Schedule::forward(shape, config, kernels),
        Schedule::backward(shape, config, kernels),
    ))
}

/// What `moba_prepare` checks: the tile plan, every buffer of the forward and the backward
/// within the device's largest binding, and every grid within its workgroup counts. (burn
/// runs a problem in one call: no tensor of burn's exceeds that binding, so only a scratch
/// buffer could, and that is an error here rather than a split.)
fn prepare(shape: &Shape, config: &MobaConfig, device: &WgpuDevice) -> Result<()> {
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
    let (forward, backward) = schedules(&shape, &config, &caps)?;
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

/// MoBA forward on burn-wgpu tensors (f32, head dim a multiple of 4): `(o, lse, selection)`.
fn forward(qkv: [Tensor; 3], config: &MobaConfig) -> [Tensor; 3] {
    let [q, k, v] = qkv.map(into_contiguous);
    let shape = problem_shape(&q, &k);
    let caps = burn_device_caps(&q.device);
    let (schedule, _) = schedules(&shape, config, &caps).expect(PREPARED);
    let rows = vec![shape.batch, shape.q_heads, shape.q_len];
    let o = empty(&q, q.meta.shape().to_vec(), DType::F32);
    let lse = empty(&q, rows.clone(), DType::F32);
    let selection = empty(&q, [rows, vec![config.top_k]].concat(), DType::I32);
    launch(&schedule, &[&q, &k, &v, &o, &lse, &selection], &caps.limits);
    [o, lse, selection]
}

/// MoBA backward on burn-wgpu tensors from a forward's saved outputs: `(dq, dk, dv)`.
fn backward(saved: [Tensor; 6], dout: Tensor, config: &MobaConfig) -> [Tensor; 3] {
    let [q, k, v, o, lse, selection] = saved.map(into_contiguous);
    let dout = into_contiguous(dout);
    let shape = problem_shape(&q, &k);
    let caps = burn_device_caps(&q.device);
    let (_, schedule) = schedules(&shape, config, &caps).expect(PREPARED);
    let dq = empty(&q, q.meta.shape().to_vec(), DType::F32);
    let dk = empty(&q, k.meta.shape().to_vec(), DType::F32);
    let dv = empty(&q, k.meta.shape().to_vec(), DType::F32);
    launch(
        &schedule,
        &[&q, &k, &v, &o, &lse, &selection, &dout, &dq, &dk, &dv],
        &caps.limits,
    );
    [dq, dk, dv]
}

/// burn's wgpu backend with f32 floats and i32 ints, the element types the kernels read.
/// `Fusion` of it (burn's default `Wgpu`) reaches it through `super::fusion`.
impl<BT: BoolElement> MobaBackend for CubeBackend<WgpuRuntime, f32, i32, BT> {
    fn moba_prepare(shape: &Shape, config: &MobaConfig, device: &WgpuDevice) -> Result<()> {
        prepare(shape, config, device)
    }

    fn moba_forward(qkv: [FloatTensor<Self>; 3], config: &MobaConfig) -> MobaForwardOutput<Self> {
        padded_forward::<WgpuRuntime, Self>(qkv, config, HEAD_DIM_MULTIPLE, forward)
    }

    fn moba_backward(
        saved: MobaSaved<Self>,
        dout: FloatTensor<Self>,
        config: &MobaConfig,
    ) -> MobaGradients<Self> {
        padded_backward::<WgpuRuntime, Self>(saved, dout, config, HEAD_DIM_MULTIPLE, backward)
    }
}
