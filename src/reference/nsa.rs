//! NSA (Native Sparse Attention) exactly as `../shared/NSA.md` states it, in f64: the oracle
//! of its backends.
//!
//! Each query row runs three branches and mixes them with its gates `g = (cmp, slc, win)`:
//! a compressed branch over the mean keys and values of (possibly overlapping) key blocks, a
//! selected branch over the `top_n` selection blocks that the compressed branch found most
//! important (one selection per GQA group and query, shared by the group's query heads), and
//! a sliding window. One function per step: block means, compressed branch, importance,
//! selection, key lists, one softmax attention over a list of keys (used by all three
//! branches), the gated sum; and the same steps backward.
//!
//! The public functions take the crate's f32 tensors, check them and work on f64 copies.
//! The private cores (`forward_with_selection`, `backward_with_selection`) take f64
//! tensors and a fixed selection: the gradients hold the selection constant, and so do the
//! finite-difference tests that check them.

use std::ops::Range;

use super::gate::padded;
use super::{Row, key_offset};
use crate::config::{NsaConfig, Shape, check_finite, check_len};
use crate::error::Result;
use crate::memory::{bytes_of, check_host};

/// NSA forward results in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct NsaForward {
    /// `[B, Hq, S, D]`: `g_cmp * o_cmp + g_slc * o_slc + g_win * o_win`.
    pub o: Vec<f64>,
    /// `[B, Hkv, S, top_n]`: the selection blocks of each GQA group and query, ascending,
    /// padded with -1 at the end where fewer than `top_n` blocks are eligible.
    pub selection: Vec<i32>,
    /// `[B, Hq, S, D]`: the compressed branch (0 where no compressed block is eligible).
    pub o_cmp: Vec<f64>,
    /// `[B, Hq, S, D]`: the selected branch.
    pub o_slc: Vec<f64>,
    /// `[B, Hq, S, D]`: the sliding-window branch.
    pub o_win: Vec<f64>,
}

/// Gradients of `sum(o * dout)` in f64, with the selection held constant.
#[derive(Debug, Clone, PartialEq)]
pub struct NsaGradients {
    /// `[B, Hq, S, D]`.
    pub dq: Vec<f64>,
    /// `[B, Hkv, Sk, D]`, summed over the query heads of each GQA group; the compressed
    /// branch's share reaches each key through the means of the blocks that hold it.
    pub dk: Vec<f64>,
    /// `[B, Hkv, Sk, D]`, like `dk`.
    pub dv: Vec<f64>,
    /// `[B, Hq, S, 3]` (cmp, slc, win): `dg_c = sum over D of dout * o_c`.
    pub dgates: Vec<f64>,
}

/// NSA forward of every row. `q: [B, Hq, S, D]`, `k, v: [B, Hkv, Sk, D]`,
/// `gates: [B, Hq, S, 3]` (cmp, slc, win), all row-major.
pub fn nsa_forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    gates: &[f32],
    shape: &Shape,
    config: &NsaConfig,
) -> Result<NsaForward> {
    let inputs = Inputs::checked(q, k, v, gates, shape, config)?;
    let selection = selection(&inputs, shape, config);
    Ok(forward_with_selection(&inputs, shape, config, &selection))
}

/// [`nsa_forward`] with a given selection (`[B, Hkv, S, top_n]`, ascending, -1 padded, as
/// [`NsaForward::selection`]): what a backend computed from the blocks it chose, to check
/// its branches apart from its ranking.
pub fn nsa_forward_given(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    gates: &[f32],
    shape: &Shape,
    config: &NsaConfig,
    selection: &[i32],
) -> Result<NsaForward> {
    let inputs = Inputs::checked(q, k, v, gates, shape, config)?;
    check_len(
        "selection [B, Hkv, S, top_n]",
        selection.len(),
        shape.groups() * shape.q_len * config.top_n,
    )?;
    let blocks = config.selection_blocks(shape.kv_len) as i32;
    if let Some(&bad) = selection.iter().find(|&&j| j < -1 || j >= blocks) {
        return Err(crate::error::MobaError::Config(format!(
            "selection block {bad} is not one of the {blocks} blocks (or -1)"
        )));
    }
    Ok(forward_with_selection(&inputs, shape, config, selection))
}

/// The group importances of every selection block, `[B, Hkv, S, ceil(Sk / l')]` (NSA.md's
/// `imp(j)`: what the top-n ranks).
pub fn nsa_importance(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    gates: &[f32],
    shape: &Shape,
    config: &NsaConfig,
) -> Result<Vec<f64>> {
    let inputs = Inputs::checked(q, k, v, gates, shape, config)?;
    Ok(group_importances(&inputs, shape, config))
}

/// NSA backward: gradients of `sum(o * dout)` with respect to q, k, v and the gates, with
/// the selection of the forward held constant. `dout: [B, Hq, S, D]`.
pub fn nsa_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    gates: &[f32],
    dout: &[f32],
    shape: &Shape,
    config: &NsaConfig,
) -> Result<NsaGradients> {
    let inputs = Inputs::checked(q, k, v, gates, shape, config)?;
    shape.check_dout(dout)?;
    let selection = selection(&inputs, shape, config);
    Ok(backward_with_selection(
        &inputs,
        &widen(dout),
        shape,
        config,
        &selection,
    ))
}

/// The inputs in f64: `q: [B, Hq, S, D]`, `k, v: [B, Hkv, Sk, D]`, `gates: [B, Hq, S, 3]`.
#[derive(Debug, Clone)]
struct Inputs {
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    gates: Vec<f64>,
}

impl Inputs {
    /// Checks the config, the lengths and finiteness of every input and the host memory
    /// the reference needs, then widens the inputs to f64.
    fn checked(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        gates: &[f32],
        shape: &Shape,
        config: &NsaConfig,
    ) -> Result<Self> {
        config.validate()?;
        shape.check_inputs(q, k, v)?;
        check_len("gates [B, Hq, S, 3]", gates.len(), shape.q_rows() * 3)?;
        check_finite("gates", gates)?;
        check_memory(shape, config)?;
        Ok(Self {
            q: widen(q),
            k: widen(k),
            v: widen(v),
            gates: widen(gates),
        })
    }
}

fn widen(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&x| x as f64).collect()
}

