//! The GPU's output against moba's f64 reference (computed here, in wasm): every row of a
//! small problem, an even sample of a larger one, at the tolerance `moba demo` uses
//! (`moba::reference::check_rows`).

use moba::gpu::GpuForward;
use moba::reference::{self, Precision, SampledRows};
use moba::{MobaConfig, Result, Shape};
use serde::{Deserialize, Serialize};

/// Problems of up to this many rows are checked in full; larger ones on this many rows.
const CHECK_ROWS: usize = 2048;

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
    /// What `o_error` may reach: twice a straightforward f32 implementation's error.
    pub o_bound: f64,
    /// Largest `|lse - lse_ref|` over the same rows.
    pub lse_error: f64,
    pub lse_bound: f64,
    /// Rows whose selection differs at a near tie of gate scores (left out of the errors).
    pub near_ties: usize,
    /// Near ties allowed per 100 rows.
    pub near_ties_per_100: usize,
    /// Rows whose selection differs with no near tie: a wrong gate.
    pub selection_mismatches: usize,
    /// Errors within their bounds and no wrong selection.
    pub passed: bool,
}

impl Check {
    /// Compares the GPU's `got` for inputs `q`, `k`, `v` with the reference.
    pub fn new(
        got: &GpuForward,
        inputs: (&[f32], &[f32], &[f32]),
        shape: &Shape,
        config: &MobaConfig,
    ) -> Result<Self> {
        let total = shape.q_rows();
        let count = total.min(CHECK_ROWS);
        let mut rows: Vec<usize> = (0..count).map(|i| i * total / count).collect();
        if rows.last() != Some(&(total - 1)) {
            rows.push(total - 1);
        }
        let (d, top_k) = (shape.head_dim, config.top_k);
        let pick = |data: &[f32], width: usize| -> Vec<f32> {
            rows.iter()
                .flat_map(|&row| &data[row * width..][..width])
                .copied()
                .collect()
        };
        let selection: Vec<i32> = rows
            .iter()
            .flat_map(|&row| &got.selection[row * top_k..][..top_k])
            .copied()
            .collect();
        let (o, lse) = (pick(&got.o, d), pick(&got.lse, 1));
        let sampled = SampledRows {
            o: &o,
            lse: Some(&lse),
            selection: &selection,
        };
        // The page runs the portable f32 kernel (browsers have no cooperative matrices).
        let check = reference::check_rows(inputs, shape, config, &rows, &sampled, Precision::F32)?;
        Ok(Check {
            rows: rows.len(),
            all_rows: rows.len() == total,
            o_error: check.o_error,
            o_bound: check.o_bound,
            lse_error: check.lse_error.unwrap_or(0.0),
            lse_bound: check.lse_bound.unwrap_or(0.0),
            near_ties: check.near_ties,
            near_ties_per_100: check.near_ties_per_100,
            selection_mismatches: check.wrong_selections,
            passed: check.passed(),
        })
    }

    /// The same findings as the native harness keeps them.
    pub fn reference_check(&self) -> reference::Check {
        reference::Check {
            rows: self.rows,
            near_ties: self.near_ties,
            near_ties_per_100: self.near_ties_per_100,
            wrong_selections: self.selection_mismatches,
            o_error: self.o_error,
            o_bound: self.o_bound,
            lse_error: Some(self.lse_error),
            lse_bound: Some(self.lse_bound),
        }
    }
}
