//! The MoBA forward on wgpu buffers: gate, selection inversion, attention passes, finalize.

use super::context::GpuContext;
use super::pass::{Pass, PlannedPass};
use super::plan::AttentionKernel;
use super::schedule::{Given, Io};
use super::timing::StageTimer;
use crate::config::{MobaConfig, Shape};
use crate::error::{MobaError, Result};

/// The buffers of one forward, row-major f32 unless noted:
/// `q: [B, Hq, S, D]`, `k, v: [B, Hkv, Sk, D]`, `o: [B, Hq, S, D]`, `lse: [B, Hq, S]`,
/// `selection: [B, Hq, S, top_k]` i32. All need `STORAGE` usage.
#[derive(Clone, Copy)]
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

/// A MoBA forward (gate, selection inversion, attention passes, finalize) planned for one
/// shape and config on one adapter: pipelines and scratch buffers are made once, then
/// [`encode`](PlannedPass::encode) records a run into any encoder.
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
pub type MobaForward = PlannedPass<ForwardPass>;

impl MobaForward {
    /// A forward whose gate reads the keys' block means from the caller's buffer instead of
    /// pooling every key (a decode over a KV cache that keeps them): `[B, Hkv, ceil(Sk /
    /// block_size), D]` f32, the means of `k`'s blocks (the last block's over the keys it
    /// has). The mean-key gate only. Record it with [`Self::encode_with_means`].
    pub fn with_given_means(
        gpu: &GpuContext,
        shape: &Shape,
        config: &MobaConfig,
        kernel: AttentionKernel,
    ) -> Result<Self> {
        config.check_given_means()?;
        let given = Given {
            means: true,
            ..Given::default()
        };
        Self::planned(gpu, shape, config, kernel, given)
    }

    /// Records one run of a forward planned [`Self::with_given_means`], reading `means`;
    /// times its stages where a timer is given.
    pub fn encode_with_means(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        io: &ForwardBuffers<'_>,
        means: &wgpu::Buffer,
        timer: Option<&StageTimer>,
    ) -> Result<()> {
        self.encode_with(encoder, io, &[means], timer)
    }

    /// A decode over a KV cache of `shape.kv_len` positions (its capacity) that the caller
    /// fills one step at a time: `k, v: [B, Hkv, capacity, D]`, of which the first
    /// [`Self::set_cached_len`] positions hold keys, and for the mean-key gate their block
    /// means `[B, Hkv, ceil(capacity / block_size), D]` f32 (record with
    /// [`Self::encode_over_cache`]). The queries are the `q_len` positions after the cached
    /// ones. Planned once for every
    /// length; an error unless the shape decodes split over keys
    /// ([`crate::launch_plan::decodes`]) on this adapter.
    ///
    /// ```no_run
    /// use moba::{MobaConfig, Shape, gpu::{ForwardBuffers, GpuContext, MobaForward}};
    /// let gpu = GpuContext::new_blocking(&Default::default())?;
    /// // 8 query heads over 2 kv heads, one query, a cache of 4096 positions.
    /// let capacity = Shape { q_len: 1, kv_heads: 2, ..Shape::prefill(1, 8, 4096, 64) };
    /// let decode = MobaForward::over_cache(&gpu, &capacity, &MobaConfig::new(256, 3))?;
    /// decode.set_cached_len(1000)?; // the cache holds 999 positions and the query's own
    /// // ... record with decode.encode_over_cache(...), submit, then the next length.
    /// # Ok::<(), moba::MobaError>(())
    /// ```
    pub fn over_cache(gpu: &GpuContext, shape: &Shape, config: &MobaConfig) -> Result<Self> {
        let pass = Self::planned_over_cache(gpu, shape, config, AttentionKernel::Portable)?;
        if !pass.splits_decode() {
            return Err(MobaError::Unsupported(format!(
                "a decode over a KV cache needs the split-decode kernels: at most {} query \
                 rows per kv head, within this adapter's workgroup memory (this shape has {})",
                crate::launch_plan::DECODE_MAX_ROWS,
                shape.group_size() * shape.q_len
            )));
        }
        Ok(pass)
    }

