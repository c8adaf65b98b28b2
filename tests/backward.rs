//! The MoBA backward (dq, dk, dv) on the default adapter (lavapipe in CI) against the f64
//! reference, over the shape grid of DESIGN §4, plus determinism and the gate variants.

mod common;

use common::{check_moba_backward, gpu, inputs, shape};
use moba::{MobaConfig, random};

#[test]
fn a_single_token() {
    check_moba_backward(shape(1, 1, 1, 1, 1, 16), MobaConfig::new(4, 2), 1);
}

#[test]
fn seven_tokens_gqa_2() {
    check_moba_backward(shape(1, 2, 1, 7, 7, 16), MobaConfig::new(3, 2), 2);
}

#[test]
fn batch_two_head_dim_64() {
    check_moba_backward(shape(2, 2, 2, 113, 113, 64), MobaConfig::new(16, 3), 3);
}

#[test]
fn gqa_8_sums_dk_dv_over_the_group() {
    check_moba_backward(shape(1, 8, 1, 113, 113, 16), MobaConfig::new(8, 4), 4);
}

#[test]
fn length_1023_top_2() {
    check_moba_backward(shape(1, 1, 1, 1023, 1023, 16), MobaConfig::new(64, 2), 5);
}

#[test]
fn length_1025_partial_last_block_larger_than_a_workgroup() {
    check_moba_backward(shape(1, 2, 2, 1025, 1025, 16), MobaConfig::new(100, 3), 6);
}

#[test]
fn top_1_head_dim_128() {
    check_moba_backward(shape(1, 1, 1, 113, 113, 128), MobaConfig::new(32, 1), 7);
}

#[test]
fn top_k_beyond_the_block_count() {
    check_moba_backward(shape(1, 2, 2, 113, 113, 64), MobaConfig::new(16, 99), 8);
}

#[test]
fn decode_one_query_over_a_cache() {
    check_moba_backward(shape(1, 4, 2, 1, 200, 64), MobaConfig::new(32, 3), 9);
}

#[test]
fn chunked_prefill() {
    check_moba_backward(shape(2, 2, 1, 37, 300, 16), MobaConfig::new(25, 2), 10);
}

#[test]
fn non_causal_with_a_scale() {
    check_moba_backward(
        shape(2, 2, 1, 50, 150, 16),
        MobaConfig::new(20, 2).with_causal(false).with_scale(0.3),
        11,
    );
}

#[test]
fn head_dim_not_a_multiple_of_four() {
    check_moba_backward(shape(1, 1, 1, 50, 50, 6), MobaConfig::new(8, 2), 12);
}

#[test]
fn sliding_window_and_sink_gates() {
    let s = shape(1, 2, 1, 120, 120, 16);
    check_moba_backward(s, MobaConfig::sliding_window(10, 3), 13);
    check_moba_backward(s, MobaConfig::sink(10, 1, 2), 14);
}

#[test]
fn same_bits_twice() {
    let shape = shape(1, 4, 2, 300, 300, 16);
    let (q, k, v) = inputs(&shape, 22);
    let dout = random::normal(shape.q_elems(), 23);
    let config = MobaConfig::new(20, 3);
    let run = || {
        gpu()
            .moba_backward_blocking(&q, &k, &v, &dout, &shape, &config)
            .unwrap()
    };
    let (first, second) = (run(), run());
    let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&first.dq), bits(&second.dq));
    assert_eq!(bits(&first.dk), bits(&second.dk));
    assert_eq!(bits(&first.dv), bits(&second.dv));
}

#[test]
fn a_wrong_dout_length_is_an_error() {
    let shape = shape(1, 1, 1, 8, 8, 4);
    let (q, k, v) = inputs(&shape, 24);
    let err = gpu()
        .moba_backward_blocking(&q, &k, &v, &q[1..], &shape, &MobaConfig::new(4, 2))
        .unwrap_err();
    assert!(err.to_string().contains("dout"), "{err}");
}
