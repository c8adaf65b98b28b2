//! `moba train`: train a byte-level MoBA language model (burn-train's dashboard in a
//! terminal, progress lines otherwise), or continue one with `--resume`.

use std::path::PathBuf;

use clap::Args;
use moba::Result;
use moba::backend::MobaBackend;
use moba::gpu::AdapterRequest;
use moba::train::{Dashboard, TrainConfig, TrainTarget, load_config, train};

use super::lm::{AttentionChoice, BackendJob, LmBackend, Placement, RunArgs, dispatch};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// The run directory: train.json, checkpoint/, metrics.jsonl, model.mpk, summary.json.
    #[arg(long)]
    run: PathBuf,
    /// Continue the run in --run from its last checkpoint (its train.json; other flags are
    /// ignored).
    #[arg(long)]
    resume: bool,
    /// Attention of the layers (the last --full-layers are full either way).
    #[arg(long, value_enum, default_value_t = AttentionChoice::Moba)]
    attention: AttentionChoice,
    /// Keep the last N layers full attention (the MoBA paper's hybrid).
    #[arg(long, default_value_t = 0)]
    full_layers: usize,
    #[arg(long, value_enum, default_value_t = LmBackend::Wgpu)]
    backend: LmBackend,
    /// Progress as plain lines even in a terminal (no dashboard).
    #[arg(long)]
    lines: bool,
    /// Train data parallel on these devices of the backend (`0,1`: two GPUs on cuda; on
    /// ndarray, CPU workers): each takes an equal share of every --batch-size batch, their
    /// gradients summed, so the steps are those of one device with the same batch.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0",
        value_name = "INDICES"
    )]
    devices: Vec<usize>,
    #[command(flatten)]
    settings: RunArgs,
}

struct Job<'a> {
    args: &'a TrainArgs,
    config: TrainConfig,
}

impl BackendJob for Job<'_> {
    type Output = ();

    fn run<B: MobaBackend>(self, placement: Placement<B>) -> Result<()> {
        let devices = (self.args.devices.iter())
            .map(|&index| match index {
                0 => Ok(placement.device.clone()),
                index => (placement.device_at)(index),
            })
            .collect::<Result<Vec<_>>>()?;
        let target = TrainTarget::<B> {
            dir: &self.args.run,
            devices,
            memory: placement.memory,
            capacity: placement.capacity,
            dashboard: if self.args.lines {
                Dashboard::Lines
            } else {
                Dashboard::Auto
            },
        };
        let summary = train(&self.config, self.args.resume, target)?;
        println!(
            "{}: {} steps, {:.1}M bytes in {:.0} s ({:.0} bytes/s), validation loss {:.4}{}",
            self.args.run.display(),
            summary.steps,
            summary.tokens as f64 / 1e6,
            summary.seconds,
            summary.tokens_per_second,
            summary.final_valid_loss,
            summary
                .peak_memory_mib
                .map_or(String::new(), |m| format!(", peak GPU memory {m:.0} MiB")),
        );
        Ok(())
    }
}

pub fn run(request: &AdapterRequest, args: &TrainArgs) -> Result<()> {
    let config = if args.resume {
        load_config(&args.run)?
    } else {
        args.settings.config(args.attention, args.full_layers)?
    };
    eprintln!(
        "{} on {:?}: {} layers, d {}, {} bytes per sequence, {} steps of {} bytes",
        args.run.display(),
        args.backend,
        config.model.n_layers,
        config.model.d_model,
        config.seq_len,
        config.steps,
        config.tokens_per_step()
    );
    dispatch(args.backend, request, Job { args, config })
}
