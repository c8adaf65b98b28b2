//! MoBA composed of burn tensor ops, for any backend: the gate, the selection and a dense
//! masked softmax. Exact, and clearly slower than the kernels: it materialises `[B, Hq, S,
//! Sk]` scores and a `[B, Hq, S, nb, nb]` ranking. It serves CPU backends (ndarray) and
//! cross-checks the kernels.

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Bool, Int, Tensor, TensorData, TensorPrimitive};

use super::{ForwardGiven, MobaForwardOutput, MobaGradients, MobaSaved};
use crate::config::{MobaConfig, Shape};
use crate::error::Result;
use crate::memory::{bytes_of, check_host};

/// Fails unless what this path materialises fits in host memory: about four `[B, Hq, S, Sk]`
/// score-sized tensors at once, the `[B, Hq, S, nb, nb]` ranking and the `[B, Hq, S, top_k]`
/// selection (the CPU backends that run it hold their tensors there).
pub fn check_memory(shape: &Shape, config: &MobaConfig) -> Result<()> {
    let (b, h, s) = (shape.batch, shape.q_heads, shape.q_len);
    let nb = shape.num_blocks(config.block_size);
    let parts = [
        bytes_of(&[b, h, s, shape.kv_len, 4], 4),
        bytes_of(&[b, h, s, nb, nb], 4),
        bytes_of(&[b, h, s, config.top_k], 4),
    ];
    let total = parts
        .into_iter()
        .try_fold(0u64, |sum, part| sum.checked_add(part?));
    check_host(
        "the scores, block ranking and selection that MoBA on burn's tensor ops materialises",
        total,
    )
}

fn float<B: Backend>(tensor: FloatTensor<B>) -> Tensor<B, 4> {
    Tensor::from_primitive(TensorPrimitive::Float(tensor))
}

fn primitive<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> FloatTensor<B> {
    tensor.into_primitive().tensor()
}

/// `[B, Hkv, L, D]` -> `[B, Hq, L, D]`: each kv head repeated for the query heads of its group.
pub(crate) fn expand_heads<B: Backend>(x: Tensor<B, 4>, shape: &Shape) -> Tensor<B, 4> {
    let [b, h, l, d] = x.dims();
    let group = shape.group_size();
    x.unsqueeze_dim::<5>(2)
        .expand([b, h, group, l, d])
        .reshape([b, h * group, l, d])
}

/// `[B, Hq, L, D]` -> `[B, Hkv, L, D]`: the sum over the query heads of each group.
pub(crate) fn sum_groups<B: Backend>(x: Tensor<B, 4>, shape: &Shape) -> Tensor<B, 4> {
    let [b, _, l, d] = x.dims();
    x.reshape([b, shape.kv_heads, shape.group_size(), l, d])
        .sum_dim(2)
        .reshape([b, shape.kv_heads, l, d])
}

/// A host-built tensor of index arithmetic (positions and blocks, never data).
pub(crate) fn host_tensor<B: Backend, const D: usize>(
    values: Vec<f32>,
    dims: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values, dims), device)
}

