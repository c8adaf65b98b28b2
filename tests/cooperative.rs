//! The cooperative-matrix (tensor core) path, on adapters that have it (skipped elsewhere,
//! e.g. lavapipe): the load/store conventions the kernel relies on, and the MoBA forward
//! against the reference at an f16 tolerance.

mod common;

use common::{gpu, inputs};
use moba::gpu::{AttentionKernel, ForwardBuffers, GpuContext, MobaForward};
use moba::{MobaConfig, Shape, reference};

fn cooperative_gpu() -> Option<&'static GpuContext> {
    let gpu = gpu();
    if gpu.cooperative_subgroup_size().is_none() {
        eprintln!("skipped: {} has no cooperative matrices", gpu.describe());
        return None;
    }
    Some(gpu)
}

/// Six 16x16 products through workgroup memory, one per pattern the kernel uses:
/// 0: A, B, C row-major; 1: B column-major (so B = b^T); 2: C stored column-major;
/// 3: C starting from the zero-value constructor instead of loaded zeros;
/// 4: A (16x32) . B^T accumulated over two k steps in a function, at dynamic offsets;
/// 5: variant 0 accumulated into an array of accumulators indexed in a loop.
const PROBE: &str = r#"
enable f16;
enable wgpu_cooperative_matrix;
@group(0) @binding(0) var<storage, read> a_in: array<f32>;
@group(0) @binding(1) var<storage, read> b_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> c_out: array<f32>;
var<workgroup> a: array<f16, 512>;
var<workgroup> b: array<f16, 512>;
var<workgroup> c: array<f32, 256>;

fn emit(variant: u32, lid: u32) {
    workgroupBarrier();
    for (var i = lid; i < 256u; i += 32u) { c_out[variant * 256u + i] = c[i]; }
    workgroupBarrier();
    for (var i = lid; i < 256u; i += 32u) { c[i] = 0.0; }
    workgroupBarrier();
}

fn accumulate(zero: coop_mat16x16<f32, C>, steps: u32) -> coop_mat16x16<f32, C> {
    var acc = zero;
    for (var d = 0u; d < steps * 16u; d += 16u) {
        // a: 16 rows x 32, b: 8 "keys" rows x 32 read as B = b^T (the score product).
        let ma = coopLoadT<coop_mat16x16<f16, A>>(&a[d], 32u);
        let mb = coopLoad<coop_mat16x16<f16, B>>(&b[d], 32u);
        acc = coopMultiplyAdd(ma, mb, acc);
    }
    return acc;
}

@compute @workgroup_size(32)
fn main(@builtin(local_invocation_index) lid: u32) {
    for (var i = lid; i < 512u; i += 32u) { a[i] = f16(a_in[i]); b[i] = f16(b_in[i]); }
    for (var i = lid; i < 256u; i += 32u) { c[i] = 0.0; }
    workgroupBarrier();
    let ma = coopLoadT<coop_mat16x16<f16, A>>(&a[0], 16u);
    let zero = coopLoadT<coop_mat16x16<f32, C>>(&c[0], 16u);
    coopStoreT(coopMultiplyAdd(ma, coopLoadT<coop_mat16x16<f16, B>>(&b[0], 16u), zero), &c[0], 16u);
    emit(0u, lid);
    coopStoreT(coopMultiplyAdd(ma, coopLoad<coop_mat16x16<f16, B>>(&b[0], 16u), zero), &c[0], 16u);
    emit(1u, lid);
    coopStore(coopMultiplyAdd(ma, coopLoadT<coop_mat16x16<f16, B>>(&b[0], 16u), zero), &c[0], 16u);
    emit(2u, lid);
    coopStoreT(coopMultiplyAdd(ma, coopLoadT<coop_mat16x16<f16, B>>(&b[0], 16u), coop_mat16x16<f32, C>()), &c[0], 16u);
    emit(3u, lid);
    coopStoreT(accumulate(zero, 2u), &c[0], 16u);
    emit(4u, lid);
    var many: array<coop_mat16x16<f32, C>, 2>;
    for (var t = 0u; t < 2u; t++) {
        many[t] = zero;
    }
    for (var t = 0u; t < 2u; t++) {
        many[t] = coopMultiplyAdd(ma, coopLoadT<coop_mat16x16<f16, B>>(&b[0], 16u), many[t]);
    }
    coopStoreT(many[1], &c[0], 16u);
    emit(5u, lid);
}
"#;

