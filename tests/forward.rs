//! The MoBA forward on the default adapter (lavapipe in CI) against the f64 reference, over
//! the shape grid of DESIGN §4, plus the invariants that pin the semantics.

mod common;

use common::{check_moba, gpu, inputs, shape, tolerance};
use moba::{MobaConfig, reference};

common::shape_grid_tests! { check_moba;
    non_causal: shape(1, 2, 1, 113, 113, 16), MobaConfig::new(16, 3).with_causal(false), 11;
    non_causal_decode_with_a_scale:
        shape(2, 1, 1, 50, 150, 64), MobaConfig::new(20, 2).with_causal(false).with_scale(0.3), 12;
    head_dim_not_a_multiple_of_four: shape(1, 1, 1, 50, 50, 6), MobaConfig::new(8, 2), 13;
    // The block means' lanes: 6 vec4 columns leave threads of a 64-wide workgroup idle; 66
    // are more columns than threads (one lane, two columns for some threads).
    head_dim_24: shape(1, 2, 1, 70, 70, 24), MobaConfig::new(16, 2), 14;
    head_dim_264: shape(1, 1, 1, 40, 40, 264), MobaConfig::new(8, 2), 15;
    // Split decode (at most 16 rows per kv group): blocks of several chunks of 64 keys, the
    // last one partial; 8 query heads per kv head at head dim 128.
    split_decode_gqa_8_chunked_blocks: shape(2, 16, 2, 1, 1000, 128), MobaConfig::new(200, 3), 16;
    split_decode_two_queries_non_causal:
        shape(1, 4, 1, 2, 300, 16), MobaConfig::new(64, 3).with_causal(false), 17;
    split_decode_top_k_beyond_the_blocks: shape(1, 2, 1, 1, 100, 16), MobaConfig::new(16, 20), 18;
    split_decode_sink_gate_head_dim_24: shape(1, 8, 4, 3, 90, 24), MobaConfig::sink(16, 1, 2), 19;
    split_decode_sixteen_rows: shape(1, 16, 1, 1, 257, 32), MobaConfig::new(64, 2), 20;
    // 7 chunks per block, top-4: more partials per row than the combine has lanes.
    split_decode_more_partials_than_lanes: shape(1, 4, 2, 1, 2000, 32), MobaConfig::new(448, 4), 21;
    // A key window (NSA's window branch): each row sees the 24 keys ending at it, the earlier
    // block's keys masked from the left; a window of one key is the row's own value.
    key_window_gqa: shape(1, 4, 2, 150, 150, 16), MobaConfig::key_window(24), 22;
    key_window_of_one_key: shape(1, 2, 1, 40, 40, 8), MobaConfig::key_window(1), 23;
    key_window_longer_than_the_keys: shape(1, 2, 1, 50, 50, 16), MobaConfig::key_window(64), 24;
    split_decode_key_window: shape(1, 8, 2, 3, 300, 32), MobaConfig::key_window(64), 25;
    // Windows longer than a query tile: a tile of late rows starts at its first row's window,
    // key tiles before it skipped (block_tiles.wgsl: tile_key_range).
    key_window_skips_key_tiles_every_row_masks: shape(1, 2, 1, 700, 700, 32), MobaConfig::key_window(200), 26;
    // The last tile of the previous block's list holds the block's last row alone, whose
    // window is its own block: it keeps one key tile, all masked.
    key_window_tile_of_a_row_that_sees_none_of_the_block: shape(1, 2, 2, 129, 1024, 32), MobaConfig::key_window(512), 27;
}

/// Checks GPU output against an independent dense attention at the tolerance.
fn assert_matches_dense(
    got: &moba::gpu::GpuForward,
    want: &reference::Forward,
    naive_o_error: f64,
) {
    let error = reference::max_abs_error(&got.o, &want.o);
    let bound = tolerance(naive_o_error);
    assert!(error <= bound, "error {error:e} > bound {bound:e}");
}

#[test]
fn top_k_covering_every_block_is_dense_causal_attention() {
    let shape = shape(1, 2, 1, 96, 96, 16);
    let (q, k, v) = inputs(&shape, 20);
    for config in [
        MobaConfig::new(16, 6),
        MobaConfig::new(96, 1),
        MobaConfig::new(500, 2),
    ] {
        let dense =
            reference::dense_forward([&q, &k, &v], &shape, config.scale_for(16), true).unwrap();
        let exact = reference::forward(&q, &k, &v, &shape, &config).unwrap();
        let close = dense
            .o
            .iter()
            .zip(&exact.o)
            .all(|(a, b)| (a - b).abs() < 1e-12);
        assert!(close, "{config:?}: reference MoBA differs from dense");
        let got = gpu()
            .block_on(gpu().moba_forward(&q, &k, &v, &shape, &config))
            .unwrap();
        let (naive, _) = common::naive([&q, &k, &v], &shape, &config, &exact.selection, |x| x);
        assert_matches_dense(&got, &dense, reference::max_abs_error(&naive, &dense.o));
    }
}

