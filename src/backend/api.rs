//! The functions burn users call: validated MoBA attention on any [`MobaBackend`].

use burn::tensor::{Int, Tensor, TensorPrimitive};

use super::MobaBackend;
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
    config.validate()?;
    let shape = Shape::from_dims(&q.dims(), &k.dims())?;
    if v.dims() != k.dims() {
        return Err(MobaError::Config(format!(
            "v has shape {:?} but k has {:?}",
            v.dims(),
            k.dims()
        )));
    }
    B::moba_prepare(&shape, config, &q.device())?;
    let qkv = [q, k, v].map(|t| t.into_primitive().tensor());
    let out = B::moba_forward(qkv, config);
    let rows = [shape.batch, shape.q_heads, shape.q_len];
    Ok(MobaAttentionStats {
        o: Tensor::from_primitive(TensorPrimitive::Float(out.o)),
        lse: Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(out.lse)).reshape(rows),
        selection: Tensor::from_primitive(out.selection),
    })
}