#[test]
fn load_and_store_conventions() {
    let Some(gpu) = cooperative_gpu() else { return };
    // Small integers: exact in f16 and in the f32 products.
    let a: Vec<f32> = (0..512).map(|i| ((i * 7) % 5) as f32 - 2.0).collect();
    let b: Vec<f32> = (0..512).map(|i| ((i * 3) % 7) as f32 - 3.0).collect();
    let device = gpu.device();
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("probe"),
        source: wgpu::ShaderSource::Wgsl(PROBE.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("probe"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let (a_buffer, b_buffer, c_buffer) = (gpu.upload("a", &a), gpu.upload("b", &b), gpu.poisoned("c", 6 * 256));
    let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry { binding: 0, resource: a_buffer.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 1, resource: b_buffer.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 2, resource: c_buffer.as_entire_binding() },
        ],
    });
    let mut encoder = device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(1, 1, 1);
    }
    gpu.submit_and_wait(encoder.finish()).unwrap();
    let c: Vec<f32> = pollster::block_on(gpu.download(&c_buffer)).unwrap();
    let product = |b_at: &dyn Fn(usize, usize) -> f32| -> Vec<f32> {
        (0..256).map(|i| (0..16).map(|k| a[(i / 16) * 16 + k] * b_at(k, i % 16)).sum()).collect()
    };
    let row_major = product(&|k, n| b[k * 16 + n]);
    let b_transposed = product(&|k, n| b[n * 16 + k]);
    let stored_column_major: Vec<f32> = (0..256).map(|i| row_major[(i % 16) * 16 + i / 16]).collect();
    // a as 16 x 32 row-major, b as 16 x 32 row-major (one row per key): C = a . b^T.
    let scores: Vec<f32> = (0..256)
        .map(|i| (0..32).map(|d| a[(i / 16) * 32 + d] * b[(i % 16) * 32 + d]).sum())
        .collect();
    let results = [
        ("row-major A, B, C", &c[..256] == row_major.as_slice()),
        ("coopLoad reads column-major", &c[256..512] == b_transposed.as_slice()),
        ("coopStore writes column-major", &c[512..768] == stored_column_major.as_slice()),
        ("zero-value accumulator", &c[768..1024] == row_major.as_slice()),
        ("two-step accumulation in a function", &c[1024..1280] == scores.as_slice()),
        ("array of accumulators", &c[1280..] == row_major.as_slice()),
    ];
    for (what, ok) in results {
        eprintln!("{what}: {}", if ok { "as expected" } else { "DIFFERENT" });
    }
    if &c[1024..1280] != scores.as_slice() {
        eprintln!("got {:?}\nwant {:?}", &c[1024..1040], &scores[..16]);
    }
    assert!(results.iter().all(|(_, ok)| *ok));
}

#[test]
fn moba_forward_matches_the_reference_at_f16_precision() {
    let Some(gpu) = cooperative_gpu() else { return };
    let mut failures = 0;
    for (shape, config) in [
        (Shape::prefill(1, 1, 16, 32), MobaConfig::new(16, 1).with_causal(false)),
        (Shape::prefill(1, 1, 16, 32), MobaConfig::new(16, 1)),
        (Shape::prefill(1, 1, 64, 32), MobaConfig::new(16, 2)),
        (Shape::prefill(1, 2, 300, 64), MobaConfig::new(32, 3)),
        (Shape { kv_heads: 1, ..Shape::prefill(2, 4, 500, 128) }, MobaConfig::new(64, 3)),
        (Shape { q_len: 7, ..Shape::prefill(1, 2, 200, 64) }, MobaConfig::new(32, 2)),
        (Shape::prefill(1, 2, 200, 64), MobaConfig::new(32, 2).with_causal(false)),
    ] {
        let (q, k, v) = inputs(&shape, 51);
        let want = reference::forward(&q, &k, &v, &shape, &config).unwrap();
        let forward = MobaForward::with_kernel(gpu, &shape, &config, AttentionKernel::Cooperative).unwrap();
        let (qb, kb, vb) = (gpu.upload("q", &q), gpu.upload("k", &k), gpu.upload("v", &v));
        let (ob, lb) = (gpu.poisoned("o", shape.q_elems()), gpu.poisoned("lse", shape.q_rows()));
        let sb = gpu.poisoned("selection", shape.q_rows() * config.top_k);
        let io = ForwardBuffers { q: &qb, k: &kb, v: &vb, o: &ob, lse: &lb, selection: &sb };
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        forward.encode(&mut encoder, &io).unwrap();
        gpu.submit_and_wait(encoder.finish()).unwrap();
        let o: Vec<f32> = pollster::block_on(gpu.download(&ob)).unwrap();
        let lse: Vec<f32> = pollster::block_on(gpu.download(&lb)).unwrap();
        let d = shape.head_dim;
        let bad_rows: Vec<usize> = (0..shape.q_rows())
            .filter(|&r| reference::max_abs_error(&o[r * d..(r + 1) * d], &want.o[r * d..(r + 1) * d]) > 2e-2)
            .collect();
        let o_error = reference::max_abs_error(&o, &want.o);
        let lse_error = reference::max_abs_error(&lse, &want.lse);
        eprintln!(
            "{shape:?} {config:?}: o error {o_error:.2e}, lse error {lse_error:.2e}, {} bad rows, first {:?}",
            bad_rows.len(),
            &bad_rows[..bad_rows.len().min(8)]
        );
        if let Some(&r) = bad_rows.first() {
            eprintln!("  row {r}: got {:?}\n  want {:?}\n  lse got {} want {}", &o[r * d..r * d + 4], &want.o[r * d..r * d + 4], lse[r], want.lse[r]);
        }
        // f16 inputs and probabilities with f32 accumulation: errors near 1e-3.
        failures += usize::from(!(o_error < 1e-2 && lse_error < 1e-2));
    }
    assert_eq!(failures, 0);
}
