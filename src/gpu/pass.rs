//! A planned pass: a forward or a backward schedule made ready for one shape and config on
//! one adapter, recorded into any encoder. [`MobaForward`](super::MobaForward) and
//! [`MobaBackward`](super::MobaBackward) are its two kinds.

use std::marker::PhantomData;

use super::context::GpuContext;
use super::plan::{
    AttentionKernel, TilePlan, cooperative_tiles, decode_constants, groups_per_call, kernel_set,
};
use super::runner::ScheduleRunner;
use super::schedule::{Given, KernelSet, LanesKernels, Schedule};
use super::timing::StageTimer;
use crate::config::{MobaConfig, Shape};
use crate::error::Result;

/// What tells a forward from a backward: its buffers and its schedule. Sealed: the two
/// kinds are [`ForwardPass`](super::ForwardPass) and [`BackwardPass`](super::BackwardPass).
pub trait Pass: sealed::Sealed {
    /// The caller's buffers of one run.
    type Buffers<'a>;
    /// The backward's schedule, or the forward's.
    const BACKWARD: bool;
    /// The buffers in the schedule's io order.
    fn in_order<'a>(buffers: &Self::Buffers<'a>) -> Vec<&'a wgpu::Buffer>;
}

mod sealed {
    /// Only this crate's pass kinds implement [`super::Pass`].
    pub trait Sealed {}
    impl Sealed for crate::gpu::ForwardPass {}
    impl Sealed for crate::gpu::BackwardPass {}
}

/// A pass planned for one shape and config on one adapter: pipelines and scratch buffers are
/// made once, then [`PlannedPass::encode`] records a run into any encoder.
pub struct PlannedPass<P: Pass> {
    shape: Shape,
    config: MobaConfig,
    kernel: AttentionKernel,
    plan: TilePlan,
    pub(super) runner: ScheduleRunner,
    pass: PhantomData<P>,
}

impl<P: Pass> PlannedPass<P> {
    /// Plans the pass with the fastest kernels the adapter runs at this head dim
    /// ([`AttentionKernel::best`]): the cooperative ones where it has them.
    pub fn new(gpu: &GpuContext, shape: &Shape, config: &MobaConfig) -> Result<Self> {
        let kernel = AttentionKernel::best(gpu.caps(), shape.head_dim);
        Self::with_kernel(gpu, shape, config, kernel)
    }

    /// Plans the pass with a chosen kernel (an error if the adapter lacks it).
    pub fn with_kernel(
        gpu: &GpuContext,
        shape: &Shape,
        config: &MobaConfig,
        kernel: AttentionKernel,
    ) -> Result<Self> {
        Self::planned(gpu, shape, config, kernel, Given::default())
    }

    pub(crate) fn planned(
        gpu: &GpuContext,
        shape: &Shape,
        config: &MobaConfig,
        kernel: AttentionKernel,
        given: Given,
    ) -> Result<Self> {
        shape.validate()?;
        config.validate()?;
        let (kernels, plan) = kernel_set(gpu.caps(), shape, config, kernel)?;
        let schedule = Self::schedule(shape, config, kernels, given);
        Ok(Self {
            runner: ScheduleRunner::new(gpu, schedule, shape, config)?,
            shape: *shape,
            config: *config,
            kernel,
            plan,
            pass: PhantomData,
        })
    }

    fn schedule(shape: &Shape, config: &MobaConfig, kernels: KernelSet, given: Given) -> Schedule {
        match P::BACKWARD {
            true => Schedule::backward(shape, config, kernels),
            false => Schedule::forward(shape, config, kernels, given),
        }
    }

    /// Bytes of every buffer the pass binds at this shape, inputs and outputs included: each
    /// at its largest over the kernels an adapter may run (for the adapter's limits).
    pub(crate) fn buffer_sizes(shape: &Shape, config: &MobaConfig) -> Vec<(&'static str, u64)> {
        Self::buffer_sizes_with(shape, config, AttentionKernel::Cooperative)
    }

