//! Every way to be wrong gets a clear error value: bad shapes, bad config, non-finite input,
//! problems over the adapter's limits, buffers too small. Never a panic.

mod common;

use common::gpu;
use moba::gpu::{DenseForward, ForwardBuffers, MobaForward};
use moba::{MobaConfig, MobaError, Shape, reference};

fn small() -> Shape {
    Shape::prefill(1, 2, 8, 4)
}

fn run(shape: &Shape, config: &MobaConfig, q: &[f32], k: &[f32], v: &[f32]) -> MobaError {
    let gpu_error = gpu()
        .block_on(gpu().moba_forward(q, k, v, shape, config))
        .unwrap_err();
    let reference_error = reference::forward(q, k, v, shape, config).unwrap_err();
    // Compared as text: a NaN inside an error is not equal to itself.
    assert_eq!(
        gpu_error.to_string(),
        reference_error.to_string(),
        "both backends report the same error"
    );
    gpu_error
}

/// q and a buffer that serves as both k and v, for `shape`: 0.5 everywhere (never zeros).
fn halves(shape: &Shape) -> (Vec<f32>, Vec<f32>) {
    (vec![0.5; shape.q_elems()], vec![0.5; shape.kv_elems()])
}

/// [`run`] on [`halves`].
fn run_on_halves(shape: &Shape, config: &MobaConfig) -> MobaError {
    let (q, kv) = halves(shape);
    run(shape, config, &q, &kv, &kv)
}

/// Asserts that `shape` is refused with exactly the error whose `Debug` text is `expected`
/// (the variant and every field).
#[track_caller]
fn assert_refused_as(shape: &Shape, expected: &str) {
    let err = run_on_halves(shape, &MobaConfig::new(4, 2));
    assert_eq!(format!("{err:?}"), expected, "{err}");
}

#[test]
fn wrong_rank_names_the_tensor() {
    let err = Shape::from_dims(&[1, 2, 8], &[1, 2, 8, 4]).unwrap_err();
    assert!(matches!(err, MobaError::Rank { tensor: "q", .. }), "{err}");
    let err = Shape::from_dims(&[1, 2, 8, 4], &[2, 8, 4]).unwrap_err();
    assert!(matches!(err, MobaError::Rank { tensor: "k", .. }), "{err}");
}

#[test]
fn disagreeing_dims_are_named() {
    let err = Shape::from_dims(&[1, 2, 8, 4], &[2, 2, 8, 4]).unwrap_err();
    assert!(err.to_string().contains("k batch"), "{err}");
    let err = Shape::from_dims(&[1, 2, 8, 4], &[1, 2, 8, 8]).unwrap_err();
    assert!(err.to_string().contains("k head_dim"), "{err}");
}

#[test]
fn wrong_lengths_name_the_slice() {
    let shape = small();
    let (q, kv) = halves(&shape);
    let err = run(&shape, &MobaConfig::new(4, 2), &q[1..], &kv, &kv);
    assert!(err.to_string().contains("q length"), "{err}");
    let err = run(&shape, &MobaConfig::new(4, 2), &q, &kv, &kv[..3]);
    assert!(err.to_string().contains("v length"), "{err}");
}

#[test]
fn query_heads_must_be_a_multiple_of_kv_heads() {
    let mut shape = Shape::prefill(1, 4, 8, 4);
    shape.kv_heads = 3;
    assert_refused_as(&shape, "HeadGroups { q_heads: 4, kv_heads: 3 }");
}

#[test]
fn zero_top_k_block_size_bad_scale_and_bad_key_windows_are_config_errors() {
    let shape = small();
    for (config, word) in [
        (MobaConfig::new(4, 0), "top_k"),
        (MobaConfig::new(0, 2), "block_size"),
        (MobaConfig::new(4, 2).with_scale(f32::NAN), "scale"),
        (MobaConfig::new(4, 2).with_scale(-1.0), "scale"),
        (MobaConfig::key_window(4).with_causal(false), "key window"),
        (
            MobaConfig {
                top_k: 3,
                ..MobaConfig::key_window(4)
            },
            "key window",
        ),
    ] {
        let err = run_on_halves(&shape, &config);
        assert!(
            matches!(&err, MobaError::Config(m) if m.contains(word)),
            "{err}"
        );
    }
}

#[test]
fn empty_dimensions_are_named() {
    for (shape, what) in [
        (Shape::prefill(0, 2, 8, 4), "batch"),
        (Shape::prefill(1, 2, 0, 4), "q_len"),
        (Shape::prefill(1, 2, 8, 0), "head_dim"),
    ] {
        let err = run_on_halves(&shape, &MobaConfig::new(4, 2));
        assert!(
            matches!(err, MobaError::Empty { what: w } if w == what),
            "{err}"
        );
    }
}