    /// A prefill over a KV cache laid out as for [`Self::over_cache`]: `shape.q_len` queries
    /// (a prompt's chunk of positions, many more than a decode takes) after the cached
    /// positions, through the row-tiled passes of the fastest f32 kernel (subgroup, else
    /// portable), each causally over the cache up to its own position. Set the length with
    /// [`Self::set_cached_len`] and record with [`Self::encode_over_cache`], as a decode.
    pub fn prefill_over_cache(
        gpu: &GpuContext,
        shape: &Shape,
        config: &MobaConfig,
    ) -> Result<Self> {
        let kernel = AttentionKernel::best_f32(gpu.caps(), shape.head_dim);
        Self::planned_over_cache(gpu, shape, config, kernel)
    }

    /// A forward over a cache: the block means given for the mean-key gate, the bindings kept
    /// from one step to the next (a step binds the same cache and buffers as the one before).
    fn planned_over_cache(
        gpu: &GpuContext,
        shape: &Shape,
        config: &MobaConfig,
        kernel: AttentionKernel,
    ) -> Result<Self> {
        let given = Given {
            means: config.check_given_means().is_ok(),
            ..Given::default()
        };
        let mut pass = Self::planned(gpu, shape, config, kernel, given)?;
        pass.runner.keep_bindings();
        Ok(pass)
    }

    /// How many positions of the cache a forward planned [`Self::over_cache`] or
    /// [`Self::prefill_over_cache`] reads, the
    /// queries' own included (at least `q_len`, at most the capacity), from the next
    /// submission on: record and submit one step per length.
    pub fn set_cached_len(&self, len: usize) -> Result<()> {
        let (shape, config) = (self.shape(), self.config());
        // Pooling the keys (block_means.wgsl) reads them at kv_len's stride: only a forward
        // over given means (or a static gate) reads a cache.
        if self.runner.runs(super::kernels::Kernel::BlockMeans) {
            return Err(MobaError::Config(
                "set_cached_len is for a forward planned with MobaForward::over_cache or \
                 prefill_over_cache"
                    .into(),
            ));
        }
        if len < shape.q_len || len > shape.kv_len {
            return Err(MobaError::Config(format!(
                "a cache of {} positions cannot hold {len} (with the {} queries' own)",
                shape.kv_len, shape.q_len
            )));
        }
        (self.runner).write_params(|planned| planned.with_cached_len(len, config.block_size));
        Ok(())
    }

    /// Records one step of a forward planned [`Self::over_cache`] or
    /// [`Self::prefill_over_cache`]: `means` are the cache's
    /// block means, which only the mean-key gate reads (the static gates rank without them).
    pub fn encode_over_cache(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        io: &ForwardBuffers<'_>,
        means: &wgpu::Buffer,
    ) -> Result<()> {
        match self.runner.takes(Io::Means) {
            true => self.encode_with(encoder, io, &[means], None),
            false => self.encode(encoder, io),
        }
    }

    /// A forward over sequences packed into each batch entry, every sequence from a block
    /// boundary (a varlen batch laid out by [`crate::varlen::Packing`]): causal rows rank
    /// only the blocks of their own sequence. Record it with
    /// [`Self::encode_with_sequence_starts`]. Causal configs only.
    pub fn with_sequence_starts(
        gpu: &GpuContext,
        shape: &Shape,
        config: &MobaConfig,
        kernel: AttentionKernel,
    ) -> Result<Self> {
        crate::varlen::check_causal(config)?;
        let given = Given {
            sequence_starts: true,
            ..Given::default()
        };
        Self::planned(gpu, shape, config, kernel, given)
    }

    /// Records one run of a forward planned [`Self::with_sequence_starts`], reading
    /// `sequence_starts: [ceil(Sk / block_size)]` u32, the first block of each block's
    /// sequence ([`crate::varlen::Packing::sequence_starts`]).
    pub fn encode_with_sequence_starts(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        io: &ForwardBuffers<'_>,
        sequence_starts: &wgpu::Buffer,
    ) -> Result<()> {
        self.encode_with(encoder, io, &[sequence_starts], None)
    }
}

/// The forward kind of [`PlannedPass`].
pub struct ForwardPass;

impl Pass for ForwardPass {
    type Buffers<'a> = ForwardBuffers<'a>;
    const BACKWARD: bool = false;
    fn in_order<'a>(io: &Self::Buffers<'a>) -> Vec<&'a wgpu::Buffer> {
        vec![io.q, io.k, io.v, io.o, io.lse, io.selection]
    }
}
