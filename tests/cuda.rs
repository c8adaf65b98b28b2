//! The CUDA path on an NVIDIA GPU (sm_80+), built with `--features cuda`: the DESIGN §4
//! grid for o, lse, dq, dk, dv against the f64 reference at the FlashAttention-style
//! tolerance of the input precision (2x the error of a straightforward implementation
//! whose matrix products round to that precision), for bf16, f16 and f32 inputs; training
//! through `Autodiff<Cuda>`; the same bits twice. Prints one table row per case.
//!
//! Not run in CI (no GPU there): `scripts/stage-device.sh` builds this binary and
//! `scripts/device-cuda.sh` runs it on the lent H100.
#![cfg(feature = "cuda")]

mod common;

use burn::backend::Autodiff;
use burn::backend::cuda::Cuda;
use burn::backend::wgpu::CubeBackend;
use burn::cubecl::cuda::CudaRuntime;
use burn::tensor::{DType, Tensor, TensorData, bf16, f16};
use common::{NEAR_TIE, inputs, naive, naive_backward, shape, tolerance};
use moba::backend::{
    ForwardGiven, MobaBackend, MobaSaved, moba_attention, moba_attention_varlen,
    moba_attention_with_stats, nsa_attention,
};
use moba::module::KvCache;
use moba::{MobaConfig, NsaConfig, Shape, random, reference};

/// burn-cuda without fusion. The kernels follow each tensor's dtype, which the tests set
/// explicitly (burn keeps a default dtype per device, shared by every float type).
type Plain = CubeBackend<CudaRuntime, f32, i32, u8>;

fn tensor<B: MobaBackend>(data: &[f32], dims: [usize; 4], dtype: DType) -> Tensor<B, 4> {
    let data = TensorData::new(data.to_vec(), dims).convert_dtype(dtype);
    Tensor::from_data(data, (&Default::default(), dtype))
}

fn values<B: MobaBackend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor.into_data().convert::<f32>().to_vec().unwrap()
}

/// How a float type rounds: the inputs of the 16-bit types are rounded before the test (the
/// reference sees the same values); f32 inputs are rounded inside the kernel (to bf16).
trait Precision {
    const NAME: &'static str;
    const DTYPE: DType;
    fn to_precision(x: f32) -> f32;
    /// Whether the kernel rounds (the f32 path multiplies in bf16 but writes f32).
    const ROUNDS_INPUTS_ITSELF: bool = false;
}

impl Precision for bf16 {
    const NAME: &'static str = "bf16";
    const DTYPE: DType = DType::BF16;
    fn to_precision(x: f32) -> f32 {
        bf16::from_f32(x).to_f32()
    }
}

impl Precision for f16 {
    const NAME: &'static str = "f16";
    const DTYPE: DType = DType::F16;
    fn to_precision(x: f32) -> f32 {
        f16::from_f32(x).to_f32()
    }
}

impl Precision for f32 {
    const NAME: &'static str = "f32";
    const DTYPE: DType = DType::F32;
    fn to_precision(x: f32) -> f32 {
        bf16::from_f32(x).to_f32()
    }
    const ROUNDS_INPUTS_ITSELF: bool = true;
}