/// Fails unless the reference's f64 copies of the inputs, the block means, the outputs and
/// the gradients (an upper bound for both the forward and the backward) fit in host memory.
fn check_memory(shape: &Shape, config: &NsaConfig) -> Result<()> {
    let nc = config.compressed_blocks(shape.kv_len);
    let parts = [
        // q, dout and o, o_cmp, o_slc, o_win (or dq).
        bytes_of(&shape.q_dims(), 6 * 8),
        // k, v, dk, dv.
        bytes_of(&shape.kv_dims(), 4 * 8),
        // gates and dgates.
        bytes_of(&[shape.q_rows(), 3], 2 * 8),
        // kc, vc and their gradients.
        bytes_of(&[shape.groups(), nc, shape.head_dim], 4 * 8),
        // The selection.
        bytes_of(&[shape.groups(), shape.q_len, config.top_n], 4),
    ];
    let total = parts
        .into_iter()
        .try_fold(0u64, |sum, bytes| sum.checked_add(bytes?));
    check_host(
        &format!("the NSA reference's f64 tensors for {shape:?}"),
        total,
    )
}

fn dot64(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `acc += x`, element-wise.
fn add_into(acc: &mut [f64], x: &[f64]) {
    for (a, &x) in acc.iter_mut().zip(x) {
        *a += x;
    }
}

/// The query vector of flat row `index`.
fn query_of(q: &[f64], index: usize, d: usize) -> &[f64] {
    &q[index * d..(index + 1) * d]
}

/// Rows `keys` of group `group` in a `[B, Hkv, Sk, D]` tensor.
fn kv_rows<'a>(x: &'a [f64], shape: &Shape, group: usize, keys: &[usize]) -> Vec<&'a [f64]> {
    keys.iter()
        .map(|&i| &x[key_offset(shape, group, i)..][..shape.head_dim])
        .collect()
}

/// Flat `[B, Hq, S]` rows of the query heads of `group` at query `t`.
fn group_rows(shape: &Shape, group: usize, t: usize) -> impl Iterator<Item = usize> + use<> {
    let (heads, q_len) = (shape.group_size(), shape.q_len);
    (0..heads).map(move |head| (group * heads + head) * q_len + t)
}

// ---------------------------------------------------------------------------------------
// Step 1: compressed blocks and their means.

/// Keys of compressed block `i`: `[i*d, i*d + l)`.
fn compressed_block_keys(i: usize, config: &NsaConfig) -> Range<usize> {
    let start = i * config.stride;
    start..start + config.compress_block
}

/// Mean keys and values of the compressed blocks: `kc, vc: [B * Hkv, nc, D]`.
#[derive(Debug, Clone)]
struct Compressed {
    kc: Vec<f64>,
    vc: Vec<f64>,
    /// `nc`, the number of compressed blocks.
    blocks: usize,
    head_dim: usize,
}

impl Compressed {
    fn at(&self, group: usize, i: usize) -> Range<usize> {
        let d = self.head_dim;
        (group * self.blocks + i) * d..(group * self.blocks + i + 1) * d
    }

    /// Mean keys and mean values of blocks `blocks` of `group`.
    fn rows(&self, group: usize, blocks: Range<usize>) -> (Vec<&[f64]>, Vec<&[f64]>) {
        blocks
            .map(|i| (&self.kc[self.at(group, i)], &self.vc[self.at(group, i)]))
            .unzip()
    }
}

/// `kc_i` and `vc_i`: the means of the keys and values of every compressed block.
fn compressed_means(k: &[f64], v: &[f64], shape: &Shape, config: &NsaConfig) -> Compressed {
    let d = shape.head_dim;
    let blocks = config.compressed_blocks(shape.kv_len);
    let mut out = Compressed {
        kc: vec![0.0; shape.groups() * blocks * d],
        vc: vec![0.0; shape.groups() * blocks * d],
        blocks,
        head_dim: d,
    };
    let count = config.compress_block as f64;
    for group in 0..shape.groups() {
        for i in 0..blocks {
            let at = out.at(group, i);
            for key in compressed_block_keys(i, config) {
                let row = key_offset(shape, group, key);
                add_into(&mut out.kc[at.clone()], &k[row..row + d]);
                add_into(&mut out.vc[at.clone()], &v[row..row + d]);
            }
            out.kc[at.clone()].iter_mut().for_each(|x| *x /= count);
            out.vc[at].iter_mut().for_each(|x| *x /= count);
        }
    }
    out
}

