//! The MoBA backward (dq, dk, dv) on the default adapter (lavapipe in CI) against the f64
//! reference, over the shape grid of DESIGN §4, plus determinism and the gate variants.

mod common;

use common::{check_moba_backward, gpu, inputs, shape};
use moba::{MobaConfig, random};

common::shape_grid_tests! { check_moba_backward;
    non_causal_with_a_scale:
        shape(2, 2, 1, 50, 150, 16), MobaConfig::new(20, 2).with_causal(false).with_scale(0.3), 11;
    head_dim_not_a_multiple_of_four: shape(1, 1, 1, 50, 50, 6), MobaConfig::new(8, 2), 12;
}

#[test]
fn sliding_window_sink_and_key_window_gates() {
    let s = shape(1, 2, 1, 120, 120, 16);
    check_moba_backward(s, MobaConfig::sliding_window(10, 3), 13);
    check_moba_backward(s, MobaConfig::sink(10, 1, 2), 14);
    check_moba_backward(s, MobaConfig::key_window(24), 15);
    check_moba_backward(shape(1, 4, 2, 37, 300, 16), MobaConfig::key_window(40), 16);
    // A window longer than a query tile: late tiles skip the key tiles every row masks.
    check_moba_backward(
        shape(1, 2, 1, 500, 500, 16),
        MobaConfig::key_window(160),
        17,
    );
    // A tile of the block's last row alone, whose window is its own block: one masked tile.
    check_moba_backward(
        shape(1, 2, 2, 129, 1024, 16),
        MobaConfig::key_window(512),
        18,
    );
}

#[test]
fn same_bits_twice() {
    let shape = shape(1, 4, 2, 300, 300, 16);
    let (q, k, v) = inputs(&shape, 22);
    let dout = random::normal(shape.q_elems(), 23);
    let config = MobaConfig::new(20, 3);
    let run = || {
        gpu()
            .block_on(gpu().moba_backward(&q, &k, &v, &dout, &shape, &config))
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
        .block_on(gpu().moba_backward(&q, &k, &v, &q[1..], &shape, &MobaConfig::new(4, 2)))
        .unwrap_err();
    assert!(err.to_string().contains("dout"), "{err}");
}
