//! The subgroup kernels' f16 variant (`AttentionKernel::SubgroupF16`: f16 tiles, f32
//! arithmetic) on every adapter of the grid that has subgroups and shader-f16: lavapipe's
//! Vulkan in CI (Mesa's CPU Vulkan offers both; OpenGL offers neither, and is left out).
//!
//! Its only rounding is the staged tiles' (k and v in the attention and dq passes, q and dout
//! in dk/dv), so on inputs that f16 holds exactly it must be as exact as the f32 kernels:
//! that pins every index of the staging. On any inputs it must stay within the tolerance
//! of a straightforward f16 implementation.

mod common;

use common::{
    GpuTurn, backward_with, every_gpu, f16_round, forward_with, inputs, naive, naive_backward,
    shape, to_f16, tolerance, within,
};
use moba::gpu::AttentionKernel;
use moba::{MobaConfig, Shape, random, reference};

const KERNEL: AttentionKernel = AttentionKernel::SubgroupF16;

/// The adapters of the grid that run the f16 variant; fails where none does (a test that
/// cannot run must not pass), or where Mesa's CPU Vulkan stops offering it.
fn f16_gpus() -> Vec<GpuTurn> {
    let gpus: Vec<_> = every_gpu()
        .filter(|gpu| {
            let caps = gpu.caps();
            let runs = caps.shader_f16 && caps.subgroup_min_size.is_some_and(|size| size >= 4);
            if gpu.is_cpu() && gpu.info().backend == wgpu::Backend::Vulkan {
                assert!(runs, "{}: no subgroups or shader-f16", gpu.describe());
            }
            runs
        })
        .collect();
    assert!(!gpus.is_empty(), "no adapter with subgroups and shader-f16");
    gpus
}

/// The DESIGN §4 cases the variant runs (head dims multiples of 16): odd lengths, a partial
/// last block, GQA, batch 2, decode and chunked prefill, non-causal with a scale, top-k
/// beyond the block count, the key-window gate, head dims 16 to 128.
fn cases() -> Vec<(Shape, MobaConfig)> {
    vec![
        (
            shape(1, 1, 1, 16, 16, 16),
            MobaConfig::new(16, 1).with_causal(false),
        ),
        (shape(1, 2, 1, 7, 7, 16), MobaConfig::new(3, 2)),
        (shape(2, 2, 2, 113, 113, 64), MobaConfig::new(16, 3)),
        (shape(1, 8, 1, 113, 113, 16), MobaConfig::new(8, 4)),
        (shape(1, 2, 2, 1025, 1025, 16), MobaConfig::new(100, 3)),
        (shape(1, 2, 2, 300, 300, 128), MobaConfig::new(64, 3)),
        (shape(1, 2, 2, 113, 113, 64), MobaConfig::new(16, 99)),
        (shape(1, 4, 2, 1, 200, 64), MobaConfig::new(32, 3)),
        (shape(2, 2, 1, 37, 300, 16), MobaConfig::new(25, 2)),
        (
            shape(1, 2, 2, 200, 200, 64),
            MobaConfig::new(32, 2).with_causal(false).with_scale(0.3),
        ),
        (shape(1, 4, 2, 300, 300, 64), MobaConfig::key_window(48)),
    ]
}

#[test]
fn forward_on_f16_exact_inputs_is_as_exact_as_f32() {
    let mut failures = 0;
    for gpu in f16_gpus() {
        let gpu = &*gpu;
        for (index, (shape, config)) in cases().into_iter().enumerate() {
            let (q, k, v) = inputs(&shape, 300 + index as u64);
            let [q, k, v] = [q, k, v].map(to_f16);
            let want = reference::forward(&q, &k, &v, &shape, &config).unwrap();
            let (o, lse) = forward_with(gpu, KERNEL, (&q, &k, &v), &shape, &config);
            let selection = reference::selection(&q, &k, &shape, &config);
            let (naive_o, naive_lse) = naive([&q, &k, &v], &shape, &config, &selection, |x| x);
            let mut line = format!("{}: {shape:?} {config:?}:", gpu.describe());
            let o_bound = tolerance(reference::max_abs_error(&naive_o, &want.o));
            let lse_bound = tolerance(reference::max_abs_error(&naive_lse, &want.lse));
            let ok = within(&mut line, "o", &o, &want.o, o_bound)
                & within(&mut line, "lse", &lse, &want.lse, lse_bound);
            eprintln!("{line}");
            failures += usize::from(!ok);
        }
    }
    assert_eq!(failures, 0);
}

