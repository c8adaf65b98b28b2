//! Forward attention over the selected blocks, and dense attention (the baseline).

use super::gate::{block_means, gate_row, padded};
use super::{Row, dot, key_offset};
use crate::config::{MobaConfig, Shape};
use crate::error::Result;
use crate::memory::{bytes_of, check_host};

/// Forward results in f64: `o: [rows, D]`, `lse: [rows]` (natural log of the scaled
/// softmax normaliser), `selection: [rows, top_k]` (-1 padded; empty for dense).
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    pub o: Vec<f64>,
    pub lse: Vec<f64>,
    pub selection: Vec<i32>,
}

/// Keys that one row attends: the selected blocks' keys that the query sees
/// ([`MobaConfig::sees`]: none after it when causal, none before a key window).
pub(crate) fn attended_keys(
    blocks: &[usize],
    shape: &Shape,
    config: &MobaConfig,
    position: usize,
) -> Vec<usize> {
    let bs = config.block_size;
    blocks
        .iter()
        .flat_map(|&j| j * bs..((j + 1) * bs).min(shape.kv_len))
        .filter(|&i| config.sees(i, position))
        .collect()
}

/// Softmax attention of one row over a key set: returns `(o, lse)`.
pub(crate) fn attend_row(
    query: &[f32],
    keys: &[usize],
    k: &[f32],
    v: &[f32],
    shape: &Shape,
    group: usize,
    scale: f64,
) -> (Vec<f64>, f64) {
    let d = shape.head_dim;
    let scores: Vec<f64> = keys
        .iter()
        .map(|&i| scale * dot(query, &k[key_offset(shape, group, i)..][..d]))
        .collect();
    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut o = vec![0.0f64; d];
    for (&i, w) in keys.iter().zip(&weights) {
        let value = &v[key_offset(shape, group, i)..][..d];
        for (acc, &x) in o.iter_mut().zip(value) {
            *acc += w / total * x as f64;
        }
    }
    (o, max + total.ln())
}

/// MoBA forward of the listed rows only (flat indices into `[B, Hq, S]`); outputs follow
/// the order of `rows`. Used to check large problems on a sample.
pub fn forward_rows(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: &Shape,
    config: &MobaConfig,
    rows: &[usize],
) -> Result<Forward> {
    config.validate()?;
    shape.check_inputs(q, k, v)?;
    let means = block_means(k, shape, config.block_size);
    forward_selected([q, k, v], shape, config, rows, |index| {
        gate_row(q, &means, shape, config, index).selected
    })
}

/// MoBA's attention of every row over the blocks `selection` lists (`[rows, top_k]`, -1
/// padded; as [`crate::backend::moba_attention_with_selection`] takes it): no gate.
pub fn forward_with_selection(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: &Shape,
    config: &MobaConfig,
    selection: &[i32],
) -> Result<Forward> {
    config.validate()?;
    shape.check_inputs(q, k, v)?;
    let rows: Vec<usize> = (0..shape.q_rows()).collect();
    forward_selected([q, k, v], shape, config, &rows, |index| {
        listed_blocks(selection, config.top_k, index)
    })
}

/// The blocks row `index` of a `[rows, top_k]` selection lists.
pub(crate) fn listed_blocks(selection: &[i32], top_k: usize, index: usize) -> Vec<usize> {
    let row = &selection[index * top_k..(index + 1) * top_k];
    row.iter()
        .filter(|&&j| j >= 0)
        .map(|&j| j as usize)
        .collect()
}

/// The forward of `rows` over the blocks `selected` gives each.
fn forward_selected(
    [q, k, v]: [&[f32]; 3],
    shape: &Shape,
    config: &MobaConfig,
    rows: &[usize],
    selected: impl Fn(usize) -> Vec<usize>,
) -> Result<Forward> {
    let d = shape.head_dim;
    check_host(
        "the reference's outputs (o, lse and the selection of every row)",
        bytes_of(&[rows.len(), d + 1 + config.top_k], 8),
    )?;
    let scale = config.scale_for(d) as f64;
    let mut out = Forward {
        o: Vec::with_capacity(rows.len() * d),
        lse: Vec::with_capacity(rows.len()),
        selection: Vec::with_capacity(rows.len() * config.top_k),
    };
    for &index in rows {
        let row = Row::new(shape, index);
        let blocks = selected(index);
        let keys = attended_keys(&blocks, shape, config, row.position);
        let (o, lse) = attend_row(row.query(q, d), &keys, k, v, shape, row.group, scale);
        out.o.extend(o);
        out.lse.push(lse);
        out.selection.extend(padded(&blocks, config.top_k));
    }
    Ok(out)
}

/// MoBA forward of every row.
pub fn forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: &Shape,
    config: &MobaConfig,
) -> Result<Forward> {
    let rows: Vec<usize> = (0..shape.q_rows()).collect();
    forward_rows(q, k, v, shape, config, &rows)
}

/// Dense softmax attention (causal or not), the baseline MoBA degenerates to when every
/// block is selected. Written without blocks so that it can check that claim.
pub fn dense_forward(
    [q, k, v]: [&[f32]; 3],
    shape: &Shape,
    scale: f32,
    causal: bool,
) -> Result<Forward> {
    shape.check_inputs(q, k, v)?;
    let d = shape.head_dim;
    let mut out = Forward {
        o: Vec::with_capacity(shape.q_rows() * d),
        lse: Vec::with_capacity(shape.q_rows()),
        selection: Vec::new(),
    };
    for index in 0..shape.q_rows() {
        let row = Row::new(shape, index);
        let visible = if causal {
            row.position + 1
        } else {
            shape.kv_len
        };
        let keys: Vec<usize> = (0..visible).collect();
        let (o, lse) = attend_row(row.query(q, d), &keys, k, v, shape, row.group, scale as f64);
        out.o.extend(o);
        out.lse.push(lse);
    }
    Ok(out)
}
