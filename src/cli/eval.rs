//! `moba eval`: validation loss, trailing loss and recall by distance of a trained run;
//! writes `eval.json` into the run directory.

use std::path::{Path, PathBuf};

use clap::Args;
use moba::backend::MobaBackend;
use moba::gpu::AdapterRequest;
use moba::train::{
    EvalOptions, EvalReport, evaluate, gate_hit_text, load_config, load_model, run_weights,
};
use moba::{MobaError, Result};

use super::lm::{BackendJob, LmBackend, Placement, dispatch};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The run directory (its model.mpk, else its latest checkpoint).
    #[arg(long)]
    run: PathBuf,
    #[arg(long, value_enum, default_value_t = LmBackend::Wgpu)]
    backend: LmBackend,
    #[command(flatten)]
    options: EvalFlags,
}

/// How much to evaluate (shared with `moba compare`).
#[derive(Args, Debug, Clone)]
pub struct EvalFlags {
    /// Validation batches for the losses.
    #[arg(long, default_value_t = 8)]
    eval_batches: usize,
    /// Distance buckets of the recall accuracy.
    #[arg(long, default_value_t = 4)]
    buckets: usize,
    /// Recall sequences per bucket.
    #[arg(long, default_value_t = 16)]
    recall_sequences: usize,
}

impl EvalFlags {
    pub fn options(&self) -> EvalOptions {
        EvalOptions {
            batches: self.eval_batches,
            buckets: self.buckets,
            recall_sequences: self.recall_sequences,
        }
    }
}

/// Evaluates the run in `dir` and writes `eval.json` there.
pub struct EvalJob<'a> {
    pub dir: &'a Path,
    pub options: EvalOptions,
}

impl BackendJob for EvalJob<'_> {
    type Output = EvalReport;

    fn run<B: MobaBackend>(self, placement: Placement<B>) -> Result<EvalReport> {
        let device = placement.device;
        let config = load_config(self.dir)?;
        let model = load_model::<B>(&config.model, &run_weights(self.dir)?, &device)?;
        let report = evaluate(&model, &config, &self.options, &device)?;
        let path = self.dir.join("eval.json");
        let json = serde_json::to_string_pretty(&report).expect("plain numbers");
        std::fs::write(&path, json).map_err(|e| MobaError::io(&path, e))?;
        Ok(report)
    }
}

pub fn run(request: &AdapterRequest, args: &EvalArgs) -> Result<()> {
    let job = EvalJob {
        dir: &args.run,
        options: args.options.options(),
    };
    let report = dispatch(args.backend, request, job)?;
    println!(
        "{}: validation loss {:.4}, trailing loss (last eighth) {:.4}, {} sequences",
        args.run.display(),
        report.valid_loss,
        report.trailing_loss,
        report.sequences
    );
    for bucket in &report.recall {
        println!(
            "  recall at {:>6}..{:<6} bytes: {:.3} ({} of {}){}",
            bucket.distance.start,
            bucket.distance.end,
            bucket.accuracy(),
            bucket.correct,
            bucket.queries,
            gate_hit_text(bucket)
        );
    }
    Ok(())
}
