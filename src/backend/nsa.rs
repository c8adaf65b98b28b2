//! NSA (`../shared/NSA.md`) for any backend with the MoBA op, differentiable by burn's
//! autodiff. The selected branch runs on MoBA's kernels over the group-shared selection
//! ([`super::moba_attention_with_selection`], given the host's selection directly); the
//! compressed branch is a masked softmax over `[B, Hq, S, nc]` pooled-key scores with the
//! importance as a product with the blocks' overlap and the top-n on the host; the window
//! branch is MoBA's attention with the key-window gate ([`MobaConfig::key_window`]), so it
//! runs on MoBA's kernels too. Nothing is `S x Sk`: the compressed branch's scores take
//! `S * nc` per head. The compressed branch is burn tensor ops (its kernel is still to
//! come).

use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::MobaBackend;
use super::api::{moba_attention, moba_attention_with_host_selection, qkv_shape};
use super::generic::{expand_heads, host_tensor, sum_groups};
use crate::config::{MobaConfig, NsaConfig, Shape};
use crate::error::{MobaError, Result};
use crate::memory::{bytes_of, check_host};
use crate::reference::selection_from_importance;

/// What [`nsa_attention`] returns.
#[derive(Debug, Clone)]
pub struct NsaAttention<B: Backend> {
    /// `[B, Hq, S, D]`: `g_cmp * o_cmp + g_slc * o_slc + g_win * o_win`, differentiable in
    /// q, k, v and the gates.
    pub o: Tensor<B, 4>,
    /// `[B, Hkv, S, top_n]`: the selection blocks of each GQA group and query, ascending,
    /// padded with -1 (a constant for autodiff).
    pub selection: Tensor<B, 4, Int>,
}

/// NSA attention of `q: [B, Hq, S, D]` over `k, v: [B, Hkv, Sk, D]` with the per-head
/// branch gates `gates: [B, Hq, S, 3]` (cmp, slc, win), exactly as NSA.md states it
/// ([`crate::reference::nsa_forward`] is its f64 twin). Differentiable on `Autodiff<B>`:
/// q, k, v (the compressed branch through the block means) and the gates get gradients;
/// the selection is a constant. The selected branch runs on `B`'s MoBA kernels.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::tensor::{Distribution, Tensor};
/// use moba::{NsaConfig, backend::nsa_attention};
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let q = Tensor::<B, 4>::random([1, 4, 64, 16], Distribution::Normal(0.0, 1.0), &device).require_grad();
/// let kv = Tensor::<B, 4>::random([1, 2, 64, 16], Distribution::Normal(0.0, 1.0), &device);
/// let gates = Tensor::<B, 4>::random([1, 4, 64, 3], Distribution::Uniform(0.0, 1.0), &device);
/// // Compression blocks of 8 keys every 4, selection blocks of 16, top-3, window 16.
/// let out = nsa_attention(q.clone(), kv.clone(), kv, gates, &NsaConfig::new(8, 4, 16, 3, 16))?;
/// let grads = out.o.sum().backward();
/// assert!(q.grad(&grads).is_some());
/// # Ok::<(), moba::MobaError>(())
/// ```
pub fn nsa_attention<B: MobaBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    gates: Tensor<B, 4>,
    config: &NsaConfig,
) -> Result<NsaAttention<B>> {
    config.validate()?;
    let shape = qkv_shape(&q, &k, &v)?;
    let gate_dims = [shape.batch, shape.q_heads, shape.q_len, 3];
    if gates.dims() != gate_dims {
        return Err(MobaError::Config(format!(
            "gates have shape {:?}; q needs {gate_dims:?} (cmp, slc, win per head and query)",
            gates.dims()
        )));
    }
    check_memory(&shape, config)?;
    let scale = config.scale_for(shape.head_dim);
    let (o_cmp, importance) = compressed_branch(&q, &k, &v, &shape, config, scale);
    let selection = select(importance, &shape, config)?;
    let o_slc = selected_branch(&q, &k, &v, &selection, &shape, config, scale)?;
    let o_win = window_branch(q, k, v, config, scale)?;
    let gate = |c: usize| {
        let [b, h, s, _] = gate_dims;
        gates.clone().slice([0..b, 0..h, 0..s, c..c + 1])
    };
    let o = o_cmp * gate(0) + o_slc * gate(1) + o_win * gate(2);
    let selection = Tensor::from_data(
        TensorData::new(
            selection,
            [shape.batch, shape.kv_heads, shape.q_len, config.top_n],
        ),
        &o.device(),
    );
    Ok(NsaAttention { o, selection })
}

/// Fails unless the compressed branch's scores fit in host memory (the CPU backends hold
/// their tensors there; the GPU ones have their own limits): about four `[B, Hq, S, nc]`
/// tensors. The other branches run on MoBA's op, which checks its own.
fn check_memory(shape: &Shape, config: &NsaConfig) -> Result<()> {
    let per_row = 4 * config.compressed_blocks(shape.kv_len);
    let scores = bytes_of(&[shape.batch, shape.q_heads, shape.q_len, per_row], 4);
    check_host("the scores of NSA's compressed branch", scores)
}