#[test]
fn top_1_is_block_diagonal_causal_attention() {
    let (block, blocks) = (16, 5);
    let full = shape(1, 1, 1, block * blocks, block * blocks, 16);
    let (q, k, v) = inputs(&full, 21);
    let config = MobaConfig::new(block, 1);
    let got = gpu()
        .block_on(gpu().moba_forward(&q, &k, &v, &full, &config))
        .unwrap();
    // Each block alone, as its own dense causal problem.
    let one = shape(1, 1, 1, block, block, 16);
    for b in 0..blocks {
        let part = |x: &[f32]| x[b * block * 16..(b + 1) * block * 16].to_vec();
        let dense = reference::dense_forward(
            [&part(&q), &part(&k), &part(&v)],
            &one,
            config.scale_for(16),
            true,
        )
        .unwrap();
        let error =
            reference::max_abs_error(&got.o[b * block * 16..(b + 1) * block * 16], &dense.o);
        assert!(error < 1e-5, "block {b}: error {error:e}");
        assert!(
            got.selection[b * block..(b + 1) * block]
                .iter()
                .all(|&j| j == b as i32)
        );
    }
}

#[test]
fn same_bits_twice() {
    let shape = shape(1, 4, 2, 300, 300, 16);
    let (q, k, v) = inputs(&shape, 22);
    let config = MobaConfig::new(20, 3);
    let first = gpu()
        .block_on(gpu().moba_forward(&q, &k, &v, &shape, &config))
        .unwrap();
    let second = gpu()
        .block_on(gpu().moba_forward(&q, &k, &v, &shape, &config))
        .unwrap();
    let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&first.o), bits(&second.o));
    assert_eq!(bits(&first.lse), bits(&second.lse));
    assert_eq!(first.selection, second.selection);
}

#[test]
fn dense_kernel_matches_the_reference() {
    for (shape, causal) in [
        (shape(1, 2, 1, 77, 77, 16), true),
        (shape(2, 1, 1, 20, 90, 64), false),
        (shape(1, 2, 2, 5, 130, 16), true),
    ] {
        let (q, k, v) = inputs(&shape, 23);
        let config = MobaConfig::new(shape.kv_len, 1).with_causal(causal);
        let scale = config.scale_for(shape.head_dim);
        let got = gpu()
            .block_on(gpu().dense_forward([&q, &k, &v], &shape, scale, causal))
            .unwrap();
        let want = reference::dense_forward([&q, &k, &v], &shape, scale, causal).unwrap();
        let all: Vec<i32> = vec![0; shape.q_rows()];
        let (naive, naive_lse) = common::naive([&q, &k, &v], &shape, &config, &all, |x| x);
        assert_matches_dense(&got, &want, reference::max_abs_error(&naive, &want.o));
        let lse_error = reference::max_abs_error(&got.lse, &want.lse);
        assert!(
            lse_error <= tolerance(reference::max_abs_error(&naive_lse, &want.lse)),
            "lse error {lse_error:e}"
        );
    }
}

#[test]
fn problems_over_the_binding_limit_are_split_over_groups() {
    // 40 groups of 4 MiB keys and values: more than lavapipe's 128 MiB binding in all.
    let shape = shape(1, 40, 40, 1, 262_144, 4);
    let config = MobaConfig::new(4096, 2);
    let per_call = moba::gpu::MobaForward::groups_per_call(gpu(), &shape, &config).unwrap();
    let binding = gpu().limits().max_storage_buffer_binding_size;
    if shape.kv_elems() as u64 * 4 <= binding {
        eprintln!("skipped: this adapter binds {binding} bytes, the problem fits one call");
        return;
    }
    assert!(per_call < 40, "{per_call} groups per call");
    let (q, k, v) = inputs(&shape, 24);
    let got = gpu()
        .block_on(gpu().moba_forward(&q, &k, &v, &shape, &config))
        .unwrap();
    let want = reference::forward(&q, &k, &v, &shape, &config).unwrap();
    assert_eq!(got.selection, want.selection);
    let error = reference::max_abs_error(&got.o, &want.o);
    assert!(error < 1e-4, "error {error:e}");
}

#[test]
fn ties_go_to_the_more_recent_block() {
    // Blocks 0, 1 and 2 hold the same keys, so their means tie exactly (in f32 too). A query
    // in block 3 keeps its own block and fills the other places from the most recent.
    let (block, d) = (4, 4);
    let shape = shape(1, 1, 1, 16, 16, d);
    let (_, _, v) = inputs(&shape, 25);
    let tied: Vec<f32> = (0..block * d).map(|i| 0.5 + 0.01 * i as f32).collect();
    let k = [tied.clone(), tied.clone(), tied, vec![0.1; block * d]].concat();
    let q = vec![1.0f32; shape.q_elems()];
    for (config, last_row) in [
        (MobaConfig::new(block, 2), vec![2, 3]),
        (MobaConfig::new(block, 3), vec![1, 2, 3]),
        (MobaConfig::new(block, 2).with_causal(false), vec![1, 2]),
    ] {
        let got = gpu()
            .block_on(gpu().moba_forward(&q, &k, &v, &shape, &config))
            .unwrap();
        let want = reference::forward(&q, &k, &v, &shape, &config).unwrap();
        let top_k = config.top_k;
        assert_eq!(
            want.selection[15 * top_k..],
            last_row,
            "reference {config:?}"
        );
        assert_eq!(got.selection, want.selection, "{config:?}");
    }
}

