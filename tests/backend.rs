//! MoBA inside burn: the ndarray (generic tensor ops), wgpu (WGSL template kernels) and
//! Fusion backends against the f64 reference, gradients through `Autodiff`, and the
//! `MobaAttention` module. GPU backends run on lavapipe in CI.

mod common;

use burn::backend::wgpu::{CubeBackend, WgpuDevice, WgpuRuntime};
use burn::backend::{Autodiff, NdArray, Wgpu};
use burn::cubecl::Runtime;
use burn::module::Module;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::{
    DType, Distribution, Element, Int, Tensor, TensorCreationOptions, TensorData, f16,
};
use common::{naive, naive_backward, shape, tolerance};
use moba::backend::{
    ContextShard, MobaBackend, burn_wgpu_device, moba_attention, moba_attention_context_parallel,
    moba_attention_varlen, moba_attention_with_means, moba_attention_with_selection,
    moba_attention_with_stats,
};
use moba::gpu::{AdapterRequest, AttentionKernel};
use moba::module::{AttentionKind, KvCache, MobaAttentionConfig};
use moba::reference::Precision;
use moba::{MobaConfig, MobaError, Shape, random, reference};

/// burn's wgpu backend without fusion: the template kernels directly.
type WgpuPlain = CubeBackend<WgpuRuntime, f32, i32, u32>;

/// A tensor of the backend's float type (burn's default float type is per device, and is
/// whichever backend asked first).
fn tensor<B: MobaBackend>(data: &[f32], dims: [usize; 4], device: &B::Device) -> Tensor<B, 4> {
    let float = TensorCreationOptions::new(device.clone()).with_dtype(B::FloatElem::dtype());
    Tensor::from_data(TensorData::new(data.to_vec(), dims), float)
}

/// burn's wgpu device on the default adapter, as `moba` opens it (Mesa's GL where a machine
/// has no Vulkan driver: burn's own default asks for Vulkan only).
fn wgpu_device() -> WgpuDevice {
    burn_wgpu_device(&Default::default()).unwrap().0
}

fn values<B: MobaBackend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor.into_data().convert::<f32>().to_vec().unwrap()
}

/// The problems every backend is checked on: odd lengths, partial blocks, GQA, decode,
/// non-causal, top-k past the block count, odd head dims, the static gates.
fn grid() -> Vec<(Shape, MobaConfig)> {
    vec![
        (shape(1, 1, 1, 1, 1, 16), MobaConfig::new(4, 2)),
        (shape(2, 2, 1, 33, 33, 16), MobaConfig::new(8, 2)),
        (shape(1, 4, 2, 7, 40, 16), MobaConfig::new(8, 3)),
        (shape(1, 2, 2, 33, 33, 4), MobaConfig::new(8, 1)),
        (shape(1, 2, 1, 30, 30, 6), MobaConfig::new(7, 9)),
        (
            shape(1, 2, 1, 20, 35, 16),
            MobaConfig::new(8, 2).with_causal(false),
        ),
        (shape(1, 2, 1, 40, 40, 8), MobaConfig::sliding_window(8, 2)),
        (shape(1, 2, 1, 40, 40, 8), MobaConfig::sink(8, 1, 2)),
    ]
}

