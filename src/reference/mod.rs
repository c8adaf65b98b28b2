//! The CPU reference: MoBA exactly as DESIGN §1 states it, and NSA as `../shared/NSA.md`
//! states it (`nsa`), accumulated in f64.
//!
//! It is the oracle of every test and backend, so it is written for reading, not speed:
//! one function per step (block means, gate, selection, attention, backward), each
//! working on one query row at a time.

mod attention;
mod backward;
mod check;
mod gate;
mod nsa;
mod nsa_check;
mod varlen;

pub use attention::{Forward, dense_forward, forward, forward_rows, forward_with_selection};
pub use backward::{Gradients, backward, backward_with_selection};
pub use check::{Check, GATE_NEAR_TIE, Precision, SampledRows, check_rows, tolerance};
pub use gate::{RowGate, block_means, gate_row, selection};
pub(crate) use nsa::selection_from_importance;
pub use nsa::{
    NsaForward, NsaGradients, nsa_backward, nsa_forward, nsa_forward_given, nsa_importance,
};
pub use nsa_check::{NSA_NEAR_TIE, NSA_NEAR_TIES_PER_100, NsaInputs, check_nsa_rows};
pub use varlen::{cut_rows, varlen_backward, varlen_forward};

use crate::config::Shape;

/// Where one output row (batch `b`, query head `h`, query `t`) reads its inputs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row {
    /// Flat row index in `[B, Hq, S]`.
    pub index: usize,
    /// Index of the (batch, kv head) group whose keys this row reads.
    pub group: usize,
    /// Absolute position of the query.
    pub position: usize,
}

impl Row {
    pub fn new(shape: &Shape, index: usize) -> Self {
        let t = index % shape.q_len;
        let head = (index / shape.q_len) % shape.q_heads;
        let b = index / (shape.q_len * shape.q_heads);
        Row {
            index,
            group: b * shape.kv_heads + head / shape.group_size(),
            position: shape.query_position(t),
        }
    }

    /// The query vector of this row.
    pub fn query<'a>(&self, q: &'a [f32], d: usize) -> &'a [f32] {
        &q[self.index * d..(self.index + 1) * d]
    }
}

/// Offset of key `i` of group `g` in a `[B, Hkv, Sk, D]` tensor.
pub(crate) fn key_offset(shape: &Shape, group: usize, i: usize) -> usize {
    (group * shape.kv_len + i) * shape.head_dim
}

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// Largest `|got - want|`; a NaN anywhere in `got` counts as an infinite error, so an
/// unwritten (poisoned) output can never pass a tolerance.
pub fn max_abs_error(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "compared slices differ in length");
    got.iter()
        .zip(want)
        .map(|(&g, &w)| {
            let error = (g as f64 - w).abs();
            if error.is_nan() { f64::INFINITY } else { error }
        })
        .fold(0.0, f64::max)
}
