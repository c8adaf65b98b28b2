//! The MoBA forward on wgpu buffers: gate, selection inversion, attention passes, finalize.

use super::context::GpuContext;
use super::plan::{AttentionKernel, TilePlan, forward_schedule, groups_per_call};
use super::runner::ScheduleRunner;
use super::schedule::{KernelSet, Schedule};
use super::timing::StageTimer;
use crate::config::{MobaConfig, Shape};
use crate::error::Result;

/// The buffers of one forward, row-major f32 unless noted:
/// `q: [B, Hq, S, D]`, `k, v: [B, Hkv, Sk, D]`, `o: [B, Hq, S, D]`, `lse: [B, Hq, S]`,
/// `selection: [B, Hq, S, top_k]` i32. All need `STORAGE` usage.
pub struct ForwardBuffers<'a> {
    pub q: &'a wgpu::Buffer,
    pub k: &'a wgpu::Buffer,
    pub v: &'a wgpu::Buffer,
    pub o: &'a wgpu::Buffer,
    pub lse: &'a wgpu::Buffer,
    pub selection: &'a wgpu::Buffer,
}

/// The buffers of one forward, owned: inputs uploaded from host slices, outputs filled with
/// [`POISON`](super::POISON) so that an element no kernel writes cannot pass a check.
pub struct ForwardIo {
    pub q: wgpu::Buffer,
    pub k: wgpu::Buffer,
    pub v: wgpu::Buffer,
    pub o: wgpu::Buffer,
    pub lse: wgpu::Buffer,
    pub selection: wgpu::Buffer,
}

impl ForwardIo {
    /// Uploads `q`, `k`, `v` and makes poisoned outputs for `rows` rows of `head_dim` and
    /// `top_k` selection entries each.
    pub fn new(
        gpu: &GpuContext,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        rows: usize,
        top_k: usize,
    ) -> Self {
        Self {
            q: gpu.upload("q", q),
            k: gpu.upload("k", k),
            v: gpu.upload("v", v),
            o: gpu.poisoned("o", q.len()),
            lse: gpu.poisoned("lse", rows),
            selection: gpu.poisoned("selection", rows * top_k),
        }
    }

    /// Borrowed views for [`MobaForward::encode`].
    pub fn buffers(&self) -> ForwardBuffers<'_> {
        ForwardBuffers {
            q: &self.q,
            k: &self.k,
            v: &self.v,
            o: &self.o,
            lse: &self.lse,
            selection: &self.selection,
        }
    }
}

/// A MoBA forward planned for one shape and config on one adapter: pipelines and scratch
/// buffers are made once, then [`MobaForward::encode`] records a run into any encoder.
///
/// ```no_run
/// use moba::{MobaConfig, Shape, gpu::{ForwardBuffers, GpuContext, MobaForward}};
/// let gpu = GpuContext::new_blocking(&Default::default())?;
/// let shape = Shape::prefill(1, 4, 4096, 64);
/// let forward = MobaForward::new(&gpu, &shape, &MobaConfig::new(256, 3))?;
/// let (q, k, v) = (gpu.poisoned("q", shape.q_elems()), gpu.poisoned("k", shape.kv_elems()),
///                  gpu.poisoned("v", shape.kv_elems()));
/// let (o, lse, sel) = (gpu.poisoned("o", shape.q_elems()), gpu.poisoned("lse", shape.q_rows()),
///                      gpu.poisoned("sel", shape.q_rows() * 3));
/// let mut encoder = gpu.device().create_command_encoder(&Default::default());
/// forward.encode(&mut encoder, &ForwardBuffers { q: &q, k: &k, v: &v, o: &o, lse: &lse, selection: &sel })?;
/// gpu.submit_and_wait(encoder.finish())?;
/// # Ok::<(), moba::MobaError>(())
/// ```
pub struct MobaForward {
    shape: Shape,
    config: MobaConfig,
    plan: TilePlan,
    kernel: AttentionKernel,
    runner: ScheduleRunner,
}

impl MobaForward {
    /// Plans a forward with the fastest attention kernel the adapter runs.
    pub fn new(gpu: &GpuContext, shape: &Shape, config: &MobaConfig) -> Result<Self> {
        Self::with_kernel(
            gpu,
            shape,
            config,
            AttentionKernel::best(gpu.caps(), shape.head_dim),
        )
    }

    /// Plans a forward with a chosen attention kernel (an error if the adapter lacks it).
    pub fn with_kernel(
        gpu: &GpuContext,
        shape: &Shape,
        config: &MobaConfig,
        kernel: AttentionKernel,
    ) -> Result<Self> {
        shape.validate()?;
        config.validate()?;
        let (schedule, plan) = forward_schedule(gpu.caps(), shape, config, kernel)?;
        Ok(Self {
            runner: ScheduleRunner::new(gpu, schedule, shape, config)?,
            shape: *shape,
            config: *config,
            plan,
            kernel,
        })
    }

    /// Bytes of every buffer a portable forward of this shape binds, inputs and outputs
    /// included (the cooperative kernel's scratch is no larger).
    pub(crate) fn buffer_sizes(shape: &Shape, config: &MobaConfig) -> Vec<(&'static str, u64)> {
        let constants = TilePlan::smallest().constants(shape.head_dim, config.top_k);
        Schedule::forward(shape, config, KernelSet::portable(constants)).buffer_sizes(shape, config)
    }

    /// How many (batch, kv head) groups of `shape` one call can take within the adapter's
    /// buffer limits (the host-slice API splits larger problems into calls of this many).
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
    pub fn plan(&self) -> &TilePlan {
        &self.plan
    }
    /// The kernel that runs the attention passes.
    pub fn kernel(&self) -> AttentionKernel {
        self.kernel
    }

    /// Records one forward into `encoder`.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder, io: &ForwardBuffers) -> Result<()> {
        self.runner.encode(encoder, &io.in_order(), None)
    }

    /// Records one forward with GPU timestamps around its [`Stage::FORWARD`](crate::launch_plan::Stage::FORWARD); read
    /// them with [`StageTimer::read`] once the work is submitted.
    pub fn encode_timed(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        io: &ForwardBuffers,
        timer: &StageTimer,
    ) -> Result<()> {
        self.runner.encode(encoder, &io.in_order(), Some(timer))
    }
}

impl ForwardBuffers<'_> {
    /// The buffers in the schedule's io order.
    fn in_order(&self) -> [&wgpu::Buffer; 6] {
        [self.q, self.k, self.v, self.o, self.lse, self.selection]
    }
}
