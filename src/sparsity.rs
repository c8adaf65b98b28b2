//! Counting attended (query, key) pairs: density, and the FLOPs that speed is measured on.

use crate::config::{MobaConfig, Shape};

/// Keys a row at `position` attends in the selected `blocks` (-1 entries ignored): those
/// it sees ([`MobaConfig::visible_keys`]).
pub fn row_pairs(blocks: &[i32], position: usize, shape: &Shape, config: &MobaConfig) -> u64 {
    let bs = config.block_size;
    let visible = config.visible_keys(position);
    blocks
        .iter()
        .filter(|&&j| j >= 0)
        .map(|&j| {
            let first = j as usize * bs;
            let end = (first + bs).min(shape.kv_len).min(visible.end);
            end.saturating_sub(first.max(visible.start)) as u64
        })
        .sum()
}

/// Attended pairs of a whole selection `[B, Hq, S, top_k]`.
pub fn attended_pairs(selection: &[i32], shape: &Shape, config: &MobaConfig) -> u64 {
    selection
        .chunks(config.top_k)
        .enumerate()
        .map(|(row, blocks)| {
            row_pairs(
                blocks,
                shape.query_position(row % shape.q_len),
                shape,
                config,
            )
        })
        .sum()
}

/// Pairs of dense attention: every key up to the query when causal, else every key.
pub fn dense_pairs(shape: &Shape, causal: bool) -> u64 {
    let per_head: u64 = (0..shape.q_len)
        .map(|t| {
            if causal {
                shape.query_position(t) as u64 + 1
            } else {
                shape.kv_len as u64
            }
        })
        .sum();
    per_head * (shape.batch * shape.q_heads) as u64
}

/// Forward FLOPs on `pairs` attended pairs: `q.k` and `p.v`, 2 FLOPs per multiply-add.
pub fn forward_flops(pairs: u64, head_dim: usize) -> f64 {
    4.0 * head_dim as f64 * pairs as f64
}

/// Forward + backward FLOPs on `pairs` attended pairs: the forward's two products, and the
/// backward's four (`q.k` again for p, `dout.v`, `ds.k`, `ds.q`, plus `p.dout`: 5 in all,
/// counted as FlashAttention does, 2.5x the forward).
pub fn training_flops(pairs: u64, head_dim: usize) -> f64 {
    3.5 * forward_flops(pairs, head_dim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_selection_counts_the_dense_causal_pairs() {
        let shape = Shape::prefill(1, 1, 10, 4);
        let config = MobaConfig::new(4, 3);
        // Blocks 0..=2 for every row: all keys up to the row.
        let selection: Vec<i32> = (0..10)
            .flat_map(|t| [0, 1, 2].map(|j| if j <= t / 4 { j } else { -1 }))
            .collect();
        assert_eq!(
            attended_pairs(&selection, &shape, &config),
            dense_pairs(&shape, true)
        );
        assert_eq!(dense_pairs(&shape, true), 55);
        assert_eq!(dense_pairs(&shape, false), 100);
    }

    #[test]
    fn a_key_window_counts_the_keys_each_row_sees() {
        let shape = Shape::prefill(1, 1, 10, 4);
        let config = MobaConfig::key_window(4);
        // The key-window gate's selection: the row's block and the one before.
        let selection: Vec<i32> = (0..10).flat_map(|t: i32| [t / 4 - 1, t / 4]).collect();
        // Rows 0..=3 see 1..=4 keys, every later row 4.
        assert_eq!(attended_pairs(&selection, &shape, &config), 10 + 6 * 4);
        let seen = |t: usize| (0..10).filter(|&i| config.sees(i, t)).count() as u64;
        assert_eq!((0..10).map(seen).sum::<u64>(), 34);
    }
}
