//! `moba generate`: sample bytes from a trained run. The prompt goes through one MoBA
//! prefill; every new byte through one MoBA decode step over the KV cache.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use moba::backend::MobaBackend;
use moba::gpu::AdapterRequest;
use moba::model::{Generator, Sampling};
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
        let sampling = Sampling {
            temperature: args.temperature,
            top_p: args.top_p,
            seed: args.seed,
        };
        // The prompt and the sampling are checked before anything is printed.
        let mut generator = Generator::new(&model, &self.prompt, sampling)?;
        let mut stdout = std::io::stdout();
        stdout.write_all(&self.prompt).ok();
        let start = Instant::now();
        let mut first = None;
        let mut drawn = 0;
        while drawn < args.max_new {
            let Some(byte) = generator.next_byte(&model)? else {
                break;
            };
            first.get_or_insert_with(|| start.elapsed());
            stdout.write_all(&[byte]).ok();
            stdout.flush().ok();
            drawn += 1;
        }
        let prefill = first.unwrap_or_default();
        let decode = start.elapsed() - prefill;
        eprintln!(
            "\n{} prompt bytes: prefill and first byte {:.2} s; {} more bytes at {:.1} bytes/s (MoBA decode)",
            self.prompt.len(),
            prefill.as_secs_f64(),
            drawn.saturating_sub(1),
            drawn.saturating_sub(1) as f64 / decode.as_secs_f64().max(1e-9),
        );
        if drawn < args.max_new {
            eprintln!(
                "stopped after {drawn} of --max-new {} bytes: the model's context of {} bytes is full",
                args.max_new, config.model.max_seq_len
            );
        }
        Ok(())
    }
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
    dispatch(args.backend, request, Job { args, prompt })
}