/// Forward and gradients of one backend against the reference over the grid, on inputs
/// that the backend's float type holds exactly. Tolerance: twice the error of the
/// straightforward implementation in that type (`common::naive`: every product rounded to
/// it, as f16 attention computes; nothing rounded for f32), with a floor of 1e-4 for f32
/// arithmetic against f64 (errors of order 1e-6 on these unit-variance problems, room for
/// the sums of a GQA group), while any wrong key, block or mask is off by 1e-1 or more.
fn check_backend<B: MobaBackend>(name: &str, device: &B::Device, float: Precision) {
    let round = |x: f32| float.round(x);
    let bound =
        |naive: &[f32], want: &[f64]| tolerance(reference::max_abs_error(naive, want)).max(1e-4);
    let exact = |data: Vec<f32>| -> Vec<f32> { data.into_iter().map(round).collect() };
    for (seed, (shape, config)) in grid().into_iter().enumerate() {
        let seed = seed as u64 * 10;
        let (q, k, v) = (
            exact(random::normal(shape.q_elems(), seed)),
            exact(random::normal(shape.kv_elems(), seed + 1)),
            exact(random::normal(shape.kv_elems(), seed + 2)),
        );
        let dout = exact(random::normal(shape.q_elems(), seed + 3));
        let want = reference::forward(&q, &k, &v, &shape, &config).unwrap();
        let (qd, kd) = (shape.q_dims(), shape.kv_dims());

        let out = moba_attention_with_stats(
            tensor::<B>(&q, qd, device),
            tensor::<B>(&k, kd, device),
            tensor::<B>(&v, kd, device),
            &config,
        )
        .unwrap();
        let selection: Vec<i32> = out.selection.into_data().convert::<i32>().to_vec().unwrap();
        assert_eq!(selection, want.selection, "{name} {shape:?}: selection");
        let (naive_o, _) = naive([&q, &k, &v], &shape, &config, &want.selection, round);
        let o_error = reference::max_abs_error(&values(out.o), &want.o);
        // lse is f32 on every backend.
        let lse_error = reference::max_abs_error(&values(out.lse), &want.lse);
        assert!(
            o_error <= bound(&naive_o, &want.o),
            "{name} {shape:?} {config:?}: o error {o_error:e}"
        );
        assert!(
            lse_error < 1e-4,
            "{name} {shape:?}: lse error {lse_error:e}"
        );

        // Gradients of sum(o * dout) through Autodiff<B>.
        let grads = reference::backward(&q, &k, &v, &dout, &shape, &config).unwrap();
        let [qt, kt, vt] = [(&q, qd), (&k, kd), (&v, kd)]
            .map(|(data, dims)| tensor::<Autodiff<B>>(data, dims, device).require_grad());
        let o = moba_attention(qt.clone(), kt.clone(), vt.clone(), &config).unwrap();
        let gradients = (o * tensor::<Autodiff<B>>(&dout, qd, device))
            .sum()
            .backward();
        let naive = naive_backward([&q, &k, &v], &dout, &shape, &config, &want.selection, round);
        for (label, t, naive, want) in [
            ("dq", &qt, &naive.0, &grads.dq),
            ("dk", &kt, &naive.1, &grads.dk),
            ("dv", &vt, &naive.2, &grads.dv),
        ] {
            let gradient = t.grad(&gradients).expect("a gradient");
            assert_eq!(gradient.dtype(), t.dtype(), "{name}: {label} dtype");
            let error = reference::max_abs_error(&values(gradient), want);
            assert!(
                error <= bound(naive, want),
                "{name} {shape:?} {config:?}: {label} error {error:e}"
            );
        }
    }
}

#[test]
fn ndarray_matches_the_reference() {
    check_backend::<NdArray>("ndarray", &Default::default(), Precision::F32);
}

#[test]
fn wgpu_template_kernels_match_the_reference() {
    check_backend::<WgpuPlain>("wgpu", &wgpu_device(), Precision::F32);
}

#[test]
fn fusion_wgpu_matches_the_reference() {
    check_backend::<Wgpu>("fusion wgpu", &wgpu_device(), Precision::F32);
}

/// A varlen (packed) batch of sequences of 1, 7, 40 and 100 tokens (and an empty one)
/// against the reference's per-sequence run: o, lse, the selection (block ids from each
/// sequence's first) and the gradients through `Autodiff<B>`, at `check_backend`'s f32 floor
/// (the straightforward yardstick per sequence is `tests/varlen.rs`'s).
fn check_varlen<B: MobaBackend>(name: &str, device: &B::Device) {
    let cu = [0, 1, 8, 8, 48, 148];
    let packed = shape(1, 4, 2, 148, 148, 16);
    for (seed, config) in [MobaConfig::new(16, 3), MobaConfig::sink(16, 1, 2)]
        .into_iter()
        .enumerate()
    {
        let seed = 40 + seed as u64;
        let (q, k, v) = common::inputs(&packed, seed);
        let dout = random::normal(packed.q_elems(), seed + 1);
        let want = reference::varlen_forward(&q, &k, &v, &packed, &cu, &config).unwrap();
        let grads = reference::varlen_backward(&q, &k, &v, &dout, &packed, &cu, &config).unwrap();
        let (qd, kd) = (packed.q_dims(), packed.kv_dims());
        let [qt, kt, vt] = [(&q, qd), (&k, kd), (&v, kd)]
            .map(|(data, dims)| tensor::<Autodiff<B>>(data, dims, device).require_grad());
        let out = moba_attention_varlen(qt.clone(), kt.clone(), vt.clone(), &cu, &config).unwrap();
        let selection: Vec<i32> = out.selection.into_data().convert::<i32>().to_vec().unwrap();
        assert_eq!(selection, want.selection, "{name} {config:?}: selection");
        let lse_error = reference::max_abs_error(&values(out.lse), &want.lse);
        assert!(
            lse_error < 1e-4,
            "{name} {config:?}: lse error {lse_error:e}"
        );
        let o_error = reference::max_abs_error(&values(out.o.clone()), &want.o);
        assert!(o_error < 1e-4, "{name} {config:?}: o error {o_error:e}");
        let gradients = (out.o * tensor::<Autodiff<B>>(&dout, qd, device))
            .sum()
            .backward();
        for (label, t, want) in [
            ("dq", &qt, &grads.dq),
            ("dk", &kt, &grads.dk),
            ("dv", &vt, &grads.dv),
        ] {
            let gradient = t.grad(&gradients).expect("a gradient");
            let error = reference::max_abs_error(&values(gradient), want);
            assert!(error < 1e-4, "{name} {config:?}: {label} error {error:e}");
        }
    }
}