/// The grid: odd lengths, partial blocks, top-k 1 / 2 / >= nb, GQA 1 / 2 / 8, head dims
/// 16 / 64 / 128 (and 40, padded), batch 2, decode (the split decode: at most 16 rows per kv
/// head, the first case and the last four), non-causal, the static gates.
fn grid() -> Vec<(Shape, MobaConfig)> {
    vec![
        (shape(1, 1, 1, 1, 1, 16), MobaConfig::new(4, 2)),
        (shape(2, 2, 1, 7, 7, 16), MobaConfig::new(4, 2)),
        (shape(1, 8, 1, 113, 113, 64), MobaConfig::new(16, 3)),
        (shape(1, 2, 2, 1023, 1023, 128), MobaConfig::new(64, 1)),
        (shape(1, 4, 2, 1025, 1025, 128), MobaConfig::new(128, 3)),
        (shape(1, 2, 1, 33, 300, 64), MobaConfig::new(32, 4)),
        (
            shape(1, 2, 2, 200, 200, 64),
            MobaConfig::new(32, 3).with_causal(false),
        ),
        (shape(1, 2, 1, 130, 130, 16), MobaConfig::new(32, 9)),
        (
            shape(1, 2, 1, 256, 256, 64),
            MobaConfig::sliding_window(32, 3),
        ),
        (shape(1, 2, 1, 256, 256, 64), MobaConfig::sink(32, 1, 2)),
        (shape(1, 4, 2, 300, 300, 64), MobaConfig::key_window(48)),
        (shape(1, 4, 2, 3, 300, 64), MobaConfig::key_window(48)),
        (shape(1, 2, 1, 100, 100, 40), MobaConfig::new(16, 2)),
        (shape(2, 4, 4, 700, 700, 128), MobaConfig::new(100, 3)),
        (shape(1, 8, 1, 1, 1000, 128), MobaConfig::new(64, 3)),
        (shape(2, 4, 2, 3, 300, 64), MobaConfig::new(32, 4)),
        (
            shape(1, 2, 2, 1, 257, 16),
            MobaConfig::new(100, 2).with_causal(false),
        ),
        // 5 chunks of 128 keys per block, top-4: more partials per row than the combine
        // has lanes (DECODE_COMBINE_LANES), so its lanes take several each.
        (shape(1, 4, 2, 1, 3000, 64), MobaConfig::new(640, 4)),
        // A window longer than a row tile: late tiles start at their first row's window,
        // the key tiles before it skipped (common.cuh: tile_key_first).
        (shape(1, 2, 1, 700, 700, 64), MobaConfig::key_window(300)),
        // The last tile of block 0's list holds row 1023 alone, whose window is block 1:
        // it keeps one key tile, all masked (its q staging is waited on with it).
        (shape(1, 2, 2, 129, 1024, 64), MobaConfig::key_window(512)),
        // Blocks past `BY_BLOCK_MAX_BLOCK` (128): the forward per slot, four slots merged
        // into each row's state (smaller blocks run by block, one list per head).
        (shape(1, 4, 2, 1100, 1100, 64), MobaConfig::new(160, 4)),
        // Groups of 5 heads over a grid of 8 dk/dv tiles: the walk splits in two, 3 heads
        // and 2 (launch.rs: CudaPlan::dkdv_splits), partials added by dkdv_combine.
        (shape(1, 10, 2, 200, 200, 64), MobaConfig::new(64, 2)),
    ]
}