/// A decode's gate runs one workgroup per row, its lanes splitting the blocks: over 300
/// blocks (several per lane) it chooses what the reference does, for every gate, causal or
/// not, and on exact ties (every block mean the same) the most recent blocks, on every
/// adapter.
#[test]
fn decode_gates_split_over_a_workgroup_choose_as_the_reference() {
    // 8 query heads of one kv head, 2 queries each: 16 rows in the group, a decode.
    let shape = shape(1, 8, 1, 2, 3000, 16);
    let configs = [
        MobaConfig::new(10, 8),
        MobaConfig::new(10, 8).with_causal(false),
        MobaConfig::sink(10, 2, 6),
        MobaConfig::sliding_window(10, 5),
    ];
    for gpu in common::every_gpu() {
        let gpu = &*gpu;
        for (seed, config) in configs.into_iter().enumerate() {
            common::check_moba_on(gpu, shape, config, 60 + seed as u64);
        }
        let (q, _, v) = inputs(&shape, 70);
        let k = vec![0.5f32; shape.kv_elems()];
        for config in &configs[..2] {
            let got = gpu
                .block_on(gpu.moba_forward(&q, &k, &v, &shape, config))
                .unwrap();
            let want = reference::selection(&q, &k, &shape, config);
            assert_eq!(got.selection, want, "{}: {config:?}", gpu.describe());
        }
    }
}

/// A decode whose gate reads the block means from the caller (as a KV cache keeps them)
/// computes what the reference does, on every adapter: split decodes and a forward over the
/// inverted lists.
#[test]
fn a_forward_with_given_block_means_matches_the_reference() {
    use moba::gpu::{AttentionKernel, ForwardIo, MobaForward};
    for gpu in common::every_gpu() {
        let gpu = &*gpu;
        for (seed, (shape, config)) in [
            (shape(2, 8, 2, 1, 300, 16), MobaConfig::new(64, 3)),
            (shape(1, 2, 1, 40, 100, 16), MobaConfig::new(16, 2)),
        ]
        .into_iter()
        .enumerate()
        {
            let (q, k, v) = inputs(&shape, 40 + seed as u64);
            let means: Vec<f32> = reference::block_means(&k, &shape, config.block_size)
                .iter()
                .map(|&x| x as f32)
                .collect();
            let io = ForwardIo::new(gpu, &q, &k, &v, shape.q_rows(), config.top_k);
            let forward =
                MobaForward::with_given_means(gpu, &shape, &config, AttentionKernel::Portable)
                    .unwrap();
            let means = gpu.upload("block means", &means);
            let mut encoder = gpu.device().create_command_encoder(&Default::default());
            forward
                .encode_with_means(&mut encoder, &io.buffers(), &means, None)
                .unwrap();
            gpu.submit_and_wait(encoder.finish()).unwrap();
            let o: Vec<f32> = gpu.block_on(gpu.download(&io.o)).unwrap();
            let selection: Vec<i32> = gpu.block_on(gpu.download(&io.selection)).unwrap();
            let want = reference::forward(&q, &k, &v, &shape, &config).unwrap();
            assert_eq!(selection, want.selection, "{}: {shape:?}", gpu.describe());
            let naive = common::naive([&q, &k, &v], &shape, &config, &want.selection, |x| x).0;
            let error = reference::max_abs_error(&o, &want.o);
            let bound = tolerance(reference::max_abs_error(&naive, &want.o));
            assert!(
                error <= bound,
                "{}: {shape:?}: o error {error:e} > {bound:e}",
                gpu.describe()
            );
        }
    }
}

/// The grid runs the fastest forward each adapter has, so on CI's two adapters it checks both
/// f32 forwards: lavapipe's Vulkan has subgroups (the lanes kernel at head dims that are
/// multiples of 16), OpenGL has none (the portable kernel).
#[test]
fn the_grid_runs_the_subgroup_kernel_where_the_adapter_has_subgroups() {
    use moba::gpu::AttentionKernel;
    for gpu in common::every_gpu() {
        let gpu = &*gpu;
        let caps = gpu.caps();
        if caps.cooperative_subgroup_size.is_some() {
            continue; // tests/cooperative.rs checks those adapters
        }
        let subgroups = caps.subgroup_min_size.is_some_and(|size| size >= 4);
        if gpu.is_cpu() {
            // Mesa's CPU drivers: subgroups on Vulkan, none on OpenGL.
            assert_eq!(subgroups, gpu.info().backend == wgpu::Backend::Vulkan);
        }
        for (head_dim, lanes) in [
            (16, true),
            (64, true),
            (128, true),
            (24, false),
            (264, false),
        ] {
            let want = match subgroups && lanes {
                true => AttentionKernel::Subgroup,
                false => AttentionKernel::Portable,
            };
            let got = AttentionKernel::best(caps, head_dim);
            assert_eq!(got, want, "{}: head_dim {head_dim}", gpu.describe());
        }
    }
}
