//! Gate: block means, scores, and the top-k selection with its tie rule.

use super::{Row, key_offset};
use crate::config::{MobaConfig, Shape};

/// Mean key of every block, `[B * Hkv, num_blocks, D]` in f64. The last block may be
/// partial and averages only the keys it has.
pub fn block_means(k: &[f32], shape: &Shape, block_size: usize) -> Vec<f64> {
    let (d, nb) = (shape.head_dim, shape.num_blocks(block_size));
    let groups = shape.batch * shape.kv_heads;
    let mut means = vec![0.0f64; groups * nb * d];
    for g in 0..groups {
        for j in 0..nb {
            let keys = j * block_size..((j + 1) * block_size).min(shape.kv_len);
            let count = keys.len() as f64;
            let mean = &mut means[(g * nb + j) * d..(g * nb + j + 1) * d];
            for i in keys {
                let key = &k[key_offset(shape, g, i)..][..d];
                for (m, &x) in mean.iter_mut().zip(key) {
                    *m += x as f64;
                }
            }
            mean.iter_mut().for_each(|m| *m /= count);
        }
    }
    means
}

/// What the gate decided for one query row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowGate {
    /// Selected block ids, ascending.
    pub selected: Vec<usize>,
    /// Score gap between the weakest block chosen by score and the strongest eligible block
    /// left out; `None` when no eligible block was left out. A small margin is a near tie:
    /// a backend computing scores in lower precision may rightly choose differently.
    pub margin: Option<f64>,
}

/// Gate of one query row: scores `q . kbar_j`, then block `c` (causal) plus the best
/// remaining blocks, ties to the larger block id.
pub fn gate_row(
    q: &[f32],
    means: &[f64],
    shape: &Shape,
    config: &MobaConfig,
    row: usize,
) -> RowGate {
    let (d, bs) = (shape.head_dim, config.block_size);
    let nb = shape.num_blocks(bs);
    let row = Row::new(shape, row);
    let query = row.query(q, d);
    let group_means = &means[row.group * nb * d..(row.group + 1) * nb * d];
    let score = |j: usize| -> f64 {
        config.gate.static_score(j, nb).unwrap_or_else(|| {
            let mean = &group_means[j * d..(j + 1) * d];
            query.iter().zip(mean).map(|(&x, &m)| x as f64 * m).sum()
        })
    };

    let current = row.position / bs;
    let (forced, eligible, slots) = if config.causal {
        (Some(current), 0..current, config.top_k - 1)
    } else {
        (None, 0..nb, config.top_k)
    };
    // Ranked best first: higher score, then larger block id.
    let mut ranked: Vec<(f64, usize)> = eligible.map(|j| (score(j), j)).collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));

    let chosen = slots.min(ranked.len());
    let margin =
        (chosen > 0 && chosen < ranked.len()).then(|| ranked[chosen - 1].0 - ranked[chosen].0);
    let mut selected: Vec<usize> = ranked[..chosen]
        .iter()
        .map(|&(_, j)| j)
        .chain(forced)
        .collect();
    selected.sort_unstable();
    RowGate { selected, margin }
}

/// Selected blocks of every row, `[B, Hq, S, top_k]` ascending, padded with -1.
pub fn selection(q: &[f32], k: &[f32], shape: &Shape, config: &MobaConfig) -> Vec<i32> {
    let means = block_means(k, shape, config.block_size);
    (0..shape.q_rows())
        .flat_map(|row| {
            padded(
                &gate_row(q, &means, shape, config, row).selected,
                config.top_k,
            )
        })
        .collect()
}

/// Block ids padded with -1 to `top_k` entries.
pub(crate) fn padded(selected: &[usize], top_k: usize) -> Vec<i32> {
    let mut out: Vec<i32> = selected.iter().map(|&j| j as i32).collect();
    out.resize(top_k, -1);
    out
}
