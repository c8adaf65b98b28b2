//! The MoBA backward on wgpu buffers: dq, dk and dv from a forward's saved o, lse and
//! selection, with the selection held constant (DESIGN §1.6).

use super::context::GpuContext;
use super::forward::ForwardBuffers;
use super::plan::{AttentionKernel, TilePlan, backward_schedule, groups_per_call};
use super::runner::ScheduleRunner;
use super::schedule::{KernelSet, Schedule};
use super::timing::StageTimer;
use crate::config::{MobaConfig, Shape};
use crate::error::Result;

/// The buffers of one backward, row-major f32 unless noted. Saved by the forward:
/// `q, o, dout, dq: [B, Hq, S, D]`, `k, v, dk, dv: [B, Hkv, Sk, D]`, `lse: [B, Hq, S]`,
/// `selection: [B, Hq, S, top_k]` i32. Every one needs `STORAGE` usage; `dq`, `dk` and `dv`
/// are written whole (dk and dv are zero where no query chose the key's block).
pub struct BackwardBuffers<'a> {
    pub q: &'a wgpu::Buffer,
    pub k: &'a wgpu::Buffer,
    pub v: &'a wgpu::Buffer,
    pub o: &'a wgpu::Buffer,
    pub lse: &'a wgpu::Buffer,
    pub selection: &'a wgpu::Buffer,
    pub dout: &'a wgpu::Buffer,
    pub dq: &'a wgpu::Buffer,
    pub dk: &'a wgpu::Buffer,
    pub dv: &'a wgpu::Buffer,
}

impl<'a> ForwardBuffers<'a> {
    /// A backward's buffers: this forward's (its inputs and saved outputs), `dout` and the
    /// gradients.
    pub fn with_gradients(
        &self,
        dout: &'a wgpu::Buffer,
        dq: &'a wgpu::Buffer,
        dk: &'a wgpu::Buffer,
        dv: &'a wgpu::Buffer,
    ) -> BackwardBuffers<'a> {
        BackwardBuffers {
            q: self.q,
            k: self.k,
            v: self.v,
            o: self.o,
            lse: self.lse,
            selection: self.selection,
            dout,
            dq,
            dk,
            dv,
        }
    }
}

impl BackwardBuffers<'_> {
    /// The buffers in the schedule's io order.
    fn in_order(&self) -> [&wgpu::Buffer; 10] {
        [
            self.q,
            self.k,
            self.v,
            self.o,
            self.lse,
            self.selection,
            self.dout,
            self.dq,
            self.dk,
            self.dv,
        ]
    }
}

/// A MoBA backward planned for one shape and config on one adapter.
///
/// Deterministic: dq sums each row's blocks in slot order, dk and dv sum the rows that chose
/// a block in a fixed order (row order in the portable kernel, slot then row order in the
/// cooperative one), and no float atomics are used, so two runs give the same bits.
/// Memory beyond the caller's buffers: the selection inversion (`4 * top_k` bytes per row)
/// and two floats per row, never `S x S`.
///
/// ```no_run
/// use moba::{MobaConfig, Shape, gpu::{ForwardIo, GpuContext, MobaBackward, MobaForward}};
/// let gpu = GpuContext::new_blocking(&Default::default())?;
/// let (shape, config) = (Shape::prefill(1, 2, 512, 64), MobaConfig::new(64, 3));
/// let q = moba::random::normal(shape.q_elems(), 1);
/// let kv = moba::random::normal(shape.kv_elems(), 2);
/// let io = ForwardIo::new(&gpu, &q, &kv, &kv, shape.q_rows(), config.top_k);
/// let (dout, dq) = (gpu.upload("dout", &q), gpu.poisoned("dq", shape.q_elems()));
/// let (dk, dv) = (gpu.poisoned("dk", shape.kv_elems()), gpu.poisoned("dv", shape.kv_elems()));
/// let mut encoder = gpu.device().create_command_encoder(&Default::default());
/// MobaForward::new(&gpu, &shape, &config)?.encode(&mut encoder, &io.buffers())?;
/// let grads = io.buffers().with_gradients(&dout, &dq, &dk, &dv);
/// MobaBackward::new(&gpu, &shape, &config)?.encode(&mut encoder, &grads)?;
/// gpu.submit_and_wait(encoder.finish())?;
/// # Ok::<(), moba::MobaError>(())
/// ```
pub struct MobaBackward {
    shape: Shape,
    config: MobaConfig,
    kernel: AttentionKernel,
    runner: ScheduleRunner,
}

impl MobaBackward {
    /// Plans a backward with the fastest kernels the adapter runs at this head dim
    /// ([`AttentionKernel::best`]): the cooperative ones where it has them. They round dout
    /// and the score gradients to f16 after scaling dout by a power of two (its largest
    /// element into [0.5, 1)), so a training loss's small gradients keep f16's precision.
    pub fn new(gpu: &GpuContext, shape: &Shape, config: &MobaConfig) -> Result<Self> {
        let kernel = AttentionKernel::best(gpu.caps(), shape.head_dim);
        Self::with_kernel(gpu, shape, config, kernel)
    }

    /// Plans a backward whose dq passes and dk/dv run on `kernel` (an error if the adapter
    /// lacks it).
    pub fn with_kernel(
        gpu: &GpuContext,
        shape: &Shape,
        config: &MobaConfig,
        kernel: AttentionKernel,
    ) -> Result<Self> {
        shape.validate()?;
        config.validate()?;
        let schedule = backward_schedule(gpu.caps(), shape, config, kernel)?;
        Ok(Self {
            runner: ScheduleRunner::new(gpu, schedule, shape, config)?,
            shape: *shape,
            config: *config,
            kernel,
        })
    }

    /// Bytes of every buffer a backward of this shape binds.
    pub(crate) fn buffer_sizes(shape: &Shape, config: &MobaConfig) -> Vec<(&'static str, u64)> {
        let constants = TilePlan::smallest().constants(shape.head_dim, config.top_k);
        Schedule::backward(shape, config, KernelSet::portable(constants))
            .buffer_sizes(shape, config)
    }

    /// How many (batch, kv head) groups of `shape` one call can take within the adapter's
    /// buffer limits.
    pub fn groups_per_call(gpu: &GpuContext, shape: &Shape, config: &MobaConfig) -> Result<usize> {
        groups_per_call(
            gpu.limits(),
            &Self::buffer_sizes(&shape.group_chunk(1), config),
            shape.groups(),
        )
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }
    pub fn config(&self) -> &MobaConfig {
        &self.config
    }
    /// The kernel that runs the dq passes and dk/dv.
    pub fn kernel(&self) -> AttentionKernel {
        self.kernel
    }

    /// Records one backward into `encoder`.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder, io: &BackwardBuffers) -> Result<()> {
        self.runner.encode(encoder, &io.in_order(), None)
    }

    /// Records one backward with GPU timestamps around its
    /// [`Stage::BACKWARD`](crate::launch_plan::Stage::BACKWARD).
    pub fn encode_timed(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        io: &BackwardBuffers,
        timer: &StageTimer,
    ) -> Result<()> {
        self.runner.encode(encoder, &io.in_order(), Some(timer))
    }
}
