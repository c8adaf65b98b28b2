//! Context parallel MoBA: one sequence split by position over several devices of a backend,
//! each device keeping its own queries, keys and values (a shard) and doing the attention
//! of its own queries. The keys and values are not split: each device gathers those of
//! every position before its own, so the last one holds them all (gathering only the
//! blocks its queries select is the way to split them too).
//!
//! Causal MoBA lets a shard's queries see no key after them, so a shard needs the keys and
//! values of its own positions and of every shard before it: each device gathers that prefix
//! (burn's `Tensor::to_device`, the transfer burn-train's multi-device training moves
//! gradients with) and runs MoBA's op over it, its queries being the prefix's last
//! positions, exactly as a chunked prefill's are. The gate then sees what it sees on one
//! device: every block before a query's own is whole in the prefix. The backward needs
//! nothing more: burn's autodiff moves each gathered chunk's gradient back to the device
//! that owns it and sums it there, so each device ends with dq, dk and dv of its own
//! positions.
//!
//! The work per shard is nearly even for MoBA: a query attends `top_k` blocks wherever it
//! sits (only the gate's scoring grows with the position), so contiguous shards need no
//! zigzag layout to balance a causal sequence.

use burn::tensor::Tensor;

use super::MobaBackend;
use super::api::moba_attention;
use crate::config::MobaConfig;
use crate::error::{MobaError, Result};

/// The positions of one device: `q: [B, Hq, L, D]`, `k, v: [B, Hkv, L, D]` on the device that
/// holds them, `L` its share of the sequence.
#[derive(Debug, Clone)]
pub struct ContextShard<B: MobaBackend> {
    pub q: Tensor<B, 4>,
    pub k: Tensor<B, 4>,
    pub v: Tensor<B, 4>,
}

/// Causal MoBA attention (DESIGN §1) of one sequence split by position into `shards`, in
/// order (shard `i` holds the positions after those of shards `0..i`; lengths may differ and
/// need not be whole blocks), each on its own device: `o` of each shard's queries, on that
/// shard's device, equal to the rows [`moba_attention`] gives for the whole sequence on one
/// device. Differentiable on `Autodiff<B>`: each shard's q, k and v get their gradients on
/// their device.
///
/// An error for a non-causal config (a query would need keys of later shards), no shard,
/// shards that do not agree on batch, heads and head dim, or shards on several devices of a
/// backend burn cannot move tensors between ([`MobaBackend::moba_moves_between_devices`]:
/// burn 0.21's wgpu).
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::tensor::{Distribution, Tensor};
/// use moba::{MobaConfig, backend::{ContextShard, moba_attention_context_parallel}};
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default(); // one per shard, as a GPU each
/// let random = |dims| Tensor::<B, 4>::random(dims, Distribution::Normal(0.0, 1.0), &device);
/// // 96 positions over two devices: 64 on the first, 32 on the second.
/// let shards: Vec<_> = [64, 32]
///     .map(|len| ContextShard { q: random([1, 4, len, 16]), k: random([1, 2, len, 16]), v: random([1, 2, len, 16]) })
///     .into();
/// let o = moba_attention_context_parallel(shards, &MobaConfig::new(16, 2))?;
/// assert_eq!(o[1].dims(), [1, 4, 32, 16]);
/// # Ok::<(), moba::MobaError>(())
/// ```
pub fn moba_attention_context_parallel<B: MobaBackend>(
    shards: Vec<ContextShard<B>>,
    config: &MobaConfig,
) -> Result<Vec<Tensor<B, 4>>> {
    check_shards(&shards, config)?;
    let mut outputs = Vec::with_capacity(shards.len());
    for (i, shard) in shards.iter().enumerate() {
        let device = shard.q.device();
        let gather = |part: fn(&ContextShard<B>) -> &Tensor<B, 4>| {
            let prefix = shards[..=i]
                .iter()
                .map(|s| part(s).clone().to_device(&device));
            Tensor::cat(prefix.collect(), 2)
        };
        let (k, v) = (gather(|s| &s.k), gather(|s| &s.v));
        outputs.push(moba_attention(shard.q.clone(), k, v, config)?);
    }
    Ok(outputs)
}

/// The errors [`moba_attention_context_parallel`] names before anything runs.
fn check_shards<B: MobaBackend>(shards: &[ContextShard<B>], config: &MobaConfig) -> Result<()> {
    if !config.causal {
        return Err(MobaError::Config(
            "context parallel attention is causal: a non-causal query needs the keys of \
             every shard"
                .into(),
        ));
    }
    let Some(first) = shards.first() else {
        return Err(MobaError::Config(
            "context parallel attention needs at least one shard".into(),
        ));
    };
    let device = first.q.device();
    let elsewhere = |shard: &ContextShard<B>| {
        [&shard.q, &shard.k, &shard.v]
            .iter()
            .any(|t| t.device() != device)
    };
    if !B::moba_moves_between_devices() && shards.iter().any(elsewhere) {
        return Err(MobaError::Unsupported(
            "context parallel attention over several devices of burn's wgpu backend: burn \
             0.21 cannot move its tensors from one device to another (cubecl's wgpu server has \
             no device-to-device copy); put every shard on one device, or run on cuda"
                .into(),
        ));
    }
    let [b, hq, _, d] = first.q.dims();
    let [_, hkv, _, _] = first.k.dims();
    for (i, shard) in shards.iter().enumerate() {
        let [qb, qh, len, qd] = shard.q.dims();
        for (name, dims) in [("k", shard.k.dims()), ("v", shard.v.dims())] {
            if dims != [b, hkv, len, d] {
                return Err(MobaError::Config(format!(
                    "shard {i}: {name} has shape {dims:?}; its q {:?} and shard 0 need \
                     {:?}",
                    shard.q.dims(),
                    [b, hkv, len, d]
                )));
            }
        }
        if [qb, qh, qd] != [b, hq, d] {
            return Err(MobaError::Config(format!(
                "shard {i}: q has shape {:?}; shard 0's batch, heads and head dim are \
                 {:?}",
                shard.q.dims(),
                [b, hq, d]
            )));
        }
    }
    Ok(())
}
