//! NSA (`../shared/NSA.md`) for any backend with the MoBA op, differentiable by burn's
//! autodiff. All three branches run on MoBA's kernels, forward and backward:
//! - the compressed branch is dense causal MoBA over the pooled keys, the queries that share
//!   their newest eligible compressed block gathered as query heads of one row
//!   ([`CompressedRows`]);
//! - the selected branch is MoBA's attention over the group-shared selection, given to the
//!   forward (the gate does not run);
//! - the window branch is MoBA's attention with the key-window gate
//!   ([`MobaConfig::key_window`]).
//!
//! The selection (a constant for autodiff) comes from the compressed branch's probabilities
//! times each pooled block's overlap with the selection blocks, summed over the group:
//! on the device where the backend has a kernel for it ([`MobaBackend::nsa_select`]: burn's
//! wgpu, one thread per query streaming over its blocks), else from burn tensor ops over a
//! chunk of queries at a time (`[B, Hq, rows, nc]`) with the top-n on the host. Nothing is
//! `S x Sk`, nor `S x nc` at once.

use burn::backend::Autodiff;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::MobaBackend;
use super::api::{
    moba_attention, moba_attention_with_group_selection, moba_attention_with_stats, qkv_shape,
};
use super::generic::{expand_heads, host_tensor, sum_groups};
use super::nsa_profile::mark;
use crate::config::{Gate, MobaConfig, NsaConfig, Shape};
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
    let nc = config.compressed_blocks(k.dims()[2]);
    let means = (nc > 0).then(|| (block_means(&k, config, nc), block_means(&v, config, nc)));
    nsa_attention_with_compression(q, k, v, means, gates, config)
}

/// [`nsa_attention`] with the compressed keys and values given, `kc, vc: [B, Hkv, nc, D]`
/// with `nc = config.compressed_blocks(Sk)` (`None` where that is 0): a learned compression
/// ([`crate::module::NsaCompression`]) in place of the blocks' means. They get gradients
/// through the compressed branch; the selection they rank is a constant.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::tensor::{Distribution, Tensor};
/// use moba::{NsaConfig, backend::nsa_attention_with_compression};
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let random = |dims| Tensor::<B, 4>::random(dims, Distribution::Normal(0.0, 1.0), &device);
/// let (q, kv, gates) = (random([1, 4, 64, 16]), random([1, 2, 64, 16]), random([1, 4, 64, 3]));
/// // Blocks of 8 keys every 4: 15 compressed blocks of 64 keys.
/// let config = NsaConfig::new(8, 4, 16, 3, 16);
/// let kc = random([1, 2, 15, 16]).require_grad();
/// let out = nsa_attention_with_compression(q, kv.clone(), kv, Some((kc.clone(), random([1, 2, 15, 16]))), gates, &config)?;
/// assert!(kc.grad(&out.o.sum().backward()).is_some());
/// # Ok::<(), moba::MobaError>(())
/// ```
pub fn nsa_attention_with_compression<B: MobaBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    compressed: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
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
    let nc = config.compressed_blocks(shape.kv_len);
    let want = [shape.batch, shape.kv_heads, nc, shape.head_dim];
    let given = compressed.as_ref().map(|(kc, vc)| [kc.dims(), vc.dims()]);
    if given != (nc > 0).then_some([want; 2]) {
        return Err(MobaError::Config(format!(
            "the compressed keys and values are {given:?}; {} keys in blocks of {} every {} \
             need {} of {want:?}",
            shape.kv_len,
            config.compress_block,
            config.stride,
            if nc > 0 {
                "two"
            } else {
                "none (no complete block)"
            }
        )));
    }
    check_memory(&shape, config)?;
    let scale = config.scale_for(shape.head_dim);
    let device = q.device();
    mark::<B>(&device, "before NSA");
    let (o_cmp, selection) = match compressed {
        None => (
            q.zeros_like(),
            select_on_host(&q, None, &shape, config, scale, IMPORTANCE_BYTES)?,
        ),
        Some((kc, vc)) => {
            let (o_cmp, lse) = compressed_branch(&q, kc.clone(), vc, &shape, config, scale)?;
            let selection = select(&q, &kc, lse, &shape, config, scale)?;
            mark::<B>(&device, "selection");
            (o_cmp, selection)
        }
    };
    let o_slc = selected_branch(&q, &k, &v, selection.clone(), config, scale)?;
    mark::<B>(&device, "selected branch");
    let o_win = window_branch(q, k, v, config, scale)?;
    mark::<B>(&device, "window branch");
    // The three gates are sliced before the sum: with slices between them, burn's fusion
    // ran each product and sum as a kernel of its own (18.2 ms at 128K on the H100,
    // bench-results/h100-nsa/select-variants/); after them, the sum is one fused kernel.
    let [b, h, s, _] = gate_dims;
    let [g_cmp, g_slc, g_win] =
        [0, 1, 2].map(|c| gates.clone().slice([0..b, 0..h, 0..s, c..c + 1]));
    let o = o_cmp * g_cmp + o_slc * g_slc + o_win * g_win;
    mark::<B>(&device, "gated sum");
    Ok(NsaAttention { o, selection })
}

