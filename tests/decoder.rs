//! The GPU decoders against the model they were made from: at every position of a prompt,
//! their logits against the model's own forward on burn's CPU backend (whose MoBA is checked
//! against the f64 reference by the forward grid). The wgpu decoder (`moba::gpu::LmDecoder`)
//! on every adapter of the forward grid; with `--features cuda` (on the lent GPU), the CUDA
//! decoder (`moba::cuda::CudaLmDecoder`) too.

mod common;

use burn::backend::NdArray;
use burn::tensor::backend::Backend;
use moba::MobaError;
use moba::decode_plan::Decoder;
use moba::gpu::{GpuContext, LmDecoder, LmWeights};
use moba::model::generate::byte_tensor;
use moba::model::{LmConfig, MobaLm};
use moba::module::AttentionKind;
use moba::reference::max_abs_error;

/// 150 bytes of text: five of the tiny preset's blocks of 32, so its top-3 gate ranks.
fn prompt() -> Vec<u8> {
    let text = b"MoBA routes each query to the blocks whose mean key it scores highest. ";
    text.iter().cycle().take(150).copied().collect()
}

fn logits<B: moba::backend::MobaBackend>(model: &MobaLm<B>, bytes: &[u8]) -> Vec<f64> {
    let tokens = byte_tensor::<B>(bytes, &model.head.weight.device());
    let logits = model.forward(tokens).expect("the model's forward");
    logits.into_data().convert::<f64>().to_vec().unwrap()
}

/// Waits for a decoder's futures: the wgpu device's polling, or none (CUDA).
trait Wait {
    fn wait<T>(&self, call: impl Future<Output = T>) -> T;
}

impl Wait for GpuContext {
    fn wait<T>(&self, call: impl Future<Output = T>) -> T {
        self.block_on(call)
    }
}

/// The decoder's logits at every position of `bytes`, read back after each step.
fn decoded(wait: &impl Wait, decoder: &mut impl Decoder, bytes: &[u8]) -> Vec<f32> {
    let mut all = Vec::new();
    for &byte in bytes {
        decoder.step(byte).unwrap();
        all.extend(wait.wait(decoder.logits()).unwrap());
    }
    all
}

/// A model of `config` (the same weights every call), the test's prompt, and the logits of
/// the model's own forward at every position.
fn model_and_logits(config: &LmConfig) -> (MobaLm<NdArray>, Vec<u8>, Vec<f64>) {
    let device = Default::default();
    NdArray::<f32>::seed(&device, 11);
    let model = config.init::<NdArray>(&device).unwrap();
    let bytes = prompt();
    let expected = logits(&model, &bytes);
    (model, bytes, expected)
}

fn check_config(config: LmConfig) {
    let (model, bytes, expected) = model_and_logits(&config);
    let weights = model.decode_weights().unwrap();
    for gpu in common::every_gpu() {
        let gpu = &*gpu;
        // Prompts of 32 positions and more go through the prefill passes.
        let decoder = LmDecoder::with_prefill_rows(gpu, &weights, 32).unwrap();
        let name = gpu.describe();
        check_decoder(&name, gpu, decoder, &weights, &bytes, &expected, 0.0);
    }
}

/// How far a decoder's f32 logits may be from the model's own `expected` ones. Two f32
/// computations of one model differ by the summation orders of their reductions (a tree
/// here, burn's order there; the norm gains folded into the matrices): a few ulps of the
/// largest logit per layer. A wrong position, block, mask or weight is off by 1e-2 and more.
/// (burn 0.21 runs an NdArray<f64> model in f32: a tensor keeps the device's default dtype,
/// so an f64 run of the whole model is not to be had here.)
fn f32_tolerance<'a>(expected: impl IntoIterator<Item = &'a f64>) -> f64 {
    let largest = (expected.into_iter()).fold(0.0f64, |m, x| m.max(x.abs()));
    16.0 * f32::EPSILON as f64 * largest.max(1.0)
}

