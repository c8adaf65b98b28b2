//! The selection as a picture: for every head, how often each query block chose each key
//! block.

use moba::{MobaConfig, Shape};
use serde::{Deserialize, Serialize};

/// Per head, a `rows x cols` map (query block down, key block across) of the fraction of
/// (query, key block) pairs in each cell that the gate selected. With one block per cell,
/// cell `(i, j)` is the share of the queries of block `i` that chose block `j`; long
/// sequences merge `blocks_per_cell` blocks each way so the map stays small.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heatmap {
    pub heads: usize,
    /// Query-block cells.
    pub rows: usize,
    /// Key-block cells.
    pub cols: usize,
    /// Blocks merged into a cell, each way.
    pub blocks_per_cell: usize,
    /// `[heads, rows, cols]`, row-major, each in `[0, 1]`.
    pub values: Vec<f32>,
}

impl Heatmap {
    /// The map of the first batch entry of `selection: [B, Hq, S, top_k]`, with at most
    /// `max_cells` cells each way.
    pub fn new(selection: &[i32], shape: &Shape, config: &MobaConfig, max_cells: usize) -> Self {
        let blocks = shape.num_blocks(config.block_size);
        let per_cell = blocks.div_ceil(max_cells.max(1));
        let cells = blocks.div_ceil(per_cell);
        let heads = shape.q_heads;
        let mut chosen = vec![0u32; heads * cells * cells];
        let mut queries = vec![0u32; heads * cells];
        let rows = selection.chunks(config.top_k).take(heads * shape.q_len);
        for (row, picks) in rows.enumerate() {
            let (head, t) = (row / shape.q_len, row % shape.q_len);
            let cell = shape.query_position(t) / config.block_size / per_cell;
            queries[head * cells + cell] += 1;
            for &block in picks.iter().filter(|&&j| j >= 0) {
                chosen[(head * cells + cell) * cells + block as usize / per_cell] += 1;
            }
        }
        // Key blocks in column cell `c` (the last cell may hold fewer).
        let blocks_in = |c: usize| (blocks - c * per_cell).min(per_cell) as f32;
        let values = chosen
            .iter()
            .enumerate()
            .map(|(at, &count)| {
                let (row_cell, col) = (at / cells, at % cells);
                let pairs = queries[row_cell] as f32 * blocks_in(col);
                if pairs > 0.0 {
                    count as f32 / pairs
                } else {
                    0.0
                }
            })
            .collect();
        Self {
            heads,
            rows: cells,
            cols: cells,
            blocks_per_cell: per_cell,
            values,
        }
    }
}
