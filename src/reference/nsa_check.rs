//! NSA's output checked against the reference on sampled rows (what `moba bench --attention
//! nsa` does on problems too long for the whole reference). A causal row depends on nothing
//! after its position, so each sampled row is checked as the NSA problem of its own: its
//! group's query heads at its query, the keys up to it.
//!
//! The output is checked over the blocks the backend selected (its branches apart from its
//! ranking) at the FlashAttention-style tolerance of DESIGN §4: [`FACTOR`] times the error
//! of a straightforward implementation in the backend's precision (each branch a plain
//! attention row with its products rounded, the pooled keys and values and each branch's
//! output kept in that precision, the gated sum in its arithmetic), plus a floor for f32
//! arithmetic over the three branches. FlashAttention takes the twin's largest error over a
//! whole tensor; here the rows' magnitudes differ (rows near the start output near one
//! value's, several units; later rows' outputs are small, and could hide a wrong block
//! under a bound the early rows set), so the errors are taken relative to each row's
//! largest |o|: a row's bound is [`FACTOR`] times the twin's largest relative error over the
//! sampled rows, times the row's own largest |o|. (One row's own twin error, over D columns,
//! is too noisy a statistic: a lucky row's small error failed correct kernels.) The
//! [`Check`] reports the row nearest its bound. The
//! selection is checked against the reference's own: a row whose blocks differ counts as a
//! near tie where the importances of the blocks swapped are within [`NSA_NEAR_TIE`] of each
//! other (relative to the row's largest), else as a wrong selection.

use super::check::{Check, Precision, straightforward_row};
use super::nsa::{nsa_forward, nsa_forward_given, nsa_importance};
use crate::config::{MobaConfig, NsaConfig, Shape, check_len};
use crate::error::{MobaError, Result};

/// Relative importance gap under which two selection blocks count as tied: the backends
/// rank importances summed in their own float type (bf16 on CUDA keeps 8 bits).
pub const NSA_NEAR_TIE: f64 = 1e-2;

/// Near ties NSA's check allows per 100 rows. Each is a row whose output is still held to
/// its bound over the blocks it chose; many more would mean the ranking drifts. The CUDA
/// path's bf16 ranking over bf16 pooled keys left 3 of 176 rows (1.7%) on near-uniform
/// importances (head dim 8, 38 blocks, top-5).
pub const NSA_NEAR_TIES_PER_100: usize = 3;

