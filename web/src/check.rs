//! The GPU's output against moba's f64 reference (computed here, in wasm): every row of a
//! small problem, an even sample of a larger one.

use moba::gpu::GpuForward;
use moba::{MobaConfig, Result, Shape, reference};
use serde::{Deserialize, Serialize};

/// Problems of up to this many rows are checked in full; larger ones on this many rows.
const CHECK_ROWS: usize = 2048;
/// Gate-score gap under which two blocks count as tied: f32 scores may order them either
/// way, so such a row rightly attends other keys than the reference (as in the native tests).
const NEAR_TIE: f64 = 1e-4;

/// What the comparison found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    /// Rows compared.
    pub rows: usize,
    /// Whether `rows` is every row of the problem.
    pub all_rows: bool,
    /// Largest `|o - o_ref|` over the rows whose selection agrees (NaN counts as infinite).
    pub o_error: f64,
    /// Largest `|lse - lse_ref|` over the same rows.
    pub lse_error: f64,
    /// Rows whose selection differs at a near tie of gate scores (left out of the errors).
    pub near_ties: usize,
    /// Rows whose selection differs with no near tie: a wrong gate.
    pub selection_mismatches: usize,
}

impl Check {
    /// Compares the GPU's `got` for inputs `q`, `k`, `v` with the reference.
    pub fn new(
        got: &GpuForward,
        (q, k, v): (&[f32], &[f32], &[f32]),
        shape: &Shape,
        config: &MobaConfig,
    ) -> Result<Self> {
        let total = shape.q_rows();
        let count = total.min(CHECK_ROWS);
        let mut rows: Vec<usize> = (0..count).map(|i| i * total / count).collect();
        if rows.last() != Some(&(total - 1)) {
            rows.push(total - 1);
        }
        let want = reference::forward_rows(q, k, v, shape, config, &rows)?;
        let means = reference::block_means(k, shape, config.block_size);
        let (d, top_k) = (shape.head_dim, config.top_k);
        let mut found = Check {
            rows: rows.len(),
            all_rows: rows.len() == total,
            o_error: 0.0,
            lse_error: 0.0,
            near_ties: 0,
            selection_mismatches: 0,
        };
        for (i, &row) in rows.iter().enumerate() {
            if got.selection[row * top_k..][..top_k] != want.selection[i * top_k..][..top_k] {
                let gate = reference::gate_row(q, &means, shape, config, row);
                if gate.margin.is_some_and(|margin| margin < NEAR_TIE) {
                    found.near_ties += 1;
                    continue;
                }
                found.selection_mismatches += 1;
            }
            let o = reference::max_abs_error(&got.o[row * d..][..d], &want.o[i * d..][..d]);
            let lse = reference::max_abs_error(&got.lse[row..][..1], &want.lse[i..][..1]);
            found.o_error = found.o_error.max(o);
            found.lse_error = found.lse_error.max(lse);
        }
        Ok(found)
    }
}
