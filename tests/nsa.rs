//! NSA (`moba::backend::nsa_attention`: all three branches on each backend's MoBA kernels,
//! the selection on wgpu's device and on ndarray's host) against the f64 reference
//! (`moba::reference::nsa_forward`, `nsa_backward`), over the cases of NSA.md: GQA 1, 2, 4
//! and 16, a decode, no complete compressed block, top-n covering every block, l = l' = d
//! and overlapping compressed blocks. Forward and gradients (q, k, v, gates) on ndarray and
//! on wgpu (lavapipe in CI: the WGSL kernels and the selection kernel).

mod common;

use burn::backend::wgpu::WgpuDevice;
use burn::backend::{Autodiff, NdArray, Wgpu};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use common::nsa::cases;
use common::shape;
use moba::backend::{MobaBackend, burn_wgpu_device, nsa_attention};
use moba::{NsaConfig, Shape, random, reference};

fn tensor<B: Backend>(data: &[f32], dims: [usize; 4], device: &B::Device) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(data.to_vec(), dims), device)
}

fn values<B: Backend>(tensor: Tensor<B, 4>) -> Vec<f32> {
    tensor.into_data().convert::<f32>().to_vec().unwrap()
}

/// The four input tensors of a case on `device`.
fn tensors<B: Backend>(
    data: &[Vec<f32>; 4],
    shape: &Shape,
    device: &B::Device,
) -> [Tensor<B, 4>; 4] {
    let gates = [shape.batch, shape.q_heads, shape.q_len, 3];
    let dims = [shape.q_dims(), shape.kv_dims(), shape.kv_dims(), gates];
    std::array::from_fn(|i| tensor::<B>(&data[i], dims[i], device))
}

/// Tolerance: f32 arithmetic against f64 on unit-variance problems is off by about 1e-6;
/// 1e-4 leaves room for the sums of a group of 16, while a wrong key, block, mask or gate
/// is off by 1e-2 or more.
const TOLERANCE: f64 = 1e-4;

/// The forward of every case on one backend: o and the selection.
fn check_forward<B: MobaBackend>(name: &str, device: &B::Device) {
    for (index, (what, shape, config)) in cases().into_iter().enumerate() {
        let data = random::nsa_inputs(&shape, 10 * index as u64);
        let [q, k, v, gates] = tensors::<B>(&data, &shape, device);
        let got = nsa_attention(q, k, v, gates, &config).unwrap();
        let [q, k, v, gates] = &data;
        let want = reference::nsa_forward(q, k, v, gates, &shape, &config).unwrap();
        let selection: Vec<i32> = got.selection.into_data().convert::<i32>().to_vec().unwrap();
        assert_eq!(selection, want.selection, "{name}, {what}: selection");
        let error = reference::max_abs_error(&values(got.o), &want.o);
        assert!(error < TOLERANCE, "{name}, {what}: o error {error:e}");
    }
}

#[test]
fn nsa_on_ndarray_matches_the_reference() {
    check_forward::<NdArray>("ndarray", &Default::default());
}

#[test]
fn nsa_on_wgpu_matches_the_reference() {
    let device: WgpuDevice = burn_wgpu_device(&Default::default()).unwrap().0;
    check_forward::<Wgpu>("wgpu", &device);
}

/// The gradients of every case through `Autodiff<B>`.
fn check_gradients<B: MobaBackend>(name: &str, device: &B::Device) {
    for (index, (what, shape, config)) in cases().into_iter().enumerate() {
        let data = random::nsa_inputs(&shape, 10 * index as u64);
        let dout = random::normal(shape.q_elems(), 10 * index as u64 + 4);
        let inputs = tensors::<Autodiff<B>>(&data, &shape, device).map(Tensor::require_grad);
        let [q, k, v, gates] = inputs.clone();
        let o = nsa_attention(q, k, v, gates, &config).unwrap().o;
        let grads = (o * tensor::<Autodiff<B>>(&dout, shape.q_dims(), device))
            .sum()
            .backward();
        let [q, k, v, gates] = &data;
        let want = reference::nsa_backward(q, k, v, gates, &dout, &shape, &config).unwrap();
        for (label, input, want) in [
            ("dq", &inputs[0], &want.dq),
            ("dk", &inputs[1], &want.dk),
            ("dv", &inputs[2], &want.dv),
            ("dgates", &inputs[3], &want.dgates),
        ] {
            let got = values(input.grad(&grads).expect("a gradient"));
            let error = reference::max_abs_error(&got, want);
            assert!(error < TOLERANCE, "{name}, {what}: {label} error {error:e}");
        }
    }
}

#[test]
fn nsa_gradients_on_ndarray_match_the_reference() {
    check_gradients::<NdArray>("ndarray", &Default::default());
}