#[test]
fn varlen_batches_match_the_reference() {
    check_varlen::<NdArray>("ndarray", &Default::default());
    check_varlen::<WgpuPlain>("wgpu", &wgpu_device());
    check_varlen::<Wgpu>("fusion wgpu", &wgpu_device());
}

/// One sequence split by position over `devices` (in turn), in shards of lengths that are
/// not whole blocks: each shard's o and its q, k and v gradients, put together, against the
/// reference of the whole sequence on one device, at `check_backend`'s bound.
fn check_context_parallel<B: MobaBackend>(name: &str, devices: &[B::Device]) {
    let lengths = [72, 64, 64];
    let len: usize = lengths.iter().sum();
    let shape = shape(1, 4, 2, len, len, 16);
    let d = shape.head_dim;
    for (seed, config) in [MobaConfig::new(32, 3), MobaConfig::sliding_window(32, 2)]
        .into_iter()
        .enumerate()
    {
        let seed = 100 + seed as u64 * 10;
        let [q, k, v, dout] = [0, 1, 2, 3].map(|i| {
            let elems = [shape.q_elems(), shape.kv_elems()][(i == 1 || i == 2) as usize];
            random::normal(elems, seed + i)
        });
        let want = reference::forward(&q, &k, &v, &shape, &config).unwrap();
        let grads = reference::backward(&q, &k, &v, &dout, &shape, &config).unwrap();
        let mut start = 0;
        let mut shards = Vec::new();
        let mut douts = Vec::new();
        for (i, &rows) in lengths.iter().enumerate() {
            let device = &devices[i % devices.len()];
            let tokens = start..start + rows;
            start += rows;
            let cut = |x: &[f32], heads| {
                let part = reference::cut_rows(x, heads, len, d, &tokens);
                tensor::<Autodiff<B>>(&part, [1, heads, rows, d], device)
            };
            let (hq, hkv) = (shape.q_heads, shape.kv_heads);
            shards.push(ContextShard {
                q: cut(&q, hq).require_grad(),
                k: cut(&k, hkv).require_grad(),
                v: cut(&v, hkv).require_grad(),
            });
            douts.push(cut(&dout, hq));
        }
        let o = moba_attention_context_parallel(shards.clone(), &config).unwrap();
        let first = &devices[0];
        let loss = (o.iter().zip(douts))
            .map(|(o, dout)| (o.clone() * dout).sum().to_device(first))
            .reduce(|a, b| a + b)
            .unwrap();
        let gradients = loss.backward();
        // Each shard's rows back in one tensor, on the first device.
        let whole = |parts: Vec<Tensor<Autodiff<B>, 4>>| {
            let parts = parts.into_iter().map(|t| t.to_device(first)).collect();
            values(Tensor::cat(parts, 2))
        };
        let gradient = |pick: fn(&ContextShard<Autodiff<B>>) -> &Tensor<Autodiff<B>, 4>| {
            let parts = shards.iter().map(|s| {
                let gradient = pick(s).grad(&gradients).expect("a gradient");
                Tensor::<Autodiff<B>, 4>::from_inner(gradient)
            });
            whole(parts.collect())
        };
        let (naive_o, _) = naive([&q, &k, &v], &shape, &config, &want.selection, |x| x);
        let naive = naive_backward([&q, &k, &v], &dout, &shape, &config, &want.selection, |x| x);
        let bound = |naive: &[f32], want: &[f64]| {
            tolerance(reference::max_abs_error(naive, want)).max(1e-4)
        };
        for (label, got, naive, want) in [
            ("o", whole(o), &naive_o, &want.o),
            ("dq", gradient(|s| &s.q), &naive.0, &grads.dq),
            ("dk", gradient(|s| &s.k), &naive.1, &grads.dk),
            ("dv", gradient(|s| &s.v), &naive.2, &grads.dv),
        ] {
            let error = reference::max_abs_error(&got, want);
            assert!(
                error <= bound(naive, want),
                "{name} {config:?}: {label} error {error:e}"
            );
        }
    }
    // A non-causal query would need later shards' keys; shards must agree on their heads.
    let device = &devices[0];
    let zeros = |heads, rows| Tensor::<Autodiff<B>, 4>::zeros([1, heads, rows, 16], device);
    let shard = |kv_heads| ContextShard {
        q: zeros(4, 8),
        k: zeros(kv_heads, 8),
        v: zeros(kv_heads, 8),
    };
    let non_causal = MobaConfig::new(8, 2).with_causal(false);
    let error = moba_attention_context_parallel(vec![shard(2)], &non_causal).unwrap_err();
    assert!(error.to_string().contains("causal"), "{error}");
    let config = MobaConfig::new(8, 2);
    let error = moba_attention_context_parallel(vec![shard(2), shard(1)], &config).unwrap_err();
    assert!(error.to_string().contains("shard 1: k"), "{error}");
}

