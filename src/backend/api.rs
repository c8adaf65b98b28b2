//! The functions burn users call: validated MoBA attention on any [`MobaBackend`].

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData, TensorPrimitive};

use super::{ForwardGiven, MobaBackend, MobaForwardOutput, RowMove};
use crate::config::{MobaConfig, Shape};
use crate::error::{MobaError, Result};
use crate::varlen::packed_problem;

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
    let given = ForwardGiven {
        means: Some(means.into_primitive().tensor()),
        ..ForwardGiven::none()
    };
    Ok(stats(B::moba_forward_given(qkv, given, config), &shape))
}

/// MoBA's attention over blocks the caller chose: `selection: [B, Hq, S, top_k]` (int) lists
/// the blocks each query row attends, ascending, padded with -1 at the end; a causal row
/// must list its own block (the one holding its position) and none after it. The gate
/// does not run. One softmax over the listed blocks' keys (causal: up to the row's
/// position), differentiable in q, k and v like [`moba_attention`]; the selection is a
/// constant. NSA's selected branch is this with the group-shared top-n
/// ([`super::nsa_attention`]).
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::{Distribution, Int, Tensor, TensorData};
/// use moba::{MobaConfig, backend::moba_attention_with_selection};
///
/// let device = Default::default();
/// let q = Tensor::<NdArray, 4>::random([1, 1, 4, 8], Distribution::Normal(0.0, 1.0), &device);
/// let kv = Tensor::<NdArray, 4>::random([1, 1, 4, 8], Distribution::Normal(0.0, 1.0), &device);
/// // Blocks of 2: rows 0 and 1 attend block 0; rows 2 and 3 blocks 0 and 1, then block 1 alone.
/// let chosen = TensorData::new(vec![0i64, -1, 0, -1, 0, 1, 1, -1], [1, 1, 4, 2]);
/// let selection = Tensor::<NdArray, 4, Int>::from_data(chosen, &device);
/// let out = moba_attention_with_selection(q, kv.clone(), kv, selection, &MobaConfig::new(2, 2))?;
/// assert_eq!(out.o.dims(), [1, 1, 4, 8]);
/// # Ok::<(), moba::MobaError>(())
/// ```
pub fn moba_attention_with_selection<B: MobaBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    selection: Tensor<B, 4, Int>,
    config: &MobaConfig,
) -> Result<MobaAttentionStats<B>> {
    let chosen: Vec<i64> = selection
        .clone()
        .into_data()
        .convert::<i64>()
        .to_vec()
        .map_err(|e| MobaError::Config(format!("reading the selection: {e:?}")))?;
    attend_selection(q, k, v, selection, &chosen, config)
}

/// MoBA's attention over a selection our own rule made that each GQA group shares (NSA's
/// top-n, `selection: [B, Hkv, S, top_k]`, on the host or on the device): well formed by
/// construction, so neither read back nor checked; the output's selection is per query
/// head ([`MobaBackend::moba_forward_group_selection`]).
pub(crate) fn moba_attention_with_group_selection<B: MobaBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    selection: Tensor<B, 4, Int>,
    config: &MobaConfig,
) -> Result<MobaAttentionStats<B>> {
    let shape = prepared(&q, &k, &v, config)?;
    let expected = [shape.batch, shape.kv_heads, shape.q_len, config.top_k];
    if selection.dims() != expected {
        return Err(MobaError::Config(format!(
            "the group selection has shape {:?}; q, k and top_k {} need {expected:?}",
            selection.dims(),
            config.top_k
        )));
    }
    let qkv = [q, k, v].map(|t| t.into_primitive().tensor());
    let out = B::moba_forward_group_selection(qkv, selection.into_primitive(), config);
    Ok(stats(out, &shape))
}

/// The attention over `selection` (its shape and rows checked), the forward with the gate
/// skipped.
fn attend_selection<B: MobaBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    selection: Tensor<B, 4, Int>,
    chosen: &[i64],
    config: &MobaConfig,
) -> Result<MobaAttentionStats<B>> {
    let shape = prepared(&q, &k, &v, config)?;
    let expected = [shape.batch, shape.q_heads, shape.q_len, config.top_k];
    if selection.dims() != expected {
        return Err(MobaError::Config(format!(
            "the selection has shape {:?}; q and top_k {} need {expected:?}",
            selection.dims(),
            config.top_k
        )));
    }
    check_selection(chosen, &shape, config)?;
    let qkv = [q, k, v].map(|t| t.into_primitive().tensor());
    let given = ForwardGiven {
        selection: Some(selection.into_primitive()),
        ..ForwardGiven::none()
    };
    Ok(stats(B::moba_forward_given(qkv, given, config), &shape))
}