/// `decoder` of `weights` reads `bytes` one position at a time, then in chunks, and gives
/// the model's `expected` logits at every position; `name` says which decoder. A prompt
/// read in chunks may be off by `prefill_slack` more (CUDA's prefill passes multiply in
/// bf16).
fn check_decoder(
    name: &str,
    wait: &impl Wait,
    mut decoder: impl Decoder,
    weights: &LmWeights,
    bytes: &[u8],
    expected: &[f64],
    prefill_slack: f64,
) {
    let tolerance = f32_tolerance(expected);
    let first = decoded(wait, &mut decoder, bytes);
    let error = max_abs_error(&first, expected);
    eprintln!("{name}: decoder error {error:.3e} (tolerance {tolerance:.3e})");
    assert!(
        error <= tolerance,
        "{name}: decoder error {error:.3e} against burn's forward of the same model"
    );
    // Every query head attended its own (current) block at the last position.
    let block = weights.layers[0].attention.block_size;
    let current = (bytes.len() - 1) / block;
    let selection = wait.wait(decoder.selection(0)).unwrap();
    let top_k = selection.len() / weights.n_heads;
    for head in selection.chunks(top_k) {
        assert!(head.contains(&(current as i32)), "{head:?}");
    }
    // A reset decoder reads the same bytes to the same bits.
    decoder.reset();
    let again = decoded(wait, &mut decoder, &bytes[..40]);
    assert!(
        again == first[..40 * 256],
        "{name}: another run, other bits"
    );
    // The prompt read in submissions of many positions: the scores after each call's last
    // byte. With tiles of 32 rows for the prefill passes, the first call is 3 tiles (the
    // second and third over cached positions) and 4 single positions; the second starts
    // inside a block with a tile that crosses a block boundary, then 2 chunks of 8.
    decoder.reset();
    assert_eq!(decoder.chunk_rows(), 32, "{name}");
    let ends = [100, 148];
    for end in ends {
        decoder.prefill(&bytes[decoder.position()..end]).unwrap();
        let last = wait.wait(decoder.logits()).unwrap();
        let error = max_abs_error(&last, &expected[(end - 1) * 256..end * 256]);
        eprintln!("{name}: prefill to {end}: error {error:.3e}");
        assert!(
            error <= tolerance + prefill_slack,
            "{name}: prefill to {end}: error {error:.3e} against burn's forward"
        );
    }
    let selection = wait.wait(decoder.selection(0)).unwrap();
    let current = (ends[1] - 1) / block;
    for head in selection.chunks(top_k) {
        assert!(head.contains(&(current as i32)), "{head:?}");
    }
}

#[test]
fn the_decoder_matches_the_model_at_every_position() {
    check_config(LmConfig::preset("tiny").unwrap());
}

/// Three prompts of the test's length, each its own text.
fn three_prompts() -> Vec<Vec<u8>> {
    let text = b"Blocks of keys, a gate over their means, one softmax over the chosen. ";
    let cycled = |skip| text.iter().cycle().skip(skip).take(150).copied().collect();
    vec![prompt(), cycled(0), cycled(31)]
}

/// `batch`, a decoder of three sequences, reads `prompts` side by side: the first 40
/// positions in one call (a tile of 32 through the prefill passes, then a chunk of 8), then
/// a byte of each per step. Every sequence's logits are its prompt's alone (the model's
/// `expected`, within `prefill_slack` more where a prefill's products are in bf16, and to
/// the bit those of `single`, a decoder of one sequence reading that prompt alone), so no
/// sequence reads another's cache, block means or rows.
fn check_batch(
    name: &str,
    wait: &impl Wait,
    (mut batch, mut single): (impl Decoder, impl Decoder),
    weights: &LmWeights,
    prompts: &[Vec<u8>],
    expected: &[Vec<f64>],
    prefill_slack: f64,
) {
    let vocab = 256;
    let tolerance = f32_tolerance(expected.iter().flatten());
    assert_eq!(batch.sequences(), 3, "{name}");
    let alone: Vec<Vec<f32>> = (prompts.iter())
        .map(|prompt| {
            single.reset();
            single.prefill(&prompt[..40]).unwrap();
            let mut all = wait.wait(single.logits()).unwrap();
            all.extend(decoded(wait, &mut single, &prompt[40..]));
            all
        })
        .collect();
    let firsts: Vec<&[u8]> = prompts.iter().map(|prompt| &prompt[..40]).collect();
    batch.read(&firsts).unwrap();
    let mut logits = wait.wait(batch.logits()).unwrap();
    let check = |position: usize, logits: &[f32], slack: f64| {
        assert_eq!(
            logits.len(),
            3 * vocab,
            "{name}: a row of logits per sequence"
        );
        for (s, row) in logits.chunks(vocab).enumerate() {
            let want = &expected[s][position * vocab..(position + 1) * vocab];
            let error = max_abs_error(row, want);
            assert!(
                error <= tolerance + slack,
                "{name}: sequence {s} at {position}: error {error:.3e} against its prompt alone"
            );
            let at = (position - 39) * vocab;
            assert!(
                row == &alone[s][at..at + vocab],
                "{name}: sequence {s} at {position}: other bits than alone"
            );
        }
    };
    check(39, &logits, prefill_slack);
    // The steps read the cache the prefill wrote (on CUDA, after products in bf16).
    for position in 40..prompts[0].len() {
        let bytes: Vec<u8> = prompts.iter().map(|prompt| prompt[position]).collect();
        batch.step_each(&bytes).unwrap();
        logits = wait.wait(batch.logits()).unwrap();
        check(position, &logits, prefill_slack);
    }
    // [3 sequences, heads, top_k]: every query head of each attended its current block.
    let selection = wait.wait(batch.selection(0)).unwrap();
    let attention = &weights.layers[0].attention;
    let current = (prompts[0].len() - 1) / attention.block_size;
    assert_eq!(selection.len(), 3 * weights.n_heads * attention.top_k);
    for head in selection.chunks(attention.top_k) {
        assert!(head.contains(&(current as i32)), "{name}: {head:?}");
    }
    let error = batch.read(&firsts[..2]).unwrap_err();
    assert!(error.to_string().contains("3 sequences"), "{error}");
}