#[test]
fn context_parallel_shards_match_the_reference_of_the_whole_sequence() {
    check_context_parallel::<NdArray>("ndarray", &[Default::default(), Default::default()]);
    let (first, adapter) = burn_wgpu_device(&Default::default()).unwrap();
    check_context_parallel::<Wgpu>("fusion wgpu", std::slice::from_ref(&first));
    // Two burn devices of wgpu (a second request opens its own device on the adapter):
    // burn 0.21 cannot move tensors between them, which is an error, not a panic.
    let request = AdapterRequest {
        name: Some(adapter.name),
        backends: Some(wgpu::Backends::from(adapter.backend)),
    };
    let (second, _) = burn_wgpu_device(&request).unwrap();
    assert!(first != second, "two burn devices");
    let shards = [&first, &second].map(|device| {
        let zeros = |heads| Tensor::<Wgpu, 4>::zeros([1, heads, 8, 16], device);
        ContextShard {
            q: zeros(2),
            k: zeros(1),
            v: zeros(1),
        }
    });
    let error = moba_attention_context_parallel(shards.into(), &MobaConfig::new(8, 2)).unwrap_err();
    assert!(matches!(error, MobaError::Unsupported(_)), "{error}");
    assert!(error.to_string().contains("cuda"), "{error}");
}

/// burn's wgpu device on a Vulkan, Metal or DX12 adapter with `shader-f16` (lavapipe has it),
/// opened apart from `wgpu_device()`: burn keeps one default float type per device.
fn f16_device() -> (WgpuDevice, wgpu::AdapterInfo) {
    let request = AdapterRequest {
        name: None,
        backends: Some(wgpu::Backends::PRIMARY),
    };
    let (device, adapter) = burn_wgpu_device(&request).expect("a Vulkan, Metal or DX12 adapter");
    let features = WgpuRuntime::client(&device).properties().features.clone();
    assert!(
        features.supports_type(f16::dtype()),
        "{} has no shader-f16 for the f16 tests",
        adapter.name
    );
    (device, adapter)
}

#[test]
fn f16_tensors_on_wgpu_match_the_reference() {
    let (device, adapter) = f16_device();
    // Mesa's CPU Vulkan (CI) has subgroups and shader-f16 and no cooperative matrices: f16
    // tensors run the subgroup kernels' f16 variant there (exact on them), f32 ones the f32
    // kernels.
    if adapter.device_type == wgpu::DeviceType::Cpu {
        let kernel = |dtype| moba::backend::attention_kernel(&device, 16, dtype);
        assert_eq!(kernel(DType::F16), AttentionKernel::SubgroupF16);
        assert_eq!(kernel(DType::F32), AttentionKernel::Subgroup);
    }
    check_backend::<CubeBackend<WgpuRuntime, f16, i32, u32>>("wgpu f16", &device, Precision::F16);
    check_backend::<Wgpu<f16>>("fusion wgpu f16", &device, Precision::F16);
}

