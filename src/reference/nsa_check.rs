//! NSA's output checked against the reference on sampled rows (what `moba bench --attention
//! nsa` does on problems too long for the whole reference). A causal row depends on nothing
//! after its position, so each sampled row is checked as the NSA problem of its own: its
//! group's query heads at its query, the keys up to it.
//!
//! The output is checked over the blocks the backend selected (its branches apart from its
//! ranking), at twice the error that rounding the inputs to the backend's precision makes
//! in the f64 reference, plus a floor for f32 arithmetic over the three branches. The
//! selection is checked against the reference's own: a row whose blocks differ counts as a
//! near tie where the importances of the blocks swapped are within [`NSA_NEAR_TIE`] of each
//! other (relative to the row's largest), else as a wrong selection.

use super::check::{Check, Precision};
use super::nsa::{nsa_forward, nsa_forward_given, nsa_importance};
use crate::config::{NsaConfig, Shape, check_len};
use crate::error::{MobaError, Result};

/// Relative importance gap under which two selection blocks count as tied: the backends
/// rank importances summed in their own float type (bf16 on CUDA keeps 8 bits).
pub const NSA_NEAR_TIE: f64 = 1e-2;

/// Error floor on top of the rounding bound: f32 sums over the keys of three branches.
const F32_FLOOR: f64 = 1e-5;

/// The inputs of NSA, `q: [B, Hq, S, D]`, `k, v: [B, Hkv, Sk, D]`, `gates: [B, Hq, S, 3]`.
#[derive(Debug, Clone, Copy)]
pub struct NsaInputs<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub gates: &'a [f32],
}

/// Checks what a backend returned for `rows` (flat indices into `[B, Hq, S]`): `o: [rows,
/// D]` and the selection of each row's group at its query, `[rows, top_n]`.
///
/// ```
/// use moba::{NsaConfig, Shape, random, reference};
/// use moba::reference::{NsaInputs, Precision};
/// let shape = Shape { batch: 1, q_heads: 2, kv_heads: 1, q_len: 40, kv_len: 40, head_dim: 8 };
/// let config = NsaConfig::new(8, 4, 8, 3, 6);
/// let [q, k, v, gates] = random::nsa_inputs(&shape, 1);
/// let exact = reference::nsa_forward(&q, &k, &v, &gates, &shape, &config)?;
/// let rows = [5, 39, 60];
/// let o: Vec<f32> = rows.iter().flat_map(|&r| &exact.o[r * 8..r * 8 + 8]).map(|&x| x as f32).collect();
/// let selection: Vec<i32> = rows.iter().flat_map(|&r| &exact.selection[(r % 40) * 3..][..3]).copied().collect();
/// let inputs = NsaInputs { q: &q, k: &k, v: &v, gates: &gates };
/// let check = reference::check_nsa_rows(inputs, &shape, &config, &rows, &o, &selection, Precision::F32)?;
/// assert!(check.passed(), "{}", check.summary());
/// # Ok::<(), moba::MobaError>(())
/// ```
pub fn check_nsa_rows(
    inputs: NsaInputs,
    shape: &Shape,
    config: &NsaConfig,
    rows: &[usize],
    o: &[f32],
    selection: &[i32],
    precision: Precision,
) -> Result<Check> {
    let (d, top_n) = (shape.head_dim, config.top_n);
    check_len("sampled o [rows, D]", o.len(), rows.len() * d)?;
    check_len(
        "sampled selection [rows, top_n]",
        selection.len(),
        rows.len() * top_n,
    )?;
    shape.check_inputs(inputs.q, inputs.k, inputs.v)?;
    check_len(
        "gates [B, Hq, S, 3]",
        inputs.gates.len(),
        shape.q_rows() * 3,
    )?;
    if let Some(&row) = rows.iter().find(|&&row| row >= shape.q_rows()) {
        return Err(MobaError::Config(format!(
            "sampled row {row} of {} rows",
            shape.q_rows()
        )));
    }
    let mut check = Check {
        rows: rows.len(),
        ..Check::default()
    };
    let mut rounding_error = 0.0f64;
    for (i, &row) in rows.iter().enumerate() {
        let own = RowProblem::of(inputs, shape, row);
        let parts = own.inputs();
        let got_blocks = &selection[i * top_n..(i + 1) * top_n];
        let exact = nsa_forward(parts.q, parts.k, parts.v, parts.gates, &own.shape, config)?;
        if exact.selection != got_blocks {
            let importance =
                nsa_importance(parts.q, parts.k, parts.v, parts.gates, &own.shape, config)?;
            match near_tie(&importance, &exact.selection, got_blocks) {
                true => check.near_ties += 1,
                false => check.wrong_selections += 1,
            }
        }
        let given = |x: &RowProblem| {
            let p = x.inputs();
            nsa_forward_given(p.q, p.k, p.v, p.gates, &x.shape, config, got_blocks)
        };
        let want = given(&own)?;
        let rounded = given(&own.rounded(precision))?;
        let head = own.head * d..(own.head + 1) * d;
        check.o_error = check.o_error.max(super::max_abs_error(
            &o[i * d..(i + 1) * d],
            &want.o[head.clone()],
        ));
        for (a, b) in rounded.o[head.clone()].iter().zip(&want.o[head]) {
            rounding_error = rounding_error.max((a - b).abs());
        }
    }
    check.o_bound = 2.0 * rounding_error + F32_FLOOR;
    Ok(check)
}

