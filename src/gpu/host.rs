//! The host-slice API: checks inputs, pads odd head dims, splits problems over (batch, kv
//! head) groups to fit the adapter's buffer limits, and reads results back.

use std::borrow::Cow;
use std::ops::Range;

use super::backward::MobaBackward;
use super::context::GpuContext;
use super::dense::DenseForward;
use super::forward::{ForwardIo, MobaForward};
use super::plan::{AttentionKernel, groups_per_call};
use crate::config::{MobaConfig, Shape};
use crate::error::Result;
use crate::varlen::{Packing, packed_problem};

/// Forward results on the host: `o: [B, Hq, S, D]`, `lse: [B, Hq, S]` (natural log),
/// `selection: [B, Hq, S, top_k]` (ascending, -1 padded; empty for dense attention).
#[derive(Debug, Clone, PartialEq)]
pub struct GpuForward {
    pub o: Vec<f32>,
    pub lse: Vec<f32>,
    pub selection: Vec<i32>,
}

/// Gradients on the host: `dq: [B, Hq, S, D]`, `dk, dv: [B, Hkv, Sk, D]`.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuGradients {
    pub dq: Vec<f32>,
    pub dk: Vec<f32>,
    pub dv: Vec<f32>,
}

/// Which kernel a host call runs.
#[derive(Clone, Copy, PartialEq)]
enum Attention {
    Moba,
    Dense,
}

impl GpuContext {
    /// MoBA forward of host tensors (row-major `q: [B, Hq, S, D]`, `k, v: [B, Hkv, Sk, D]`).
    ///
    /// ```no_run
    /// use moba::{MobaConfig, Shape, gpu::GpuContext};
    /// let gpu = GpuContext::new_blocking(&Default::default())?;
    /// let shape = Shape::prefill(1, 2, 1024, 64);
    /// let q = vec![0.1f32; shape.q_elems()];
    /// let kv = vec![0.2f32; shape.kv_elems()];
    /// let out = gpu.block_on(gpu.moba_forward(&q, &kv, &kv, &shape, &MobaConfig::new(128, 3)))?;
    /// assert_eq!(out.o.len(), shape.q_elems());
    /// # Ok::<(), moba::MobaError>(())
    /// ```
    pub async fn moba_forward(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        shape: &Shape,
        config: &MobaConfig,
    ) -> Result<GpuForward> {
        self.run_host(Attention::Moba, [q, k, v], shape, config, None)
            .await
    }

    /// MoBA forward of a varlen (packed) batch of host tensors: `q: [1, Hq, T, D]` and `k,
    /// v: [1, Hkv, T, D]` hold the sequences `cu_seqlens` delimits (sequence `i` is tokens
    /// `cu_seqlens[i]..cu_seqlens[i + 1]`), each attended causally on its own
    /// ([`crate::varlen`]). The selection's block ids count from each row's own sequence.
    ///
    /// ```no_run
    /// use moba::{MobaConfig, Shape, gpu::GpuContext};
    /// let gpu = GpuContext::new_blocking(&Default::default())?;
    /// let shape = Shape::prefill(1, 2, 300, 64); // sequences of 100 and 200 tokens
    /// let (q, kv) = (moba::random::normal(shape.q_elems(), 1), moba::random::normal(shape.kv_elems(), 2));
    /// let config = MobaConfig::new(64, 2);
    /// let out = gpu.block_on(gpu.moba_forward_varlen(&q, &kv, &kv, &shape, &[0, 100, 300], &config))?;
    /// assert_eq!(out.o.len(), shape.q_elems());
    /// # Ok::<(), moba::MobaError>(())
    /// ```
    pub async fn moba_forward_varlen(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        shape: &Shape,
        cu_seqlens: &[usize],
        config: &MobaConfig,
    ) -> Result<GpuForward> {
        let (packing, aligned) = packed_problem(shape, cu_seqlens, config)?;
        shape.check_inputs(q, k, v)?;
        let [q, k, v] = aligned_qkv(&packing, shape, [q, k, v]);
        let starts = packing.sequence_starts();
        let out = (self.run_host(
            Attention::Moba,
            [&q, &k, &v],
            &aligned,
            config,
            Some(&starts),
        ))
        .await?;
        let heads = shape.q_heads;
        let mut selection = packing.pack(&out.selection, heads, config.top_k);
        packing.selection_in_sequences(&mut selection, heads, config.top_k);
        Ok(GpuForward {
            o: packing.pack(&out.o, heads, shape.head_dim),
            lse: packing.pack(&out.lse, heads, 1),
            selection,
        })
    }