#[test]
fn more_queries_than_keys_is_refused() {
    let mut shape = small();
    shape.q_len = 9;
    assert_refused_as(&shape, "QueryLongerThanKeys { q_len: 9, kv_len: 8 }");
}

#[test]
fn nan_and_infinity_in_inputs_are_found() {
    let shape = small();
    // A NaN in q, then an infinity in the buffer passed as k and v (k is checked first).
    for (bad_tensor, bad_index, value) in [("q", 5, f32::NAN), ("k", 7, f32::INFINITY)] {
        let (mut q, mut kv) = halves(&shape);
        let bad = if bad_tensor == "q" { &mut q } else { &mut kv };
        bad[bad_index] = value;
        let err = run(&shape, &MobaConfig::new(4, 2), &q, &kv, &kv);
        let MobaError::NonFinite { tensor, index, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!((*tensor, *index), (bad_tensor, bad_index), "{err}");
    }
}

#[test]
fn one_group_over_the_binding_limit_names_the_limit_and_the_excess() {
    let binding = gpu()
        .limits()
        .max_storage_buffer_binding_size
        .min(u32::MAX as u64);
    let kv_len = (binding / (64 * 4)) as usize + 1; // one group's keys: just over the limit
    let shape = Shape {
        q_len: 1,
        ..Shape::prefill(1, 1, kv_len, 64)
    };
    let config = MobaConfig::new(4096, 2);
    let err = MobaForward::groups_per_call(gpu(), &shape, &config).unwrap_err();
    let MobaError::LimitExceeded { limit, excess, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(*limit, "max_storage_buffer_binding_size");
    assert_eq!(*excess, 64 * 4 - (binding % 256));
    assert!(err.to_string().contains("buffer `k`"), "{err}");
    assert!(MobaForward::new(gpu(), &shape, &config).is_err());
    assert!(DenseForward::new(gpu(), &shape, &config).is_err());
}

#[test]
fn buffers_too_small_for_the_shape_are_refused() {
    let shape = Shape::prefill(1, 2, 16, 8);
    let config = MobaConfig::new(4, 2);
    let forward = MobaForward::new(gpu(), &shape, &config).unwrap();
    let full = |n: usize| gpu().poisoned("full", n);
    let (q, k, v, o, lse, selection) = (
        full(shape.q_elems()),
        full(shape.kv_elems()),
        full(shape.kv_elems()),
        full(shape.q_elems() - 1),
        full(shape.q_rows()),
        full(shape.q_rows() * 2),
    );
    let mut encoder = gpu().device().create_command_encoder(&Default::default());
    let io = ForwardBuffers {
        q: &q,
        k: &k,
        v: &v,
        o: &o,
        lse: &lse,
        selection: &selection,
    };
    let err = forward.encode(&mut encoder, &io).unwrap_err();
    assert!(err.to_string().contains("o buffer bytes"), "{err}");
}

#[test]
fn the_buffer_api_needs_head_dims_in_fours() {
    let err = MobaForward::new(gpu(), &Shape::prefill(1, 1, 8, 6), &MobaConfig::new(4, 2))
        .err()
        .unwrap();
    assert!(matches!(err, MobaError::Unsupported(_)), "{err}");
}

#[test]
fn an_unknown_adapter_name_lists_the_adapters() {
    let request = moba::gpu::AdapterRequest {
        name: Some("no such gpu".into()),
        backends: None,
    };
    let err = moba::gpu::GpuContext::new_blocking(&request).err().unwrap();
    assert!(
        matches!(&err, MobaError::NoAdapter(m) if m.contains("no such gpu")),
        "{err}"
    );
    assert!(moba::gpu::parse_api("glide").is_err());
}

#[test]
fn a_forward_with_given_block_means_needs_their_buffer_and_the_mean_key_gate() {
    use moba::gpu::{AttentionKernel, ForwardIo};
    let shape = Shape {
        q_len: 1,
        ..Shape::prefill(1, 2, 16, 8)
    };
    let config = MobaConfig::new(4, 2);
    let forward =
        MobaForward::with_given_means(gpu(), &shape, &config, AttentionKernel::Portable).unwrap();
    let zeros = vec![0.5; shape.kv_elems()];
    let io = ForwardIo::new(gpu(), &zeros[..shape.q_elems()], &zeros, &zeros, 2, 2);
    let mut encoder = gpu().device().create_command_encoder(&Default::default());
    let err = forward.encode(&mut encoder, &io.buffers()).unwrap_err();
    assert!(err.to_string().contains("block means"), "{err}");
    let err = MobaForward::with_given_means(
        gpu(),
        &shape,
        &MobaConfig::sliding_window(4, 2),
        AttentionKernel::Portable,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("mean-key gate"), "{err}");
}
