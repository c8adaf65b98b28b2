//! Seeded random inputs (standard normal), for the demo, the benchmark and the tests.

use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

use crate::config::Shape;

/// `len` standard-normal f32 values from `seed`.
pub fn normal(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.sample(StandardNormal)).collect()
}

/// NSA's inputs for `shape` from `seed`: standard-normal `q`, `k`, `v`, and gates
/// `[B, Hq, S, 3]` in (0, 1), the sigmoid of standard-normal values (as NSA's gate layer
/// makes them).
pub fn nsa_inputs(shape: &Shape, seed: u64) -> [Vec<f32>; 4] {
    let gates = normal(shape.q_rows() * 3, seed + 3)
        .into_iter()
        .map(|x| 1.0 / (1.0 + (-x).exp()))
        .collect();
    [
        normal(shape.q_elems(), seed),
        normal(shape.kv_elems(), seed + 1),
        normal(shape.kv_elems(), seed + 2),
        gates,
    ]
}