    /// Dense attention (causal or not) of host tensors, as [`crate::reference::dense_forward`]
    /// computes it.
    pub async fn dense_forward(
        &self,
        [q, k, v]: [&[f32]; 3],
        shape: &Shape,
        scale: f32,
        causal: bool,
    ) -> Result<GpuForward> {
        // The dense kernel reads only the scale and causality of a config.
        let config = MobaConfig {
            scale: Some(scale),
            causal,
            ..MobaConfig::new(1, 1)
        };
        self.run_host(Attention::Dense, [q, k, v], shape, &config, None)
            .await
    }

    /// Gradients of `sum(o * dout)` for the MoBA forward of host tensors: runs the forward,
    /// then the backward kernels on its saved o, lse and selection (`dout` is `[B, Hq, S, D]`),
    /// both on f32 kernels ([`AttentionKernel::best_f32`]), so that the gradients keep f32
    /// precision.
    ///
    /// ```no_run
    /// use moba::{MobaConfig, Shape, gpu::GpuContext};
    /// let gpu = GpuContext::new_blocking(&Default::default())?;
    /// let shape = Shape::prefill(1, 2, 256, 64);
    /// let (q, kv) = (moba::random::normal(shape.q_elems(), 1), moba::random::normal(shape.kv_elems(), 2));
    /// let grads = gpu.block_on(gpu.moba_backward(&q, &kv, &kv, &q, &shape, &MobaConfig::new(64, 2)))?;
    /// assert_eq!(grads.dk.len(), shape.kv_elems());
    /// # Ok::<(), moba::MobaError>(())
    /// ```
    pub async fn moba_backward(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        dout: &[f32],
        shape: &Shape,
        config: &MobaConfig,
    ) -> Result<GpuGradients> {
        self.backward_host([q, k, v, dout], shape, config, None)
            .await
    }

    /// Gradients of `sum(o * dout)` for [`Self::moba_forward_varlen`] (`dout: [1, Hq, T, D]`).
    pub async fn moba_backward_varlen(
        &self,
        [q, k, v, dout]: [&[f32]; 4],
        shape: &Shape,
        cu_seqlens: &[usize],
        config: &MobaConfig,
    ) -> Result<GpuGradients> {
        let (packing, aligned) = packed_problem(shape, cu_seqlens, config)?;
        shape.check_inputs(q, k, v)?;
        shape.check_dout(dout)?;
        let [q, k, v] = aligned_qkv(&packing, shape, [q, k, v]);
        let dout = packing.align(dout, shape.q_heads, shape.head_dim, 0.0);
        let starts = packing.sequence_starts();
        let grads = self
            .backward_host([&q, &k, &v, &dout], &aligned, config, Some(&starts))
            .await?;
        let (d, kv_heads) = (shape.head_dim, shape.kv_heads);
        Ok(GpuGradients {
            dq: packing.pack(&grads.dq, shape.q_heads, d),
            dk: packing.pack(&grads.dk, kv_heads, d),
            dv: packing.pack(&grads.dv, kv_heads, d),
        })
    }