/// Whether the blocks in which two selections differ have importances within
/// [`NSA_NEAR_TIE`] of each other, relative to the largest importance of the row (a block
/// the row may not select is never a tie).
fn near_tie(importance: &[f64], want: &[i32], got: &[i32]) -> bool {
    if got
        .iter()
        .any(|&j| j >= 0 && j as usize >= importance.len())
    {
        return false;
    }
    let only = |a: &[i32], b: &[i32]| -> Vec<f64> {
        a.iter()
            .filter(|&&j| j >= 0 && !b.contains(&j))
            .map(|&j| importance[j as usize])
            .collect()
    };
    let (missed, extra) = (only(want, got), only(got, want));
    let largest = importance.iter().copied().fold(0.0, f64::max);
    let best_missed = missed.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let worst_extra = extra.iter().copied().fold(f64::INFINITY, f64::min);
    missed.len() == extra.len() && best_missed - worst_extra <= NSA_NEAR_TIE * largest
}

/// The NSA problem of one row: its group's query heads at its query (`q_len` 1), the keys
/// and values up to its position.
struct RowProblem {
    shape: Shape,
    /// The row's head within its group.
    head: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    gates: Vec<f32>,
}

impl RowProblem {
    fn of(inputs: NsaInputs, shape: &Shape, row: usize) -> Self {
        let (d, group_size) = (shape.head_dim, shape.group_size());
        let t = row % shape.q_len;
        let q_head = row / shape.q_len;
        let group = q_head / group_size;
        let keys = shape.query_position(t) + 1;
        let heads = group * group_size..(group + 1) * group_size;
        let of_heads = |x: &[f32], width: usize| -> Vec<f32> {
            heads
                .clone()
                .flat_map(|h| x[(h * shape.q_len + t) * width..][..width].iter().copied())
                .collect()
        };
        let of_keys = |x: &[f32]| x[group * shape.kv_len * d..][..keys * d].to_vec();
        RowProblem {
            shape: Shape {
                batch: 1,
                q_heads: group_size,
                kv_heads: 1,
                q_len: 1,
                kv_len: keys,
                head_dim: d,
            },
            head: q_head % group_size,
            q: of_heads(inputs.q, d),
            k: of_keys(inputs.k),
            v: of_keys(inputs.v),
            gates: of_heads(inputs.gates, 3),
        }
    }

    fn inputs(&self) -> NsaInputs<'_> {
        NsaInputs {
            q: &self.q,
            k: &self.k,
            v: &self.v,
            gates: &self.gates,
        }
    }

    /// The same problem with its inputs rounded to `precision`.
    fn rounded(&self, precision: Precision) -> Self {
        let round = |x: &[f32]| x.iter().map(|&x| precision.round(x)).collect();
        RowProblem {
            shape: self.shape,
            head: self.head,
            q: round(&self.q),
            k: round(&self.k),
            v: round(&self.v),
            gates: round(&self.gates),
        }
    }
}