    /// Bytes of every buffer the pass binds at this shape with `kernel`'s passes: the
    /// portable kernels' buffers, the f16 copies of k and v (half of their f32 size) where
    /// `kernel`'s passes stage them (cooperative, and the subgroup kernels' f16 variant),
    /// each at its larger size where a decode shape may run the split forward instead.
    pub(crate) fn buffer_sizes_with(
        shape: &Shape,
        config: &MobaConfig,
        kernel: AttentionKernel,
    ) -> Vec<(&'static str, u64)> {
        let constants = TilePlan::smallest().constants(shape.head_dim, config.top_k);
        let portable = KernelSet::portable(constants);
        let mut sizes =
            Self::schedule(shape, config, portable, Given::default()).buffer_sizes(shape, config);
        let half_copies = match kernel {
            AttentionKernel::Cooperative => Some(KernelSet {
                cooperative: Some(cooperative_tiles(shape.head_dim, config.top_k)),
                ..portable
            }),
            AttentionKernel::SubgroupF16 => Some(KernelSet {
                lanes: Some(LanesKernels {
                    constants,
                    half: true,
                }),
                ..portable
            }),
            AttentionKernel::Portable | AttentionKernel::Subgroup => None,
        };
        let decode = decode_constants(shape, constants, u32::MAX).map(|decode| KernelSet {
            decode: Some(decode),
            ..portable
        });
        for kernels in [half_copies, decode].into_iter().flatten() {
            let other = Self::schedule(shape, config, kernels, Given::default());
            for (name, bytes) in other.buffer_sizes(shape, config) {
                match sizes.iter_mut().find(|(known, _)| *known == name) {
                    Some((_, known)) => *known = (*known).max(bytes),
                    None => sizes.push((name, bytes)),
                }
            }
        }
        sizes
    }

    /// Whether the forward splits a decode over chunks of keys (the f32 split-decode
    /// kernels, whatever [`Self::kernel`] says of the other passes).
    pub fn splits_decode(&self) -> bool {
        self.runner.runs(super::kernels::Kernel::DecodeSplit)
    }

    /// How many (batch, kv head) groups of `shape` one call can take within the adapter's
    /// buffer limits (the host-slice API splits larger problems into calls of this many).
    pub fn groups_per_call(gpu: &GpuContext, shape: &Shape, config: &MobaConfig) -> Result<usize> {
        let per_group = Self::buffer_sizes(&shape.group_chunk(1), config);
        groups_per_call(gpu.limits(), &per_group, shape.groups())
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    pub fn config(&self) -> &MobaConfig {
        &self.config
    }

    /// The kernel that runs the attention passes (and the backward's dq passes and dk/dv).
    pub fn kernel(&self) -> AttentionKernel {
        self.kernel
    }

    /// The portable kernels' tiles, sized to the adapter.
    pub fn plan(&self) -> &TilePlan {
        &self.plan
    }

    /// Records one run into `encoder`.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder, io: &P::Buffers<'_>) -> Result<()> {
        self.runner.encode(encoder, &P::in_order(io), None)
    }

    /// Records one run with more of the caller's buffers after `io`'s (those a forward was
    /// planned with given), with timestamps where a timer is given.
    pub(crate) fn encode_with(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        io: &P::Buffers<'_>,
        more: &[&wgpu::Buffer],
        timer: Option<&StageTimer>,
    ) -> Result<()> {
        let mut buffers = P::in_order(io);
        buffers.extend_from_slice(more);
        self.runner.encode(encoder, &buffers, timer)
    }

    /// Records one run with GPU timestamps around each of its stages
    /// ([`Stage::FORWARD`](crate::launch_plan::Stage::FORWARD) or
    /// [`Stage::BACKWARD`](crate::launch_plan::Stage::BACKWARD)); read them with
    /// [`StageTimer::read`] once the work is submitted.
    pub fn encode_timed(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        io: &P::Buffers<'_>,
        timer: &StageTimer,
    ) -> Result<()> {
        self.runner.encode(encoder, &P::in_order(io), Some(timer))
    }
}
