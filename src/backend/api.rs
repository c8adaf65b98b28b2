//! The functions burn users call: validated MoBA attention on any [`MobaBackend`].

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorPrimitive};

use super::{MobaBackend, MobaForwardOutput};
use crate::config::{MobaConfig, Shape};
use crate::error::{MobaError, Result};

/// MoBA attention (DESIGN §1) of `q: [B, Hq, S, D]` over `k, v: [B, Hkv, Sk, D]`; returns
/// `o: [B, Hq, S, D]`. Differentiable on `Autodiff<B>` (q, k and v get gradients; the block
/// selection is a constant). Bad shapes or config are errors that name the wrong dimension.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::{Distribution, Tensor};
/// use moba::{MobaConfig, backend::moba_attention};
///
/// let device = Default::default();
/// let q = Tensor::<NdArray, 4>::random([1, 4, 64, 16], Distribution::Normal(0.0, 1.0), &device);
/// let kv = Tensor::<NdArray, 4>::random([1, 2, 64, 16], Distribution::Normal(0.0, 1.0), &device);
/// let o = moba_attention(q, kv.clone(), kv, &MobaConfig::new(16, 2))?; // block 16, top-2
/// assert_eq!(o.dims(), [1, 4, 64, 16]);
/// # Ok::<(), moba::MobaError>(())
/// ```
pub fn moba_attention<B: MobaBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    config: &MobaConfig,
) -> Result<Tensor<B, 4>> {
    Ok(moba_attention_with_stats(q, k, v, config)?.o)
}

/// [`moba_attention`] with the forward's statistics.
#[derive(Debug, Clone)]
pub struct MobaAttentionStats<B: MobaBackend> {
    /// `[B, Hq, S, D]`.
    pub o: Tensor<B, 4>,
    /// `[B, Hq, S]`: natural log of the scaled softmax normaliser (not differentiable).
    pub lse: Tensor<B, 3>,
    /// `[B, Hq, S, top_k]`: the blocks each query attended, ascending, -1 padded.
    pub selection: Tensor<B, 4, Int>,
}

/// MoBA attention returning o, lse and the selection.
pub fn moba_attention_with_stats<B: MobaBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    config: &MobaConfig,
) -> Result<MobaAttentionStats<B>> {
    let shape = prepared(&q, &k, &v, config)?;
    let qkv = [q, k, v].map(|t| t.into_primitive().tensor());
    Ok(stats(B::moba_forward(qkv, config), &shape))
}

/// [`moba_attention_with_stats`] with the block means of `k` given, `means: [B, Hkv,
/// ceil(Sk / block_size), D]` (the mean of each block's keys, the last block's over the keys
/// it has): a backend that reads them skips pooling every key, which a decode step over a
/// long cache would otherwise spend as much on as on its attention.
/// [`crate::module::KvCache::block_means`] keeps them up to date. The mean-key gate only.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::{Distribution, Tensor};
/// use moba::{MobaConfig, backend::moba_attention_with_means};
///
/// let device = Default::default();
/// let q = Tensor::<NdArray, 4>::random([1, 4, 1, 16], Distribution::Normal(0.0, 1.0), &device);
/// let kv = Tensor::<NdArray, 4>::random([1, 2, 64, 16], Distribution::Normal(0.0, 1.0), &device);
/// let means = kv.clone().reshape([1, 2, 4, 16, 16]).mean_dim(3).reshape([1, 2, 4, 16]);
/// let out = moba_attention_with_means(q, kv.clone(), kv, means, &MobaConfig::new(16, 2))?;
/// assert_eq!(out.o.dims(), [1, 4, 1, 16]);
/// # Ok::<(), moba::MobaError>(())
/// ```
pub fn moba_attention_with_means<B: MobaBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    means: Tensor<B, 4>,
    config: &MobaConfig,
) -> Result<MobaAttentionStats<B>> {
    let shape = prepared(&q, &k, &v, config)?;
    config.check_given_means()?;
    let expected = [
        shape.batch,
        shape.kv_heads,
        shape.num_blocks(config.block_size),
        shape.head_dim,
    ];
    if means.dims() != expected {
        return Err(MobaError::Config(format!(
            "block means have shape {:?}; k's blocks of {} need {expected:?}",
            means.dims(),
            config.block_size
        )));
    }
    let qkv = [q, k, v].map(|t| t.into_primitive().tensor());
    let means = means.into_primitive().tensor();
    Ok(stats(
        B::moba_forward_with_means(qkv, means, config),
        &shape,
    ))
}

/// The problem's shape, once the config, the shapes and the backend's preparation pass.
fn prepared<B: MobaBackend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    config: &MobaConfig,
) -> Result<Shape> {
    config.validate()?;
    let shape = qkv_shape(q, k, v)?;
    B::moba_prepare(&shape, config, &q.device())?;
    Ok(shape)
}

/// The problem's shape from q and k, once v has k's shape.
pub(crate) fn qkv_shape<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
) -> Result<Shape> {
    let shape = Shape::from_dims(&q.dims(), &k.dims())?;
    if v.dims() != k.dims() {
        return Err(MobaError::Config(format!(
            "v has shape {:?} but k has {:?}",
            v.dims(),
            k.dims()
        )));
    }
    Ok(shape)
}

/// A forward's outputs as tensors, lse `[B, Hq, S]`.
fn stats<B: MobaBackend>(out: MobaForwardOutput<B>, shape: &Shape) -> MobaAttentionStats<B> {
    let rows = [shape.batch, shape.q_heads, shape.q_len];
    MobaAttentionStats {
        o: Tensor::from_primitive(TensorPrimitive::Float(out.o)),
        lse: Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(out.lse)).reshape(rows),
        selection: Tensor::from_primitive(out.selection),
    }
}
