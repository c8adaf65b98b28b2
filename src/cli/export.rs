//! `moba export`: a run's config and weights as a run of their own, to ship (a page's model,
//! a repository's), in f16 with `--half`.

use std::path::PathBuf;

use clap::Args;
use moba::Result;
use moba::train::export_run;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The run directory (its model.mpk, else its latest complete checkpoint).
    #[arg(long)]
    run: PathBuf,
    /// The directory to write train.json and model.mpk into (not the run itself).
    #[arg(long)]
    out: PathBuf,
    /// Write the weights in f16: half the bytes, each weight rounded to f16. Every command
    /// and the page read them as they read f32 weights.
    #[arg(long)]
    half: bool,
}

pub fn run(args: &ExportArgs) -> Result<()> {
    let exported = export_run(&args.run, &args.out, args.half)?;
    let mb = |bytes: u64| bytes as f64 / 1e6;
    println!(
        "wrote {} ({:.2} MB, {}) from {} ({:.2} MB)",
        exported.weights.display(),
        mb(exported.bytes),
        if args.half { "f16" } else { "f32" },
        exported.source.display(),
        mb(exported.source_bytes)
    );
    Ok(())
}
