//! Backward: gradients of the MoBA forward with the selection held constant (DESIGN §1.6).

use super::attention::{attend_row, attended_keys, listed_blocks};
use super::gate::{block_means, gate_row};
use super::{Row, dot, key_offset};
use crate::config::{MobaConfig, Shape};
use crate::error::Result;

/// Gradients in f64: `dq: [B, Hq, S, D]`, `dk, dv: [B, Hkv, Sk, D]` (summed over the query
/// heads of each GQA group).
#[derive(Debug, Clone, PartialEq)]
pub struct Gradients {
    pub dq: Vec<f64>,
    pub dk: Vec<f64>,
    pub dv: Vec<f64>,
}

/// Gradients of `sum(o * dout)` with respect to q, k and v.
pub fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dout: &[f32],
    shape: &Shape,
    config: &MobaConfig,
) -> Result<Gradients> {
    config.validate()?;
    shape.check_inputs(q, k, v)?;
    shape.check_dout(dout)?;
    let means = block_means(k, shape, config.block_size);
    backward_selected([q, k, v, dout], shape, config, |index| {
        gate_row(q, &means, shape, config, index).selected
    })
}

/// Gradients of `sum(o * dout)` where every row attends the blocks `selection` lists
/// ([`super::forward_with_selection`]).
pub fn backward_with_selection(
    [q, k, v, dout]: [&[f32]; 4],
    shape: &Shape,
    config: &MobaConfig,
    selection: &[i32],
) -> Result<Gradients> {
    config.validate()?;
    shape.check_inputs(q, k, v)?;
    shape.check_dout(dout)?;
    backward_selected([q, k, v, dout], shape, config, |index| {
        listed_blocks(selection, config.top_k, index)
    })
}

/// The gradients where row `index` attends the blocks `selected(index)`.
fn backward_selected(
    [q, k, v, dout]: [&[f32]; 4],
    shape: &Shape,
    config: &MobaConfig,
    selected: impl Fn(usize) -> Vec<usize>,
) -> Result<Gradients> {
    let d = shape.head_dim;
    let scale = config.scale_for(d) as f64;
    let mut grads = Gradients {
        dq: vec![0.0; shape.q_elems()],
        dk: vec![0.0; shape.kv_elems()],
        dv: vec![0.0; shape.kv_elems()],
    };
    for index in 0..shape.q_rows() {
        let row = Row::new(shape, index);
        let query = row.query(q, d);
        let keys = attended_keys(&selected(index), shape, config, row.position);
        let (o, lse) = attend_row(query, &keys, k, v, shape, row.group, scale);
        let grad_out = row.query(dout, d);
        // delta = rowsum(dout * o): the softmax Jacobian's shared term.
        let delta: f64 = grad_out.iter().zip(&o).map(|(&g, &x)| g as f64 * x).sum();
        for &i in &keys {
            let at = key_offset(shape, row.group, i);
            let key = &k[at..at + d];
            let p = (scale * dot(query, key) - lse).exp();
            let dp = dot(grad_out, &v[at..at + d]);
            let ds = p * (dp - delta);
            for c in 0..d {
                grads.dq[index * d + c] += scale * ds * key[c] as f64;
                grads.dk[at + c] += scale * ds * query[c] as f64;
                grads.dv[at + c] += p * grad_out[c] as f64;
            }
        }
    }
    Ok(grads)
}
