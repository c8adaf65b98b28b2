//! A kernel's forward checked against the reference on sampled rows, at the
//! FlashAttention-style tolerance of DESIGN §4: twice the error of a straightforward
//! implementation in the kernel's own precision (every product rounded to it, sums in f32),
//! plus a floor. `moba demo`, `moba bench` and the CUDA benchmark fail on a failed check.

use super::attention::attended_keys;
use super::gate::{block_means, gate_row};
use super::{Row, forward_rows, key_offset};
use crate::config::{MobaConfig, Shape};
use crate::error::Result;

/// The arithmetic a kernel multiplies in: what its straightforward twin rounds every
/// product to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    F16,
    Bf16,
}

impl Precision {
    /// `x` rounded to this precision.
    pub fn round(self, x: f32) -> f32 {
        match self {
            Precision::F32 => x,
            Precision::F16 => half::f16::from_f32(x).to_f32(),
            Precision::Bf16 => half::bf16::from_f32(x).to_f32(),
        }
    }
}

/// Gate-score gap under which two blocks count as tied: a kernel may rank them either way,
/// and then attends other keys by design. Every gate scores in f32 whatever the attention's
/// precision (the CUDA gate's tensor-core scores keep about 21 bits of each mean key).
pub const GATE_NEAR_TIE: f64 = 1e-4;

/// What a kernel returned for the sampled rows, in the order of the rows.
#[derive(Debug, Clone, Copy)]
pub struct SampledRows<'a> {
    /// `[rows, D]`.
    pub o: &'a [f32],
    /// `[rows]`, where the kernel returns it.
    pub lse: Option<&'a [f32]>,
    /// `[rows, top_k]`.
    pub selection: &'a [i32],
}

/// What checking sampled rows found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Check {
    pub rows: usize,
    /// Rows whose blocks differ from the reference's by a near tie: left out of the errors
    /// (MoBA's gate), or checked over their own blocks (NSA).
    pub near_ties: usize,
    /// Near ties allowed per 100 rows (of at least 100): 1 where they are left out of the
    /// errors; NSA's check, which bounds every row's output over the blocks it chose, allows
    /// [`super::NSA_NEAR_TIES_PER_100`] (its ties are wider: it ranks sums over bf16 pooled keys).
    pub near_ties_per_100: usize,
    /// Rows whose blocks differ from the reference's with no near tie: wrong results.
    pub wrong_selections: usize,
    /// The largest error of o and the bound of all rows; NSA's check, which bounds each
    /// row relative to its |o|, reports the row nearest its bound.
    pub o_error: f64,
    pub o_bound: f64,
    pub lse_error: Option<f64>,
    pub lse_bound: Option<f64>,
}

impl Check {
    /// Whether every sampled row chose the reference's blocks (near ties aside, at most
    /// `near_ties_per_100` rows in 100) and its output is within the bound.
    pub fn passed(&self) -> bool {
        let errors_within = self.o_error <= self.o_bound
            && match (self.lse_error, self.lse_bound) {
                (Some(error), Some(bound)) => error <= bound,
                _ => true,
            };
        let ties_within = self.near_ties * 100 <= self.near_ties_per_100 * self.rows.max(100);
        self.wrong_selections == 0 && ties_within && errors_within
    }

    /// `PASS` or `FAIL`, then what was compared and found, on one line.
    pub fn summary(&self) -> String {
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        let mut line = format!(
            "{verdict}: {} sampled rows vs the f64 reference: max |o err| {:.2e} (bound {:.2e})",
            self.rows, self.o_error, self.o_bound
        );
        if let (Some(error), Some(bound)) = (self.lse_error, self.lse_bound) {
            line.push_str(&format!(", max |lse err| {error:.2e} (bound {bound:.2e})"));
        }
        if self.wrong_selections > 0 {
            line.push_str(&format!(
                ", {} rows attended other blocks than the gate's rule picks",
                self.wrong_selections
            ));
        }
        if self.near_ties > 0 {
            line.push_str(&format!(", {} near ties left out", self.near_ties));
        }
        line
    }
}

