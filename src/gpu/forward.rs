//! The MoBA forward on wgpu buffers: gate, selection inversion, attention passes, finalize.

use super::buffers::check_buffer;
use super::context::GpuContext;
use super::kernels::{Kernel, KernelConstants};
use super::plan::{
    AttentionKernel, TilePlan, check_buffer_sizes, cooperative_constants, groups_per_call, params,
};
use super::timing::{STAGES, StageTimer};
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

struct Pipelines {
    block_mean: wgpu::ComputePipeline,
    gate: wgpu::ComputePipeline,
    count: wgpu::ComputePipeline,
    scan: wgpu::ComputePipeline,
    scatter: wgpu::ComputePipeline,
    attention: wgpu::ComputePipeline,
    finalize: wgpu::ComputePipeline,
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
    gpu: GpuContext,
    shape: Shape,
    config: MobaConfig,
    plan: TilePlan,
    kernel: AttentionKernel,
    tiles_per_group: u32,
    pipelines: Pipelines,
    /// One parameter block per selection slot (the attention passes differ only in `slot`).
    params: Vec<wgpu::Buffer>,
    block_means: wgpu::Buffer,
    counts: wgpu::Buffer,
    cursors: wgpu::Buffer,
    starts: wgpu::Buffer,
    lists: wgpu::Buffer,
    stats: wgpu::Buffer,
}