#[test]
fn nsa_gradients_on_wgpu_match_the_reference() {
    let device: WgpuDevice = burn_wgpu_device(&Default::default()).unwrap().0;
    check_gradients::<Wgpu>("wgpu", &device);
}

#[test]
fn bad_gates_and_configs_are_errors() {
    let device = Default::default();
    let shape = shape(1, 2, 1, 16, 16, 8);
    let data = random::nsa_inputs(&shape, 1);
    let [q, k, v, gates] = tensors::<NdArray>(&data, &shape, &device);
    let short = gates.clone().slice([0..1, 0..2, 0..16, 0..2]);
    let err = nsa_attention(
        q.clone(),
        k.clone(),
        v.clone(),
        short,
        &NsaConfig::new(8, 4, 8, 3, 4),
    )
    .unwrap_err();
    assert!(err.to_string().contains("gates"), "{err}");
    // The stride must divide the compression block.
    let err = nsa_attention(q, k, v, gates, &NsaConfig::new(8, 3, 9, 3, 4)).unwrap_err();
    assert!(err.to_string().contains("stride"), "{err}");
}

/// An NSA layer (`AttentionKind::Nsa`, its gates from the query projection) gives the same
/// rows decoding through its KV cache as in one forward, and trains: every projection,
/// the gates' part of the query projection included, gets a gradient; with a learned
/// compression, its MLPs and position embeddings too.
#[test]
fn an_nsa_layer_decodes_as_it_prefills_and_trains() {
    for learned in [false, true] {
        nsa_layer_decodes_as_it_prefills_and_trains(learned);
    }
}

fn nsa_layer_decodes_as_it_prefills_and_trains(learned_compression: bool) {
    use moba::module::{AttentionKind, KvCache, MobaAttentionConfig};
    type B = Autodiff<NdArray>;
    let device = Default::default();
    let kind = AttentionKind::Nsa {
        compress_block: 4,
        stride: 2,
        select_block: 8,
        top_n: 3,
        window: 5,
    };
    let config = MobaAttentionConfig::new(16, 4, 2, kind);
    let layer = (config.clone())
        .with_learned_compression(learned_compression)
        .init::<B>(&device)
        .unwrap();
    // The MLPs over blocks of 4 keys of head dim 4: position rows 4 x 4, 16 -> 4 and 4 -> 4
    // with biases, for the keys and for the values.
    let mlps = 2 * (4 * 4 + (16 * 4 + 4) + (4 * 4 + 4));
    let params = burn::module::Module::num_params;
    assert_eq!(
        params(&layer),
        params(&config.init::<B>(&device).unwrap()) + usize::from(learned_compression) * mlps
    );
    let x = Tensor::<B, 3>::from_data(
        TensorData::new(random::normal(40 * 16, 5), [1, 40, 16]),
        &device,
    );
    let full = layer.forward(x.clone()).unwrap();
    let mut cache = KvCache::new();
    let mut rows = vec![
        layer
            .forward_cached(x.clone().slice([0..1, 0..30, 0..16]), &mut cache)
            .unwrap(),
    ];
    for t in 30..40 {
        let step = x.clone().slice([0..1, t..t + 1, 0..16]);
        rows.push(layer.forward_cached(step, &mut cache).unwrap());
    }
    let decoded: Vec<f32> = Tensor::cat(rows, 1).into_data().to_vec().unwrap();
    let want: Vec<f32> = full.clone().into_data().to_vec().unwrap();
    let error = decoded
        .iter()
        .zip(&want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        error < 1e-5,
        "decode differs by {error:e} (learned compression: {learned_compression})"
    );

    let grads = full.powf_scalar(2.0).sum().backward();
    let mut missing = 0;
    struct Count<'a>(
        &'a <B as burn::tensor::backend::AutodiffBackend>::Gradients,
        &'a mut usize,
    );
    impl burn::module::ModuleVisitor<B> for Count<'_> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
            let grad = param.val().grad(self.0);
            let nonzero = grad.is_some_and(|g| g.abs().sum().into_scalar() > 0.0);
            *self.1 += usize::from(!nonzero);
        }
    }
    burn::module::Module::visit(&layer, &mut Count(&grads, &mut missing));
    assert_eq!(
        missing, 0,
        "parameters without a gradient (learned compression: {learned_compression})"
    );
}

#[test]
fn a_learned_compression_is_nsa_s_alone() {
    use moba::module::{AttentionKind, MobaAttentionConfig};
    let moba = AttentionKind::Moba {
        block_size: 8,
        top_k: 2,
    };
    let error = MobaAttentionConfig::new(16, 4, 2, moba)
        .with_learned_compression(true)
        .validate()
        .unwrap_err();
    assert!(
        error.to_string().contains("a learned compression is NSA's"),
        "{error}"
    );
}
