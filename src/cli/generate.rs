//! `moba generate`: sample bytes from a trained run. On `--backend wgpu` and `--backend
//! cuda` a GPU decoder runs it (`moba::gpu::LmDecoder`, `moba::cuda::CudaLmDecoder`: a few
//! kernels per layer around MoBA's split decode, the KV cache on the GPU, one position per
//! submission, a prompt in chunks); on ndarray, and with `--decode burn`, burn's ops: the
//! prompt through one MoBA prefill, every new byte through one MoBA decode step over the KV
//! cache. `--samples N` draws N continuations of the prompt side by side on the GPU
//! decoders (a batch of N sequences: each step reads the weights once for all of them).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use burn::backend::NdArray;
use clap::{Args, ValueEnum};
use moba::backend::MobaBackend;
use moba::gpu::{AdapterRequest, DecoderOptions, GpuContext, WeightPrecision};
use moba::model::{Generator, GpuGenerator, Sampling};
use moba::train::{load_config, load_model, run_weights};
use moba::{MobaError, Result};

use super::lm::{BackendJob, LmBackend, Placement, dispatch};

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// The run directory (its model.mpk, else its latest checkpoint).
    #[arg(long)]
    run: PathBuf,
    /// The prompt.
    #[arg(long, conflicts_with = "prompt_file")]
    prompt: Option<String>,
    /// A file whose bytes are the prompt (long prompts).
    #[arg(long)]
    prompt_file: Option<PathBuf>,
    /// Bytes to generate.
    #[arg(long, default_value_t = 256)]
    max_new: usize,
    /// Softmax temperature (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Nucleus: sample from the likeliest bytes that make up this probability.
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_enum, default_value_t = LmBackend::Wgpu)]
    backend: LmBackend,
    /// What runs a decode step on `--backend wgpu` and `cuda`: the GPU decoder's kernels,
    /// or burn's ops (as on ndarray).
    #[arg(long, value_enum, default_value_t = Decode::Kernels)]
    decode: Decode,
    /// The wgpu decoder keeps the matrix products' weights in f16: half the GPU memory and
    /// half the weight reads of a step, each weight rounded to f16 (exact for a model
    /// exported with `moba export --half`, but for its folded norm gains).
    #[arg(long)]
    half_weights: bool,
    /// Continuations of the prompt to draw side by side (the GPU decoders: a batch of
    /// sequences, sample s drawn with seed --seed + s), printed when all are done.
    #[arg(long, default_value_t = 1)]
    samples: usize,
}

/// What runs the decode steps.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
enum Decode {
    /// The GPU decoder (`moba::gpu::LmDecoder`, `moba::cuda::CudaLmDecoder`); burn's ops on
    /// ndarray.
    Kernels,
    /// burn's ops around the MoBA op, on every backend.
    Burn,
}

impl GenerateArgs {
    fn sampling(&self) -> Sampling {
        Sampling {
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
        }
    }
}

struct Job<'a> {
    args: &'a GenerateArgs,
    prompt: Vec<u8>,
}

impl BackendJob for Job<'_> {
    type Output = ();

    fn run<B: MobaBackend>(self, placement: Placement<B>) -> Result<()> {
        let device = placement.device;
        let args = self.args;
        let config = load_config(&args.run)?;
        let model = load_model::<B>(&config.model, &run_weights(&args.run)?, &device)?;
        // The prompt and the sampling are checked before anything is printed.
        let mut generator = Generator::new(&model, &self.prompt, args.sampling())?;
        stream(args, &self.prompt, config.model.max_seq_len, || {
            Ok(generator.next_byte(&model)?.map(|byte| vec![byte]))
        })
    }
}

/// Prints the prompt, then each byte `next` draws as it comes (a byte of each of
/// `--samples` sequences per call: with more than one, each sample once all are drawn),
/// then the prefill time and the decode rate.
fn stream(
    args: &GenerateArgs,
    prompt: &[u8],
    max_seq_len: usize,
    mut next: impl FnMut() -> Result<Option<Vec<u8>>>,
) -> Result<()> {
    let mut stdout = std::io::stdout();
    let single = args.samples == 1;
    if single {
        stdout.write_all(prompt).ok();
    }
    let start = Instant::now();
    let mut first = None;
    let mut samples = vec![Vec::new(); args.samples];
    let mut drawn = 0;
    while drawn < args.max_new {
        let Some(bytes) = next()? else {
            break;
        };
        first.get_or_insert_with(|| start.elapsed());
        if single {
            stdout.write_all(&bytes).ok();
            stdout.flush().ok();
        }
        for (sample, byte) in samples.iter_mut().zip(bytes) {
            sample.push(byte);
        }
        drawn += 1;
    }
    let prefill = first.unwrap_or_default();
    let decode = start.elapsed() - prefill;
    if !single {
        for (s, sample) in samples.iter().enumerate() {
            println!("--- sample {s} (seed {})", args.seed.wrapping_add(s as u64));
            stdout.write_all(prompt).ok();
            stdout.write_all(sample).ok();
            println!();
        }
    }
    let rate = drawn.saturating_sub(1) as f64 / decode.as_secs_f64().max(1e-9);
    let batch = match single {
        true => String::new(),
        false => format!(
            " in each of {} samples, {:.1} bytes/s in all",
            args.samples,
            rate * args.samples as f64
        ),
    };
    eprintln!(
        "\n{} prompt bytes: prefill and first byte {:.2} s; {} more bytes at {rate:.1} bytes/s{batch} (MoBA decode)",
        prompt.len(),
        prefill.as_secs_f64(),
        drawn.saturating_sub(1),
    );
    if drawn < args.max_new {
        eprintln!(
            "stopped after {drawn} of --max-new {} bytes: the model's context of {max_seq_len} bytes is full",
            args.max_new
        );
    }
    Ok(())
}