/// The forward with the block means given (as a KV cache keeps them) against the reference:
/// decodes that split over the keys, several queries, a prefill over the inverted lists.
/// Means of other keys must steer the gate (a backend that pooled the keys instead would
/// choose by the true means).
fn check_given_means<B: MobaBackend>(name: &str, device: &B::Device) {
    for (seed, (shape, config)) in [
        (shape(1, 4, 2, 1, 40, 16), MobaConfig::new(8, 3)),
        (shape(2, 2, 1, 3, 37, 8), MobaConfig::new(5, 2)),
        (shape(1, 2, 2, 33, 33, 16), MobaConfig::new(8, 2)),
    ]
    .into_iter()
    .enumerate()
    {
        let seed = 100 + seed as u64 * 10;
        let (q, k, v) = (
            random::normal(shape.q_elems(), seed),
            random::normal(shape.kv_elems(), seed + 1),
            random::normal(shape.kv_elems(), seed + 2),
        );
        let means: Vec<f32> = reference::block_means(&k, &shape, config.block_size)
            .iter()
            .map(|&x| x as f32)
            .collect();
        let (qd, kd) = (shape.q_dims(), shape.kv_dims());
        let means_dims = [
            shape.batch,
            shape.kv_heads,
            shape.num_blocks(config.block_size),
            shape.head_dim,
        ];
        let out = moba_attention_with_means(
            tensor::<B>(&q, qd, device),
            tensor::<B>(&k, kd, device),
            tensor::<B>(&v, kd, device),
            tensor::<B>(&means, means_dims, device),
            &config,
        )
        .unwrap();
        let want = reference::forward(&q, &k, &v, &shape, &config).unwrap();
        let selection: Vec<i32> = out.selection.into_data().convert::<i32>().to_vec().unwrap();
        assert_eq!(selection, want.selection, "{name} {shape:?}: selection");
        let o_error = reference::max_abs_error(&values(out.o), &want.o);
        let lse_error = reference::max_abs_error(&values(out.lse), &want.lse);
        assert!(o_error < 1e-4, "{name} {shape:?}: o error {o_error:e}");
        assert!(
            lse_error < 1e-4,
            "{name} {shape:?}: lse error {lse_error:e}"
        );

        let other = reference::block_means(
            &random::normal(shape.kv_elems(), seed + 7),
            &shape,
            config.block_size,
        );
        let steered: Vec<i32> = (0..shape.q_rows())
            .flat_map(|row| {
                let gate = reference::gate_row(&q, &other, &shape, &config, row);
                let mut blocks: Vec<i32> = gate.selected.iter().map(|&j| j as i32).collect();
                blocks.resize(config.top_k, -1);
                blocks
            })
            .collect();
        assert_ne!(
            steered, want.selection,
            "{shape:?}: the other means choose alike"
        );
        let other: Vec<f32> = other.iter().map(|&x| x as f32).collect();
        let out = moba_attention_with_means(
            tensor::<B>(&q, qd, device),
            tensor::<B>(&k, kd, device),
            tensor::<B>(&v, kd, device),
            tensor::<B>(&other, means_dims, device),
            &config,
        )
        .unwrap();
        let selection: Vec<i32> = out.selection.into_data().convert::<i32>().to_vec().unwrap();
        assert_eq!(
            selection, steered,
            "{name} {shape:?}: the given means were not read"
        );
    }
}

#[test]
fn given_block_means_match_the_reference_and_steer_the_gate() {
    check_given_means::<WgpuPlain>("wgpu", &wgpu_device());
    check_given_means::<Wgpu>("fusion wgpu", &wgpu_device());
    check_given_means::<Autodiff<Wgpu>>("autodiff wgpu", &wgpu_device());
}

/// A selection no gate would make, valid for `config`: each row's own block (causal) and
/// the earlier blocks a hash of (row, block) picks, ascending, -1 padded; every block a
/// non-causal row may list.
fn made_up_selection(shape: &Shape, config: &MobaConfig) -> Vec<i32> {
    let blocks = shape.num_blocks(config.block_size);
    (0..shape.q_rows())
        .flat_map(|row| {
            let own = shape.query_position(row % shape.q_len) / config.block_size;
            let (last, room) = match config.causal {
                true => (own, config.top_k - 1),
                false => (blocks, config.top_k),
            };
            let mut chosen: Vec<i32> = (0..last)
                .filter(|j| (row * 31 + j * 17) % 3 != 0)
                .take(room)
                .map(|j| j as i32)
                .collect();
            if config.causal {
                chosen.push(own as i32);
            }
            chosen.resize(config.top_k, -1);
            chosen
        })
        .collect()
}