impl MobaForward {
    /// Plans a forward with the fastest attention kernel the adapter runs.
    pub fn new(gpu: &GpuContext, shape: &Shape, config: &MobaConfig) -> Result<Self> {
        Self::with_kernel(
            gpu,
            shape,
            config,
            AttentionKernel::best(gpu, shape.head_dim),
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
        check_buffer_sizes(gpu.limits(), &Self::buffer_sizes(shape, config))?;
        let plan = TilePlan::new(gpu.limits(), shape.head_dim)?;
        let constants = plan.constants(shape.head_dim, config.top_k);
        let (attention_kernel, attention_constants) = match kernel {
            AttentionKernel::Portable => (Kernel::MobaAttention, constants),
            AttentionKernel::Cooperative => (
                Kernel::MobaAttentionCoop,
                cooperative_constants(gpu, shape.head_dim, config.top_k)?,
            ),
        };
        // The scan counts tiles of the attention kernel's query tile.
        let constants = KernelConstants {
            query_tile: attention_constants.query_tile,
            ..constants
        };
        let pipeline = |kernel| gpu.pipeline(kernel, &constants);
        let pipelines = Pipelines {
            block_mean: pipeline(Kernel::BlockMean)?,
            gate: pipeline(Kernel::GateTopk)?,
            count: pipeline(Kernel::SelectionCount)?,
            scan: pipeline(Kernel::SelectionScan)?,
            scatter: pipeline(Kernel::SelectionScatter)?,
            attention: gpu.pipeline(attention_kernel, &attention_constants)?,
            finalize: pipeline(Kernel::AttentionFinalize)?,
        };
        let nb = shape.num_blocks(config.block_size);
        let tiles_per_group =
            ((shape.group_size() * shape.q_len).div_ceil(plan.workgroup_size as usize) + nb) as u32;
        let params = (0..config.top_k)
            .map(|slot| gpu.constant("moba params", &params(shape, config, slot, tiles_per_group)))
            .collect();
        let [means, counts, starts, lists, stats] = Self::scratch_sizes(shape, config);
        Ok(Self {
            params,
            block_means: gpu.scratch("block means", means.1),
            counts: gpu.scratch("list counts", counts.1),
            cursors: gpu.scratch("list cursors", counts.1),
            starts: gpu.scratch("list starts", starts.1),
            lists: gpu.scratch("lists", lists.1),
            stats: gpu.scratch("row stats", stats.1),
            gpu: gpu.clone(),
            shape: *shape,
            config: *config,
            plan,
            kernel,
            tiles_per_group,
            pipelines,
        })
    }

    fn scratch_sizes(shape: &Shape, config: &MobaConfig) -> [(&'static str, u64); 5] {
        let (groups, k) = ((shape.batch * shape.kv_heads) as u64, config.top_k as u64);
        let (nb, rows) = (
            shape.num_blocks(config.block_size) as u64,
            shape.q_rows() as u64,
        );
        [
            ("block_means", groups * nb * shape.head_dim as u64 * 4),
            ("list counts", groups * k * nb * 4),
            ("list starts", groups * (k * nb + 1) * 8),
            ("lists", rows * k * 4),
            ("row stats", rows * 8),
        ]
    }

    /// Bytes of every buffer a forward of this shape binds, inputs and outputs included.
    pub(crate) fn buffer_sizes(shape: &Shape, config: &MobaConfig) -> Vec<(&'static str, u64)> {
        let mut sizes = io_sizes(shape);
        sizes.push(("selection", shape.q_rows() as u64 * config.top_k as u64 * 4));
        sizes.extend(Self::scratch_sizes(shape, config));
        sizes
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
        self.encode_with(encoder, io, None)
    }

    /// Records one forward with GPU timestamps around its stages; read them with
    /// [`StageTimer::read`] once the work is submitted.
    pub fn encode_timed(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        io: &ForwardBuffers,
        timer: &StageTimer,
    ) -> Result<()> {
        self.encode_with(encoder, io, Some(timer))
    }

    fn encode_with(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        io: &ForwardBuffers,
        timer: Option<&StageTimer>,
    ) -> Result<()> {
        let (shape, gpu, p) = (&self.shape, &self.gpu, &self.pipelines);
        check_io(shape, io.q, io.k, io.v, io.o, io.lse)?;
        let top_k = self.config.top_k as u64;
        check_buffer("selection", io.selection, shape.q_rows() as u64 * top_k * 4)?;
        encoder.clear_buffer(&self.counts, 0, None);
        encoder.clear_buffer(&self.cursors, 0, None);

        let params = &self.params[0];
        let block_mean = gpu.bind(&p.block_mean, &[params, io.k, &self.block_means]);
        let gate = gpu.bind(&p.gate, &[params, io.q, &self.block_means, io.selection]);
        let count = gpu.bind(&p.count, &[params, io.selection, &self.counts]);
        let scan = gpu.bind(&p.scan, &[params, &self.counts, &self.starts]);
        let scatter = gpu.bind(
            &p.scatter,
            &[
                params,
                io.selection,
                &self.starts,
                &self.cursors,
                &self.lists,
            ],
        );
        let attention: Vec<wgpu::BindGroup> = self
            .params
            .iter()
            .map(|slot_params| {
                gpu.bind(
                    &p.attention,
                    &[
                        slot_params,
                        io.q,
                        io.k,
                        io.v,
                        &self.lists,
                        &self.starts,
                        io.o,
                        &self.stats,
                    ],
                )
            })
            .collect();
        let finalize = gpu.bind(&p.finalize, &[params, io.o, &self.stats, io.lse]);

        let groups = (shape.batch * shape.kv_heads) as u64;
        let nb = shape.num_blocks(self.config.block_size) as u64;
        let rows = shape.q_rows() as u64;
        let per_workgroup = self.plan.workgroup_size as u64;
        // One compute pass per stage, so that each can carry timestamps.
        let stage = |index: usize| wgpu::ComputePassDescriptor {
            label: Some(STAGES[index]),
            timestamp_writes: timer.map(|t| t.writes(index)),
        };
        {
            let mut pass = encoder.begin_compute_pass(&stage(0));
            gpu.dispatch(&mut pass, &p.block_mean, &block_mean, groups * nb)?;
            gpu.dispatch(&mut pass, &p.gate, &gate, rows.div_ceil(per_workgroup))?;
        }
        {
            let mut pass = encoder.begin_compute_pass(&stage(1));
            let entries = (rows * top_k).div_ceil(per_workgroup);
            gpu.dispatch(&mut pass, &p.count, &count, entries)?;
            gpu.dispatch(&mut pass, &p.scan, &scan, groups)?;
            gpu.dispatch(&mut pass, &p.scatter, &scatter, entries)?;
        }
        {
            let mut pass = encoder.begin_compute_pass(&stage(2));
            for slot in &attention {
                gpu.dispatch(
                    &mut pass,
                    &p.attention,
                    slot,
                    groups * self.tiles_per_group as u64,
                )?;
            }
        }
        {
            let mut pass = encoder.begin_compute_pass(&stage(3));
            gpu.dispatch(
                &mut pass,
                &p.finalize,
                &finalize,
                rows.div_ceil(per_workgroup),
            )?;
        }
        if let Some(timer) = timer {
            timer.resolve(encoder);
        }
        Ok(())
    }
}

/// Bytes of q, k, v, o and lse.
pub(crate) fn io_sizes(shape: &Shape) -> Vec<(&'static str, u64)> {
    let (q, kv) = (shape.q_elems() as u64 * 4, shape.kv_elems() as u64 * 4);
    vec![
        ("q", q),
        ("k", kv),
        ("v", kv),
        ("o", q),
        ("lse", shape.q_rows() as u64 * 4),
    ]
}

/// Fails unless q, k, v, o and lse are large enough for the shape.
pub(crate) fn check_io(
    shape: &Shape,
    q: &wgpu::Buffer,
    k: &wgpu::Buffer,
    v: &wgpu::Buffer,
    o: &wgpu::Buffer,
    lse: &wgpu::Buffer,
) -> Result<()> {
    let sizes = io_sizes(shape);
    for ((name, bytes), buffer) in sizes.iter().zip([q, k, v, o, lse]) {
        check_buffer(name, buffer, *bytes)?;
    }
    Ok(())
}
