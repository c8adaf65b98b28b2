//! Command-line arguments and dispatch.

mod attend;
mod bench;
mod demo;
mod info;
// The language-model commands.
mod compare;
mod eval;
mod export;
mod generate;
mod lm;
mod train;

use clap::{Parser, Subcommand};
use moba::Result;
use moba::gpu::{AdapterRequest, GpuContext, parse_api};

/// Mixture of Block Attention on every GPU.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Args {
    /// Use the first adapter whose name contains this (case-insensitive).
    #[arg(long, global = true)]
    adapter: Option<String>,
    /// Graphics API: vulkan, metal, dx12 or gl (default: all).
    #[arg(long, global = true)]
    api: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List adapters with their features and limits.
    Info,
    /// Run MoBA on random inputs: adapter, sparsity, error against the reference, time vs dense.
    Demo(demo::DemoArgs),
    /// MoBA or NSA attention of .npy inputs: writes o.npy, selection.npy (MoBA: lse.npy).
    Attend(attend::AttendArgs),
    /// Measure a sweep of forwards (JSON lines + markdown table); `bench report FILES` merges.
    Bench(bench::BenchArgs),
    /// Train a byte-level MoBA language model (dashboard, checkpoints, --resume).
    Train(train::TrainArgs),
    /// Validation loss, trailing loss and recall by distance of a trained run.
    Eval(eval::EvalArgs),
    /// Sample bytes from a trained run (MoBA prefill, then MoBA decode steps).
    Generate(generate::GenerateArgs),
    /// Train MoBA and full attention alike, then plot and tabulate both.
    Compare(compare::CompareArgs),
    /// Write a run's config and weights to a new directory to ship (--half: f16 weights).
    Export(export::ExportArgs),
}

pub fn run(args: Args) -> Result<()> {
    let backends = args.api.as_deref().map(parse_api).transpose()?;
    let request = AdapterRequest {
        name: args.adapter.clone(),
        backends,
    };
    match args.command {
        Some(Command::Info) => info::run(backends.unwrap_or(wgpu::Backends::all())),
        Some(Command::Attend(attend)) => attend::run(&attend, &request),
        Some(Command::Bench(bench)) => bench::run(&bench, &request),
        Some(Command::Demo(demo)) => demo::run(&demo, &open(&request)?),
        Some(Command::Train(train)) => train::run(&request, &train),
        Some(Command::Eval(eval)) => eval::run(&request, &eval),
        Some(Command::Generate(generate)) => generate::run(&request, &generate),
        Some(Command::Compare(compare)) => compare::run(&request, &compare),
        Some(Command::Export(export)) => export::run(&export),
        None => demo::run(&demo::DemoArgs::default(), &open(&request)?),
    }
}

fn open(request: &AdapterRequest) -> Result<GpuContext> {
    GpuContext::new_blocking(request)
}