    /// The forward then the backward of host tensors, both on f32 kernels; the forward's
    /// gate reads the sequence starts of a packed batch where given.
    async fn backward_host(
        &self,
        [q, k, v, dout]: [&[f32]; 4],
        shape: &Shape,
        config: &MobaConfig,
        sequence_starts: Option<&[u32]>,
    ) -> Result<GpuGradients> {
        config.validate()?;
        shape.check_inputs(q, k, v)?;
        shape.check_dout(dout)?;
        shape.check_host_memory(config.top_k)?;
        let (padded, config) = shape.padded(config, HEAD_DIM_MULTIPLE);
        let width = (shape.head_dim, padded.head_dim);
        let [q, k, v, dout] = [q, k, v, dout].map(|data| pad_rows(data, width.0, width.1));
        let per_group: Vec<_> = MobaForward::buffer_sizes(&padded.group_chunk(1), &config)
            .into_iter()
            .chain(MobaBackward::buffer_sizes(&padded.group_chunk(1), &config))
            .collect();
        let mut grads = GpuGradients {
            dq: Vec::with_capacity(shape.q_elems()),
            dk: Vec::with_capacity(shape.kv_elems()),
            dv: Vec::with_capacity(shape.kv_elems()),
        };
        let starts = sequence_starts.map(|starts| self.upload("sequence starts", starts));
        for chunk in self.chunks(&padded, &per_group)? {
            let part = &chunk.shape;
            let io = chunk.upload(self, [&q, &k, &v], config.top_k);
            let dout = self.upload("dout", &dout[chunk.q.clone()]);
            let dq = self.poisoned("dq", part.q_elems());
            let (dk, dv) = (
                self.poisoned("dk", part.kv_elems()),
                self.poisoned("dv", part.kv_elems()),
            );
            let mut encoder = self.device().create_command_encoder(&Default::default());
            // f32 kernels: their o and lse keep the gradients at f32 precision.
            let kernel = AttentionKernel::best_f32(self.caps(), part.head_dim);
            self.encode_moba(&mut encoder, part, &config, kernel, &io, starts.as_ref())?;
            let buffers = io.buffers().with_gradients(&dout, &dq, &dk, &dv);
            MobaBackward::with_kernel(self, part, &config, kernel)?
                .encode(&mut encoder, &buffers)?;
            self.queue().submit([encoder.finish()]);
            for (buffer, out) in [
                (&dq, &mut grads.dq),
                (&dk, &mut grads.dk),
                (&dv, &mut grads.dv),
            ] {
                let data: Vec<f32> = self.download(buffer).await?;
                out.extend(unpad_rows(&data, width.1, width.0));
            }
        }
        Ok(grads)
    }

    /// Runs one of this context's async calls (e.g. [`GpuContext::moba_forward`]) to the
    /// end on this thread (native only); on OpenGL one blocking call at a time.
    pub fn block_on<T>(&self, call: impl Future<Output = T>) -> T {
        let _exclusive = self.exclusive();
        pollster::block_on(call)
    }

    /// Records a MoBA forward of `part` with `kernel`, its gate reading the sequence starts
    /// of a packed batch where given.
    fn encode_moba(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        part: &Shape,
        config: &MobaConfig,
        kernel: AttentionKernel,
        io: &ForwardIo,
        sequence_starts: Option<&wgpu::Buffer>,
    ) -> Result<()> {
        match sequence_starts {
            None => {
                MobaForward::with_kernel(self, part, config, kernel)?.encode(encoder, &io.buffers())
            }
            Some(starts) => MobaForward::with_sequence_starts(self, part, config, kernel)?
                .encode_with_sequence_starts(encoder, &io.buffers(), starts),
        }
    }

    /// The forward of `attention` on host `[q, k, v]`; a MoBA gate reads the sequence
    /// starts of a packed batch where given.
    async fn run_host(
        &self,
        attention: Attention,
        [q, k, v]: [&[f32]; 3],
        shape: &Shape,
        config: &MobaConfig,
        sequence_starts: Option<&[u32]>,
    ) -> Result<GpuForward> {
        config.validate()?;
        shape.check_inputs(q, k, v)?;
        shape.check_host_memory(config.top_k)?;
        let (padded, config) = shape.padded(config, HEAD_DIM_MULTIPLE);
        let width = (shape.head_dim, padded.head_dim);
        let [q, k, v] = [q, k, v].map(|data| pad_rows(data, width.0, width.1));
        let per_group = match attention {
            Attention::Moba => MobaForward::buffer_sizes(&padded.group_chunk(1), &config),
            Attention::Dense => DenseForward::buffer_sizes(&padded.group_chunk(1)),
        };
        let top_k = if attention == Attention::Moba {
            config.top_k
        } else {
            0
        };
        let mut out = GpuForward {
            o: Vec::with_capacity(shape.q_elems()),
            lse: Vec::with_capacity(shape.q_rows()),
            selection: Vec::with_capacity(shape.q_rows() * top_k),
        };
        let starts = sequence_starts.map(|starts| self.upload("sequence starts", starts));
        for chunk in self.chunks(&padded, &per_group)? {
            let part = &chunk.shape;
            let io = chunk.upload(self, [&q, &k, &v], top_k);
            let mut encoder = self.device().create_command_encoder(&Default::default());
            match attention {
                Attention::Moba => {
                    let kernel = AttentionKernel::best(self.caps(), part.head_dim);
                    self.encode_moba(&mut encoder, part, &config, kernel, &io, starts.as_ref())?
                }
                Attention::Dense => {
                    DenseForward::new(self, part, &config)?.encode(&mut encoder, &io.buffers())?
                }
            }
            self.queue().submit([encoder.finish()]);
            let o: Vec<f32> = self.download(&io.o).await?;
            out.o.extend(unpad_rows(&o, width.1, width.0));
            out.lse.extend(self.download::<f32>(&io.lse).await?);
            if top_k > 0 {
                out.selection
                    .extend(self.download::<i32>(&io.selection).await?);
            }
        }
        Ok(out)
    }
}

