//! NSA.md's cases, shared by the NSA tests of every backend (`tests/nsa.rs`, and the CUDA
//! path's in `tests/cuda.rs`).

use super::shape;
use moba::{NsaConfig, Shape};

/// The cases: `(what, shape, config)`; configs are `(l, d, l', top_n, w)`.
pub fn cases() -> Vec<(&'static str, Shape, NsaConfig)> {
    vec![
        (
            "GQA 1",
            shape(1, 2, 2, 40, 40, 8),
            NsaConfig::new(8, 4, 8, 3, 6),
        ),
        (
            "GQA 2, batch of one",
            shape(1, 4, 2, 37, 37, 8),
            NsaConfig::new(8, 4, 16, 3, 9),
        ),
        (
            "GQA 4, decode",
            shape(1, 4, 1, 3, 50, 8),
            NsaConfig::new(8, 4, 8, 4, 5),
        ),
        (
            "GQA 16",
            shape(1, 16, 1, 24, 24, 4),
            NsaConfig::new(4, 2, 4, 3, 3),
        ),
        (
            "no complete compressed block",
            shape(1, 2, 1, 6, 6, 8),
            NsaConfig::new(8, 4, 8, 3, 2),
        ),
        (
            "top-n covers every block",
            shape(1, 2, 1, 30, 30, 8),
            NsaConfig::new(4, 4, 4, 8, 1),
        ),
        (
            "l = l' = d",
            shape(1, 2, 2, 33, 33, 8),
            NsaConfig::new(4, 4, 4, 3, 7),
        ),
        (
            "overlapping blocks",
            shape(1, 2, 1, 45, 45, 8),
            NsaConfig::new(16, 4, 8, 4, 10),
        ),
        // wgpu's selection kernel holds 31 of these selection blocks' compressed blocks at
        // a time: the rows past block 31 rank over two chunks.
        (
            "selection over two chunks of the kernel",
            shape(1, 4, 2, 300, 300, 8),
            NsaConfig::new(8, 4, 8, 5, 6),
        ),
        // A group of 8 (burn-wgpu's group-centric selected kernel) over selection blocks
        // of 72 keys: two of its key tiles each.
        (
            "GQA 8, selection blocks over two key tiles",
            shape(1, 8, 1, 200, 200, 8),
            NsaConfig::new(8, 4, 72, 4, 5),
        ),
        // 65 compressed blocks per selection block: more than the kernel holds, so every
        // backend ranks on the host.
        (
            "selection blocks wider than the kernel's chunk",
            shape(1, 2, 1, 300, 300, 8),
            NsaConfig::new(2, 1, 65, 4, 5),
        ),
    ]
}
