//! The host-slice API: checks inputs, pads odd head dims, splits problems over (batch, kv
//! head) groups to fit the adapter's buffer limits, and reads results back.

use std::borrow::Cow;

use super::context::GpuContext;
use super::dense::DenseForward;
use super::forward::{ForwardIo, MobaForward};
use super::plan::groups_per_call;
use crate::config::{MobaConfig, Shape};
use crate::error::Result;

/// Forward results on the host: `o: [B, Hq, S, D]`, `lse: [B, Hq, S]` (natural log),
/// `selection: [B, Hq, S, top_k]` (ascending, -1 padded; empty for dense attention).
#[derive(Debug, Clone, PartialEq)]
pub struct GpuForward {
    pub o: Vec<f32>,
    pub lse: Vec<f32>,
    pub selection: Vec<i32>,
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
    /// let out = gpu.moba_forward_blocking(&q, &kv, &kv, &shape, &MobaConfig::new(128, 3))?;
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
        self.run_host(Attention::Moba, q, k, v, shape, config).await
    }

    /// Dense attention of host tensors (only `scale` and `causal` of the config matter).
    pub async fn dense_forward(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        shape: &Shape,
        config: &MobaConfig,
    ) -> Result<GpuForward> {
        self.run_host(Attention::Dense, q, k, v, shape, config)
            .await
    }

    /// [`GpuContext::moba_forward`], blocking (native only).
    pub fn moba_forward_blocking(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        shape: &Shape,
        config: &MobaConfig,
    ) -> Result<GpuForward> {
        pollster::block_on(self.moba_forward(q, k, v, shape, config))
    }

    /// [`GpuContext::dense_forward`], blocking (native only).
    pub fn dense_forward_blocking(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        shape: &Shape,
        config: &MobaConfig,
    ) -> Result<GpuForward> {
        pollster::block_on(self.dense_forward(q, k, v, shape, config))
    }

    async fn run_host(
        &self,
        attention: Attention,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        shape: &Shape,
        config: &MobaConfig,
    ) -> Result<GpuForward> {
        config.validate()?;
        shape.check_inputs(q, k, v)?;
        // Fix the scale before padding changes the head dim.
        let config = config.with_scale(config.scale_for(shape.head_dim));
        let padded = shape.head_dim.next_multiple_of(4);
        let (q, k, v) = (
            pad_rows(q, shape.head_dim, padded),
            pad_rows(k, shape.head_dim, padded),
            pad_rows(v, shape.head_dim, padded),
        );
        let shape_padded = Shape {
            head_dim: padded,
            ..*shape
        };

        // Each (batch, kv head) group is independent: a chunk of groups is a problem of its
        // own with batch = groups and one kv head.
        let groups = shape.groups();
        let chunk_shape = |n: usize| shape_padded.group_chunk(n);
        let per_group = match attention {
            Attention::Moba => MobaForward::buffer_sizes(&chunk_shape(1), &config),
            Attention::Dense => DenseForward::buffer_sizes(&chunk_shape(1)),
        };
        let chunk = groups_per_call(self.limits(), &per_group, groups)?;
        let top_k = if attention == Attention::Moba {
            config.top_k
        } else {
            0
        };
        let mut out = GpuForward {
            o: Vec::with_capacity(q.len()),
            lse: Vec::with_capacity(shape.q_rows()),
            selection: Vec::with_capacity(shape.q_rows() * top_k),
        };
        for first in (0..groups).step_by(chunk) {
            let part = chunk_shape(chunk.min(groups - first));
            let (q_at, kv_at) = (
                first * chunk_shape(1).q_elems(),
                first * chunk_shape(1).kv_elems(),
            );
            let io = ForwardIo::new(
                self,
                &q[q_at..q_at + part.q_elems()],
                &k[kv_at..kv_at + part.kv_elems()],
                &v[kv_at..kv_at + part.kv_elems()],
                part.q_rows(),
                top_k,
            );
            let mut encoder = self.device().create_command_encoder(&Default::default());
            match attention {
                Attention::Moba => {
                    MobaForward::new(self, &part, &config)?.encode(&mut encoder, &io.buffers())?
                }
                Attention::Dense => DenseForward::new(self, &part, &config)?.encode(
                    &mut encoder,
                    &io.q,
                    &io.k,
                    &io.v,
                    &io.o,
                    &io.lse,
                )?,
            }
            self.queue().submit([encoder.finish()]);
            let o: Vec<f32> = self.download(&io.o).await?;
            out.o.extend(unpad_rows(&o, padded, shape.head_dim));
            out.lse.extend(self.download::<f32>(&io.lse).await?);
            if top_k > 0 {
                out.selection
                    .extend(self.download::<i32>(&io.selection).await?);
            }
        }
        Ok(out)
    }
}

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
