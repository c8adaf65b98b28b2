//! Varlen (packed) batches on every adapter: sequences of mixed lengths in one batch entry,
//! forward and backward, against each sequence run on its own by the f64 reference, at the
//! tolerance of the straightforward f32 implementation of that sequence.

mod common;

use std::ops::Range;

use common::{every_gpu, naive, naive_backward, shape, tolerance};
use moba::gpu::GpuContext;
use moba::{MobaConfig, Shape, random, reference};

/// The lengths of the issue: a single token, a partial block, a whole one, and long ones.
const LENGTHS: [usize; 5] = [1, 7, 64, 300, 1000];

/// Offsets of sequences of `lengths`, packed in order.
fn cu_seqlens(lengths: &[usize]) -> Vec<usize> {
    let mut cu = vec![0];
    for len in lengths {
        cu.push(cu.last().unwrap() + len);
    }
    cu
}

/// One sequence of a packed problem, cut out: its tokens, and the reference's and the
/// straightforward implementation's results on it alone.
struct Sequence {
    tokens: Range<usize>,
    want: reference::Forward,
    naive_o: Vec<f32>,
    naive_lse: Vec<f32>,
    grads: reference::Gradients,
    naive_grads: (Vec<f32>, Vec<f32>, Vec<f32>),
}

/// Checks a packed problem's forward and backward on `gpu` sequence by sequence.
fn check_packed(gpu: &GpuContext, lengths: &[usize], config: MobaConfig, seed: u64) {
    let cu = cu_seqlens(lengths);
    let tokens = *cu.last().unwrap();
    let packed = shape(1, 4, 2, tokens, tokens, 16);
    let [q, k, v, dout] = [
        packed.q_elems(),
        packed.kv_elems(),
        packed.kv_elems(),
        packed.q_elems(),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, n)| random::normal(n, seed + i as u64))
    .collect::<Vec<_>>()
    .try_into()
    .unwrap();
    let d = packed.head_dim;
    let sequences: Vec<Sequence> = (cu.windows(2).map(|w| w[0]..w[1]))
        .filter(|tokens| !tokens.is_empty())
        .map(|rows| {
            let len = rows.len();
            let part = Shape {
                q_len: len,
                kv_len: len,
                ..packed
            };
            let [q, k, v, dout] = [
                (&q, packed.q_heads),
                (&k, packed.kv_heads),
                (&v, packed.kv_heads),
                (&dout, packed.q_heads),
            ]
            .map(|(x, heads)| reference::cut_rows(x, heads, tokens, d, &rows));
            let want = reference::forward(&q, &k, &v, &part, &config).unwrap();
            let qkv = [&q[..], &k[..], &v[..]];
            let (naive_o, naive_lse) = naive(qkv, &part, &config, &want.selection, |x| x);
            let naive_grads = naive_backward(qkv, &dout, &part, &config, &want.selection, |x| x);
            Sequence {
                tokens: rows,
                grads: reference::backward(&q, &k, &v, &dout, &part, &config).unwrap(),
                want,
                naive_o,
                naive_lse,
                naive_grads,
            }
        })
        .collect();

    // The reference's own varlen path is the same per-sequence computation.
    let whole = reference::varlen_forward(&q, &k, &v, &packed, &cu, &config).unwrap();
    let got = gpu
        .block_on(gpu.moba_forward_varlen(&q, &k, &v, &packed, &cu, &config))
        .unwrap();
    let grads = gpu
        .block_on(gpu.moba_backward_varlen([&q, &k, &v, &dout], &packed, &cu, &config))
        .unwrap();
    let adapter = gpu.describe();
    for s in &sequences {
        let of = |x: &[f32], heads, width| reference::cut_rows(x, heads, tokens, width, &s.tokens);
        let part = format!("{adapter}: sequence {:?} of {lengths:?}", s.tokens);
        let selection: Vec<i32> = (0..packed.q_heads)
            .flat_map(|h| {
                let at = (h * tokens + s.tokens.start) * config.top_k;
                got.selection[at..at + s.tokens.len() * config.top_k].to_vec()
            })
            .collect();
        assert_eq!(selection, s.want.selection, "{part}: selection");
        let whole_o: Vec<f32> = whole.o.iter().map(|&x| x as f32).collect();
        assert_eq!(
            of(&whole_o, packed.q_heads, d),
            s.want.o.iter().map(|&x| x as f32).collect::<Vec<_>>(),
            "{part}: reference::varlen_forward"
        );
        let bound = tolerance(reference::max_abs_error(&s.naive_o, &s.want.o));
        let error = reference::max_abs_error(&of(&got.o, packed.q_heads, d), &s.want.o);
        assert!(error <= bound, "{part}: o error {error:e} > {bound:e}");
        let bound = tolerance(reference::max_abs_error(&s.naive_lse, &s.want.lse));
        let error = reference::max_abs_error(&of(&got.lse, packed.q_heads, 1), &s.want.lse);
        assert!(error <= bound, "{part}: lse error {error:e} > {bound:e}");
        for (name, heads, got, naive, want) in [
            (
                "dq",
                packed.q_heads,
                &grads.dq,
                &s.naive_grads.0,
                &s.grads.dq,
            ),
            (
                "dk",
                packed.kv_heads,
                &grads.dk,
                &s.naive_grads.1,
                &s.grads.dk,
            ),
            (
                "dv",
                packed.kv_heads,
                &grads.dv,
                &s.naive_grads.2,
                &s.grads.dv,
            ),
        ] {
            let bound = tolerance(reference::max_abs_error(naive, want));
            let error = reference::max_abs_error(&of(got, heads, d), want);
            assert!(error <= bound, "{part}: {name} error {error:e} > {bound:e}");
        }
    }
}

#[test]
fn mixed_lengths_match_each_sequence_alone() {
    for gpu in every_gpu() {
        let gpu = &*gpu;
        check_packed(gpu, &LENGTHS, MobaConfig::new(64, 3), 31);
    }
}

#[test]
fn empty_sequences_and_the_static_gates() {
    let lengths = [40, 0, 3, 90];
    for gpu in every_gpu() {
        let gpu = &*gpu;
        check_packed(gpu, &lengths, MobaConfig::sliding_window(16, 3), 32);
        check_packed(gpu, &lengths, MobaConfig::sink(16, 1, 2), 33);
    }
}

#[test]
fn bad_packings_are_errors() {
    let gpu = common::gpu();
    let packed = shape(1, 2, 1, 10, 10, 8);
    let (q, kv) = (vec![0.5; packed.q_elems()], vec![0.25; packed.kv_elems()]);
    let run = |shape: &Shape, cu: &[usize], config: MobaConfig| {
        gpu.block_on(gpu.moba_forward_varlen(&q, &kv, &kv, shape, cu, &config))
            .unwrap_err()
            .to_string()
    };
    let config = MobaConfig::new(4, 2);
    for (err, says) in [
        (run(&packed, &[0, 4, 9], config), "covers 9 tokens"),
        (run(&packed, &[0, 6, 4, 10], config), "must not decrease"),
        (run(&packed, &[2, 10], config), "start at 0"),
        (run(&packed, &[0, 10], config.with_causal(false)), "causal"),
    ] {
        assert!(err.contains(says), "{err}");
    }
    let batch_two = Shape {
        batch: 2,
        q_len: 5,
        kv_len: 5,
        ..packed
    };
    assert!(run(&batch_two, &[0, 5], config).contains("batch 1"));
}