/// The gate of DESIGN §1: which blocks every row attends, `[B, Hq, S, nb]`; causal rows rank
/// from the first block of their sequence (`sequence_starts[nb]`, all 0 where not given).
fn chosen_blocks<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    sequence_starts: &[usize],
    shape: &Shape,
    config: &MobaConfig,
) -> Tensor<B, 4, Bool> {
    let device = q.device();
    let (bs, d) = (config.block_size, shape.head_dim);
    let nb = shape.num_blocks(bs);
    let (b, hq, s) = (shape.batch, shape.q_heads, shape.q_len);

    // Scores: q . mean key of each block (the last block averages only its keys), or the
    // static score of the sliding-window and sink gates by the block's id in its sequence
    // (a row ranks only its own sequence's blocks).
    let scores = match (0..nb)
        .map(|j| {
            let local = j - sequence_starts[j];
            config.gate.static_score(local, nb).map(|x| x as f32)
        })
        .collect::<Option<Vec<f32>>>()
    {
        Some(fixed) => host_tensor::<B, 1>(fixed, [nb], &device)
            .reshape([1, 1, 1, nb])
            .expand([b, hq, s, nb]),
        None => {
            let padding = nb * bs - shape.kv_len;
            let padded = match padding {
                0 => k.clone(),
                _ => Tensor::cat(
                    vec![
                        k.clone(),
                        Tensor::zeros([b, shape.kv_heads, padding, d], (&device, k.dtype())),
                    ],
                    2,
                ),
            };
            let counts: Vec<f32> = (0..nb)
                .map(|j| (((j + 1) * bs).min(shape.kv_len) - j * bs) as f32)
                .collect();
            let means = padded
                .reshape([b, shape.kv_heads, nb, bs, d])
                .sum_dim(3)
                .reshape([b, shape.kv_heads, nb, d])
                / host_tensor::<B, 1>(counts, [nb], &device)
                    .reshape([1, 1, nb, 1])
                    .expand([b, shape.kv_heads, nb, d]);
            q.clone().matmul(expand_heads(means, shape).swap_dims(2, 3))
        }
    };

    // Eligible blocks (earlier than the row's own in its sequence when causal, all
    // otherwise), and the row's own block, forced when causal.
    let mut eligible = Vec::with_capacity(s * nb);
    let mut own = Vec::with_capacity(s * nb);
    for t in 0..s {
        let current = shape.query_position(t) / bs;
        let first = sequence_starts[current];
        for j in 0..nb {
            eligible.push(if !config.causal || (first..current).contains(&j) {
                1.0
            } else {
                0.0
            });
            own.push(if config.causal && j == current {
                1.0
            } else {
                0.0
            });
        }
    }
    let per_row = |values| {
        host_tensor::<B, 2>(values, [s, nb], &device)
            .reshape([1, 1, s, nb])
            .expand([b, hq, s, nb])
            .bool()
    };
    let (eligible, own) = (per_row(eligible), per_row(own));
    let places = if config.causal {
        config.top_k - 1
    } else {
        config.top_k
    };

    // Rank of block j among the eligible: how many eligible blocks beat it (a higher score,
    // or the same score and a larger id). The best `places` win.
    let scores = scores.mask_fill(eligible.clone().bool_not(), f32::NEG_INFINITY);
    let other = scores
        .clone()
        .unsqueeze_dim::<5>(4)
        .expand([b, hq, s, nb, nb]); // [.., i, j] = s_i
    let this = scores.unsqueeze_dim::<5>(3).expand([b, hq, s, nb, nb]); // [.., i, j] = s_j
    let later: Vec<f32> = (0..nb * nb)
        .map(|at| if at / nb > at % nb { 1.0 } else { 0.0 })
        .collect();
    let later = host_tensor::<B, 2>(later, [nb, nb], &device)
        .reshape([1, 1, 1, nb, nb])
        .expand([b, hq, s, nb, nb])
        .bool();
    let beats = other
        .clone()
        .greater(this.clone())
        .bool_or(other.equal(this).bool_and(later));
    let rank = beats.int().sum_dim(3).reshape([b, hq, s, nb]);
    let wins = rank.lower_elem(places as i64).bool_and(eligible);
    wins.bool_or(own)
}

