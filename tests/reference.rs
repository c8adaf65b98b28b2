//! The CPU reference checked against itself: finite differences for its backward, and the
//! gate rules on hand-made cases.

mod common;

use common::inputs;
use moba::{MobaConfig, Shape, reference};

/// `sum(o * dout)` of the reference forward.
fn loss(q: &[f32], k: &[f32], v: &[f32], dout: &[f32], shape: &Shape, config: &MobaConfig) -> f64 {
    let out = reference::forward(q, k, v, shape, config).unwrap();
    out.o.iter().zip(dout).map(|(o, &g)| o * g as f64).sum()
}

#[test]
fn backward_matches_finite_differences() {
    let shape = Shape {
        kv_heads: 1,
        ..Shape::prefill(1, 2, 9, 4)
    };
    for config in [
        MobaConfig::new(3, 2),
        MobaConfig::new(4, 1).with_causal(false),
    ] {
        let (q, k, v) = inputs(&shape, 41);
        let dout = inputs(&shape, 42).0;
        let grads = reference::backward(&q, &k, &v, &dout, &shape, &config).unwrap();
        let eps = 1e-2f32;
        let mut checked = 0;
        for (name, tensor, grad) in [
            ("q", 0, &grads.dq),
            ("k", 1, &grads.dk),
            ("v", 2, &grads.dv),
        ] {
            for i in (0..grad.len()).step_by(5) {
                let mut inputs = [q.clone(), k.clone(), v.clone()];
                inputs[tensor][i] += eps;
                let up = loss(&inputs[0], &inputs[1], &inputs[2], &dout, &shape, &config);
                inputs[tensor][i] -= 2.0 * eps;
                let down = loss(&inputs[0], &inputs[1], &inputs[2], &dout, &shape, &config);
                let numeric = (up - down) / (2.0 * eps as f64);
                // Moving a key moves its block mean: skip entries where that flips the selection.
                let flips = |delta: f32| {
                    let mut moved = [q.clone(), k.clone(), v.clone()];
                    moved[tensor][i] += delta;
                    reference::selection(&moved[0], &moved[1], &shape, &config)
                };
                if flips(eps) != flips(-eps) {
                    continue;
                }
                let error = (numeric - grad[i]).abs();
                assert!(
                    error < 2e-3 * (1.0 + grad[i].abs()),
                    "d{name}[{i}]: numeric {numeric} vs {}",
                    grad[i]
                );
                checked += 1;
            }
        }
        assert!(checked > 20, "only {checked} entries checked");
    }
}

#[test]
fn gate_forces_the_own_block_and_never_looks_ahead() {
    let shape = Shape::prefill(1, 1, 40, 8);
    let (q, k, _) = inputs(&shape, 43);
    let config = MobaConfig::new(8, 3);
    let selection = reference::selection(&q, &k, &shape, &config);
    for t in 0..40 {
        let row = &selection[t * 3..t * 3 + 3];
        let own = (t / 8) as i32;
        assert!(row.contains(&own), "row {t}: {row:?}");
        assert!(
            row.iter().all(|&j| j <= own),
            "row {t} looks ahead: {row:?}"
        );
        let chosen: Vec<i32> = row.iter().copied().filter(|&j| j >= 0).collect();
        assert_eq!(chosen.len(), 3.min(t / 8 + 1), "row {t}: {row:?}");
        assert!(chosen.windows(2).all(|w| w[0] < w[1]), "ascending: {row:?}");
    }
}

#[test]
fn decode_queries_sit_at_the_end_of_the_cache() {
    // One query over 20 keys sits at position 19: the same row as the last of a prefill.
    let prefill = Shape::prefill(1, 1, 20, 8);
    let (q, k, v) = inputs(&prefill, 44);
    let config = MobaConfig::new(6, 2);
    let full = reference::forward(&q, &k, &v, &prefill, &config).unwrap();
    let decode = Shape {
        q_len: 1,
        ..prefill
    };
    let last = reference::forward(&q[19 * 8..], &k, &v, &decode, &config).unwrap();
    assert_eq!(last.o, full.o[19 * 8..]);
    assert_eq!(last.selection, full.selection[19 * 2..]);
}