/// The attention of a given selection (no gate) against the reference's, forward and the
/// gradients through `Autodiff`.
fn check_given_selection<B: MobaBackend>(name: &str, device: &B::Device) {
    type Grad<B> = Autodiff<B>;
    for (seed, (shape, config)) in [
        (shape(1, 4, 2, 40, 40, 16), MobaConfig::new(8, 3)),
        (shape(2, 2, 1, 3, 37, 8), MobaConfig::new(5, 4)),
        (
            shape(1, 2, 2, 20, 33, 16),
            MobaConfig::new(8, 2).with_causal(false),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let seed = 300 + seed as u64 * 10;
        let (q, k, v, dout) = (
            random::normal(shape.q_elems(), seed),
            random::normal(shape.kv_elems(), seed + 1),
            random::normal(shape.kv_elems(), seed + 2),
            random::normal(shape.q_elems(), seed + 3),
        );
        let chosen = made_up_selection(&shape, &config);
        assert_ne!(
            chosen,
            reference::forward(&q, &k, &v, &shape, &config)
                .unwrap()
                .selection,
            "{shape:?}: the gate chooses the same blocks"
        );
        let (qd, kd) = (shape.q_dims(), shape.kv_dims());
        let selection_dims = [shape.batch, shape.q_heads, shape.q_len, config.top_k];
        let selection = Tensor::<Grad<B>, 4, Int>::from_data(
            TensorData::new(chosen.iter().map(|&j| j as i64).collect(), selection_dims),
            device,
        );
        let [q_t, k_t, v_t] = [(&q, qd), (&k, kd), (&v, kd)]
            .map(|(x, dims)| tensor::<Grad<B>>(x, dims, device).require_grad());
        let out = moba_attention_with_selection(
            q_t.clone(),
            k_t.clone(),
            v_t.clone(),
            selection,
            &config,
        )
        .unwrap();
        let want = reference::forward_with_selection(&q, &k, &v, &shape, &config, &chosen).unwrap();
        let got: Vec<i32> = out.selection.into_data().convert::<i32>().to_vec().unwrap();
        assert_eq!(got, chosen, "{name} {shape:?}: the selection");
        let o_error = reference::max_abs_error(&values(out.o.clone()), &want.o);
        let lse_error = reference::max_abs_error(&values(out.lse), &want.lse);
        assert!(o_error < 1e-4, "{name} {shape:?}: o error {o_error:e}");
        assert!(
            lse_error < 1e-4,
            "{name} {shape:?}: lse error {lse_error:e}"
        );

        let grads = (out.o * tensor::<Grad<B>>(&dout, qd, device))
            .sum()
            .backward();
        let want =
            reference::backward_with_selection([&q, &k, &v, &dout], &shape, &config, &chosen)
                .unwrap();
        for (what, got, want) in [
            ("dq", q_t.grad(&grads), &want.dq),
            ("dk", k_t.grad(&grads), &want.dk),
            ("dv", v_t.grad(&grads), &want.dv),
        ] {
            let error = reference::max_abs_error(&values(got.unwrap()), want);
            assert!(error < 1e-4, "{name} {shape:?}: {what} error {error:e}");
        }
    }
}

#[test]
fn a_given_selection_is_attended_as_given() {
    check_given_selection::<NdArray>("ndarray", &Default::default());
    check_given_selection::<WgpuPlain>("wgpu", &wgpu_device());
    check_given_selection::<Wgpu>("fusion wgpu", &wgpu_device());
}

#[test]
fn a_selection_the_kernels_cannot_attend_is_an_error() {
    let device = Default::default();
    let (shape, config) = (shape(1, 1, 1, 4, 4, 8), MobaConfig::new(2, 2));
    let kv = tensor::<NdArray>(
        &random::normal(shape.kv_elems(), 1),
        shape.kv_dims(),
        &device,
    );
    let q = tensor::<NdArray>(&random::normal(shape.q_elems(), 2), shape.q_dims(), &device);
    let attend = |rows: [[i64; 2]; 4]| {
        let flat: Vec<i64> = rows.concat();
        let selection =
            Tensor::<NdArray, 4, Int>::from_data(TensorData::new(flat, [1, 1, 4, 2]), &device);
        moba_attention_with_selection(q.clone(), kv.clone(), kv.clone(), selection, &config)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let good = [[0, -1], [0, -1], [0, 1], [1, -1]];
    let mut bad = good;
    bad[2] = [0, -1];
    assert!(
        attend(bad).contains("own block 1 is missing"),
        "{}",
        attend(bad)
    );
    bad = good;
    bad[0] = [0, 1];
    assert!(attend(bad).contains("after its own block"));
    bad = good;
    bad[3] = [1, 0];
    assert!(attend(bad).contains("not ascending"));
    bad = good;
    bad[3] = [-1, 1];
    assert!(attend(bad).contains("-1 pads only the end"));
    bad = good;
    bad[3] = [1, 2];
    assert!(attend(bad).contains("block 2 of 2"));
    let wrong_shape = Tensor::<NdArray, 4, Int>::zeros([1, 1, 4, 3], &device);
    let err = moba_attention_with_selection(q.clone(), kv.clone(), kv, wrong_shape, &config);
    assert!(
        err.unwrap_err()
            .to_string()
            .contains("top_k 2 need [1, 1, 4, 2]")
    );
}

#[test]
fn given_block_means_of_the_wrong_shape_or_gate_are_errors() {
    let device = Default::default();
    let q = Tensor::<NdArray, 4>::zeros([1, 2, 1, 8], &device);
    let kv = Tensor::<NdArray, 4>::zeros([1, 2, 20, 8], &device);
    let means = Tensor::<NdArray, 4>::zeros([1, 2, 2, 8], &device);
    let attend = |means: Tensor<NdArray, 4>, config: &MobaConfig| {
        moba_attention_with_means(q.clone(), kv.clone(), kv.clone(), means, config)
            .unwrap_err()
            .to_string()
    };
    // Blocks of 8 over 20 keys: three means, not two.
    let err = attend(means.clone(), &MobaConfig::new(8, 2));
    assert!(err.contains("[1, 2, 3, 8]"), "{err}");
    let err = attend(means, &MobaConfig::sliding_window(8, 2));
    assert!(err.contains("mean-key gate"), "{err}");
}

#[test]
fn the_caches_block_means_are_the_pooled_means_as_positions_arrive() {
    let device = Default::default();
    let (batch, heads, dim) = (2, 3, 8);
    let keys = random::normal(batch * heads * 40 * dim, 7);
    // Positions from..to of every (batch, head) row of the keys above, as a tensor.
    let positions = |from: usize, to: usize| {
        let rows: Vec<f32> = keys
            .chunks(40 * dim)
            .flat_map(|row| row[from * dim..to * dim].iter().copied())
            .collect();
        Tensor::<NdArray, 4>::from_data(
            TensorData::new(rows, [batch, heads, to - from, dim]),
            &device,
        )
    };
    let pooled = |len: usize, block: usize| {
        let cached: Vec<f32> = keys
            .chunks(40 * dim)
            .flat_map(|row| row[..len * dim].iter().copied())
            .collect();
        reference::block_means(&cached, &shape(batch, heads, heads, len, len, dim), block)
    };
    // One cache per block size, so that each updates its means from one call to the next.
    let mut caches = [(8, KvCache::<NdArray>::new()), (5, KvCache::new())];
    for (block, cache) in &mut caches {
        assert!(cache.block_means(*block).is_none());
        cache.append(positions(0, 20), positions(0, 20));
    }
    for len in 20..=40 {
        for (block, cache) in &mut caches {
            let got = values(cache.block_means(*block).unwrap());
            let error = reference::max_abs_error(&got, &pooled(len, *block));
            assert!(
                error < 1e-6,
                "{len} keys, blocks of {block}: error {error:e}"
            );
            if len < 40 {
                cache.append(positions(len, len + 1), positions(len, len + 1));
            }
        }
    }
    // Asked for another block size, a cache pools afresh.
    let got = values(caches[0].1.block_means(5).unwrap());
    assert!(reference::max_abs_error(&got, &pooled(40, 5)) < 1e-6);
}

type NdRecord = <moba::module::MobaAttention<NdArray> as Module<NdArray>>::Record;

/// A two-layer model's parameter gradients on one backend, from the same weights.
fn model_gradients<B: MobaBackend>(
    kinds: [AttentionKind; 2],
    records: &[Vec<u8>],
    device: &B::Device,
) -> Vec<Vec<f32>> {
    let layers: Vec<moba::module::MobaAttention<Autodiff<B>>> = kinds
        .iter()
        .zip(records)
        .map(|(&kind, record)| {
            MobaAttentionConfig::new(16, 4, 2, kind)
                .init::<Autodiff<B>>(device)
                .unwrap()
                .load_record(from_bytes::<B>(record.clone(), device))
        })
        .collect();
    let mut h = tensor_from_seed::<Autodiff<B>>([2, 24, 16], 99, device);
    for layer in &layers {
        h = layer.forward(h).unwrap();
    }
    let grads = h.powf_scalar(2.0).sum().backward();
    let mut out = Vec::new();
    for layer in &layers {
        let mut visitor = GradientsOf::<B> {
            grads: &grads,
            out: &mut out,
        };
        layer.visit(&mut visitor);
    }
    out
}

fn tensor_from_seed<B: MobaBackend>(
    dims: [usize; 3],
    seed: u64,
    device: &B::Device,
) -> Tensor<B, 3> {
    let data = random::normal(dims.iter().product(), seed);
    Tensor::from_data(TensorData::new(data, dims), device)
}

/// A layer's weights as bytes (full precision), to load the same weights on every backend.
fn to_bytes(record: NdRecord) -> Vec<u8> {
    BinBytesRecorder::<FullPrecisionSettings>::default()
        .record(record, ())
        .unwrap()
}

fn from_bytes<B: MobaBackend>(
    bytes: Vec<u8>,
    device: &B::Device,
) -> <moba::module::MobaAttention<Autodiff<B>> as Module<Autodiff<B>>>::Record {
    BinBytesRecorder::<FullPrecisionSettings>::default()
        .load(bytes, device)
        .unwrap()
}

/// Collects the gradient of every float parameter, in visiting order.
struct GradientsOf<'a, B: MobaBackend> {
    grads: &'a <Autodiff<B> as burn::tensor::backend::AutodiffBackend>::Gradients,
    out: &'a mut Vec<Vec<f32>>,
}

impl<B: MobaBackend> burn::module::ModuleVisitor<Autodiff<B>> for GradientsOf<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<Autodiff<B>, D>>) {
        if let Some(grad) = param.val().grad(self.grads) {
            self.out.push(values(grad));
        }
    }
}