/// The selection tensor `[B, Hq, S, top_k]` of chosen blocks: ascending ids, -1 padded.
fn selection_of<B: Backend>(chosen: Tensor<B, 4, Bool>, top_k: usize) -> Tensor<B, 4, Int> {
    let [b, h, s, nb] = chosen.dims();
    let device = chosen.device();
    let chosen = chosen.int();
    // Slot of each chosen block: how many chosen blocks precede it.
    let slot = chosen.clone().cumsum(3) - 1;
    let slots = Tensor::<B, 1, Int>::arange(0..top_k as i64, &device)
        .reshape([1, 1, 1, 1, top_k])
        .expand([b, h, s, nb, top_k]);
    let in_slot = slot
        .unsqueeze_dim::<5>(4)
        .expand([b, h, s, nb, top_k])
        .equal(slots)
        .int()
        * chosen.unsqueeze_dim::<5>(4).expand([b, h, s, nb, top_k]);
    let ids = Tensor::<B, 1, Int>::arange(0..nb as i64, &device)
        .reshape([1, 1, 1, nb, 1])
        .expand([b, h, s, nb, top_k]);
    // Sum of (id + 1) over the block in each slot, minus one: -1 where the slot is empty.
    let selection = ((ids + 1) * in_slot).sum_dim(3) - 1;
    selection.reshape([b, h, s, top_k])
}

/// Keys every row attends, `[B, Hq, S, Sk]`: the chosen blocks' keys that the query sees
/// ([`MobaConfig::sees`]).
fn attended_keys<B: Backend>(
    chosen: Tensor<B, 4, Bool>,
    shape: &Shape,
    config: &MobaConfig,
) -> Tensor<B, 4, Bool> {
    let [b, h, s, nb] = chosen.dims();
    let bs = config.block_size;
    let keys = chosen
        .unsqueeze_dim::<5>(4)
        .expand([b, h, s, nb, bs])
        .reshape([b, h, s, nb * bs])
        .slice([0..b, 0..h, 0..s, 0..shape.kv_len]);
    if !config.causal {
        return keys;
    }
    let visible: Vec<f32> = (0..s * shape.kv_len)
        .map(|at| {
            let (t, i) = (at / shape.kv_len, at % shape.kv_len);
            f32::from(u8::from(config.sees(i, shape.query_position(t))))
        })
        .collect();
    let visible = host_tensor::<B, 2>(visible, [s, shape.kv_len], &keys.device())
        .reshape([1, 1, s, shape.kv_len])
        .expand([b, h, s, shape.kv_len])
        .bool();
    keys.bool_and(visible)
}

/// Scaled scores `[B, Hq, S, Sk]`, minus infinity outside the attended keys.
fn masked_scores<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    attended: Tensor<B, 4, Bool>,
    scale: f32,
) -> Tensor<B, 4> {
    q.clone()
        .matmul(k.clone().swap_dims(2, 3))
        .mul_scalar(scale)
        .mask_fill(attended.bool_not(), f32::NEG_INFINITY)
}

/// Probabilities `[B, Hq, S, Sk]` (zero outside the attended keys) and lse `[B, Hq, S, 1]`.
fn probabilities<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    attended: Tensor<B, 4, Bool>,
    scale: f32,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let scores = masked_scores(q, k, attended, scale);
    // Every row attends at least one key (its own position, or any key when non-causal).
    let max = scores.clone().max_dim(3);
    let lse = (scores.clone() - max.clone()).exp().sum_dim(3).log() + max;
    ((scores - lse.clone()).exp(), lse)
}

/// The forward of `[q, k, v]`: o, lse and selection; with what is given
/// ([`super::ForwardGiven`]: the sequence starts of a packed batch, or the selection itself;
/// the block means are pooled again).
pub fn forward<B: Backend>(
    qkv: [FloatTensor<B>; 3],
    given: ForwardGiven<B>,
    config: &MobaConfig,
) -> MobaForwardOutput<B> {
    let [q, k, v] = qkv.map(float::<B>);
    let shape = Shape::of_dims(&q.dims(), &k.dims());
    let nb = shape.num_blocks(config.block_size);
    // Index arithmetic the host builds the masks from (a small int tensor).
    if let Some(selection) = given.selection {
        let selection = Tensor::<B, 4, Int>::from_primitive(selection);
        let chosen = chosen_from_selection(selection.clone(), nb);
        return attend(q, k, v, chosen, selection, &shape, config);
    }
    let sequence_starts: Vec<usize> = match given.sequence_starts {
        Some(starts) => Tensor::<B, 1, Int>::from_primitive(starts)
            .into_data()
            .iter::<i64>()
            .map(|first| first as usize)
            .collect(),
        None => vec![0; nb],
    };
    let chosen = chosen_blocks(&q, &k, &sequence_starts, &shape, config);
    let selection = selection_of(chosen.clone(), config.top_k);
    attend(q, k, v, chosen, selection, &shape, config)
}