/// The compressed branch over `k, v: [B, Hkv, Sk, D]`, `o_cmp: [B, Hq, S, D]` (0 for a
/// query with no eligible block), and the group importances `[B, Hkv, S, ns]` of the
/// selection blocks.
fn compressed_branch<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    shape: &Shape,
    config: &NsaConfig,
    scale: f32,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [b, h, s, d] = q.dims();
    let device = q.device();
    let (nc, ns) = (
        config.compressed_blocks(shape.kv_len),
        config.selection_blocks(shape.kv_len),
    );
    if nc == 0 {
        let importance = Tensor::zeros([b, shape.kv_heads, s, ns], &device);
        return (Tensor::zeros([b, h, s, d], &device), importance);
    }
    // Pooled per kv head, then shared by the group's query heads.
    let pooled = |x: &Tensor<B, 4>| expand_heads(block_means(x, config, nc), shape);
    let (kc, vc) = (pooled(k), pooled(v));
    // Block i is eligible for the query at p iff i*d + l - 1 <= p.
    let eligible: Vec<f32> = (0..s * nc)
        .map(|at| {
            let (t, i) = (at / nc, at % nc);
            let last_key = i * config.stride + config.compress_block - 1;
            f32::from(u8::from(last_key <= shape.query_position(t)))
        })
        .collect();
    let eligible = host_tensor::<B, 2>(eligible, [s, nc], &device);
    // Rows with no eligible block get zero scores (a finite softmax), then zero weights.
    let any = eligible.clone().max_dim(1).reshape([1, 1, s, 1]);
    let hidden = eligible
        .reshape([1, 1, s, nc])
        .expand([b, h, s, nc])
        .equal_elem(0.0);
    let scores = q
        .clone()
        .matmul(kc.swap_dims(2, 3))
        .mul_scalar(scale)
        .mask_fill(hidden.clone(), f32::NEG_INFINITY)
        .mask_fill(
            hidden.bool_and(any.clone().equal_elem(0.0).expand([b, h, s, nc])),
            0.0,
        );
    let p_cmp = softmax(scores, 3) * any;
    let overlap = overlap(config, nc, ns, &device).reshape([1, 1, nc, ns]);
    let importance = p_cmp
        .clone()
        .detach()
        .matmul(overlap.expand([b, h, nc, ns]));
    (p_cmp.matmul(vc), sum_groups(importance, shape))
}

/// Means of the `nc` compressed blocks of `x: [B, H, Sk, D]`: the block of `l` keys at
/// `i * d` is the mean of its `l / d` stride means.
fn block_means<B: Backend>(x: &Tensor<B, 4>, config: &NsaConfig, nc: usize) -> Tensor<B, 4> {
    let [b, h, _, d] = x.dims();
    let (stride, per_block) = (config.stride, config.compress_block / config.stride);
    let strides = nc + per_block - 1;
    let stride_means = x
        .clone()
        .slice([0..b, 0..h, 0..strides * stride, 0..d])
        .reshape([b, h, strides, stride, d])
        .mean_dim(3)
        .reshape([b, h, strides, d]);
    let sum = (0..per_block)
        .map(|u| stride_means.clone().slice([0..b, 0..h, u..u + nc, 0..d]))
        .reduce(|sum, part| sum + part)
        .expect("a compressed block holds at least one stride");
    sum.div_scalar(per_block as f32)
}

/// `[nc, ns]`: the overlap of compressed block `i` with selection block `j`, in strides.
fn overlap<B: Backend>(
    config: &NsaConfig,
    nc: usize,
    ns: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    let weights = (0..nc * ns)
        .map(|at| {
            let (i, j) = (at / ns, at % ns);
            let first = i * config.stride;
            let keys = first..first + config.compress_block;
            let block = j * config.select_block..(j + 1) * config.select_block;
            let shared = keys
                .end
                .min(block.end)
                .saturating_sub(keys.start.max(block.start));
            (shared / config.stride) as f32
        })
        .collect();
    host_tensor::<B, 2>(weights, [nc, ns], device)
}

/// The group-shared top-n of every query from the importances, on the host (a constant).
fn select<B: Backend>(
    importance: Tensor<B, 4>,
    shape: &Shape,
    config: &NsaConfig,
) -> Result<Vec<i32>> {
    let importance: Vec<f64> = importance
        .into_data()
        .convert::<f64>()
        .to_vec()
        .map_err(|e| MobaError::Config(format!("reading NSA's importances: {e:?}")))?;
    Ok(selection_from_importance(&importance, shape, config))
}

/// The selected branch, `[B, Hq, S, D]`: MoBA's attention over blocks of `l'` keys with
/// the group's selection (`[B, Hkv, S, top_n]`, ascending, -1 padded) given to every query
/// head of the group. NSA forces each row's own block and never selects a later one, so
/// every row is one MoBA can attend.
fn selected_branch<B: MobaBackend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    selection: &[i32],
    shape: &Shape,
    config: &NsaConfig,
    scale: f32,
) -> Result<Tensor<B, 4>> {
    let rows = shape.q_len * config.top_n;
    let group = shape.group_size();
    let per_head: Vec<i64> = selection
        .chunks(rows)
        .flat_map(|kv_head| std::iter::repeat_n(kv_head, group).flatten())
        .map(|&j| i64::from(j))
        .collect();
    let dims = [shape.batch, shape.q_heads, shape.q_len, config.top_n];
    let moba = MobaConfig {
        scale: Some(scale),
        ..MobaConfig::new(config.select_block, config.top_n)
    };
    let (q, k, v) = (q.clone(), k.clone(), v.clone());
    Ok(moba_attention_with_host_selection(q, k, v, per_head, dims, &moba)?.o)
}

/// The window branch, `[B, Hq, S, D]`: MoBA's attention with the key-window gate
/// ([`MobaConfig::key_window`]: blocks of `w` keys, the query's own and the one before,
/// keys before `p - w + 1` masked in the kernels), so it runs on every MoBA kernel, its
/// gradients through MoBA's backward, the GQA group reading its kv head directly.
fn window_branch<B: MobaBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    config: &NsaConfig,
    scale: f32,
) -> Result<Tensor<B, 4>> {
    let window = MobaConfig::key_window(config.window).with_scale(scale);
    moba_attention(q, k, v, &window)
}