/// Errors of one case against the reference and their bounds: (name, error, bound).
type Report = Vec<(&'static str, f64, f64)>;

fn check_case<F: Precision>(shape: Shape, config: MobaConfig, seed: u64) -> Report {
    let (q, k, v) = inputs(&shape, seed);
    let dout = random::normal(shape.q_elems(), seed ^ 0x5eed_0003);
    // The 16-bit types: the reference sees exactly the values the kernel reads.
    let as_input = |x: Vec<f32>| -> Vec<f32> {
        match F::ROUNDS_INPUTS_ITSELF {
            true => x,
            false => x.into_iter().map(F::to_precision).collect(),
        }
    };
    let (q, k, v, dout) = (as_input(q), as_input(k), as_input(v), as_input(dout));
    let (qd, kd) = (shape.q_dims(), shape.kv_dims());
    let input = |x: &[f32], dims| tensor::<Plain>(x, dims, F::DTYPE).into_primitive().tensor();

    let run = || {
        let qkv = [input(&q, qd), input(&k, kd), input(&v, kd)];
        let out = Plain::moba_forward(qkv, &config);
        let wrap = |t| Tensor::<Plain, 4>::from_primitive(burn::tensor::TensorPrimitive::Float(t));
        let o = values(wrap(out.o.clone()));
        let lse = values(Tensor::<Plain, 3>::from_primitive(
            burn::tensor::TensorPrimitive::Float(out.lse.clone()),
        ));
        let selection: Vec<i32> =
            Tensor::<Plain, 4, burn::tensor::Int>::from_primitive(out.selection.clone())
                .into_data()
                .convert::<i32>()
                .to_vec()
                .unwrap();
        let saved = MobaSaved {
            q: input(&q, qd),
            k: input(&k, kd),
            v: input(&v, kd),
            o: out.o,
            lse: out.lse,
            selection: out.selection,
        };
        let grads = Plain::moba_backward(saved, input(&dout, qd), &config);
        let grads = [grads.dq, grads.dk, grads.dv].map(|g| values(wrap(g)));
        (o, lse, selection, grads)
    };
    let (o, lse, selection, [dq, dk, dv]) = run();
    let again = run();
    assert!(
        o == again.0 && dq == again.3[0] && dk == again.3[1] && dv == again.3[2],
        "{shape:?}: two runs differ (a race?)"
    );
    assert!(
        o.iter()
            .chain(&dq)
            .chain(&dk)
            .chain(&dv)
            .all(|x| x.is_finite()),
        "non-finite output"
    );

    let want = reference::forward(&q, &k, &v, &shape, &config).unwrap();
    let means = reference::block_means(&k, &shape, config.block_size);
    let top_k = config.top_k;
    let tied: Vec<usize> = (0..shape.q_rows())
        .filter(|&row| selection[row * top_k..][..top_k] != want.selection[row * top_k..][..top_k])
        .collect();
    for &row in &tied {
        let margin = reference::gate_row(&q, &means, &shape, &config, row)
            .margin
            .unwrap_or(f64::INFINITY);
        assert!(
            margin < NEAR_TIE * 100.0,
            "row {row}: selection differs with margin {margin:e}"
        );
    }

    let round_inputs = |x: &[f32]| -> Vec<f32> { x.iter().map(|&x| F::to_precision(x)).collect() };
    let (nq, nk, nv, ndout) = (
        round_inputs(&q),
        round_inputs(&k),
        round_inputs(&v),
        round_inputs(&dout),
    );
    let (naive_o, naive_lse) = naive(
        [&nq, &nk, &nv],
        &shape,
        &config,
        &want.selection,
        F::to_precision,
    );
    let d = shape.head_dim;
    let rows: Vec<usize> = (0..shape.q_rows()).filter(|r| !tied.contains(r)).collect();
    let pick = |x: &[f32], width: usize| -> Vec<f32> {
        rows.iter()
            .flat_map(|&r| x[r * width..(r + 1) * width].to_vec())
            .collect()
    };
    let pick64 = |x: &[f64], width: usize| -> Vec<f64> {
        rows.iter()
            .flat_map(|&r| x[r * width..(r + 1) * width].to_vec())
            .collect()
    };
    let mut report = Report::new();
    let mut compare = |name, got: &[f32], naive: &[f32], want: &[f64]| {
        let error = reference::max_abs_error(got, want);
        let bound = tolerance(reference::max_abs_error(naive, want));
        report.push((name, error, bound));
    };
    compare("o", &pick(&o, d), &pick(&naive_o, d), &pick64(&want.o, d));
    compare(
        "lse",
        &pick(&lse, 1),
        &pick(&naive_lse, 1),
        &pick64(&want.lse, 1),
    );
    // Gradients: a row with another selection changes other rows' dk/dv, so they are
    // compared only when the gate agreed everywhere.
    if tied.is_empty() {
        let want = reference::backward(&q, &k, &v, &dout, &shape, &config).unwrap();
        let naive = naive_backward(
            [&nq, &nk, &nv],
            &ndout,
            &shape,
            &config,
            &selection,
            F::to_precision,
        );
        compare("dq", &dq, &naive.0, &want.dq);
        compare("dk", &dk, &naive.1, &want.dk);
        compare("dv", &dv, &naive.2, &want.dv);
    }
    report
}

fn check_grid<F: Precision>(cases: &[usize]) {
    let mut failures = Vec::new();
    for (index, (shape, config)) in grid().into_iter().enumerate() {
        if !cases.contains(&index) {
            continue;
        }
        let report = check_case::<F>(shape, config, 100 + index as u64);
        let cells: Vec<String> = report
            .iter()
            .map(|(name, error, bound)| {
                let mark = if error <= bound { "" } else { " FAIL" };
                format!("{name} {error:.1e}/{bound:.1e}{mark}")
            })
            .collect();
        println!(
            "| {} | B{} H{}/{} S{} Sk{} D{} | bs{} k{} causal={} {:?} | {} |",
            F::NAME,
            shape.batch,
            shape.q_heads,
            shape.kv_heads,
            shape.q_len,
            shape.kv_len,
            shape.head_dim,
            config.block_size,
            config.top_k,
            config.causal,
            config.gate,
            cells.join(" | ")
        );
        failures.extend(
            report
                .iter()
                .filter(|(_, error, bound)| error > bound)
                .map(|(name, error, bound)| format!("case {index} {name}: {error:e} > {bound:e}")),
        );
    }
    assert!(failures.is_empty(), "{}: {failures:#?}", F::NAME);
}

#[test]
fn bf16_grid_matches_the_reference() {
    check_grid::<bf16>(&(0..grid().len()).collect::<Vec<_>>());
}

#[test]
fn f16_grid_matches_the_reference() {
    check_grid::<f16>(&[1, 2, 4, 5, 6, 10, 12, 20, 21]);
}

#[test]
fn f32_inputs_match_the_reference_at_bf16_precision() {
    check_grid::<f32>(&[2, 4, 7, 10, 13]);
}

/// A decode whose gate reads the block means a KV cache keeps (given, not pooled) takes the
/// blocks and gives the output of one that pools them.
#[test]
fn decode_with_given_means_matches_pooling() {
    let (shape, config) = (shape(2, 16, 2, 1, 5000, 128), MobaConfig::new(512, 3));
    let (q, k, v) = inputs(&shape, 11);
    let (qd, kd) = (shape.q_dims(), shape.kv_dims());
    let input = |x: &[f32], dims| {
        tensor::<Plain>(x, dims, DType::BF16)
            .into_primitive()
            .tensor()
    };
    let mut cache = KvCache::<Plain>::new();
    cache.append(
        tensor::<Plain>(&k, kd, DType::BF16),
        tensor::<Plain>(&v, kd, DType::BF16),
    );
    let means = cache.block_means(config.block_size).unwrap();
    let qkv = || [input(&q, qd), input(&k, kd), input(&v, kd)];
    let pooled = Plain::moba_forward(qkv(), &config);
    let given = ForwardGiven {
        means: Some(means.into_primitive().tensor()),
        ..ForwardGiven::none()
    };
    let cached = Plain::moba_forward_given(qkv(), given, &config);
    let ints = |t| -> Vec<i32> {
        Tensor::<Plain, 4, burn::tensor::Int>::from_primitive(t)
            .into_data()
            .convert::<i32>()
            .to_vec()
            .unwrap()
    };
    assert_eq!(ints(pooled.selection), ints(cached.selection));
    let wrap = |t| Tensor::<Plain, 4>::from_primitive(burn::tensor::TensorPrimitive::Float(t));
    let (a, b) = (values(wrap(pooled.o)), values(wrap(cached.o)));
    assert_eq!(a, b, "the same blocks give the same bits");
}

#[test]
fn training_through_autodiff_cuda_gives_the_kernel_gradients() {
    type B = Autodiff<Cuda<bf16>>;
    let (shape, config) = (shape(1, 4, 2, 300, 300, 64), MobaConfig::new(64, 2));
    let (q, k, v) = inputs(&shape, 7);
    let (qd, kd) = (shape.q_dims(), shape.kv_dims());
    let q_t = tensor::<B>(&q, qd, DType::BF16).require_grad();
    let k_t = tensor::<B>(&k, kd, DType::BF16).require_grad();
    let v_t = tensor::<B>(&v, kd, DType::BF16).require_grad();
    let o = moba_attention(q_t.clone(), k_t.clone(), v_t.clone(), &config).unwrap();
    let loss = (o.clone() * o).sum();
    let grads = loss.backward();
    let dq = values(q_t.grad(&grads).unwrap());
    let dk = values(k_t.grad(&grads).unwrap());
    let dv = values(v_t.grad(&grads).unwrap());
    // d(sum o^2)/do = 2 o: the reference gradients of that dout.
    let stats = moba_attention_with_stats(
        tensor::<Cuda<bf16>>(&q, qd, DType::BF16),
        tensor::<Cuda<bf16>>(&k, kd, DType::BF16),
        tensor::<Cuda<bf16>>(&v, kd, DType::BF16),
        &config,
    )
    .unwrap();
    let dout: Vec<f32> = values(stats.o).iter().map(|o| 2.0 * o).collect();
    let round = |x: &[f32]| -> Vec<f32> { x.iter().map(|&x| bf16::from_f32(x).to_f32()).collect() };
    let want =
        reference::backward(&round(&q), &round(&k), &round(&v), &dout, &shape, &config).unwrap();
    for (name, got, want) in [
        ("dq", &dq, &want.dq),
        ("dk", &dk, &want.dk),
        ("dv", &dv, &want.dv),
    ] {
        let error = reference::max_abs_error(got, want);
        let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        println!("autodiff {name}: max error {error:.2e} (max |grad| {scale:.2e})");
        assert!(error <= 0.05 * scale, "{name}: {error:e} vs max {scale:e}");
    }
}

/// A varlen batch (sequences of 1, 7, 64, 300 and 1000 tokens) through the CUDA gate's
/// sequence starts, bf16: each sequence's selection is the reference's of it alone, and o is
/// within the tolerance of the straightforward bf16 implementation of that sequence.
#[test]
fn varlen_batches_match_each_sequence_alone() {
    let cu = [0, 1, 8, 72, 372, 1372];
    let packed = shape(1, 4, 2, 1372, 1372, 64);
    let config = MobaConfig::new(64, 3);
    let round = |x: Vec<f32>| -> Vec<f32> { x.into_iter().map(bf16::to_precision).collect() };
    let (q, k, v) = inputs(&packed, 61);
    let (q, k, v) = (round(q), round(k), round(v));
    let input = |x: &[f32], dims| tensor::<Plain>(x, dims, DType::BF16);
    let (qd, kd) = (packed.q_dims(), packed.kv_dims());
    let out =
        moba_attention_varlen(input(&q, qd), input(&k, kd), input(&v, kd), &cu, &config).unwrap();
    let want = reference::varlen_forward(&q, &k, &v, &packed, &cu, &config).unwrap();
    let selection: Vec<i32> = out.selection.into_data().convert::<i32>().to_vec().unwrap();
    assert_eq!(selection, want.selection, "selection");
    let o = values(out.o);
    let (tokens, d) = (packed.q_len, packed.head_dim);
    for rows in cu.windows(2).map(|w| w[0]..w[1]) {
        let part = Shape {
            q_len: rows.len(),
            kv_len: rows.len(),
            ..packed
        };
        let of = |x: &[f32], heads| reference::cut_rows(x, heads, tokens, d, &rows);
        let (q, k, v) = (of(&q, 4), of(&k, 2), of(&v, 2));
        let alone = reference::forward(&q, &k, &v, &part, &config).unwrap();
        let (naive_o, _) = naive([&q, &k, &v], &part, &config, &alone.selection, |x| {
            bf16::to_precision(x)
        });
        let bound = tolerance(reference::max_abs_error(&naive_o, &alone.o));
        let error = reference::max_abs_error(&of(&o, 4), &alone.o);
        println!("varlen sequence {rows:?}: o error {error:.2e} (bound {bound:.2e})");
        assert!(
            error <= bound,
            "sequence {rows:?}: o error {error:e} > {bound:e}"
        );
    }
}

/// NSA through burn-cuda (`nsa_attention`: the selection on the device, `nsa.cu`; the
/// three branches on the MoBA kernels) against the f64 reference: NSA.md's cases and the
/// Triton setting's blocks at a small scale (a group of 16 at head dim 128; 1100 queries: a
/// partial last tile of the selection kernel, the later rows ranking over two of its chunks).
/// The inputs are made in `dtype` explicitly (burn's default float type is the device's,
/// shared by every float type: an earlier test's bf16 would otherwise stand in for f16).
/// Rows are checked as `moba bench --attention nsa` checks them
/// ([`reference::check_nsa_rows`]): each row's selection is the reference's or a near tie,
/// and each row's o is within twice the error of a straightforward implementation in the
/// kernels' precision.
fn check_nsa<B: MobaBackend>(dtype: DType, precision: reference::Precision, round_inputs: bool) {
    let mut cases = common::nsa::cases();
    cases.push((
        "the Triton setting's blocks",
        shape(1, 16, 1, 1100, 1100, 128),
        NsaConfig::new(32, 16, 64, 16, 128),
    ));
    for (index, (what, shape, config)) in cases.into_iter().enumerate() {
        let data = random::nsa_inputs(&shape, 10 * index as u64).map(|x| match round_inputs {
            true => x.into_iter().map(|x| precision.round(x)).collect(),
            false => x,
        });
        let gate_dims = [shape.batch, shape.q_heads, shape.q_len, 3];
        let dims = [shape.q_dims(), shape.kv_dims(), shape.kv_dims(), gate_dims];
        let [q, k, v, gates]: [Tensor<B, 4>; 4] =
            std::array::from_fn(|i| tensor::<B>(&data[i], dims[i], dtype));
        let out = nsa_attention(q, k, v, gates, &config).unwrap();
        let (o, selection) = (values(out.o), out.selection.into_data().convert::<i32>());
        let selection: Vec<i32> = selection.to_vec().unwrap();
        // About 300 rows spread over the heads, and the last of each head.
        let step = (shape.q_rows() / 300).max(7);
        let rows: Vec<usize> = (0..shape.q_rows())
            .filter(|row| row % step == 0 || row % shape.q_len == shape.q_len - 1)
            .collect();
        let (d, top_n, s) = (shape.head_dim, config.top_n, shape.q_len);
        let o_rows: Vec<f32> = rows
            .iter()
            .flat_map(|&r| o[r * d..][..d].to_vec())
            .collect();
        let chosen: Vec<i32> = (rows.iter())
            .flat_map(|&r| {
                let group = r / s / shape.group_size();
                selection[(group * s + r % s) * top_n..][..top_n].to_vec()
            })
            .collect();
        let [q, k, v, gates] = &data;
        let inputs = reference::NsaInputs { q, k, v, gates };
        let check =
            reference::check_nsa_rows(inputs, &shape, &config, &rows, &o_rows, &chosen, precision)
                .unwrap();
        println!("NSA {precision:?}, {what}: {}", check.summary());
        assert!(
            check.passed(),
            "NSA {precision:?}, {what}: {}",
            check.summary()
        );
    }
}

#[test]
fn nsa_in_bf16_matches_the_reference() {
    check_nsa::<Cuda<bf16>>(DType::BF16, reference::Precision::Bf16, true);
}

#[test]
fn nsa_in_f16_matches_the_reference() {
    check_nsa::<Cuda<f16>>(DType::F16, reference::Precision::F16, true);
}

/// f32 tensors are multiplied in bf16 on the tensor cores.
#[test]
fn nsa_in_f32_matches_the_reference_at_bf16_precision() {
    check_nsa::<Cuda<f32>>(DType::F32, reference::Precision::Bf16, false);
}