/// The attention of the `chosen` blocks (`[B, Hq, S, nb]`), and `selection` as the forward's.
fn attend<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    chosen: Tensor<B, 4, Bool>,
    selection: Tensor<B, 4, Int>,
    shape: &Shape,
    config: &MobaConfig,
) -> MobaForwardOutput<B> {
    let attended = attended_keys(chosen, shape, config);
    let (k, v) = (expand_heads(k, shape), expand_heads(v, shape));
    let (p, lse) = probabilities(&q, &k, attended, config.scale_for(shape.head_dim));
    let [b, h, s, _] = q.dims();
    MobaForwardOutput {
        o: primitive(p.matmul(v)),
        lse: primitive(lse.reshape([b, h, s])),
        selection: selection.into_primitive(),
    }
}

/// The backward from the saved selection: `ds = p * (dout . v - delta)`, then three products.
pub fn backward<B: Backend>(
    saved: MobaSaved<B>,
    dout: FloatTensor<B>,
    config: &MobaConfig,
) -> MobaGradients<B> {
    let (q, k, v, o) = (
        float::<B>(saved.q),
        float::<B>(saved.k),
        float::<B>(saved.v),
        float::<B>(saved.o),
    );
    let dout = float::<B>(dout);
    let shape = Shape::of_dims(&q.dims(), &k.dims());
    let selection = Tensor::<B, 4, Int>::from_primitive(saved.selection);
    let chosen = chosen_from_selection(selection, shape.num_blocks(config.block_size));
    let attended = attended_keys(chosen, &shape, config);
    let scale = config.scale_for(shape.head_dim);
    let (k, v) = (expand_heads(k, &shape), expand_heads(v, &shape));
    // p from the forward's saved lse, as the kernels do: no second softmax reduction.
    let [b, h, s, _] = q.dims();
    let lse =
        Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(saved.lse)).reshape([b, h, s, 1]);
    let p = (masked_scores(&q, &k, attended, scale) - lse).exp();
    let delta = (dout.clone() * o).sum_dim(3);
    let dp = dout.clone().matmul(v.swap_dims(2, 3));
    let ds = p.clone() * (dp - delta);
    let dq = ds.clone().matmul(k).mul_scalar(scale);
    let dk = ds.swap_dims(2, 3).matmul(q).mul_scalar(scale);
    let dv = p.swap_dims(2, 3).matmul(dout);
    MobaGradients {
        dq: primitive(dq),
        dk: primitive(sum_groups(dk, &shape)),
        dv: primitive(sum_groups(dv, &shape)),
    }
}

/// `[B, Hq, S, top_k]` selection -> `[B, Hq, S, nb]` chosen-block mask (padding ignored).
fn chosen_from_selection<B: Backend>(
    selection: Tensor<B, 4, Int>,
    nb: usize,
) -> Tensor<B, 4, Bool> {
    let [b, h, s, top_k] = selection.dims();
    let ids = Tensor::<B, 1, Int>::arange(0..nb as i64, &selection.device())
        .reshape([1, 1, 1, 1, nb])
        .expand([b, h, s, top_k, nb]);
    selection
        .unsqueeze_dim::<5>(4)
        .expand([b, h, s, top_k, nb])
        .equal(ids)
        .int()
        .sum_dim(3)
        .reshape([b, h, s, nb])
        .greater_elem(0)
}