/// Generation on the wgpu decoder: the weights read on the CPU, then uploaded once.
fn run_on_decoder(request: &AdapterRequest, args: &GenerateArgs, prompt: &[u8]) -> Result<()> {
    let config = load_config(&args.run)?;
    let model =
        load_model::<NdArray>(&config.model, &run_weights(&args.run)?, &Default::default())?;
    let gpu = GpuContext::new_blocking(request)?;
    eprintln!("adapter: {} (GPU decoder)", gpu.describe());
    let options = DecoderOptions {
        weights: match args.half_weights {
            true => WeightPrecision::F16,
            false => WeightPrecision::F32,
        },
        sequences: args.samples,
        ..Default::default()
    };
    let mut generator = GpuGenerator::with_options(&gpu, &model, prompt, args.sampling(), options)?;
    stream(args, prompt, config.model.max_seq_len, || {
        gpu.block_on(generator.next_bytes())
    })
}

/// Generation on the CUDA decoder of GPU 0: the weights read on the CPU, then uploaded once.
#[cfg(feature = "cuda")]
fn run_on_cuda_decoder(args: &GenerateArgs, prompt: &[u8]) -> Result<()> {
    let config = load_config(&args.run)?;
    let model =
        load_model::<NdArray>(&config.model, &run_weights(&args.run)?, &Default::default())?;
    let options = moba::cuda::CudaDecoderOptions {
        sequences: args.samples,
        ..Default::default()
    };
    let decoder = moba::cuda::CudaLmDecoder::with_options(0, &model.decode_weights()?, options)?;
    eprintln!("device: {} (CUDA decoder)", decoder.describe());
    let mut generator = GpuGenerator::with_decoder(decoder, prompt, args.sampling())?;
    stream(args, prompt, config.model.max_seq_len, || {
        pollster::block_on(generator.next_bytes())
    })
}

#[cfg(not(feature = "cuda"))]
fn run_on_cuda_decoder(_: &GenerateArgs, _: &[u8]) -> Result<()> {
    Err(moba::cuda::not_built())
}

pub fn run(request: &AdapterRequest, args: &GenerateArgs) -> Result<()> {
    let prompt = match (&args.prompt, &args.prompt_file) {
        (Some(text), _) => text.as_bytes().to_vec(),
        (None, Some(path)) => std::fs::read(path).map_err(|e| MobaError::io(path, e))?,
        (None, None) => {
            return Err(MobaError::Config(
                "give --prompt TEXT or --prompt-file PATH".into(),
            ));
        }
    };
    if args.half_weights && (args.backend, args.decode) != (LmBackend::Wgpu, Decode::Kernels) {
        return Err(MobaError::Config(
            "--half-weights is the wgpu decoder's (--backend wgpu --decode kernels)".into(),
        ));
    }
    let gpu_decoder =
        matches!(args.backend, LmBackend::Wgpu | LmBackend::Cuda) && args.decode == Decode::Kernels;
    if args.samples == 0 || (args.samples > 1 && !gpu_decoder) {
        return Err(MobaError::Config(format!(
            "--samples {}: at least 1, and more than 1 only on the GPU decoders (--backend \
             wgpu or cuda, --decode kernels)",
            args.samples
        )));
    }
    let on_decoder = match (args.backend, args.decode) {
        (LmBackend::Wgpu, Decode::Kernels) => run_on_decoder(request, args, &prompt),
        (LmBackend::Cuda, Decode::Kernels) => run_on_cuda_decoder(args, &prompt),
        _ => return dispatch(args.backend, request, Job { args, prompt }),
    };
    match on_decoder {
        // Before anything is printed: burn's ops run every model, one sample at a time.
        Err(why) if GpuGenerator::declines(&why) && args.samples == 1 => {
            eprintln!("{why}: decoding with burn's ops instead");
            dispatch(args.backend, request, Job { args, prompt })
        }
        Err(why) if GpuGenerator::declines(&why) => Err(MobaError::Config(format!(
            "{why}; --samples {} needs the GPU decoder (burn's ops draw one sample)",
            args.samples
        ))),
        done => done,
    }
}