/// The forward's stages one at a time, for `moba bench --attention nsa`'s breakdown of
/// where the time goes: `time` runs a stage at least once (and waits for the device) and
/// returns its seconds; each stage reads the last output of the one before. Pooling,
/// compressed branch, selection, selected branch, window branch, in that order; a problem
/// with no compressed block has `None` for the first three.
pub(crate) fn forward_stage_seconds<B: MobaBackend>(
    [q, k, v]: [Tensor<B, 4>; 3],
    config: &NsaConfig,
    mut time: impl FnMut(&mut dyn FnMut() -> Result<()>) -> Result<f64>,
) -> Result<[(&'static str, Option<f64>); 5]> {
    let shape = qkv_shape(&q, &k, &v)?;
    let scale = config.scale_for(shape.head_dim);
    let nc = config.compressed_blocks(shape.kv_len);
    // Each stage keeps its last run's output for the next one.
    let mut compressed = [None; 3];
    let selection = if nc > 0 {
        let mut means = None;
        compressed[0] = Some(time(&mut || {
            means = Some((block_means(&k, config, nc), block_means(&v, config, nc)));
            Ok(())
        })?);
        let (kc, vc) = means.expect("the stage ran");
        let mut lse = None;
        compressed[1] = Some(time(&mut || {
            lse = Some(compressed_branch(&q, kc.clone(), vc.clone(), &shape, config, scale)?.1);
            Ok(())
        })?);
        let lse = lse.expect("the stage ran");
        let mut selection = None;
        compressed[2] = Some(time(&mut || {
            selection = Some(select(&q, &kc, lse.clone(), &shape, config, scale)?);
            Ok(())
        })?);
        selection.expect("the stage ran")
    } else {
        select_on_host(&q, None, &shape, config, scale, IMPORTANCE_BYTES)?
    };
    let selected = time(&mut || {
        drop(selected_branch(
            &q,
            &k,
            &v,
            selection.clone(),
            config,
            scale,
        )?);
        Ok(())
    })?;
    let window = time(&mut || {
        drop(window_branch(
            q.clone(),
            k.clone(),
            v.clone(),
            config,
            scale,
        )?);
        Ok(())
    })?;
    let [pool, cmp, slc] = compressed;
    Ok([
        ("pool", pool),
        ("compressed", cmp),
        ("select", slc),
        ("selected", Some(selected)),
        ("window", Some(window)),
    ])
}

/// The training step's branches one at a time, for `moba bench --attention nsa
/// --backward`'s breakdown: each branch's forward and backward (to q, k and v) on
/// `Autodiff<B>`, timed by `time` as [`forward_stage_seconds`] times the forward's stages.
/// Compressed (with its pooling), selected (over the given `selection`, `[B, Hkv, S,
/// top_n]`), window, in that order; a problem with no compressed block has `None` for the
/// first. The gated sum and the gates' gradients are the whole step's remainder.
pub(crate) fn step_stage_seconds<B: MobaBackend>(
    [q, k, v]: [Tensor<B, 4>; 3],
    selection: Tensor<B, 4, Int>,
    config: &NsaConfig,
    mut time: impl FnMut(&mut dyn FnMut() -> Result<()>) -> Result<f64>,
) -> Result<[(&'static str, Option<f64>); 3]> {
    let shape = qkv_shape(&q, &k, &v)?;
    let scale = config.scale_for(shape.head_dim);
    let nc = config.compressed_blocks(shape.kv_len);
    let [q, k, v] = [q, k, v].map(|x| Tensor::<Autodiff<B>, 4>::from_inner(x).require_grad());
    let selection = Tensor::<Autodiff<B>, 4, Int>::from_primitive(selection.into_primitive());
    let device = q.device();
    let mut step = |branch: &mut dyn FnMut() -> Result<Tensor<Autodiff<B>, 4>>| {
        time(&mut || {
            let out = branch()?;
            mark::<Autodiff<B>>(&device, "step: forward");
            let gradients = out.sum().backward();
            mark::<Autodiff<B>>(&device, "step: backward");
            drop(gradients);
            mark::<Autodiff<B>>(&device, "step: gradients dropped");
            Ok(())
        })
    };
    let compressed = match nc {
        0 => None,
        _ => Some(step(&mut || {
            let (kc, vc) = (block_means(&k, config, nc), block_means(&v, config, nc));
            mark::<Autodiff<B>>(&device, "compressed: pooled");
            Ok(compressed_branch(&q, kc, vc, &shape, config, scale)?.0)
        })?),
    };
    let selected = step(&mut || selected_branch(&q, &k, &v, selection.clone(), config, scale))?;
    let window = step(&mut || window_branch(q.clone(), k.clone(), v.clone(), config, scale))?;
    Ok([
        ("compressed", compressed),
        ("selected", Some(selected)),
        ("window", Some(window)),
    ])
}

/// The group-shared top-n `[B, Hkv, S, top_n]` from the pooled keys `kc: [B, Hkv, nc, D]`
/// (`nc >= 1`) and the compressed branch's lse: on the device where the backend has a
/// kernel for it, else on the host.
fn select<B: MobaBackend>(
    q: &Tensor<B, 4>,
    kc: &Tensor<B, 4>,
    lse: Tensor<B, 3>,
    shape: &Shape,
    config: &NsaConfig,
    scale: f32,
) -> Result<Tensor<B, 4, Int>> {
    match B::nsa_selects_on_device(shape, config) {
        true => Ok(Tensor::from_primitive(B::nsa_select(
            q.clone().detach().into_primitive().tensor(),
            kc.clone().detach().into_primitive().tensor(),
            lse.into_primitive().tensor(),
            shape.kv_len,
            config,
        ))),
        false => select_on_host(q, Some(kc), shape, config, scale, IMPORTANCE_BYTES),
    }
}

/// Fails unless the selection, `[B, Hkv, S, top_n]`, fits in host memory (where a backend
/// chooses it on the host, [`IMPORTANCE_BYTES`] of importances at a time). The branches run
/// on MoBA's op, which checks its own.
fn check_memory(shape: &Shape, config: &NsaConfig) -> Result<()> {
    let selection = bytes_of(&[shape.groups(), shape.q_len, config.top_n], 4);
    check_host("NSA's selection", selection)
}

/// The compressed branch over the pooled keys and values `kc, vc: [B, Hkv, nc, D]` (`nc >=
/// 1`): `o_cmp: [B, Hq, S, D]` (0 for a query with no eligible block) and its lse `[B, Hq,
/// S]` (natural log, not differentiable; 0 for a query with no eligible block).
///
/// It runs on MoBA's kernels: the queries whose newest eligible compressed block is `P` see
/// exactly blocks `0..=P`, so the `d` consecutive queries that share a `P` become `d` query
/// heads of one row `P` ([`CompressedRows`]), and the branch is MoBA over the pooled keys
/// with every block selected: dense causal attention, forward and backward on every MoBA
/// kernel, GQA through the heads' groups.
fn compressed_branch<B: MobaBackend>(
    q: &Tensor<B, 4>,
    kc: Tensor<B, 4>,
    vc: Tensor<B, 4>,
    shape: &Shape,
    config: &NsaConfig,
    scale: f32,
) -> Result<(Tensor<B, 4>, Tensor<B, 3>)> {
    let s = shape.q_len;
    let device = q.device();
    mark::<B>(&device, "before the compressed branch");
    let rows = CompressedRows::of(shape, config);
    let dense = rows.dense_config(kc.dims()[2]).with_scale(scale);
    let gathered = rows.gather(q.clone());
    mark::<B>(&device, "compressed: queries gathered");
    let out = moba_attention_with_stats(gathered, kc, vc, &dense)?;
    mark::<B>(&device, "compressed: attention");
    // The kernels' lse is f32 whatever the float type: in q's for burn's tensor ops (a bf16
    // backend's ops refuse to mix them), widened again by the selection kernel.
    let lse = rows
        .scatter(out.lse.cast(q.dtype()).unsqueeze_dim::<4>(3), s)
        .squeeze_dim::<3>(3);
    let o = rows.scatter(out.o, s);
    mark::<B>(&device, "compressed: o and lse scattered");
    Ok((o, lse))
}

/// NSA's compressed branch as a MoBA problem: the query at `p` sees compressed blocks
/// `0..=P` with `P = (p + 1 - l) / d`, so the queries `P d + l - 1 .. (P + 1) d + l - 1`
/// share one row `P`, and each becomes a query head of it (head `h d + u` for the `u`-th
/// query of the run; GQA groups stay whole, their `d`-fold heads reading the same kv head).
/// The rows end at the last compressed block (the last query's `P` is `nc - 1`), as MoBA's
/// queries end at the last key; the runs are padded with zero queries at both ends.
struct CompressedRows {
    /// The first query with an eligible block (earlier ones have `o_cmp = 0`).
    first_query: usize,
    /// Zero queries before it in its run, and after the last query in the last run.
    front: usize,
    back: usize,
    /// Runs of `d` queries: the rows of the MoBA problem.
    runs: usize,
    stride: usize,
}

impl CompressedRows {
    /// The rows of a problem with at least one compressed block (`Sk >= l`: then the last
    /// query has one, so some query does).
    fn of(shape: &Shape, config: &NsaConfig) -> Self {
        let nc = config.compressed_blocks(shape.kv_len);
        debug_assert!(
            nc > 0,
            "CompressedRows of a problem with no compressed block"
        );
        let (l, d) = (config.compress_block, config.stride);
        let first_position = shape.query_position(0).max(l - 1);
        let first_run = (first_position + 1 - l) / d;
        let runs = nc - first_run;
        let front = first_position - (first_run * d + l - 1);
        let queries = shape.kv_len - first_position;
        Self {
            first_query: first_position - shape.query_position(0),
            front,
            back: runs * d - front - queries,
            runs,
            stride: d,
        }
    }

    /// MoBA over `nc` pooled keys with every row's one block selected: dense causal
    /// attention in one kernel pass, no per-slot merges (blocks of 64 keys, one pass each,
    /// took the branch 27-32% longer at 4 passes on lavapipe:
    /// `bench-results/lavapipe-nsa/compressed-one-pass/`).
    fn dense_config(&self, nc: usize) -> MobaConfig {
        MobaConfig {
            gate: Gate::Recent,
            ..MobaConfig::new(nc, 1)
        }
    }

    /// `[B, Hq, S, D]` queries -> `[B, Hq d, runs, D]` rows of the MoBA problem.
    fn gather<B: Backend>(&self, q: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, h, s, d] = q.dims();
        pad_rows(
            q.slice([0..b, 0..h, self.first_query..s, 0..d]),
            self.front,
            self.back,
        )
        .reshape([b, h, self.runs, self.stride, d])
        .swap_dims(2, 3)
        .reshape([b, h * self.stride, self.runs, d])
    }

    /// The inverse of [`Self::gather`] for an output: `[B, Hq d, runs, D]` -> `[B, Hq, S, D]`,
    /// zero for the queries before the first.
    fn scatter<B: Backend>(&self, o: Tensor<B, 4>, q_len: usize) -> Tensor<B, 4> {
        let [b, heads, _, d] = o.dims();
        let h = heads / self.stride;
        let queries = q_len - self.first_query;
        let o = o
            .reshape([b, h, self.stride, self.runs, d])
            .swap_dims(2, 3)
            .reshape([b, h, self.runs * self.stride, d])
            .slice([0..b, 0..h, self.front..self.front + queries, 0..d]);
        pad_rows(o, self.first_query, 0)
    }
}

/// `x: [B, H, S, D]` with `before` and `after` rows of zeros around its rows, in x's float
/// type (burn's `pad` fills in the device's default type, which a fused bf16 tensor on a
/// device that defaults to f32 refuses to take).
fn pad_rows<B: Backend>(x: Tensor<B, 4>, before: usize, after: usize) -> Tensor<B, 4> {
    let [b, h, _, d] = x.dims();
    let (device, dtype) = (x.device(), x.dtype());
    let zeros =
        |rows: usize| (rows > 0).then(|| Tensor::<B, 4>::zeros([b, h, rows, d], (&device, dtype)));
    let parts = [zeros(before), Some(x), zeros(after)];
    Tensor::cat(parts.into_iter().flatten().collect(), 2)
}

/// The group importances `[B, Hkv, S, ns]` of the selection blocks from the compressed
/// branch's probabilities: `p_cmp` of every eligible pooled key (`kc: [B, Hkv, nc, D]`,
/// `nc >= 1`), times its overlap with each selection block, summed over the group's heads.
fn importance<B: Backend>(
    q: Tensor<B, 4>,
    kc: Tensor<B, 4>,
    shape: &Shape,
    config: &NsaConfig,
    scale: f32,
) -> Tensor<B, 4> {
    let [b, h, s, _] = q.dims();
    let device = q.device();
    let (nc, ns) = (kc.dims()[2], config.selection_blocks(shape.kv_len));
    // Block i is eligible for the query at p iff i*d + l - 1 <= p.
    let eligible: Vec<f32> = (0..s * nc)
        .map(|at| {
            let (t, i) = (at / nc, at % nc);
            let last_key = i * config.stride + config.compress_block - 1;
            f32::from(u8::from(last_key <= shape.query_position(t)))
        })
        .collect();
    // In q's float type: burn's default is per device, not per backend type.
    let dtype = q.dtype();
    let eligible = host_tensor::<B, 2>(eligible, [s, nc], &device).cast(dtype);
    // Rows with no eligible block get zero scores (a finite softmax), then zero weights.
    let any = eligible.clone().max_dim(1).reshape([1, 1, s, 1]);
    let hidden = eligible
        .reshape([1, 1, s, nc])
        .expand([b, h, s, nc])
        .equal_elem(0.0);
    let scores = q
        .matmul(expand_heads(kc, shape).swap_dims(2, 3))
        .mul_scalar(scale)
        .mask_fill(hidden.clone(), f32::NEG_INFINITY)
        .mask_fill(
            hidden.bool_and(any.clone().equal_elem(0.0).expand([b, h, s, nc])),
            0.0,
        );
    let p_cmp = softmax(scores, 3) * any;
    let overlap = (overlap(config, nc, ns, &device).cast(dtype)).reshape([1, 1, nc, ns]);
    sum_groups(p_cmp.matmul(overlap.expand([b, h, nc, ns])), shape)
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

/// Selection blocks in one chunk of the device selection kernels' pooled keys
/// (`nsa_select.wgsl`, `nsa.cu`): the chunk holds their compressed blocks (`l' / d` each)
/// and the `l / d - 1` before the first that overlap it.
#[cfg(feature = "burn")]
pub(crate) fn selection_chunk_blocks(config: &NsaConfig) -> usize {
    let chunk = crate::shared_constants::NSA_SELECT_CHUNK as usize;
    let reach = config.compress_block / config.stride - 1;
    chunk.saturating_sub(reach) / (config.select_block / config.stride)
}

/// Whether the device selection kernels take `config`: one selection block's compressed
/// blocks fit in their chunk.
#[cfg(feature = "burn")]
pub(crate) fn selection_fits_a_chunk(config: &NsaConfig) -> bool {
    selection_chunk_blocks(config) > 0
}

/// Bytes of importances (`[B, Hq, rows, nc]` and its companions) computed at a time.
const IMPORTANCE_BYTES: usize = 1 << 28;

/// Bytes of importances and their companions per query row.
fn importance_row_bytes(batch: usize, q_heads: usize, nc: usize) -> usize {
    batch * q_heads * nc.max(1) * 16
}

/// The group-shared top-n of every query, `[B, Hkv, S, top_n]` (a constant for autodiff),
/// for backends that do not choose it on the device: the importances of a chunk of
/// queries at a time from burn tensor ops, their top-n on the host. A chunk ending at query
/// `t1` is the problem of the keys up to its last query (no later block is eligible for
/// it), so each needs only those blocks' importances. `kc`: the pooled keys, none before
/// the first compressed block; `importance_bytes`: the chunk's budget ([`IMPORTANCE_BYTES`]).
fn select_on_host<B: Backend>(
    q: &Tensor<B, 4>,
    kc: Option<&Tensor<B, 4>>,
    shape: &Shape,
    config: &NsaConfig,
    scale: f32,
    importance_bytes: usize,
) -> Result<Tensor<B, 4, Int>> {
    let [b, h, s, d] = q.dims();
    let nc = config.compressed_blocks(shape.kv_len);
    let per_row = importance_row_bytes(b, h, nc);
    let chunk = (importance_bytes / per_row).clamp(1, s);
    let top_n = config.top_n;
    let mut selection = vec![-1; shape.groups() * s * top_n];
    for first in (0..s).step_by(chunk) {
        let last = (first + chunk).min(s);
        let part = Shape {
            q_len: last - first,
            kv_len: shape.kv_len - (s - last),
            ..*shape
        };
        let (ns, nc) = (
            config.selection_blocks(part.kv_len),
            config.compressed_blocks(part.kv_len),
        );
        let importance = match kc {
            Some(kc) if nc > 0 => {
                let kc = kc.clone().slice([0..b, 0..shape.kv_heads, 0..nc, 0..d]);
                let q = q.clone().slice([0..b, 0..h, first..last, 0..d]);
                importance(q.detach(), kc.detach(), &part, config, scale)
            }
            _ => Tensor::zeros([b, shape.kv_heads, part.q_len, ns], &q.device()),
        };
        let importance: Vec<f64> = importance
            .into_data()
            .convert::<f64>()
            .to_vec()
            .map_err(|e| MobaError::Config(format!("reading NSA's importances: {e:?}")))?;
        let rows = selection_from_importance(&importance, &part, config);
        for (group, rows) in rows.chunks(part.q_len * top_n).enumerate() {
            let at = (group * s + first) * top_n;
            selection[at..at + rows.len()].copy_from_slice(rows);
        }
    }
    let dims = [b, shape.kv_heads, s, top_n];
    Ok(Tensor::from_data(
        TensorData::new(selection, dims),
        &q.device(),
    ))
}

/// The selected branch, `[B, Hq, S, D]`: MoBA's attention over blocks of `l'` keys with
/// the group's selection (`[B, Hkv, S, top_n]`, ascending, -1 padded) for every query head
/// of the group, each selected block read once for the group where the backend can
/// ([`MobaBackend::moba_forward_group_selection`]). NSA forces each row's own block and
/// never selects a later one, so every row is one MoBA can attend.
fn selected_branch<B: MobaBackend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    selection: Tensor<B, 4, Int>,
    config: &NsaConfig,
    scale: f32,
) -> Result<Tensor<B, 4>> {
    let moba = MobaConfig::new(config.select_block, config.top_n).with_scale(scale);
    let (q, k, v) = (q.clone(), k.clone(), v.clone());
    Ok(moba_attention_with_group_selection(q, k, v, selection, &moba)?.o)
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::Distribution;

    /// The host path reads importances a chunk of queries at a time, each chunk as the
    /// problem of the keys up to its last query: chunks of 7 rows (the last one short)
    /// choose what one chunk of every row does.
    #[test]
    fn host_selection_in_chunks_is_the_whole_selection() {
        let device = Default::default();
        let random =
            |dims| Tensor::<NdArray, 4>::random(dims, Distribution::Normal(0.0, 1.0), &device);
        let (q, k) = (random([1, 4, 100, 16]), random([1, 2, 100, 16]));
        // Blocks of 8 keys every 4 (24 compressed blocks), selection blocks of 16, top-5:
        // two places ranked by importance past the three forced blocks.
        let config = NsaConfig::new(8, 4, 16, 5, 16);
        let shape = qkv_shape(&q, &k, &k).unwrap();
        let nc = config.compressed_blocks(shape.kv_len);
        let kc = block_means(&k, &config, nc);
        let scale = config.scale_for(shape.head_dim);
        let select = |bytes| {
            select_on_host(&q, Some(&kc), &shape, &config, scale, bytes)
                .unwrap()
                .into_data()
        };
        let whole = select(usize::MAX);
        let chunked = select(7 * importance_row_bytes(1, 4, nc));
        assert_eq!(chunked, whole);
        // Rows past the forced blocks rank some block by importance (not every kept block
        // is among the three forced ones).
        let kept: Vec<i64> = whole.convert::<i64>().to_vec().unwrap();
        let ranked = kept.chunks(5).enumerate().any(|(row, blocks)| {
            let current = (row % 100) as i64 / 16;
            blocks.iter().any(|&j| j > 0 && j < current - 1)
        });
        assert!(ranked);
    }
}
