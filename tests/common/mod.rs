//! Helpers shared by the integration tests: one GPU context, random problems, and the
//! FlashAttention-style tolerance (DESIGN §4).
#![allow(dead_code)]

use std::ops::Deref;
use std::sync::{Mutex, MutexGuard, OnceLock};

use moba::gpu::{
    AdapterRequest, AttentionKernel, ForwardIo, GpuContext, MobaBackward, MobaForward,
};
use moba::{MobaConfig, Shape, random, reference};

/// The `moba` binary: running it and reading what it did (it needs the `burn` feature).
#[cfg(feature = "burn")]
pub mod binary;

/// NSA.md's cases.
pub mod nsa;

/// The default adapter (lavapipe in CI), opened once per test binary.
pub fn gpu() -> &'static GpuContext {
    static GPU: OnceLock<GpuContext> = OnceLock::new();
    GPU.get_or_init(|| {
        let gpu = GpuContext::new_blocking(&Default::default())
            .expect("a GPU adapter (in CI: mesa-vulkan-drivers)");
        eprintln!("adapter: {}", gpu.describe());
        gpu
    })
}

/// The OpenGL adapter (llvmpipe in CI), opened once per test binary: the adapter wgpu falls
/// back to on a machine without a Vulkan driver, so the grid runs there too.
pub fn gl() -> &'static GpuContext {
    static GL: OnceLock<GpuContext> = OnceLock::new();
    GL.get_or_init(|| {
        let request = AdapterRequest {
            name: None,
            backends: Some(wgpu::Backends::GL),
        };
        let gl = GpuContext::new_blocking(&request)
            .expect("an OpenGL adapter (in CI: libegl1 and libegl-mesa0)");
        eprintln!("adapter: {}", gl.describe());
        gl
    })
}

/// Every adapter the grid runs on: the default one and, on Linux, the OpenGL one (once, where
/// the default is OpenGL already), each as a [`GpuTurn`] taken when the loop reaches it.
/// `MOBA_TEST_SKIP_GL=1` leaves OpenGL out, saying so (for GPU machines whose EGL cannot open
/// a device); without it a missing GL adapter fails.
pub fn every_gpu() -> impl Iterator<Item = GpuTurn> {
    let mut gpus = vec![gpu()];
    let skip_gl = std::env::var_os("MOBA_TEST_SKIP_GL").is_some_and(|v| v == "1");
    if skip_gl {
        eprintln!("MOBA_TEST_SKIP_GL=1: the OpenGL adapter is left out");
    }
    if cfg!(target_os = "linux") && gpu().info().backend != wgpu::Backend::Gl && !skip_gl {
        gpus.push(gl());
    }
    gpus.into_iter().map(GpuTurn::take)
}

/// A test's use of one adapter: on OpenGL, the test binary's turn at it, held while the value
/// lives. wgpu drives GL through one context whose lock panics after 6 s of waiting, and on
/// llvmpipe one test's shader compile or kernel can hold it that long while another test's
/// call outside [`GpuContext::block_on`] (a decoder's submission, a buffer's drop) waits.
pub struct GpuTurn {
    gpu: &'static GpuContext,
    _turn: Option<MutexGuard<'static, ()>>,
}

impl GpuTurn {
    fn take(gpu: &'static GpuContext) -> Self {
        static GL_TURN: Mutex<()> = Mutex::new(());
        let turn = (gpu.info().backend == wgpu::Backend::Gl).then(|| {
            GL_TURN
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        });
        GpuTurn { gpu, _turn: turn }
    }
}

impl Deref for GpuTurn {
    type Target = GpuContext;

    fn deref(&self) -> &GpuContext {
        self.gpu
    }
}