#[test]
fn a_two_layer_model_has_the_same_gradients_on_wgpu_and_ndarray() {
    let kinds = [
        AttentionKind::Moba {
            block_size: 8,
            top_k: 2,
        },
        AttentionKind::SlidingWindow {
            block_size: 8,
            blocks: 2,
        },
    ];
    let records: Vec<Vec<u8>> = kinds
        .iter()
        .map(|&kind| {
            to_bytes(
                MobaAttentionConfig::new(16, 4, 2, kind)
                    .init::<NdArray>(&Default::default())
                    .unwrap()
                    .into_record(),
            )
        })
        .collect();
    let cpu = model_gradients::<NdArray>(kinds, &records, &Default::default());
    let gpu = model_gradients::<Wgpu>(kinds, &records, &wgpu_device());
    assert_eq!(cpu.len(), gpu.len());
    assert!(cpu.len() >= 8, "every projection has a gradient");
    for (index, (a, b)) in cpu.iter().zip(&gpu).enumerate() {
        let scale = a.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-3);
        let error = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            error <= 1e-3 * scale,
            "parameter {index}: gradient differs by {error:e} (scale {scale:e})"
        );
    }
}

#[test]
fn full_attention_kind_is_dense_causal() {
    let device = Default::default();
    let layer = MobaAttentionConfig::new(8, 2, 2, AttentionKind::Full)
        .with_rope_max_len(None)
        .init::<NdArray>(&device)
        .unwrap();
    let x = Tensor::<NdArray, 3>::random([1, 10, 8], Distribution::Normal(0.0, 1.0), &device);
    // A later token never changes an earlier output (causal), whatever its value.
    let y = layer.forward(x.clone()).unwrap();
    let changed = x
        .clone()
        .slice_assign([0..1, 9..10, 0..8], Tensor::ones([1, 1, 8], &device) * 5.0);
    let y2 = layer.forward(changed).unwrap();
    let early = |t: Tensor<NdArray, 3>| values(t.slice([0..1, 0..9, 0..8]));
    assert_eq!(early(y), early(y2));
}