/// Checks what a kernel returned for `rows` (flat indices into `[B, Hq, S]`) against the
/// reference on the same inputs, at the tolerance of a straightforward implementation in
/// `precision`.
///
/// ```
/// use moba::{MobaConfig, Shape, random, reference};
/// use moba::reference::{Precision, SampledRows};
/// let (shape, config) = (Shape::prefill(1, 1, 64, 16), MobaConfig::new(16, 2));
/// let (q, k, v) = (random::normal(shape.q_elems(), 1), random::normal(shape.kv_elems(), 2),
///                  random::normal(shape.kv_elems(), 3));
/// let exact = reference::forward(&q, &k, &v, &shape, &config)?;
/// let o: Vec<f32> = exact.o.iter().map(|&x| x as f32).collect();
/// let got = SampledRows { o: &o, lse: None, selection: &exact.selection };
/// let rows: Vec<usize> = (0..64).collect();
/// let check = reference::check_rows((&q, &k, &v), &shape, &config, &rows, &got, Precision::F32)?;
/// assert!(check.passed(), "{}", check.summary());
/// # Ok::<(), moba::MobaError>(())
/// ```
pub fn check_rows(
    (q, k, v): (&[f32], &[f32], &[f32]),
    shape: &Shape,
    config: &MobaConfig,
    rows: &[usize],
    got: &SampledRows,
    precision: Precision,
) -> Result<Check> {
    let exact = forward_rows(q, k, v, shape, config, rows)?;
    let means = block_means(k, shape, config.block_size);
    let (d, top_k) = (shape.head_dim, config.top_k);
    let mut check = Check {
        rows: rows.len(),
        near_ties: 0,
        near_ties_per_100: 1,
        wrong_selections: 0,
        o_error: 0.0,
        o_bound: 0.0,
        lse_error: got.lse.map(|_| 0.0),
        lse_bound: got.lse.map(|_| 0.0),
    };
    let (mut naive_o_error, mut naive_lse_error) = (0.0f64, 0.0f64);
    for (i, &row) in rows.iter().enumerate() {
        let blocks = i * top_k..(i + 1) * top_k;
        if got.selection[blocks.clone()] != exact.selection[blocks.clone()] {
            let margin = gate_row(q, &means, shape, config, row)
                .margin
                .unwrap_or(f64::INFINITY);
            match margin < GATE_NEAR_TIE {
                true => check.near_ties += 1,
                false => check.wrong_selections += 1,
            }
            continue;
        }
        let span = i * d..(i + 1) * d;
        let want = &exact.o[span.clone()];
        let (naive_o, naive_lse) = straightforward_row(
            q,
            k,
            v,
            shape,
            config,
            row,
            &exact.selection[blocks],
            precision,
        );
        check.o_error = check.o_error.max(super::max_abs_error(&got.o[span], want));
        naive_o_error = naive_o_error.max(super::max_abs_error(&naive_o, want));
        if let (Some(lse), Some(error)) = (got.lse, &mut check.lse_error) {
            *error = error.max(super::max_abs_error(&lse[i..i + 1], &exact.lse[i..i + 1]));
            naive_lse_error = naive_lse_error.max((naive_lse as f64 - exact.lse[i]).abs());
        }
    }
    check.o_bound = tolerance(naive_o_error);
    check.lse_bound = check.lse_bound.map(|_| tolerance(naive_lse_error));
    Ok(check)
}

/// Allowed error: twice the straightforward implementation's, plus a floor for the case
/// where that one happens to be exact.
pub fn tolerance(straightforward_error: f64) -> f64 {
    2.0 * straightforward_error + 1e-6
}

/// One row of attention written the plain way in `precision`: scores, softmax and the
/// weighted sum over the keys of `blocks`, inputs and every product rounded (as matrix
/// products in that precision read and write them), sums in f32. Returns `(o, lse)`.
#[allow(clippy::too_many_arguments)]
pub(super) fn straightforward_row(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: &Shape,
    config: &MobaConfig,
    row: usize,
    blocks: &[i32],
    precision: Precision,
) -> (Vec<f32>, f32) {
    let round = |x: f32| precision.round(x);
    let d = shape.head_dim;
    let row = Row::new(shape, row);
    let query = row.query(q, d);
    let blocks: Vec<usize> = blocks
        .iter()
        .filter_map(|&j| usize::try_from(j).ok())
        .collect();
    let keys = attended_keys(&blocks, shape, config, row.position);
    let scale = config.scale_for(d);
    let scores: Vec<f32> = keys
        .iter()
        .map(|&i| {
            let key = &k[key_offset(shape, row.group, i)..][..d];
            let dot: f32 = query
                .iter()
                .zip(key)
                .map(|(&x, &y)| round(x) * round(y))
                .sum();
            round(scale * round(dot))
        })
        .collect();
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
    let total: f32 = weights.iter().sum();
    let o = (0..d)
        .map(|c| {
            let sum: f32 = keys
                .iter()
                .zip(&weights)
                .map(|(&i, w)| round(w / total) * round(v[key_offset(shape, row.group, i) + c]))
                .sum();
            round(sum)
        })
        .collect();
    (o, max + total.ln())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random;

    #[test]
    fn a_wrong_output_or_a_wrong_block_fails_the_check() {
        let (shape, config) = (Shape::prefill(1, 2, 48, 8), MobaConfig::new(8, 3));
        let q = random::normal(shape.q_elems(), 11);
        let (k, v) = (
            random::normal(shape.kv_elems(), 12),
            random::normal(shape.kv_elems(), 13),
        );
        let exact =
            forward_rows(&q, &k, &v, &shape, &config, &(0..96).collect::<Vec<_>>()).unwrap();
        let mut o: Vec<f32> = exact.o.iter().map(|&x| x as f32).collect();
        let lse: Vec<f32> = exact.lse.iter().map(|&x| x as f32).collect();
        let mut selection = exact.selection.clone();
        let rows: Vec<usize> = (0..96).collect();
        let check = |o: &[f32], selection: &[i32]| {
            let got = SampledRows {
                o,
                lse: Some(&lse),
                selection,
            };
            check_rows((&q, &k, &v), &shape, &config, &rows, &got, Precision::F32).unwrap()
        };
        let clean = check(&o, &selection);
        assert!(clean.passed(), "{}", clean.summary());
        assert!(clean.summary().starts_with("PASS: 96 sampled rows"));

        o[5 * 8 + 2] += 1e-3;
        let off = check(&o, &selection);
        assert!(
            !off.passed() && off.o_error > off.o_bound,
            "{}",
            off.summary()
        );
        assert!(off.summary().starts_with("FAIL: "));

        // The issue's GL failure: a row whose blocks [0 1 2] came back as [0 0 2].
        o[5 * 8 + 2] -= 1e-3;
        let row = 47; // position 47, block 5: blocks 0..5 eligible, so no tie decides it
        selection[row * 3..row * 3 + 3].copy_from_slice(&[0, 0, 5]);
        let duplicated = check(&o, &selection);
        assert_eq!(duplicated.wrong_selections, 1, "{}", duplicated.summary());
        assert!(!duplicated.passed());
    }
}