#[test]
fn a_batch_of_sequences_decodes_each_as_alone() {
    use moba::gpu::DecoderOptions;

    let config = LmConfig::preset("tiny").unwrap();
    let (model, _, _) = model_and_logits(&config);
    let prompts = three_prompts();
    let expected: Vec<Vec<f64>> = prompts.iter().map(|p| logits(&model, p)).collect();
    let weights = model.decode_weights().unwrap();
    for gpu in common::every_gpu() {
        let gpu = &*gpu;
        let options = |sequences| DecoderOptions {
            prefill_rows: 32,
            sequences,
            ..Default::default()
        };
        let decoder = |sequences| LmDecoder::with_options(gpu, &weights, options(sequences));
        let name = format!("{} (3 sequences)", gpu.describe());
        let decoders = (decoder(3).unwrap(), decoder(1).unwrap());
        check_batch(&name, gpu, decoders, &weights, &prompts, &expected, 0.0);
    }
}

#[test]
fn the_decoder_runs_full_attention_layers() {
    check_config(LmConfig::preset("tiny").unwrap().with_full_layers(1));
}

/// A model whose weights are f16 already (`moba export --half`, read back) decodes with f16
/// weights on the GPU (two to a 32-bit word, widened in the kernel) as it does with f32
/// ones, to the bit: its fresh norm gains are 1, so the matrices they fold into stay f16.
#[test]
fn f16_weights_decode_an_f16_model_as_f32_weights_do() {
    use moba::gpu::{DecoderOptions, WeightPrecision};
    use moba::model::{model_from_bytes, weights_bytes};

    let config = LmConfig::preset("tiny").unwrap();
    let (model, bytes, _) = model_and_logits(&config);
    let half = weights_bytes(&model, true).unwrap();
    let model =
        model_from_bytes::<NdArray>(&config, half, "half.mpk", &Default::default()).unwrap();
    let expected = logits(&model, &bytes);
    let weights = model.decode_weights().unwrap();
    for gpu in common::every_gpu() {
        let gpu = &*gpu;
        let options = |weights| DecoderOptions {
            prefill_rows: 32,
            weights,
            ..Default::default()
        };
        let decoder = |precision| LmDecoder::with_options(gpu, &weights, options(precision));
        let name = format!("{} (f16 weights)", gpu.describe());
        let mut f16 = decoder(WeightPrecision::F16).unwrap();
        let mut f32 = decoder(WeightPrecision::F32).unwrap();
        let at_f16 = decoded(gpu, &mut f16, &bytes[..64]);
        assert!(
            at_f16 == decoded(gpu, &mut f32, &bytes[..64]),
            "{name}: other bits than f32 weights"
        );
        f16.reset();
        check_decoder(&name, gpu, f16, &weights, &bytes, &expected, 0.0);
    }
}

/// The tiny preset with each static gate in place of MoBA's.
fn static_gate_configs() -> Vec<LmConfig> {
    let gates = [
        AttentionKind::SlidingWindow {
            block_size: 32,
            blocks: 2,
        },
        AttentionKind::Sink {
            block_size: 32,
            first: 1,
            recent: 2,
        },
        AttentionKind::KeyWindow { keys: 40 },
    ];
    (gates.into_iter())
        .map(|attention| LmConfig {
            attention,
            ..LmConfig::preset("tiny").unwrap()
        })
        .collect()
}

#[test]
fn the_decoder_runs_the_static_gates() {
    static_gate_configs().into_iter().for_each(check_config);
}