#[test]
fn bad_input_names_the_wrong_dimension() {
    let device = Default::default();
    let layer = MobaAttentionConfig::new(16, 4, 2, AttentionKind::Full)
        .init::<NdArray>(&device)
        .unwrap();
    let x = Tensor::<NdArray, 3>::zeros([1, 5, 12], &device);
    let err = layer.forward(x).unwrap_err().to_string();
    assert!(
        err.contains("d_model") && err.contains("16") && err.contains("12"),
        "{err}"
    );

    let err = MobaAttentionConfig::new(16, 4, 3, AttentionKind::Full)
        .init::<NdArray>(&device)
        .unwrap_err();
    assert!(err.to_string().contains("multiple"), "{err}");

    let q = Tensor::<NdArray, 4>::zeros([1, 2, 8, 4], &device);
    let k = Tensor::<NdArray, 4>::zeros([1, 2, 8, 6], &device);
    let err = moba_attention(q.clone(), k.clone(), k, &MobaConfig::new(4, 2)).unwrap_err();
    assert!(err.to_string().contains("head_dim"), "{err}");
    let err = moba_attention(q.clone(), q.clone(), q, &MobaConfig::new(0, 2)).unwrap_err();
    assert!(err.to_string().contains("block_size"), "{err}");
}

#[test]
fn a_problem_past_the_devices_binding_limit_is_an_error_on_burn_wgpu() {
    // 64 rows with one block more than fits the device's largest binding in their selection
    // (cubecl panicked allocating it before moba_prepare; 128 MiB on lavapipe and llvmpipe).
    let device = wgpu_device();
    let binding = WgpuRuntime::client(&device)
        .properties()
        .memory
        .max_page_size;
    let top_k = (binding / (64 * 4)) as usize + 1;
    let q = Tensor::<Wgpu, 4>::zeros([1, 1, 64, 4], &device);
    let error = moba_attention(q.clone(), q.clone(), q, &MobaConfig::new(4, top_k)).unwrap_err();
    assert!(
        matches!(&error, MobaError::LimitExceeded { limit, .. } if *limit == "max_storage_buffer_binding_size"),
        "{error}"
    );
    assert!(error.to_string().contains("selection"), "{error}");
}
