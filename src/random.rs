//! Seeded random inputs (standard normal), for the demo, the benchmark and the tests.

use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

/// `len` standard-normal f32 values from `seed`.
pub fn normal(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.sample(StandardNormal)).collect()
}