/// q, k and v of a packed problem in its block-aligned layout, the gaps zero.
fn aligned_qkv(packing: &Packing, shape: &Shape, [q, k, v]: [&[f32]; 3]) -> [Vec<f32>; 3] {
    let d = shape.head_dim;
    [
        packing.align(q, shape.q_heads, d, 0.0),
        packing.align(k, shape.kv_heads, d, 0.0),
        packing.align(v, shape.kv_heads, d, 0.0),
    ]
}

/// One call's share of a problem: whole (batch, kv head) groups, as a problem of its own
/// (batch = groups, one kv head), and where its elements sit in the full q and kv tensors.
struct Chunk {
    shape: Shape,
    q: Range<usize>,
    kv: Range<usize>,
}

impl Chunk {
    /// This chunk's part of q, k and v uploaded, with poisoned outputs for `top_k` selected
    /// blocks per row.
    fn upload(&self, gpu: &GpuContext, [q, k, v]: [&[f32]; 3], top_k: usize) -> ForwardIo {
        let (rows, kv) = (self.q.clone(), self.kv.clone());
        ForwardIo::new(
            gpu,
            &q[rows],
            &k[kv.clone()],
            &v[kv],
            self.shape.q_rows(),
            top_k,
        )
    }
}

impl GpuContext {
    /// Splits a problem into calls of as many groups as the adapter's binding limits allow
    /// for buffers of `per_group` bytes per group.
    fn chunks(&self, shape: &Shape, per_group: &[(&'static str, u64)]) -> Result<Vec<Chunk>> {
        let groups = shape.groups();
        let size = groups_per_call(self.limits(), per_group, groups)?;
        let one = shape.group_chunk(1);
        Ok((0..groups)
            .step_by(size)
            .map(|first| {
                let part = shape.group_chunk(size.min(groups - first));
                Chunk {
                    q: first * one.q_elems()..first * one.q_elems() + part.q_elems(),
                    kv: first * one.kv_elems()..first * one.kv_elems() + part.kv_elems(),
                    shape: part,
                }
            })
            .collect())
    }
}

/// The kernels read vec4s: head dims are padded to a multiple of 4.
pub(crate) const HEAD_DIM_MULTIPLE: usize = 4;

/// Rows of `width` values widened to `padded` with zeros (zero columns change no dot product).
fn pad_rows(data: &[f32], width: usize, padded: usize) -> Cow<'_, [f32]> {
    if width == padded {
        return Cow::Borrowed(data);
    }
    Cow::Owned(
        data.chunks(width)
            .flat_map(|row| {
                row.iter()
                    .copied()
                    .chain(std::iter::repeat_n(0.0, padded - width))
            })
            .collect(),
    )
}

/// The first `width` values of every row of `padded` values.
fn unpad_rows(data: &[f32], padded: usize, width: usize) -> Vec<f32> {
    data.chunks(padded)
        .flat_map(|row| &row[..width])
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_round_trips() {
        let data = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let padded = pad_rows(&data, 3, 4);
        assert_eq!(&*padded, &[1.0, 2.0, 3.0, 0.0, 4.0, 5.0, 6.0, 0.0]);
        assert_eq!(unpad_rows(&padded, 4, 3), data);
    }
}
