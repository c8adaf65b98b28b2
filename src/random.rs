//! Seeded random inputs (standard normal), for the demo, the benchmark and the tests.

use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

use crate::config::Shape;

/// Values per independently seeded stream: a longer input is drawn a stream at a time on
/// every core (one input of the benchmark at 512K tokens is 1G values, a minute on one core),
/// stream i seeded from `seed` and i, so the values do not depend on the cores.
const STREAM_LEN: usize = 1 << 24;

/// `len` standard-normal f32 values from `seed`, in streams of `STREAM_LEN` (the first, and
/// so every input up to that length, drawn from `seed` itself).
pub fn normal(len: usize, seed: u64) -> Vec<f32> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    normal_in_streams(len, seed, STREAM_LEN, threads)
}

fn normal_in_streams(len: usize, seed: u64, stream_len: usize, threads: usize) -> Vec<f32> {
    let mut values = vec![0.0; len];
    let mut streams: Vec<(usize, &mut [f32])> = values.chunks_mut(stream_len).enumerate().collect();
    let per_thread = streams.len().div_ceil(threads.max(1)).max(1);
    // This thread fills the first batch itself: no thread is spawned for one batch (one core,
    // a short input, or a target without threads such as wasm32).
    let own: Vec<_> = streams.drain(..per_thread.min(streams.len())).collect();
    std::thread::scope(|scope| {
        while !streams.is_empty() {
            let batch: Vec<_> = streams.drain(..per_thread.min(streams.len())).collect();
            scope.spawn(move || fill_streams(batch, seed));
        }
        fill_streams(own, seed);
    });
    values
}

/// Fills each (index, stream) from its seed.
fn fill_streams(streams: Vec<(usize, &mut [f32])>, seed: u64) {
    for (index, stream) in streams {
        let mut rng = StdRng::seed_from_u64(stream_seed(seed, index));
        for value in stream {
            *value = rng.sample(StandardNormal);
        }
    }
}

/// The seed of stream `index` of an input drawn from `seed`: `seed` itself for the first,
/// then a golden-ratio step apart.
fn stream_seed(seed: u64, index: usize) -> u64 {
    seed.wrapping_add((index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_inputs_are_the_same_on_any_number_of_cores() {
        let one = normal_in_streams(1000, 7, 64, 1);
        assert_eq!(one, normal_in_streams(1000, 7, 64, 3));
        assert_eq!(one, normal_in_streams(1000, 7, 64, 64));
        // Each stream is its own: stream 1 is not stream 0 again, and is drawn from its seed.
        assert_ne!(one[..64], one[64..128]);
        assert_eq!(
            one[64..128],
            normal_in_streams(64, stream_seed(7, 1), 64, 1)[..]
        );
        // The first stream, and so a short input, is drawn from the seed itself.
        let mut rng = StdRng::seed_from_u64(7);
        let plain: Vec<f32> = (0..100).map(|_| rng.sample(StandardNormal)).collect();
        assert_eq!(normal(100, 7), plain);
        assert_eq!(one[..64], plain[..64]);
        assert!(normal(0, 7).is_empty());
        let mean = one.iter().sum::<f32>() / one.len() as f32;
        let variance = one.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / one.len() as f32;
        assert!(
            mean.abs() < 0.1 && (variance - 1.0).abs() < 0.15,
            "{mean} {variance}"
        );
    }
}
