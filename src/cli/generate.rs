//! `moba generate`: sample bytes from a trained run. The prompt goes through one MoBA
//! prefill; every new byte through one MoBA decode step over the KV cache.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use moba::backend::MobaBackend;
use moba::model::{Sampling, generate};
use moba::train::{MemoryProbe, load_config, load_model, run_weights};
use moba::{MobaError, Result};

use super::lm::{BackendJob, LmBackend, dispatch};

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

    fn run<B: MobaBackend>(self, device: B::Device, _: Option<MemoryProbe>) -> Result<()> {
        let args = self.args;
        let config = load_config(&args.run)?;
        let model = load_model::<B>(&config.model, &run_weights(&args.run)?, &device)?;
        let sampling = Sampling {
            temperature: args.temperature,
            top_p: args.top_p,
            seed: args.seed,
        };
        let mut stdout = std::io::stdout();
        stdout.write_all(&self.prompt).ok();
        let start = Instant::now();
        let mut first = None;
        let out = generate(&model, &self.prompt, args.max_new, &sampling, |byte| {
            first.get_or_insert_with(|| start.elapsed());
            stdout.write_all(&[byte]).ok();
            stdout.flush().ok();
        })?;
        let prefill = first.unwrap_or_default();
        let decode = start.elapsed() - prefill;
        eprintln!(
            "\n{} prompt bytes: prefill and first byte {:.2} s; {} more bytes at {:.1} bytes/s (MoBA decode)",
            self.prompt.len(),
            prefill.as_secs_f64(),
            out.len().saturating_sub(1),
            out.len().saturating_sub(1) as f64 / decode.as_secs_f64().max(1e-9),
        );
        Ok(())
    }
}

pub fn run(args: &GenerateArgs) -> Result<()> {
    let prompt = match (&args.prompt, &args.prompt_file) {
        (Some(text), _) => text.as_bytes().to_vec(),
        (None, Some(path)) => std::fs::read(path).map_err(|e| MobaError::io(path, e))?,
        (None, None) => {
            return Err(MobaError::Config(
                "give --prompt TEXT or --prompt-file PATH".into(),
            ));
        }
    };
    dispatch(args.backend, Job { args, prompt })
}