/// An error naming the first row of `selection` that the kernels cannot attend: a block
/// out of range, blocks not ascending or -1 before a block, and for a causal row its own
/// block missing or a later one listed (its softmax would be empty or see the future).
fn check_selection(selection: &[i64], shape: &Shape, config: &MobaConfig) -> Result<()> {
    let blocks = shape.num_blocks(config.block_size) as i64;
    for (row, chosen) in selection.chunks(config.top_k).enumerate() {
        let listed: Vec<i64> = chosen.iter().copied().take_while(|&j| j >= 0).collect();
        let own = (shape.query_position(row % shape.q_len) / config.block_size) as i64;
        let problem = if chosen[listed.len()..].iter().any(|&j| j != -1) {
            Some("-1 pads only the end".to_string())
        } else if let Some(&j) = listed.iter().find(|&&j| j >= blocks) {
            Some(format!("block {j} of {blocks}"))
        } else if listed.windows(2).any(|w| w[0] >= w[1]) {
            Some("blocks not ascending".into())
        } else if config.causal && !listed.contains(&own) {
            Some(format!("its own block {own} is missing (causal)"))
        } else if config.causal && listed.iter().any(|&j| j > own) {
            Some(format!("a block after its own block {own} (causal)"))
        } else if listed.is_empty() {
            Some("no block".into())
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(MobaError::Config(format!(
                "selection row {row} ({chosen:?}): {problem}"
            )));
        }
    }
    Ok(())
}

/// MoBA attention of a varlen (packed) batch: `q: [1, Hq, T, D]` and `k, v: [1, Hkv, T, D]`
/// hold the sequences `cu_seqlens` delimits (sequence `i` is tokens `cu_seqlens[i]..
/// cu_seqlens[i + 1]`, as flash-attn's varlen API), each attended causally on its own:
/// blocks never cross a sequence boundary ([`crate::varlen`]). Differentiable like
/// [`moba_attention`]; the selection's block ids count from each row's own sequence.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::{Distribution, Tensor};
/// use moba::{MobaConfig, backend::moba_attention_varlen};
///
/// let device = Default::default();
/// // Sequences of 5, 40 and 19 tokens packed into 64.
/// let q = Tensor::<NdArray, 4>::random([1, 4, 64, 16], Distribution::Normal(0.0, 1.0), &device);
/// let kv = Tensor::<NdArray, 4>::random([1, 2, 64, 16], Distribution::Normal(0.0, 1.0), &device);
/// let out = moba_attention_varlen(q, kv.clone(), kv, &[0, 5, 45, 64], &MobaConfig::new(16, 2))?;
/// assert_eq!(out.o.dims(), [1, 4, 64, 16]);
/// # Ok::<(), moba::MobaError>(())
/// ```
pub fn moba_attention_varlen<B: MobaBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    cu_seqlens: &[usize],
    config: &MobaConfig,
) -> Result<MobaAttentionStats<B>> {
    let shape = qkv_shape(&q, &k, &v)?;
    let (packing, aligned) = packed_problem(&shape, cu_seqlens, config)?;
    let len = aligned.q_len;
    let device = q.device();
    B::moba_prepare(&aligned, config, &device)?;
    let index = |values: Vec<usize>| {
        let values: Vec<i64> = values.into_iter().map(|i| i as i64).collect();
        let len = values.len();
        Tensor::<B, 1, Int>::from_data(TensorData::new(values, [len]), &device)
    };
    // Every aligned position takes its packed token; the gaps take zeros. The output goes
    // back by the reversed move (its gradient gathers too: RowMove).
    let aligned_positions = packing.aligned_positions();
    let mut sources = vec![packing.tokens(); len];
    for (token, &at) in aligned_positions.iter().enumerate() {
        sources[at] = token;
    }
    // Uploaded once: the move's destinations, and the rows lse and the selection keep.
    let positions = index(aligned_positions);
    let to_aligned = RowMove {
        sources: index(sources).into_primitive(),
        destinations: positions.clone().into_primitive(),
    };
    let qkv = [q, k, v].map(|t| B::moba_move_rows(t.into_primitive().tensor(), to_aligned.clone()));
    let starts = packing.sequence_starts().into_iter().map(|b| b as usize);
    let given = ForwardGiven {
        sequence_starts: Some(index(starts.collect()).into_primitive()),
        ..ForwardGiven::none()
    };
    let out = stats(B::moba_forward_given(qkv, given, config), &aligned);
    // Back to the packed tokens; block ids from each row's sequence's first block.
    let o = B::moba_move_rows(out.o.into_primitive().tensor(), to_aligned.reversed());
    let selection = out.selection.select(2, positions.clone());
    let first_blocks: Vec<i64> = packing.first_blocks().into_iter().map(i64::from).collect();
    let first_blocks =
        Tensor::<B, 1, Int>::from_data(TensorData::new(first_blocks, [packing.tokens()]), &device)
            .reshape([1, 1, packing.tokens(), 1]);
    let padding = selection.clone().lower_elem(0);
    Ok(MobaAttentionStats {
        o: Tensor::from_primitive(TensorPrimitive::Float(o)),
        // Not differentiable (MobaAttentionStats::lse): a plain select.
        lse: out.lse.select(2, positions),
        selection: (selection.clone() - first_blocks).mask_where(padding, selection),
    })
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