#[test]
fn the_decoder_refuses_what_it_does_not_run_by_name() {
    let mut config = LmConfig::preset("tiny").unwrap();
    config.attention = AttentionKind::Nsa {
        compress_block: 16,
        stride: 16,
        select_block: 16,
        top_n: 3,
        window: 32,
    };
    let model = config.init::<NdArray>(&Default::default()).unwrap();
    let error = model.decode_weights().unwrap_err();
    assert!(matches!(error, MobaError::Unsupported(_)), "{error}");
    assert!(error.to_string().contains("Nsa"), "{error}");
    // A full cache is an error, not a wrap-around.
    let mut config = LmConfig::preset("tiny").unwrap();
    config.max_seq_len = 4;
    let model = config.init::<NdArray>(&Default::default()).unwrap();
    let mut decoder = LmDecoder::new(common::gpu(), &model.decode_weights().unwrap()).unwrap();
    decoder.step(b'a').unwrap();
    // A prompt longer than the room left is refused whole, before any of it is read.
    let error = decoder.prefill(b"bcde").unwrap_err();
    assert!(error.to_string().contains("full"), "{error}");
    assert_eq!(decoder.position(), 1);
    decoder.prefill(b"bcd").unwrap();
    let error = decoder.step(b'e').unwrap_err();
    assert!(error.to_string().contains("full"), "{error}");
}

#[test]
fn a_model_over_the_adapters_buffer_limit_is_refused_before_allocation() {
    // A device that binds at most 32 KiB: the tiny model's embedding is 64 KiB.
    let (_, adapter) = pollster::block_on(moba::gpu::select_adapter(&Default::default())).unwrap();
    let limits = wgpu::Limits {
        max_storage_buffer_binding_size: 1 << 15,
        ..wgpu::Limits::downlevel_defaults()
    };
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: limits,
        ..Default::default()
    }))
    .unwrap();
    let gpu = GpuContext::from_device(&adapter, device, queue);
    let model = LmConfig::preset("tiny")
        .unwrap()
        .init::<NdArray>(&Default::default())
        .unwrap();
    let error = LmDecoder::new(&gpu, &model.decode_weights().unwrap())
        .err()
        .unwrap();
    assert!(matches!(error, MobaError::LimitExceeded { .. }), "{error}");
    assert!(error.to_string().contains("embedding"), "{error}");
    assert!(
        error
            .to_string()
            .contains("max_storage_buffer_binding_size"),
        "{error}"
    );
}

/// Waits for the CUDA decoder's futures, which need no polling.
#[cfg(feature = "cuda")]
struct NoPolling;

#[cfg(feature = "cuda")]
impl Wait for NoPolling {
    fn wait<T>(&self, call: impl Future<Output = T>) -> T {
        pollster::block_on(call)
    }
}

#[cfg(feature = "cuda")]
#[test]
fn the_cuda_decoder_matches_the_model_at_every_position() {
    use burn::backend::Cuda;
    use moba::cuda::{CudaDecoderOptions, CudaLmDecoder};
    use moba::model::{model_from_bytes, weights_bytes};

    let tiny = LmConfig::preset("tiny").unwrap();
    let configs = [tiny.clone(), tiny.clone().with_full_layers(1)];
    for config in configs.into_iter().chain(static_gate_configs()) {
        let (model, bytes, expected) = model_and_logits(&config);
        let weights = model.decode_weights().unwrap();
        // The same model on burn-cuda, whose MoBA multiplies f32 in bf16 on the tensor
        // cores as the decoder's prefill passes do: its error against the f32 forward is
        // the baseline of a prompt read through them (FlashAttention-style: twice it).
        let record = weights_bytes(&model, false).unwrap();
        let on_cuda = model_from_bytes::<Cuda>(&config, record, "test", &Default::default());
        let on_cuda: Vec<f32> = (logits(&on_cuda.unwrap(), &bytes).into_iter())
            .map(|x| x as f32)
            .collect();
        let baseline = max_abs_error(&on_cuda, &expected);
        let decoder = CudaLmDecoder::with_prefill_rows(0, &weights, 32).unwrap();
        let name = format!(
            "{} (CUDA decoder, {:?})",
            decoder.describe(),
            config.attention
        );
        eprintln!("{name}: burn-cuda's forward off by {baseline:.3e}");
        let slack = 2.0 * baseline;
        check_decoder(
            &name, &NoPolling, decoder, &weights, &bytes, &expected, slack,
        );
        if config == tiny {
            let prompts = three_prompts();
            let expected: Vec<Vec<f64>> = prompts.iter().map(|p| logits(&model, p)).collect();
            let decoder = |sequences| {
                let options = CudaDecoderOptions {
                    prefill_rows: 32,
                    sequences,
                };
                CudaLmDecoder::with_options(0, &weights, options).unwrap()
            };
            let name = format!("{name} (3 sequences)");
            let decoders = (decoder(3), decoder(1));
            check_batch(
                &name, &NoPolling, decoders, &weights, &prompts, &expected, slack,
            );
        }
    }
}
