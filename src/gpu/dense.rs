//! Dense flash attention on wgpu buffers: the baseline MoBA is measured against.

use super::buffers::check_buffer;
use super::context::GpuContext;
use super::forward::ForwardBuffers;
use super::kernels::Kernel;
use super::plan::{TilePlan, check_buffer_sizes};
use crate::config::{Gate, MobaConfig, Shape};
use crate::error::Result;
use crate::kernel_params::KernelParams;

/// Dense attention (causal or not) planned for one shape on one adapter.
pub struct DenseForward {
    gpu: GpuContext,
    shape: Shape,
    plan: TilePlan,
    pipeline: wgpu::ComputePipeline,
    params: wgpu::Buffer,
}

impl DenseForward {
    /// Only `scale` and `causal` of the config matter here (the gate is not read: a
    /// key-window config still gives dense attention).
    pub fn new(gpu: &GpuContext, shape: &Shape, config: &MobaConfig) -> Result<Self> {
        shape.validate()?;
        config.validate()?;
        check_buffer_sizes(gpu.limits(), &Self::buffer_sizes(shape))?;
        let plan = TilePlan::new(gpu.limits(), shape.head_dim)?;
        let pipeline = gpu.pipeline(Kernel::DenseAttention, &plan.constants(shape.head_dim, 1))?;
        Ok(Self {
            params: gpu.constant("dense params", &KernelParams::new(shape, &dense(config))),
            gpu: gpu.clone(),
            shape: *shape,
            plan,
            pipeline,
        })
    }

    pub(crate) fn buffer_sizes(shape: &Shape) -> Vec<(&'static str, u64)> {
        io_sizes(shape)
    }

    /// Records one dense forward: `io.o` and `io.lse` from `io.q`, `io.k`, `io.v` (the
    /// selection is not touched).
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder, io: &ForwardBuffers) -> Result<()> {
        let buffers = [io.q, io.k, io.v, io.o, io.lse];
        for ((name, bytes), buffer) in io_sizes(&self.shape).into_iter().zip(buffers) {
            check_buffer(name, buffer, bytes)?;
        }
        let bind_group = self.gpu.bind(
            &self.pipeline,
            &[&self.params, io.q, io.k, io.v, io.o, io.lse],
        );
        let tiles_per_head = self.shape.q_len.div_ceil(self.plan.workgroup_size as usize) as u64;
        let heads = (self.shape.batch * self.shape.q_heads) as u64;
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("dense forward"),
            timestamp_writes: None,
        });
        self.gpu.dispatch(
            &mut pass,
            &self.pipeline,
            &bind_group,
            heads * tiles_per_head,
        )
    }
}

/// Bytes of q, k, v, o and lse.
fn io_sizes(shape: &Shape) -> Vec<(&'static str, u64)> {
    let (q, kv) = (shape.q_elems() as u64 * 4, shape.kv_elems() as u64 * 4);
    vec![
        ("q", q),
        ("k", kv),
        ("v", kv),
        ("o", q),
        ("lse", shape.q_rows() as u64 * 4),
    ]
}

/// The config the dense kernel runs: `config`'s scale and causality with the mean-key gate,
/// the one gate that adds no mask to the shared attention step (`key_visible`).
fn dense(config: &MobaConfig) -> MobaConfig {
    MobaConfig {
        gate: Gate::MeanKey,
        ..*config
    }
}