/// Backward of the means: each of the `l` keys of compressed block `i` gets `1/l` of the
/// gradient of block `i`'s mean; a key in several (overlapping) blocks collects from each.
/// `d_means: [B * Hkv, nc, D]` is added into `out: [B, Hkv, Sk, D]`.
fn means_backward(d_means: &[f64], shape: &Shape, config: &NsaConfig, out: &mut [f64]) {
    let d = shape.head_dim;
    let blocks = config.compressed_blocks(shape.kv_len);
    let share = 1.0 / config.compress_block as f64;
    for group in 0..shape.groups() {
        for i in 0..blocks {
            let grad = &d_means[(group * blocks + i) * d..][..d];
            for key in compressed_block_keys(i, config) {
                let row = key_offset(shape, group, key);
                for (o, &g) in out[row..row + d].iter_mut().zip(grad) {
                    *o += share * g;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Step 2: one softmax attention over a list of keys (all three branches use it).

/// Softmax attention of one query over a list of keys: `probs` (the softmax weights, in the
/// order of the list) and the output `o`. With no keys: no weights and `o = 0`.
#[derive(Debug, Clone)]
struct Attention {
    probs: Vec<f64>,
    o: Vec<f64>,
}

fn attend(query: &[f64], keys: &[&[f64]], values: &[&[f64]], scale: f64) -> Attention {
    let scores: Vec<f64> = keys.iter().map(|key| scale * dot64(query, key)).collect();
    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let total: f64 = weights.iter().sum();
    let probs: Vec<f64> = weights.iter().map(|w| w / total).collect();
    let mut o = vec![0.0; query.len()];
    for (p, value) in probs.iter().zip(values) {
        for (acc, &x) in o.iter_mut().zip(*value) {
            *acc += p * x;
        }
    }
    Attention { probs, o }
}

/// Gradients of one softmax attention, given the gradient of its output.
#[derive(Debug, Clone)]
struct AttentionGradients {
    dq: Vec<f64>,
    /// One row per key of the list.
    dk: Vec<Vec<f64>>,
    /// One row per value of the list.
    dv: Vec<Vec<f64>>,
}

/// Backward of [`attend`]: with `ds_i = p_i (grad_o . v_i - grad_o . o)`,
/// `dq = scale * sum ds_i k_i`, `dk_i = scale * ds_i q`, `dv_i = p_i grad_o`.
fn attend_backward(
    query: &[f64],
    keys: &[&[f64]],
    values: &[&[f64]],
    attention: &Attention,
    grad_o: &[f64],
    scale: f64,
) -> AttentionGradients {
    // delta = grad_o . o: the softmax Jacobian's shared term.
    let delta = dot64(grad_o, &attention.o);
    let mut grads = AttentionGradients {
        dq: vec![0.0; query.len()],
        dk: Vec::with_capacity(keys.len()),
        dv: Vec::with_capacity(keys.len()),
    };
    for ((key, value), &p) in keys.iter().zip(values).zip(&attention.probs) {
        let ds = p * (dot64(grad_o, value) - delta);
        for (dq, &x) in grads.dq.iter_mut().zip(*key) {
            *dq += scale * ds * x;
        }
        grads
            .dk
            .push(query.iter().map(|&x| scale * ds * x).collect());
        grads.dv.push(grad_o.iter().map(|&g| p * g).collect());
    }
    grads
}

// ---------------------------------------------------------------------------------------
// Step 3: the compressed branch.

/// Compressed blocks eligible for the query at `position`: those with `i*d + l - 1 <= p`
/// (entirely in the past or ending at `p`), which are `0..floor((p + 1 - l) / d) + 1`.
fn eligible_compressed(position: usize, config: &NsaConfig) -> Range<usize> {
    match (position + 1).checked_sub(config.compress_block) {
        Some(rest) => 0..rest / config.stride + 1,
        None => 0..0,
    }
}

/// Compressed branch of one query: softmax over the eligible blocks' mean keys (its
/// `probs` are `p_cmp`, one per eligible block), output from their mean values; `o = 0`
/// when no block is eligible.
fn compressed_branch(
    query: &[f64],
    compressed: &Compressed,
    group: usize,
    position: usize,
    config: &NsaConfig,
    scale: f64,
) -> Attention {
    let (keys, values) = compressed.rows(group, eligible_compressed(position, config));
    attend(query, &keys, &values, scale)
}

// ---------------------------------------------------------------------------------------
// Step 4: importance of the selection blocks.

/// Keys of selection block `j` as the overlap counts them: `[j*l', (j+1)*l')`. (Clipping
/// to `Sk` changes nothing: every compressed block lies within the keys.)
fn selection_block_span(j: usize, config: &NsaConfig) -> Range<usize> {
    j * config.select_block..(j + 1) * config.select_block
}

/// `|[i*d, i*d + l) ∩ [j*l', (j+1)*l')| / d`: the overlap of compressed block `i` with
/// selection block `j`, counted in strides (exact: `d` divides `l` and `l'`).
fn overlap_strides(i: usize, j: usize, config: &NsaConfig) -> f64 {
    let (cmp, slc) = (
        compressed_block_keys(i, config),
        selection_block_span(j, config),
    );
    let overlap = cmp
        .end
        .min(slc.end)
        .saturating_sub(cmp.start.max(slc.start));
    (overlap / config.stride) as f64
}

/// Importance for one query head: `imp_h(j) = sum_i p_cmp(i) * overlap_strides(i, j)` for
/// each of the `selection_blocks` blocks; `p_cmp` lists the eligible compressed blocks
/// `0..p_cmp.len()` (none: every importance is 0).
fn head_importance(p_cmp: &[f64], config: &NsaConfig, selection_blocks: usize) -> Vec<f64> {
    let mut importance = vec![0.0; selection_blocks];
    for (i, p) in p_cmp.iter().enumerate() {
        // Only the selection blocks that compressed block i overlaps (a few, not all).
        let keys = compressed_block_keys(i, config);
        let last = ((keys.end - 1) / config.select_block).min(selection_blocks - 1);
        for (j, importance) in importance
            .iter_mut()
            .enumerate()
            .take(last + 1)
            .skip(keys.start / config.select_block)
        {
            *importance += p * overlap_strides(i, j, config);
        }
    }
    importance
}

/// Group importance: the importances of the group's query heads, summed.
fn group_importance(p_cmp_of_heads: &[Vec<f64>], config: &NsaConfig, blocks: usize) -> Vec<f64> {
    let mut total = vec![0.0; blocks];
    for p_cmp in p_cmp_of_heads {
        add_into(&mut total, &head_importance(p_cmp, config, blocks));
    }
    total
}

// ---------------------------------------------------------------------------------------
// Step 5: the selection.

/// Selection blocks of the query at `position`, ascending: block 0, the current block
/// `c = p / l'` and `c - 1` (forced), then the `top_n - |forced|` eligible blocks (`j <= c`)
/// with the highest importance, ties to the larger `j`.
fn select_blocks(importance: &[f64], position: usize, config: &NsaConfig) -> Vec<usize> {
    let current = position / config.select_block;
    let mut selected = vec![0, current.saturating_sub(1), current];
    selected.sort_unstable();
    selected.dedup();
    // The other eligible blocks, best first: higher importance, then larger block id.
    let mut ranked: Vec<usize> = (0..=current).filter(|j| !selected.contains(j)).collect();
    ranked.sort_by(|&a, &b| importance[b].total_cmp(&importance[a]).then(b.cmp(&a)));
    let slots = config.top_n - selected.len();
    selected.extend(ranked.into_iter().take(slots));
    selected.sort_unstable();
    selected
}

/// The selection of every GQA group and query, `[B, Hkv, S, top_n]` ascending and padded
/// with -1: each from the summed importance of the group's query heads.
fn selection(inputs: &Inputs, shape: &Shape, config: &NsaConfig) -> Vec<i32> {
    selection_from_importance(&group_importances(inputs, shape, config), shape, config)
}

/// The group importances `[B, Hkv, S, ceil(Sk / l')]`.
fn group_importances(inputs: &Inputs, shape: &Shape, config: &NsaConfig) -> Vec<f64> {
    let d = shape.head_dim;
    let scale = config.scale_for(d) as f64;
    let compressed = compressed_means(&inputs.k, &inputs.v, shape, config);
    let blocks = config.selection_blocks(shape.kv_len);
    let mut importance = Vec::with_capacity(shape.groups() * shape.q_len * blocks);
    for group in 0..shape.groups() {
        for t in 0..shape.q_len {
            let position = shape.query_position(t);
            let p_cmp_of_heads: Vec<Vec<f64>> = group_rows(shape, group, t)
                .map(|index| {
                    let query = query_of(&inputs.q, index, d);
                    compressed_branch(query, &compressed, group, position, config, scale).probs
                })
                .collect();
            importance.extend(group_importance(&p_cmp_of_heads, config, blocks));
        }
    }
    importance
}

/// The selection of every GQA group and query, `[B, Hkv, S, top_n]` ascending and padded
/// with -1, from the group importances `[B, Hkv, S, ceil(Sk / l')]` (step 5 alone: the
/// burn-op NSA computes the importances on its device).
pub(crate) fn selection_from_importance(
    importance: &[f64],
    shape: &Shape,
    config: &NsaConfig,
) -> Vec<i32> {
    let blocks = config.selection_blocks(shape.kv_len);
    let mut out = Vec::with_capacity(shape.groups() * shape.q_len * config.top_n);
    for (row, importance) in importance.chunks(blocks).enumerate() {
        let position = shape.query_position(row % shape.q_len);
        out.extend(padded(
            &select_blocks(importance, position, config),
            config.top_n,
        ));
    }
    out
}

/// The selected blocks of flat row `index` (its group's, at its query).
fn row_selection(selection: &[i32], shape: &Shape, config: &NsaConfig, index: usize) -> Vec<usize> {
    let (row, t) = (Row::new(shape, index), index % shape.q_len);
    selection[(row.group * shape.q_len + t) * config.top_n..][..config.top_n]
        .iter()
        .filter(|&&j| j >= 0)
        .map(|&j| j as usize)
        .collect()
}

// ---------------------------------------------------------------------------------------
// Step 6: the keys of the selected and window branches.

/// Keys of the selected branch: those of the selected blocks with index `<= p`.
fn selected_keys(
    blocks: &[usize],
    position: usize,
    shape: &Shape,
    config: &NsaConfig,
) -> Vec<usize> {
    let l = config.select_block;
    blocks
        .iter()
        .flat_map(|&j| j * l..((j + 1) * l).min(shape.kv_len))
        .filter(|&i| i <= position)
        .collect()
}

/// Keys of the window branch: `[max(0, p - w + 1), p]`.
fn window_keys(position: usize, config: &NsaConfig) -> Vec<usize> {
    ((position + 1).saturating_sub(config.window)..=position).collect()
}

// ---------------------------------------------------------------------------------------
// Step 7: one row's three branches, the gated sum, and the backward.

/// The three branches of one row, with what each attended.
#[derive(Debug, Clone)]
struct RowBranches {
    cmp: Attention,
    cmp_blocks: Range<usize>,
    slc: Attention,
    slc_keys: Vec<usize>,
    win: Attention,
    win_keys: Vec<usize>,
}

fn row_branches(
    inputs: &Inputs,
    compressed: &Compressed,
    selection: &[i32],
    shape: &Shape,
    config: &NsaConfig,
    index: usize,
) -> RowBranches {
    let d = shape.head_dim;
    let scale = config.scale_for(d) as f64;
    let row = Row::new(shape, index);
    let query = query_of(&inputs.q, index, d);
    let attend_keys = |keys: &[usize]| {
        let k = kv_rows(&inputs.k, shape, row.group, keys);
        let v = kv_rows(&inputs.v, shape, row.group, keys);
        attend(query, &k, &v, scale)
    };
    let blocks = row_selection(selection, shape, config, index);
    let slc_keys = selected_keys(&blocks, row.position, shape, config);
    let win_keys = window_keys(row.position, config);
    RowBranches {
        cmp: compressed_branch(query, compressed, row.group, row.position, config, scale),
        cmp_blocks: eligible_compressed(row.position, config),
        slc: attend_keys(&slc_keys),
        slc_keys,
        win: attend_keys(&win_keys),
        win_keys,
    }
}

/// The forward with a given selection (`[B, Hkv, S, top_n]`, -1 padded).
fn forward_with_selection(
    inputs: &Inputs,
    shape: &Shape,
    config: &NsaConfig,
    selection: &[i32],
) -> NsaForward {
    let compressed = compressed_means(&inputs.k, &inputs.v, shape, config);
    let mut out = NsaForward {
        o: Vec::with_capacity(shape.q_elems()),
        selection: selection.to_vec(),
        o_cmp: Vec::with_capacity(shape.q_elems()),
        o_slc: Vec::with_capacity(shape.q_elems()),
        o_win: Vec::with_capacity(shape.q_elems()),
    };
    for index in 0..shape.q_rows() {
        let branches = row_branches(inputs, &compressed, selection, shape, config, index);
        let g = &inputs.gates[index * 3..index * 3 + 3];
        out.o.extend((0..shape.head_dim).map(|c| {
            g[0] * branches.cmp.o[c] + g[1] * branches.slc.o[c] + g[2] * branches.win.o[c]
        }));
        out.o_cmp.extend(branches.cmp.o);
        out.o_slc.extend(branches.slc.o);
        out.o_win.extend(branches.win.o);
    }
    out
}

/// The backward with a given selection (`[B, Hkv, S, top_n]`, -1 padded).
fn backward_with_selection(
    inputs: &Inputs,
    dout: &[f64],
    shape: &Shape,
    config: &NsaConfig,
    selection: &[i32],
) -> NsaGradients {
    let d = shape.head_dim;
    let scale = config.scale_for(d) as f64;
    let compressed = compressed_means(&inputs.k, &inputs.v, shape, config);
    let mut grads = NsaGradients {
        dq: vec![0.0; shape.q_elems()],
        dk: vec![0.0; shape.kv_elems()],
        dv: vec![0.0; shape.kv_elems()],
        dgates: vec![0.0; shape.q_rows() * 3],
    };
    // Gradients of the block means, `[B * Hkv, nc, D]`, passed to the keys at the end.
    let mut d_kc = vec![0.0; compressed.kc.len()];
    let mut d_vc = vec![0.0; compressed.vc.len()];
    for index in 0..shape.q_rows() {
        let row = Row::new(shape, index);
        let query = query_of(&inputs.q, index, d);
        let grad_out = &dout[index * d..(index + 1) * d];
        let g = &inputs.gates[index * 3..index * 3 + 3];
        let branches = row_branches(inputs, &compressed, selection, shape, config, index);

        // The gates: o is linear in each.
        for (c, branch) in [&branches.cmp, &branches.slc, &branches.win]
            .iter()
            .enumerate()
        {
            grads.dgates[index * 3 + c] = dot64(grad_out, &branch.o);
        }
        // Each branch's output gradient is its gate times dout.
        let gated = |gate: f64| -> Vec<f64> { grad_out.iter().map(|&x| gate * x).collect() };

        // Compressed: to q, and to the means of the eligible blocks.
        let (keys, values) = compressed.rows(row.group, branches.cmp_blocks.clone());
        let cmp = attend_backward(query, &keys, &values, &branches.cmp, &gated(g[0]), scale);
        add_into(&mut grads.dq[index * d..(index + 1) * d], &cmp.dq);
        for (n, i) in branches.cmp_blocks.clone().enumerate() {
            let at = compressed.at(row.group, i);
            add_into(&mut d_kc[at.clone()], &cmp.dk[n]);
            add_into(&mut d_vc[at], &cmp.dv[n]);
        }

        // Selected and window: to q and to the keys they attended.
        for (attention, key_list, gate) in [
            (&branches.slc, &branches.slc_keys, g[1]),
            (&branches.win, &branches.win_keys, g[2]),
        ] {
            let keys = kv_rows(&inputs.k, shape, row.group, key_list);
            let values = kv_rows(&inputs.v, shape, row.group, key_list);
            let branch = attend_backward(query, &keys, &values, attention, &gated(gate), scale);
            add_into(&mut grads.dq[index * d..(index + 1) * d], &branch.dq);
            for (n, &i) in key_list.iter().enumerate() {
                let at = key_offset(shape, row.group, i);
                add_into(&mut grads.dk[at..at + d], &branch.dk[n]);
                add_into(&mut grads.dv[at..at + d], &branch.dv[n]);
            }
        }
    }
    means_backward(&d_kc, shape, config, &mut grads.dk);
    means_backward(&d_vc, shape, config, &mut grads.dv);
    grads
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MobaConfig;
    use crate::error::MobaError;
    use crate::random;
    use crate::reference::dense_forward;

    fn random_inputs(shape: &Shape, seed: u64) -> Inputs {
        let [q, k, v, gates] = random::nsa_inputs(shape, seed);
        Inputs {
            q: widen(&q),
            k: widen(&k),
            v: widen(&v),
            gates: widen(&gates),
        }
    }

    /// A shape from `[batch, q_heads, kv_heads, q_len, kv_len, head_dim]`.
    fn shape([batch, q_heads, kv_heads, q_len, kv_len, head_dim]: [usize; 6]) -> Shape {
        Shape::of_dims(
            &[batch, q_heads, q_len, head_dim],
            &[batch, kv_heads, kv_len, head_dim],
        )
    }

    fn max_abs(x: &[f64]) -> f64 {
        x.iter().fold(0.0, |m, &x| m.max(x.abs()))
    }

    fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
    }

    /// Input tensor `which` of q, k, v, gates.
    fn tensor(inputs: &mut Inputs, which: usize) -> &mut Vec<f64> {
        match which {
            0 => &mut inputs.q,
            1 => &mut inputs.k,
            2 => &mut inputs.v,
            _ => &mut inputs.gates,
        }
    }

    /// Compares the analytic gradients with central differences of `sum(o * dout)`, with
    /// the selection of the unperturbed inputs held fixed, for every element of q, k, v and
    /// the gates. Returns the forward and the gradients for further checks.
    fn check_gradients(
        shape: &Shape,
        config: &NsaConfig,
        mut inputs: Inputs,
        seed: u64,
    ) -> (NsaForward, NsaGradients) {
        let dout = widen(&random::normal(shape.q_elems(), seed + 7));
        let selection = selection(&inputs, shape, config);
        let grads = backward_with_selection(&inputs, &dout, shape, config, &selection);
        let loss = |inputs: &Inputs| -> f64 {
            dot64(
                &forward_with_selection(inputs, shape, config, &selection).o,
                &dout,
            )
        };
        for (which, (name, analytic)) in [
            ("q", &grads.dq),
            ("k", &grads.dk),
            ("v", &grads.dv),
            ("gates", &grads.dgates),
        ]
        .into_iter()
        .enumerate()
        {
            let mut numeric = vec![0.0; analytic.len()];
            for (n, slot) in numeric.iter_mut().enumerate() {
                let x = tensor(&mut inputs, which)[n];
                let h = 1e-5 * x.abs().max(1.0);
                tensor(&mut inputs, which)[n] = x + h;
                let plus = loss(&inputs);
                tensor(&mut inputs, which)[n] = x - h;
                let minus = loss(&inputs);
                tensor(&mut inputs, which)[n] = x;
                *slot = (plus - minus) / (2.0 * h);
            }
            let scale = max_abs(analytic);
            let error = max_abs_diff(&numeric, analytic) / scale.max(1e-300);
            assert!(
                error < 1e-7,
                "d{name}: relative error {error:e} (largest gradient {scale:e})"
            );
        }
        let forward = forward_with_selection(&inputs, shape, config, &selection);
        (forward, grads)
    }

    /// Whether some query's selection leaves out an eligible block (so the importance and
    /// top-n decide something).
    fn selection_drops_a_block(selection: &[i32], shape: &Shape, config: &NsaConfig) -> bool {
        selection
            .chunks(config.top_n)
            .enumerate()
            .any(|(n, blocks)| {
                let position = shape.query_position(n % shape.q_len);
                let eligible = position / config.select_block + 1;
                blocks.iter().filter(|&&j| j >= 0).count() < eligible
            })
    }

    /// Finite differences on random inputs of `seed`, where the selection leaves a block out
    /// and every gradient is non-zero (a check that cannot pass vacuously).
    fn gradients_match_on_a_sparse_selection(shape: Shape, config: NsaConfig, seed: u64) {
        let inputs = random_inputs(&shape, seed);
        let (forward, grads) = check_gradients(&shape, &config, inputs, seed);
        assert!(selection_drops_a_block(&forward.selection, &shape, &config));
        assert_gradients_nonzero(&grads);
    }

    fn assert_gradients_nonzero(grads: &NsaGradients) {
        for (name, x) in [
            ("dq", &grads.dq),
            ("dk", &grads.dk),
            ("dv", &grads.dv),
            ("dgates", &grads.dgates),
        ] {
            assert!(max_abs(x) > 1e-3, "{name} is (nearly) zero");
        }
    }

    #[test]
    fn gradients_match_finite_differences_group_1_overlapping_blocks() {
        // l = 4, d = 2: every key but the first two lies in two compressed blocks.
        gradients_match_on_a_sparse_selection(
            shape([2, 2, 2, 24, 24, 4]),
            NsaConfig::new(4, 2, 4, 4, 5),
            1,
        );
    }

    #[test]
    fn gradients_match_finite_differences_group_2() {
        gradients_match_on_a_sparse_selection(
            shape([1, 4, 2, 32, 32, 4]),
            NsaConfig::new(8, 4, 4, 5, 6),
            2,
        );
    }

    #[test]
    fn gradients_match_finite_differences_group_4_blocks_coincide() {
        // l = l' = d: the importance is p_cmp itself.
        gradients_match_on_a_sparse_selection(
            shape([1, 4, 1, 20, 20, 3]),
            NsaConfig::new(4, 4, 4, 4, 3),
            3,
        );
    }

    #[test]
    fn gradients_match_finite_differences_group_16_tiny_head() {
        gradients_match_on_a_sparse_selection(
            shape([1, 16, 1, 12, 12, 2]),
            NsaConfig::new(4, 2, 2, 4, 4),
            4,
        );
    }

    #[test]
    fn gradients_match_finite_differences_in_decode() {
        let config = NsaConfig::new(4, 2, 4, 4, 7).with_scale(0.3);
        for q_len in [1, 3] {
            gradients_match_on_a_sparse_selection(shape([1, 4, 2, q_len, 29, 4]), config, 5);
        }
    }

    #[test]
    fn without_a_compressed_block_o_cmp_and_its_gate_gradient_are_zero() {
        // Sk = 6 < l = 8: nc = 0.
        let (shape, config) = (shape([1, 2, 1, 6, 6, 4]), NsaConfig::new(8, 4, 4, 3, 3));
        assert_eq!(config.compressed_blocks(shape.kv_len), 0);
        let (forward, grads) = check_gradients(&shape, &config, random_inputs(&shape, 6), 6);
        assert!(forward.o_cmp.iter().all(|&x| x == 0.0));
        assert!(grads.dgates.chunks(3).all(|g| g[0] == 0.0));
        assert!(max_abs(&forward.o_slc) > 0.1 && max_abs(&forward.o_win) > 0.1);
        assert!(max_abs(&grads.dk) > 1e-3);
    }

    #[test]
    fn o_cmp_is_zero_exactly_for_queries_before_the_first_complete_block() {
        let (shape, config) = (shape([1, 1, 1, 16, 16, 4]), NsaConfig::new(8, 4, 4, 3, 3));
        let [q, k, v, g] = random::nsa_inputs(&shape, 60);
        let forward = nsa_forward(&q, &k, &v, &g, &shape, &config).unwrap();
        for (t, row) in forward.o_cmp.chunks(4).enumerate() {
            // Block 0 covers keys 0..8: eligible from position 7 on.
            assert_eq!(row.iter().all(|&x| x == 0.0), t < 7, "row {t}: {row:?}");
        }
    }

    #[test]
    fn the_compressed_branch_alone_reaches_the_keys_through_the_means() {
        let (shape, config) = (shape([1, 2, 1, 16, 16, 4]), NsaConfig::new(4, 2, 4, 3, 2));
        let mut inputs = random_inputs(&shape, 7);
        for g in inputs.gates.chunks_mut(3) {
            g.copy_from_slice(&[1.0, 0.0, 0.0]);
        }
        let (forward, grads) = check_gradients(&shape, &config, inputs, 7);
        assert_eq!(max_abs_diff(&forward.o, &forward.o_cmp), 0.0);
        // Every key lies in a compressed block: all get a gradient, the last ones from the
        // blocks that only the last queries see.
        for key in grads.dk.chunks(4) {
            assert!(max_abs(key) > 1e-6, "{key:?}");
        }
    }

    #[test]
    fn public_backward_matches_the_core_and_the_forward_is_the_gated_sum() {
        let (shape, config) = (shape([1, 4, 2, 10, 18, 4]), NsaConfig::new(4, 2, 4, 3, 4));
        let [q, k, v, g] = random::nsa_inputs(&shape, 8);
        let dout = random::normal(shape.q_elems(), 9);
        let forward = nsa_forward(&q, &k, &v, &g, &shape, &config).unwrap();
        let grads = nsa_backward(&q, &k, &v, &g, &dout, &shape, &config).unwrap();
        let inputs = random_inputs(&shape, 8);
        let core =
            backward_with_selection(&inputs, &widen(&dout), &shape, &config, &forward.selection);
        assert_eq!(grads, core);
        for (n, o) in forward.o.iter().enumerate() {
            let gates = &g[n / 4 * 3..][..3];
            let want = gates[0] as f64 * forward.o_cmp[n]
                + gates[1] as f64 * forward.o_slc[n]
                + gates[2] as f64 * forward.o_win[n];
            assert!((o - want).abs() < 1e-14, "{n}: {o} vs {want}");
        }
        for (n, dg) in grads.dgates.iter().enumerate() {
            let (row, c) = (n / 3, n % 3);
            let branch = [&forward.o_cmp, &forward.o_slc, &forward.o_win][c];
            let want = dot64(&widen(&dout[row * 4..][..4]), &branch[row * 4..][..4]);
            assert!((dg - want).abs() < 1e-14);
        }
    }

    fn dense_causal(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        shape: &Shape,
        config: &NsaConfig,
    ) -> Vec<f64> {
        dense_forward([q, k, v], shape, config.scale_for(shape.head_dim), true)
            .unwrap()
            .o
    }

    #[test]
    fn top_n_covering_every_block_gives_dense_causal_attention() {
        let shape = shape([2, 4, 2, 5, 19, 4]);
        // ns = ceil(19 / 4) = 5 blocks, all selected.
        let config = NsaConfig::new(4, 2, 4, 5, 2);
        let [q, k, v, g] = random::nsa_inputs(&shape, 10);
        let forward = nsa_forward(&q, &k, &v, &g, &shape, &config).unwrap();
        let dense = dense_causal(&q, &k, &v, &shape, &config);
        assert!(max_abs_diff(&forward.o_slc, &dense) < 1e-12);
        // With fewer blocks the selected branch is no longer dense.
        let sparse =
            nsa_forward(&q, &k, &v, &g, &shape, &NsaConfig { top_n: 3, ..config }).unwrap();
        assert!(max_abs_diff(&sparse.o_slc, &dense) > 1e-3);
    }

    #[test]
    fn a_window_covering_every_key_gives_dense_causal_attention() {
        let shape = shape([1, 4, 1, 7, 15, 4]);
        let [q, k, v, g] = random::nsa_inputs(&shape, 11);
        let dense = dense_causal(&q, &k, &v, &shape, &NsaConfig::new(4, 2, 4, 3, 1));
        for window in [15, 40] {
            let config = NsaConfig::new(4, 2, 4, 3, window);
            let forward = nsa_forward(&q, &k, &v, &g, &shape, &config).unwrap();
            assert!(max_abs_diff(&forward.o_win, &dense) < 1e-12);
        }
        let narrow = NsaConfig::new(4, 2, 4, 3, 14);
        let forward = nsa_forward(&q, &k, &v, &g, &shape, &narrow).unwrap();
        assert!(max_abs_diff(&forward.o_win, &dense) > 1e-3);
    }

    /// The window branch is MoBA's attention with the key-window gate (what every backend's
    /// NSA runs it as), for windows inside a block, of one key, and past every key.
    #[test]
    fn the_window_branch_is_moba_with_the_key_window_gate() {
        for (dims, window) in [
            ([1, 4, 2, 30, 30, 4], 7),
            ([1, 2, 1, 30, 30, 4], 1),
            ([2, 4, 1, 5, 40, 8], 9),
            ([1, 2, 2, 12, 12, 4], 40),
        ] {
            let shape = shape(dims);
            let [q, k, v, g] = random::nsa_inputs(&shape, 13);
            let config = NsaConfig::new(4, 2, 4, 3, window);
            let nsa = nsa_forward(&q, &k, &v, &g, &shape, &config).unwrap();
            let moba = MobaConfig::key_window(window).with_scale(config.scale_for(dims[5]));
            let moba = crate::reference::forward(&q, &k, &v, &shape, &moba).unwrap();
            assert!(
                max_abs_diff(&nsa.o_win, &moba.o) < 1e-12,
                "{dims:?} w {window}"
            );
        }
    }

    #[test]
    fn a_window_of_one_is_the_own_value() {
        let shape = shape([1, 2, 1, 3, 9, 4]);
        let [q, k, v, g] = random::nsa_inputs(&shape, 12);
        let forward = nsa_forward(&q, &k, &v, &g, &shape, &NsaConfig::new(4, 2, 4, 3, 1)).unwrap();
        for (n, row) in forward.o_win.chunks(4).enumerate() {
            let position = shape.query_position(n % 3);
            assert_eq!(row, &widen(&v[position * 4..][..4])[..]);
        }
    }

    #[test]
    fn compressed_blocks_of_one_key_give_dense_causal_attention() {
        let shape = shape([1, 4, 2, 6, 11, 4]);
        let config = NsaConfig::new(1, 1, 3, 3, 2);
        let [q, k, v, g] = random::nsa_inputs(&shape, 13);
        let forward = nsa_forward(&q, &k, &v, &g, &shape, &config).unwrap();
        let dense = dense_causal(&q, &k, &v, &shape, &config);
        assert!(max_abs_diff(&forward.o_cmp, &dense) < 1e-12);
    }

    #[test]
    fn forced_blocks_are_always_selected_and_the_selection_is_well_formed() {
        let shape = shape([2, 4, 2, 40, 43, 4]);
        let config = NsaConfig::new(4, 2, 4, 5, 4);
        let [q, k, v, g] = random::nsa_inputs(&shape, 14);
        let forward = nsa_forward(&q, &k, &v, &g, &shape, &config).unwrap();
        assert_eq!(forward.selection.len(), shape.groups() * shape.q_len * 5);
        for (n, blocks) in forward.selection.chunks(5).enumerate() {
            let position = shape.query_position(n % shape.q_len);
            let current = position / 4;
            let count = (current + 1).min(5);
            let (chosen, padding) = blocks.split_at(count);
            assert!(padding.iter().all(|&j| j == -1), "{blocks:?}");
            assert!(chosen.windows(2).all(|w| w[0] < w[1]), "{blocks:?}");
            assert!(chosen.iter().all(|&j| 0 <= j && j <= current as i32));
            for forced in [0, current, current.saturating_sub(1)] {
                assert!(chosen.contains(&(forced as i32)), "{forced} in {blocks:?}");
            }
        }
        assert!(selection_drops_a_block(&forward.selection, &shape, &config));
    }

    /// The group importance of one query by brute force: every key of every eligible
    /// compressed block adds `p_cmp / d` to the selection block that holds it.
    fn brute_force_importance(
        p_cmp_of_heads: &[Vec<f64>],
        config: &NsaConfig,
        blocks: usize,
    ) -> Vec<f64> {
        let mut importance = vec![0.0; blocks];
        for p_cmp in p_cmp_of_heads {
            for (i, p) in p_cmp.iter().enumerate() {
                for key in i * config.stride..i * config.stride + config.compress_block {
                    importance[key / config.select_block] += p / config.stride as f64;
                }
            }
        }
        importance
    }

    /// The softmax over the eligible compressed blocks, by brute force from the keys.
    fn brute_force_p_cmp(
        query: &[f64],
        k: &[f64],
        config: &NsaConfig,
        position: usize,
    ) -> Vec<f64> {
        let d = query.len();
        let mut scores = Vec::new();
        let mut start = 0;
        while start + config.compress_block <= position + 1 {
            let mut mean = vec![0.0; d];
            for key in start..start + config.compress_block {
                add_into(&mut mean, &k[key * d..][..d]);
            }
            let score: f64 = dot64(query, &mean) / config.compress_block as f64;
            scores.push(score * config.scale_for(d) as f64);
            start += config.stride;
        }
        let total: f64 = scores.iter().map(|s| s.exp()).sum();
        scores.iter().map(|s| s.exp() / total).collect()
    }

    #[test]
    fn heads_of_a_group_share_one_selection_by_summed_importance() {
        let shape = shape([1, 4, 1, 32, 32, 4]);
        let config = NsaConfig::new(4, 2, 4, 4, 3);
        let [q, k, v, g] = random::nsa_inputs(&shape, 15);
        let forward = nsa_forward(&q, &k, &v, &g, &shape, &config).unwrap();
        let inputs = random_inputs(&shape, 15);
        let blocks = config.selection_blocks(32);
        let mut heads_disagree = 0;
        for t in 0..32 {
            let p_cmp: Vec<Vec<f64>> = (0..4)
                .map(|head| {
                    let query = query_of(&inputs.q, head * 32 + t, 4);
                    brute_force_p_cmp(query, &inputs.k, &config, t)
                })
                .collect();
            let importance = brute_force_importance(&p_cmp, &config, blocks);
            let group_choice = &forward.selection[t * 4..][..4];
            assert_eq!(
                group_choice,
                &padded(&select_blocks(&importance, t, &config), 4)[..]
            );
            for head in 0..4 {
                let alone = brute_force_importance(&p_cmp[head..head + 1], &config, blocks);
                let own_choice = select_blocks(&alone, t, &config);
                if padded(&own_choice, 4) == group_choice {
                    continue;
                }
                heads_disagree += 1;
                // The head attends the group's blocks, not its own choice.
                let row = head * 32 + t;
                let query = query_of(&inputs.q, row, 4);
                let attend_blocks = |chosen: &[usize]| {
                    let keys = selected_keys(chosen, t, &shape, &config);
                    let k = kv_rows(&inputs.k, &shape, 0, &keys);
                    let v = kv_rows(&inputs.v, &shape, 0, &keys);
                    attend(query, &k, &v, 0.5).o
                };
                let group_blocks: Vec<usize> = group_choice
                    .iter()
                    .filter(|&&j| j >= 0)
                    .map(|&j| j as usize)
                    .collect();
                let got = &forward.o_slc[row * 4..][..4];
                assert!(max_abs_diff(got, &attend_blocks(&group_blocks)) < 1e-14);
                assert!(max_abs_diff(got, &attend_blocks(&own_choice)) > 1e-6);
            }
        }
        assert!(
            heads_disagree >= 3,
            "only {heads_disagree} rows test the sharing"
        );
    }

    #[test]
    fn importance_counts_overlaps_in_strides_and_is_p_cmp_when_blocks_coincide() {
        let p_cmp = [0.5, 0.3, 0.2];
        // l = l' = d = 4: compressed block i is selection block i.
        let same = NsaConfig::new(4, 4, 4, 3, 1);
        assert_eq!(head_importance(&p_cmp, &same, 5), [0.5, 0.3, 0.2, 0.0, 0.0]);
        // l = 4, d = 2, l' = 4: blocks [0,4) [2,6) [4,8) against [0,4) [4,8).
        let overlapping = NsaConfig::new(4, 2, 4, 3, 1);
        let importance = head_importance(&p_cmp, &overlapping, 3);
        assert!(
            max_abs_diff(&importance, &[1.3, 0.7, 0.0]) < 1e-15,
            "{importance:?}"
        );
        let brute = brute_force_importance(&[p_cmp.to_vec()], &overlapping, 3);
        assert!(max_abs_diff(&importance, &brute) < 1e-15);
        // l = 8, d = 2, l' = 2: each compressed block spreads over four selection blocks.
        let wide = NsaConfig::new(8, 2, 2, 3, 1);
        let got = head_importance(&p_cmp, &wide, 8);
        let want = brute_force_importance(&[p_cmp.to_vec()], &wide, 8);
        assert!(max_abs_diff(&got, &want) < 1e-15, "{got:?} vs {want:?}");
        // Summed over two heads.
        let two = [p_cmp.to_vec(), vec![0.1, 0.9]];
        let summed = group_importance(&two, &overlapping, 3);
        assert!(
            max_abs_diff(&summed, &[2.4, 1.6, 0.0]) < 1e-15,
            "{summed:?}"
        );
    }

    #[test]
    fn importance_of_a_real_row_is_p_cmp_when_blocks_coincide() {
        let shape = shape([1, 1, 1, 24, 24, 4]);
        let config = NsaConfig::new(4, 4, 4, 3, 1);
        let inputs = random_inputs(&shape, 16);
        let compressed = compressed_means(&inputs.k, &inputs.v, &shape, &config);
        let position = 23;
        let p_cmp = compressed_branch(
            query_of(&inputs.q, 23, 4),
            &compressed,
            0,
            position,
            &config,
            0.5,
        )
        .probs;
        assert_eq!(p_cmp.len(), 6);
        assert!(
            max_abs_diff(
                &p_cmp,
                &brute_force_p_cmp(query_of(&inputs.q, 23, 4), &inputs.k, &config, position)
            ) < 1e-15
        );
        assert_eq!(head_importance(&p_cmp, &config, 6), p_cmp);
    }

    #[test]
    fn ties_go_to_the_larger_block() {
        // Zero keys: p_cmp is uniform over the 7 eligible compressed blocks of position 15
        // (l = 4, d = 2), so selection blocks 1..=5 (l' = 2) tie at 2/7 each.
        let shape = shape([1, 2, 1, 16, 16, 4]);
        let config = NsaConfig::new(4, 2, 2, 5, 1);
        let [q, _, v, g] = random::nsa_inputs(&shape, 17);
        let k = vec![0.0; shape.kv_elems()];
        let forward = nsa_forward(&q, &k, &v, &g, &shape, &config).unwrap();
        // Forced 0, 6 and 7, then two of the tied 1..=5: the larger ones.
        assert_eq!(forward.selection[15 * 5..][..5], [0, 4, 5, 6, 7]);

        // No compressed block yet (Sk < l): every importance is 0, all tie.
        let shape = Shape {
            q_heads: 1,
            q_len: 12,
            kv_len: 12,
            ..shape
        };
        let config = NsaConfig::new(16, 2, 2, 4, 1);
        let [q, k, v, g] = random::nsa_inputs(&shape, 18);
        let forward = nsa_forward(&q, &k, &v, &g, &shape, &config).unwrap();
        // Position 11: current block 5, forced 0, 4, 5, then the larger of 1..=3.
        assert_eq!(forward.selection[11 * 4..][..4], [0, 3, 4, 5]);
        assert!(forward.o_cmp.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn bad_inputs_and_configs_are_errors() {
        let (shape, config) = (shape([1, 2, 1, 4, 8, 4]), NsaConfig::new(4, 2, 4, 3, 2));
        let [q, k, v, g] = random::nsa_inputs(&shape, 19);
        let dout = random::normal(shape.q_elems(), 20);
        assert!(nsa_forward(&q, &k, &v, &g, &shape, &config).is_ok());

        let error = nsa_forward(&q, &k, &v, &g[1..], &shape, &config).unwrap_err();
        assert!(
            matches!(
                &error,
                MobaError::ShapeMismatch {
                    expected: 24,
                    actual: 23,
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("gates"), "{error}");

        let mut nan = g.clone();
        nan[5] = f32::NAN;
        let error = nsa_forward(&q, &k, &v, &nan, &shape, &config).unwrap_err();
        assert!(matches!(
            error,
            MobaError::NonFinite {
                tensor: "gates",
                index: 5,
                ..
            }
        ));

        let mut inf = k.clone();
        inf[3] = f32::INFINITY;
        let error = nsa_backward(&q, &inf, &v, &g, &dout, &shape, &config).unwrap_err();
        assert!(matches!(
            error,
            MobaError::NonFinite {
                tensor: "k",
                index: 3,
                ..
            }
        ));

        let error = nsa_backward(&q, &k, &v, &g, &dout[1..], &shape, &config).unwrap_err();
        assert!(error.to_string().contains("dout"), "{error}");

        let decode_too_long = Shape { q_len: 9, ..shape };
        assert!(matches!(
            nsa_forward(&q, &k, &v, &g, &decode_too_long, &config),
            Err(MobaError::QueryLongerThanKeys { .. })
        ));

        for (bad, needle) in [
            (
                NsaConfig::new(4, 3, 6, 3, 2),
                "stride (3) must divide compress_block",
            ),
            (
                NsaConfig::new(4, 2, 5, 3, 2),
                "stride (2) must divide select_block",
            ),
            (NsaConfig::new(4, 2, 4, 2, 2), "top_n must be >= 3"),
            (NsaConfig::new(4, 2, 4, 3, 0), "window must be >= 1"),
            (NsaConfig::new(0, 2, 4, 3, 2), "compress_block must be >= 1"),
            (NsaConfig::new(4, 0, 4, 3, 2), "stride must be >= 1"),
            (NsaConfig::new(4, 2, 0, 3, 2), "select_block must be >= 1"),
            (config.with_scale(f32::NAN), "scale must be finite"),
            (config.with_scale(-1.0), "scale must be finite"),
        ] {
            let error = nsa_forward(&q, &k, &v, &g, &shape, &bad).unwrap_err();
            assert!(
                matches!(&error, MobaError::Config(m) if m.contains(needle)),
                "{bad:?}: {error}"
            );
            assert!(nsa_backward(&q, &k, &v, &g, &dout, &shape, &bad).is_err());
        }
    }
}
