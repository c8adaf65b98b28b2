//! `moba compare`: train MoBA and full attention (and optionally a hybrid) with the same
//! seed, data and steps, evaluate each, and write the loss curves, recall by distance and a
//! table. Running it again continues: finished arms are kept, interrupted ones resume.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use moba::Result;
use moba::gpu::AdapterRequest;
use moba::train::{Arm, Dashboard, TrainConfig, TrainTarget, load_config, write_report};

use super::eval::{EvalFlags, EvalJob};
use super::lm::{AttentionChoice, BackendJob, LmBackend, Placement, RunArgs, dispatch, other_run};

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum ArmChoice {
    /// MoBA in every layer.
    Moba,
    /// Full attention in every layer (the reference).
    Full,
    /// MoBA with the last --hybrid-full-layers layers full.
    Hybrid,
    /// NSA in every layer (the --compress-block ... --window flags).
    Nsa,
    /// A sliding window of --window keys in every layer (the local-attention baseline).
    Window,
}

impl ArmChoice {
    fn name(self) -> &'static str {
        match self {
            ArmChoice::Moba => "moba",
            ArmChoice::Full => "full",
            ArmChoice::Hybrid => "hybrid",
            ArmChoice::Nsa => "nsa",
            ArmChoice::Window => "window",
        }
    }
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Output folder: a run directory per arm, then loss.svg, recall_by_distance.svg and
    /// table.md.
    #[arg(long)]
    out: PathBuf,
    /// The arms, comma-separated; `full` is the reference of the table.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "moba,full")]
    arms: Vec<ArmChoice>,
    /// Full layers at the end of the hybrid arm.
    #[arg(long, default_value_t = 1)]
    hybrid_full_layers: usize,
    /// Start each arm from the weights of the same arm in this earlier comparison's output
    /// folder (fresh optimizer and schedule): more steps for every arm from where it stood,
    /// for example at a longer --seq-len. Give another --seed for other data.
    #[arg(long, conflicts_with = "init_from")]
    continue_from: Option<PathBuf>,
    /// Only write the report from the arms' directories (runs made elsewhere).
    #[arg(long)]
    report_only: bool,
    #[arg(long, value_enum, default_value_t = LmBackend::Wgpu)]
    backend: LmBackend,
    #[command(flatten)]
    settings: RunArgs,
    #[command(flatten)]
    eval: EvalFlags,
}

/// Trains one arm (or resumes it).
struct TrainJob<'a> {
    config: &'a TrainConfig,
    dir: &'a Path,
    resume: bool,
}

impl BackendJob for TrainJob<'_> {
    type Output = ();

    fn run<B: moba::backend::MobaBackend>(self, placement: Placement<B>) -> Result<()> {
        let target = TrainTarget::<B> {
            dir: self.dir,
            devices: vec![placement.device],
            memory: placement.memory,
            capacity: placement.capacity,
            dashboard: Dashboard::Lines,
        };
        moba::train::train(self.config, self.resume, target).map(drop)
    }
}

pub fn run(request: &AdapterRequest, args: &CompareArgs) -> Result<()> {
    let mut arms = Vec::new();
    for &arm in &args.arms {
        let dir = args.out.join(arm.name());
        if !args.report_only {
            let config = match arm {
                ArmChoice::Moba => args.settings.config(AttentionChoice::Moba, 0)?,
                ArmChoice::Full => args.settings.config(AttentionChoice::Full, 0)?,
                ArmChoice::Hybrid => args
                    .settings
                    .config(AttentionChoice::Moba, args.hybrid_full_layers)?,
                ArmChoice::Nsa => args.settings.config(AttentionChoice::Nsa, 0)?,
                ArmChoice::Window => args.settings.config(AttentionChoice::Window, 0)?,
            };
            let config = match &args.continue_from {
                Some(earlier) => {
                    let from = earlier.join(arm.name()).display().to_string();
                    config.with_init_from(Some(from))
                }
                None => config,
            };
            prepare(arm, &config, &dir, args, request)?;
        }
        arms.push(Arm::read(arm.name(), &dir)?);
    }
    let table = write_report(&arms, ArmChoice::Full.name(), &args.out)?;
    println!("{table}");
    println!("plots and table in {}", args.out.display());
    Ok(())
}

/// Trains (or resumes) and evaluates the arm in `dir` unless that is done already.
fn prepare(
    arm: ArmChoice,
    config: &TrainConfig,
    dir: &Path,
    args: &CompareArgs,
    request: &AdapterRequest,
) -> Result<()> {
    let started = dir.join("train.json").is_file();
    if started && load_config(dir)?.with_absolute_paths()? != *config {
        return Err(other_run(dir));
    }
    if !dir.join("summary.json").is_file() {
        eprintln!("== {}: training {}", arm.name(), dir.display());
        let job = TrainJob {
            config,
            dir,
            resume: started,
        };
        dispatch(args.backend, request, job)?;
    }
    if !dir.join("eval.json").is_file() {
        eprintln!("== {}: evaluating", arm.name());
        let job = EvalJob {
            dir,
            options: args.eval.options(),
        };
        dispatch(args.backend, request, job)?;
    }
    Ok(())
}