/// One `#[test]` per case of the DESIGN §4 shape grid, each calling `$check(shape, config,
/// seed)` (`check_moba` or `check_moba_backward`). The ten cases the forward and the backward
/// share are written here once, so that the two grids cannot drift apart; a file adds its own
/// cases after its check, one a line: `name: shape, config, seed;`.
#[allow(unused_macros)] // only tests/forward.rs and tests/backward.rs use it
macro_rules! shape_grid_tests {
    ($check:path; $($name:ident: $shape:expr, $config:expr, $seed:expr;)*) => {
        $crate::common::shape_grid_tests! { @tests $check;
            a_single_token: shape(1, 1, 1, 1, 1, 16), MobaConfig::new(4, 2), 1;
            seven_tokens_gqa_2: shape(1, 2, 1, 7, 7, 16), MobaConfig::new(3, 2), 2;
            batch_two_head_dim_64: shape(2, 2, 2, 113, 113, 64), MobaConfig::new(16, 3), 3;
            // The backward sums dk and dv over the group of 8 query heads.
            gqa_8: shape(1, 8, 1, 113, 113, 16), MobaConfig::new(8, 4), 4;
            length_1023_top_2: shape(1, 1, 1, 1023, 1023, 16), MobaConfig::new(64, 2), 5;
            // Blocks of 100 rows, more than a workgroup; the last one holds 25.
            length_1025_partial_last_block: shape(1, 2, 2, 1025, 1025, 16), MobaConfig::new(100, 3), 6;
            top_1_head_dim_128: shape(1, 1, 1, 113, 113, 128), MobaConfig::new(32, 1), 7;
            top_k_beyond_the_block_count: shape(1, 2, 2, 113, 113, 64), MobaConfig::new(16, 99), 8;
            decode_one_query_over_a_cache: shape(1, 4, 2, 1, 200, 64), MobaConfig::new(32, 3), 9;
            chunked_prefill: shape(2, 2, 1, 37, 300, 16), MobaConfig::new(25, 2), 10;
            $($name: $shape, $config, $seed;)*
        }
    };
    (@tests $check:path; $($name:ident: $shape:expr, $config:expr, $seed:expr;)*) => {
        $(
            #[test]
            fn $name() {
                // The names the cases are written with, wherever the grid expands.
                #[allow(unused_imports)]
                use {$crate::common::shape, moba::MobaConfig};
                $check($shape, $config, $seed);
            }
        )*
    };
}
#[allow(unused_imports)]
pub(crate) use shape_grid_tests;

/// A shape from its six sizes, in `Shape`'s field order.
pub fn shape(
    batch: usize,
    q_heads: usize,
    kv_heads: usize,
    q_len: usize,
    kv_len: usize,
    head_dim: usize,
) -> Shape {
    Shape {
        batch,
        q_heads,
        kv_heads,
        q_len,
        kv_len,
        head_dim,
    }
}

/// Fresh standard-normal q, k, v for a shape.
pub fn inputs(shape: &Shape, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    (
        random::normal(shape.q_elems(), seed),
        random::normal(shape.kv_elems(), seed ^ 0x5eed_0001),
        random::normal(shape.kv_elems(), seed ^ 0x5eed_0002),
    )
}

