//! Varlen (packed) batches the plain way: every sequence cut out and run as a problem of
//! its own, the oracle of the block-aligned layout every backend runs ([`crate::varlen`]).

use super::{Forward, Gradients, backward, forward};
use crate::config::{MobaConfig, Shape};
use crate::error::Result;
use crate::varlen::packed_problem;

/// Rows `tokens` of every head of a `[heads, len, width]` tensor: one sequence of a packed
/// batch.
pub fn cut_rows<T: Copy>(
    data: &[T],
    heads: usize,
    len: usize,
    width: usize,
    tokens: &std::ops::Range<usize>,
) -> Vec<T> {
    (0..heads)
        .flat_map(|h| {
            data[(h * len + tokens.start) * width..(h * len + tokens.end) * width]
                .iter()
                .copied()
        })
        .collect()
}

/// Writes the rows of `part: [heads, tokens.len(), width]` at rows `tokens` of `data`.
fn paste<T: Copy>(
    data: &mut [T],
    part: &[T],
    heads: usize,
    len: usize,
    width: usize,
    tokens: &std::ops::Range<usize>,
) {
    let rows = tokens.len() * width;
    for h in 0..heads {
        data[(h * len + tokens.start) * width..][..rows].copy_from_slice(&part[h * rows..][..rows]);
    }
}

/// Each sequence of a packed problem (`shape`: batch 1, `q_len = kv_len` = the packed
/// tokens) with its own shape, and its tokens.
fn sequences(
    shape: &Shape,
    cu_seqlens: &[usize],
    config: &MobaConfig,
) -> Result<Vec<(Shape, std::ops::Range<usize>)>> {
    let (packing, _) = packed_problem(shape, cu_seqlens, config)?;
    Ok((0..packing.sequences())
        .map(|i| packing.sequence(i))
        .filter(|tokens| !tokens.is_empty())
        .map(|tokens| {
            let len = tokens.len();
            (
                Shape {
                    q_len: len,
                    kv_len: len,
                    ..*shape
                },
                tokens,
            )
        })
        .collect())
}

/// MoBA forward of a packed batch: `q: [1, Hq, T, D]`, `k, v: [1, Hkv, T, D]` hold the
/// sequences `cu_seqlens` delimits; the selection's block ids count from each row's own
/// sequence.
pub fn varlen_forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: &Shape,
    cu_seqlens: &[usize],
    config: &MobaConfig,
) -> Result<Forward> {
    shape.check_inputs(q, k, v)?;
    let (d, top_k, tokens) = (shape.head_dim, config.top_k, shape.q_len);
    let mut out = Forward {
        o: vec![0.0; shape.q_elems()],
        lse: vec![0.0; shape.q_rows()],
        selection: vec![-1; shape.q_rows() * top_k],
    };
    for (part, rows) in sequences(shape, cu_seqlens, config)? {
        let [q, k, v] = [(q, shape.q_heads), (k, shape.kv_heads), (v, shape.kv_heads)]
            .map(|(x, heads)| cut_rows(x, heads, tokens, d, &rows));
        let f = forward(&q, &k, &v, &part, config)?;
        let heads = shape.q_heads;
        paste(&mut out.o, &f.o, heads, tokens, d, &rows);
        paste(&mut out.lse, &f.lse, heads, tokens, 1, &rows);
        paste(
            &mut out.selection,
            &f.selection,
            heads,
            tokens,
            top_k,
            &rows,
        );
    }
    Ok(out)
}

/// Gradients of `sum(o * dout)` for [`varlen_forward`].
pub fn varlen_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dout: &[f32],
    shape: &Shape,
    cu_seqlens: &[usize],
    config: &MobaConfig,
) -> Result<Gradients> {
    shape.check_inputs(q, k, v)?;
    shape.check_dout(dout)?;
    let (d, tokens) = (shape.head_dim, shape.q_len);
    let mut grads = Gradients {
        dq: vec![0.0; shape.q_elems()],
        dk: vec![0.0; shape.kv_elems()],
        dv: vec![0.0; shape.kv_elems()],
    };
    for (part, rows) in sequences(shape, cu_seqlens, config)? {
        let [q, k, v, dout] = [
            (q, shape.q_heads),
            (k, shape.kv_heads),
            (v, shape.kv_heads),
            (dout, shape.q_heads),
        ]
        .map(|(x, heads)| cut_rows(x, heads, tokens, d, &rows));
        let g = backward(&q, &k, &v, &dout, &part, config)?;
        paste(&mut grads.dq, &g.dq, shape.q_heads, tokens, d, &rows);
        paste(&mut grads.dk, &g.dk, shape.kv_heads, tokens, d, &rows);
        paste(&mut grads.dv, &g.dv, shape.kv_heads, tokens, d, &rows);
    }
    Ok(grads)
}