#[test]
fn backward_on_f16_exact_inputs_is_as_exact_as_f32_and_the_same_bits_twice() {
    let mut failures = 0;
    for gpu in f16_gpus() {
        let gpu = &*gpu;
        for (index, (shape, config)) in cases().into_iter().enumerate() {
            let seed = 400 + index as u64;
            let (q, k, v) = inputs(&shape, seed);
            let dout = random::normal(shape.q_elems(), seed ^ 0x5eed_0003);
            let [q, k, v, dout] = [q, k, v, dout].map(to_f16);
            let (selection, grads) =
                backward_with(gpu, KERNEL, [&q, &k, &v, &dout], &shape, &config);
            let again = backward_with(gpu, KERNEL, [&q, &k, &v, &dout], &shape, &config).1;
            assert_eq!(
                selection,
                reference::selection(&q, &k, &shape, &config),
                "{shape:?}: the gate differs"
            );
            let want = reference::backward(&q, &k, &v, &dout, &shape, &config).unwrap();
            let naive = naive_backward([&q, &k, &v], &dout, &shape, &config, &selection, |x| x);
            let mut line = format!("{}: {shape:?} {config:?}:", gpu.describe());
            let mut ok = grads == again;
            for (name, got, naive, want) in [
                ("dq", &grads[0], &naive.0, &want.dq),
                ("dk", &grads[1], &naive.1, &want.dk),
                ("dv", &grads[2], &naive.2, &want.dv),
            ] {
                let bound = tolerance(reference::max_abs_error(naive, want));
                ok &= within(&mut line, name, got, want, bound);
            }
            eprintln!(
                "{line}{}",
                if grads == again {
                    ""
                } else {
                    "; two runs DIFFER"
                }
            );
            failures += usize::from(!ok);
        }
    }
    assert_eq!(failures, 0);
}

/// On inputs f16 does not hold, the staged tiles round them: the errors stay within the
/// tolerance of a straightforward implementation that rounds its inputs and every product
/// to f16 (what attention written with f16 matrix products computes).
#[test]
fn on_any_inputs_the_errors_are_those_of_f16() {
    let mut failures = 0;
    for gpu in f16_gpus() {
        let gpu = &*gpu;
        for (index, (shape, config)) in cases().into_iter().enumerate() {
            let seed = 500 + index as u64;
            let (q, k, v) = inputs(&shape, seed);
            let dout = random::normal(shape.q_elems(), seed ^ 0x5eed_0003);
            let want = reference::forward(&q, &k, &v, &shape, &config).unwrap();
            let want_grads = reference::backward(&q, &k, &v, &dout, &shape, &config).unwrap();
            let (o, _) = forward_with(gpu, KERNEL, (&q, &k, &v), &shape, &config);
            let (selection, grads) =
                backward_with(gpu, KERNEL, [&q, &k, &v, &dout], &shape, &config);
            assert_eq!(selection, want.selection, "{shape:?}: the gate differs");
            let [rq, rk, rv, rdout] = [&q, &k, &v, &dout].map(|x| to_f16(x.clone()));
            let naive_o = naive([&rq, &rk, &rv], &shape, &config, &selection, f16_round).0;
            let naive = naive_backward(
                [&rq, &rk, &rv],
                &rdout,
                &shape,
                &config,
                &selection,
                f16_round,
            );
            let mut line = format!("{}: {shape:?} {config:?}:", gpu.describe());
            let mut ok = true;
            for (name, got, naive, want) in [
                ("o", &o, &naive_o, &want.o),
                ("dq", &grads[0], &naive.0, &want_grads.dq),
                ("dk", &grads[1], &naive.1, &want_grads.dk),
                ("dv", &grads[2], &naive.2, &want_grads.dv),
            ] {
                let bound = tolerance(reference::max_abs_error(naive, want));
                ok &= within(&mut line, name, got, want, bound);
            }
            eprintln!("{line}");
            failures += usize::from(!ok);
        }
    }
    assert_eq!(failures, 0);
}