/// Error floor on top of the rounding bound: f32 sums over the keys of three branches.
const F32_FLOOR: f64 = 1e-5;
/// The bound over the straightforward twin's error, FlashAttention's factor.
const FACTOR: f64 = 2.0;

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
        near_ties_per_100: NSA_NEAR_TIES_PER_100,
        ..Check::default()
    };
    // Each row's error, its twin's error, and its largest |o|.
    let mut measured = Vec::with_capacity(rows.len());
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
        let want = &want.o[own.head * d..(own.head + 1) * d];
        let error = super::max_abs_error(&o[i * d..(i + 1) * d], want);
        let plain = own.straightforward_o(config, got_blocks, precision);
        let magnitude = want.iter().fold(f64::MIN_POSITIVE, |m, x| m.max(x.abs()));
        measured.push((error, super::max_abs_error(&plain, want), magnitude));
    }
    let twin_relative = (measured.iter()).fold(0.0f64, |m, &(_, twin, scale)| m.max(twin / scale));
    // The row nearest its bound: (error, bound).
    let mut worst = (0.0f64, F32_FLOOR);
    for &(error, _, scale) in &measured {
        let bound = FACTOR * twin_relative * scale + F32_FLOOR;
        if error / bound > worst.0 / worst.1 {
            worst = (error, bound);
        }
    }
    (check.o_error, check.o_bound) = worst;
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

    /// The row's o as a straightforward implementation in `precision` computes it over
    /// `blocks` (the group's selection at the row): each branch a plain attention row whose
    /// products round to `precision` ([`straightforward_row`]): the compressed branch over
    /// the pooled keys and values (their means rounded), the selected one over `blocks`, the
    /// window over the row's own block of `w` keys and the one before; then the gated sum
    /// with each product and sum rounded, as tensor ops in that precision do it.
    fn straightforward_o(
        &self,
        config: &NsaConfig,
        blocks: &[i32],
        precision: Precision,
    ) -> Vec<f32> {
        let round = |x: f32| precision.round(x);
        let (shape, row) = (&self.shape, self.head);
        let scale = config.scale_for(shape.head_dim);
        let attend = |k: &[f32], v: &[f32], shape: &Shape, moba: MobaConfig, blocks: &[i32]| {
            let moba = moba.with_scale(scale);
            straightforward_row(&self.q, k, v, shape, &moba, row, blocks, precision).0
        };
        let position = shape.kv_len - 1;
        // The compressed blocks whose last key the row sees (`i d + l - 1 <= position`).
        let cmp = match config.compressed_blocks(shape.kv_len) {
            0 => vec![0.0; shape.head_dim],
            eligible => {
                let [kc, vc] = [&self.k, &self.v].map(|x| self.pooled(x, config, eligible, round));
                let pooled = Shape {
                    kv_len: eligible,
                    ..*shape
                };
                attend(&kc, &vc, &pooled, MobaConfig::new(eligible, 1), &[0])
            }
        };
        let select = MobaConfig::new(config.select_block, config.top_n);
        let slc = attend(&self.k, &self.v, shape, select, blocks);
        let current = (position / config.window) as i32;
        let window = [current - 1, current];
        let win = attend(
            &self.k,
            &self.v,
            shape,
            MobaConfig::key_window(config.window),
            &window,
        );
        let gate = |c: usize, x: f32| round(round(self.gates[row * 3 + c]) * x);
        (0..shape.head_dim)
            .map(|c| round(round(gate(0, cmp[c]) + gate(1, slc[c])) + gate(2, win[c])))
            .collect()
    }

    /// The means of the first `blocks` compressed blocks of `x` (keys or values, `[Sk, D]`),
    /// summed in f32 from the inputs in `round`'s precision, then rounded.
    fn pooled(
        &self,
        x: &[f32],
        config: &NsaConfig,
        blocks: usize,
        round: impl Fn(f32) -> f32,
    ) -> Vec<f32> {
        let d = self.shape.head_dim;
        (0..blocks)
            .flat_map(|i| {
                let keys = i * config.stride..i * config.stride + config.compress_block;
                let x = &x;
                let round = &round;
                (0..d).map(move |c| {
                    let sum: f32 = keys.clone().map(|key| round(x[key * d + c])).sum();
                    round(sum / config.compress_block as f32)
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In bf16, the bound follows what a plain bf16 implementation's roundings cost (the
    /// early rows' outputs are near a key's value, several units, where bf16 steps are
    /// 1e-2), yet an output over one wrong block fails.
    #[test]
    fn a_bf16_bound_admits_bf16_roundings_and_no_wrong_block() {
        let shape = Shape {
            batch: 1,
            q_heads: 4,
            kv_heads: 1,
            q_len: 300,
            kv_len: 300,
            head_dim: 32,
        };
        let config = NsaConfig::new(16, 8, 32, 4, 40);
        let [q, k, v, gates] = crate::random::nsa_inputs(&shape, 3);
        let inputs = NsaInputs {
            q: &q,
            k: &k,
            v: &v,
            gates: &gates,
        };
        let exact = nsa_forward(&q, &k, &v, &gates, &shape, &config).unwrap();
        let rows: Vec<usize> = (0..shape.q_rows()).step_by(37).collect();
        let (d, top_n) = (shape.head_dim, config.top_n);
        let selection_of = |row: usize| -> Vec<i32> {
            let t = row % shape.q_len;
            exact.selection[t * top_n..][..top_n].to_vec()
        };
        let selection: Vec<i32> = rows.iter().flat_map(|&row| selection_of(row)).collect();
        let check = |o: &[f32]| {
            check_nsa_rows(
                inputs,
                &shape,
                &config,
                &rows,
                o,
                &selection,
                Precision::Bf16,
            )
            .unwrap()
        };
        // What a correct bf16 backend computes: each row's plain bf16 twin.
        let plain: Vec<f32> = (rows.iter())
            .flat_map(|&row| {
                let own = RowProblem::of(inputs, &shape, row);
                own.straightforward_o(&config, &selection_of(row), Precision::Bf16)
            })
            .collect();
        let passed = check(&plain);
        assert!(passed.passed(), "{}", passed.summary());
        // Twice the inputs' rounding error alone (the bound before it followed a plain bf16
        // implementation) fails some row of that correct bf16 output.
        let rounded =
            |x: &[f32]| -> Vec<f32> { x.iter().map(|&x| Precision::Bf16.round(x)).collect() };
        let input_rounding_fails = rows.iter().enumerate().any(|(i, &row)| {
            let own = RowProblem::of(inputs, &shape, row);
            let p = own.inputs();
            let forward = |q: &[f32], k: &[f32], v: &[f32], gates: &[f32]| {
                nsa_forward_given(q, k, v, gates, &own.shape, &config, &selection_of(row))
                    .unwrap()
                    .o
            };
            let exact = forward(p.q, p.k, p.v, p.gates);
            let round = forward(
                &rounded(p.q),
                &rounded(p.k),
                &rounded(p.v),
                &rounded(p.gates),
            );
            let head = own.head * d..(own.head + 1) * d;
            let error_of = |got: &[f64]| {
                (got[head.clone()].iter().zip(&exact[head.clone()]))
                    .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()))
            };
            let plain_error =
                super::super::max_abs_error(&plain[i * d..(i + 1) * d], &exact[head.clone()]);
            plain_error > 2.0 * error_of(&round) + F32_FLOOR
        });
        assert!(input_rounding_fails);
        // The last row attends an unselected block in place of its ranked one (block 1
        // instead of 2; 0, 7 and 8 are forced): the output over one wrong block, exact
        // otherwise.
        let last = *rows.last().unwrap();
        let mut wrong_blocks = selection_of(last);
        assert_eq!(wrong_blocks, [0, 2, 7, 8]);
        wrong_blocks[1] = 1;
        let own = RowProblem::of(inputs, &shape, last);
        let p = own.inputs();
        let wrong =
            nsa_forward_given(p.q, p.k, p.v, p.gates, &own.shape, &config, &wrong_blocks).unwrap();
        let mut o = plain.clone();
        let at = (rows.len() - 1) * d;
        for c in 0..d {
            o[at + c] = wrong.o[own.head * d + c] as f32;
        }
        let failed = check(&o);
        assert!(!failed.passed(), "{}", failed.summary());
    }
}