/// Where a row reads its keys: (kv group, position, keys it attends under `selection`).
fn row_keys(
    row: usize,
    shape: &Shape,
    config: &MobaConfig,
    selection: &[i32],
) -> (usize, Vec<usize>) {
    let t = row % shape.q_len;
    let head = (row / shape.q_len) % shape.q_heads;
    let group = (row / (shape.q_len * shape.q_heads)) * shape.kv_heads + head / shape.group_size();
    let position = shape.query_position(t);
    let keys = selection[row * config.top_k..(row + 1) * config.top_k]
        .iter()
        .filter(|&&j| j >= 0)
        .flat_map(|&j| {
            j as usize * config.block_size..((j as usize + 1) * config.block_size).min(shape.kv_len)
        })
        .filter(|&i| config.sees(i, position))
        .collect();
    (group, keys)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A straightforward implementation over a given selection: scores, softmax and weighted
/// sum, no tiling, every product's result (scores, probabilities, output) rounded by
/// `round`, sums in f32. With `|x| x` (nothing rounded) it is the f32 implementation whose
/// error against the f64 reference is the yardstick; with a 16-bit rounding it is what
/// attention written with bf16/f16 matrix products computes, the yardstick of the
/// tensor-core kernels.
pub fn naive(
    [q, k, v]: [&[f32]; 3],
    shape: &Shape,
    config: &MobaConfig,
    selection: &[i32],
    round: impl Fn(f32) -> f32,
) -> (Vec<f32>, Vec<f32>) {
    let d = shape.head_dim;
    let scale = config.scale_for(d);
    let (mut o, mut lse) = (Vec::new(), Vec::new());
    for row in 0..shape.q_rows() {
        let (group, keys) = row_keys(row, shape, config, selection);
        let query = &q[row * d..(row + 1) * d];
        let at = |i: usize| (group * shape.kv_len + i) * d;
        let scores: Vec<f32> = keys
            .iter()
            .map(|&i| round(scale * round(dot(query, &k[at(i)..at(i) + d]))))
            .collect();
        let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let weights: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
        let total: f32 = weights.iter().sum();
        for c in 0..d {
            o.push(round(
                keys.iter()
                    .zip(&weights)
                    .map(|(&i, w)| round(w / total) * v[at(i) + c])
                    .sum(),
            ));
        }
        lse.push(max + total.ln());
    }
    (o, lse)
}

/// The straightforward backward over a given selection: `(dq, dk, dv)`, probabilities, dO.v,
/// dS and the gradients rounded by `round` (see [`naive`]), sums in f32. Without rounding
/// (`|x| x`), every product and sum in f32: the yardstick of the gradient tolerance.
#[allow(clippy::too_many_arguments)]
pub fn naive_backward(
    [q, k, v]: [&[f32]; 3],
    dout: &[f32],
    shape: &Shape,
    config: &MobaConfig,
    selection: &[i32],
    round: impl Fn(f32) -> f32 + Copy,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let d = shape.head_dim;
    let scale = config.scale_for(d);
    let (o, lse) = naive([q, k, v], shape, config, selection, round);
    let mut dq = vec![0.0f32; shape.q_elems()];
    let (mut dk, mut dv) = (
        vec![0.0f32; shape.kv_elems()],
        vec![0.0f32; shape.kv_elems()],
    );
    for row in 0..shape.q_rows() {
        let (group, keys) = row_keys(row, shape, config, selection);
        let span = row * d..(row + 1) * d;
        let (query, grad_out) = (&q[span.clone()], &dout[span.clone()]);
        let delta = dot(grad_out, &o[span]);
        for i in keys {
            let at = (group * shape.kv_len + i) * d;
            let p = round((round(scale * round(dot(query, &k[at..at + d]))) - lse[row]).exp());
            let ds = round(p * (round(dot(grad_out, &v[at..at + d])) - delta));
            for c in 0..d {
                dq[row * d + c] += scale * ds * k[at + c];
                dk[at + c] += scale * ds * query[c];
                dv[at + c] += p * grad_out[c];
            }
        }
    }
    let rounded = |x: Vec<f32>| x.into_iter().map(round).collect();
    (rounded(dq), rounded(dk), rounded(dv))
}

/// Checks the GPU backward (dq, dk, dv) against the reference at the FlashAttention-style
/// tolerance. The seed must give no near tie in the gate (the gradients of a row with
/// another selection differ by design).
pub fn check_moba_backward(shape: Shape, config: MobaConfig, seed: u64) {
    for gpu in every_gpu() {
        check_moba_backward_on(&gpu, shape, config, seed);
    }
}

/// [`check_moba_backward`] on one adapter.
pub fn check_moba_backward_on(gpu: &GpuContext, shape: Shape, config: MobaConfig, seed: u64) {
    let (q, k, v) = inputs(&shape, seed);
    let dout = random::normal(shape.q_elems(), seed ^ 0x5eed_0003);
    let forward = gpu
        .block_on(gpu.moba_forward(&q, &k, &v, &shape, &config))
        .unwrap();
    let want = reference::backward(&q, &k, &v, &dout, &shape, &config).unwrap();
    let selection = reference::selection(&q, &k, &shape, &config);
    assert_eq!(
        forward.selection,
        selection,
        "{}: {shape:?}: the GPU gate chose differently (a near tie?): pick another seed",
        gpu.describe()
    );
    let got = gpu
        .block_on(gpu.moba_backward(&q, &k, &v, &dout, &shape, &config))
        .unwrap();
    // The f32 yardstick: nothing rounded.
    let naive = naive_backward([&q, &k, &v], &dout, &shape, &config, &selection, |x| x);
    for (name, got, naive, want) in [
        ("dq", &got.dq, &naive.0, &want.dq),
        ("dk", &got.dk, &naive.1, &want.dk),
        ("dv", &got.dv, &naive.2, &want.dv),
    ] {
        let error = reference::max_abs_error(got, want);
        let bound = tolerance(reference::max_abs_error(naive, want));
        assert!(
            error <= bound,
            "{}: {shape:?} {config:?}: {name} error {error:e} > bound {bound:e}",
            gpu.describe()
        );
    }
}

/// Allowed error: twice the naive f32 implementation's error, plus a floor for the rare case
/// where the naive one happens to be exact.
pub fn tolerance(naive_error: f64) -> f64 {
    2.0 * naive_error + 1e-6
}

/// Score gap under which two blocks count as tied: f32 gate scores may order them either way.
pub const NEAR_TIE: f64 = 1e-4;

/// Rows whose GPU selection differs from the reference; panics unless each is a near tie.
pub fn selection_mismatches(
    got: &[i32],
    want: &[i32],
    q: &[f32],
    k: &[f32],
    shape: &Shape,
    config: &MobaConfig,
) -> Vec<usize> {
    let means = reference::block_means(k, shape, config.block_size);
    let mut rows = Vec::new();
    for row in 0..shape.q_rows() {
        let span = row * config.top_k..(row + 1) * config.top_k;
        if got[span.clone()] != want[span.clone()] {
            let gate = reference::gate_row(q, &means, shape, config, row);
            let margin = gate.margin.unwrap_or(f64::INFINITY);
            assert!(
                margin < NEAR_TIE,
                "row {row}: selection {:?} != reference {:?} with no near tie (margin {margin:e})",
                &got[span.clone()],
                &want[span]
            );
            rows.push(row);
        }
    }
    rows
}

/// Checks a GPU MoBA forward against the reference at the FlashAttention-style tolerance.
pub fn check_moba(shape: Shape, config: MobaConfig, seed: u64) {
    for gpu in every_gpu() {
        check_moba_on(&gpu, shape, config, seed);
    }
}

/// [`check_moba`] on one adapter.
pub fn check_moba_on(gpu: &GpuContext, shape: Shape, config: MobaConfig, seed: u64) {
    let (q, k, v) = inputs(&shape, seed);
    let got = gpu
        .block_on(gpu.moba_forward(&q, &k, &v, &shape, &config))
        .unwrap();
    let want = reference::forward(&q, &k, &v, &shape, &config).unwrap();
    assert!(
        got.selection.iter().all(|&j| j >= -1),
        "selection holds poison"
    );
    let tied = selection_mismatches(&got.selection, &want.selection, &q, &k, &shape, &config);
    assert!(
        tied.len() * 100 <= shape.q_rows().max(100),
        "too many near ties: {}",
        tied.len()
    );

    // Compare every row whose selection agrees (a near-tie row attends other keys).
    let d = shape.head_dim;
    let keep = |row: &usize| !tied.contains(row);
    let rows: Vec<usize> = (0..shape.q_rows()).filter(keep).collect();
    let pick_o = |o: &[f32]| -> Vec<f32> {
        rows.iter()
            .flat_map(|&r| o[r * d..(r + 1) * d].to_vec())
            .collect()
    };
    let pick_o64 = |o: &[f64]| -> Vec<f64> {
        rows.iter()
            .flat_map(|&r| o[r * d..(r + 1) * d].to_vec())
            .collect()
    };
    // The f32 yardstick: nothing rounded.
    let (naive_o, naive_lse) = naive([&q, &k, &v], &shape, &config, &want.selection, |x| x);
    let want_o = pick_o64(&want.o);
    let want_lse: Vec<f64> = rows.iter().map(|&r| want.lse[r]).collect();
    let o_error = reference::max_abs_error(&pick_o(&got.o), &want_o);
    let o_bound = tolerance(reference::max_abs_error(&pick_o(&naive_o), &want_o));
    let lse_of = |lse: &[f32]| -> Vec<f32> { rows.iter().map(|&r| lse[r]).collect() };
    let lse_error = reference::max_abs_error(&lse_of(&got.lse), &want_lse);
    let lse_bound = tolerance(reference::max_abs_error(&lse_of(&naive_lse), &want_lse));
    assert!(
        o_error <= o_bound,
        "{}: {shape:?} {config:?}: o error {o_error:e} > bound {o_bound:e}",
        gpu.describe()
    );
    assert!(
        lse_error <= lse_bound,
        "{}: {shape:?} {config:?}: lse error {lse_error:e} > bound {lse_bound:e}",
        gpu.describe()
    );
}

/// `x` rounded to the nearest f16.
pub fn f16_round(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// Values that f16 holds exactly (inputs whose only rounding is the kernel's own).
pub fn to_f16(data: Vec<f32>) -> Vec<f32> {
    data.into_iter().map(f16_round).collect()
}

/// Whether `got`'s largest error against `want` is within `bound` (NaN never is: the error
/// is then infinite); adds `name error (bound)` to `line`.
pub fn within(line: &mut String, name: &str, got: &[f32], want: &[f64], bound: f64) -> bool {
    let error = reference::max_abs_error(got, want);
    *line += &format!(" {name} {error:.2e} (bound {bound:.2e})");
    error <= bound
}

pub fn download(gpu: &GpuContext, buffer: &wgpu::Buffer) -> Vec<f32> {
    pollster::block_on(gpu.download(buffer)).unwrap()
}

/// The forward of `kernel`'s passes: o and lse.
pub fn forward_with(
    gpu: &GpuContext,
    kernel: AttentionKernel,
    (q, k, v): (&[f32], &[f32], &[f32]),
    shape: &Shape,
    config: &MobaConfig,
) -> (Vec<f32>, Vec<f32>) {
    let forward = MobaForward::with_kernel(gpu, shape, config, kernel).unwrap();
    let io = ForwardIo::new(gpu, q, k, v, shape.q_rows(), config.top_k);
    let mut encoder = gpu.device().create_command_encoder(&Default::default());
    forward.encode(&mut encoder, &io.buffers()).unwrap();
    gpu.submit_and_wait(encoder.finish()).unwrap();
    (download(gpu, &io.o), download(gpu, &io.lse))
}

/// The selection of `kernel`'s forward and the gradients of its backward on the forward's
/// saved outputs (every gradient buffer starts poisoned): `(selection, [dq, dk, dv])`.
pub fn backward_with(
    gpu: &GpuContext,
    kernel: AttentionKernel,
    [q, k, v, dout]: [&[f32]; 4],
    shape: &Shape,
    config: &MobaConfig,
) -> (Vec<i32>, [Vec<f32>; 3]) {
    let forward = MobaForward::with_kernel(gpu, shape, config, kernel).unwrap();
    let backward = MobaBackward::with_kernel(gpu, shape, config, kernel).unwrap();
    assert_eq!(backward.kernel(), kernel);
    let io = ForwardIo::new(gpu, q, k, v, shape.q_rows(), config.top_k);
    let dout = gpu.upload("dout", dout);
    let dq = gpu.poisoned("dq", shape.q_elems());
    let (dk, dv) = (
        gpu.poisoned("dk", shape.kv_elems()),
        gpu.poisoned("dv", shape.kv_elems()),
    );
    let mut encoder = gpu.device().create_command_encoder(&Default::default());
    forward.encode(&mut encoder, &io.buffers()).unwrap();
    let buffers = io.buffers().with_gradients(&dout, &dq, &dk, &dv);
    backward.encode(&mut encoder, &buffers).unwrap();
    gpu.submit_and_wait(encoder.finish()).unwrap();
    let selection = pollster::block_on(gpu.download::<i32>(&io.selection)).unwrap();
    (selection, [&dq, &dk, &dv].map(|b| download(gpu, b)))
}
