//! `moba bench`: a sweep of forward measurements on one adapter, written as JSON lines and
//! printed as a markdown table; `moba bench report FILES... [--peers LOG...]` merges result
//! files (from several machines, say) into one table, with PyTorch's peers beside them.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use moba::backend::baseline::burn_attention_seconds;
use moba::backend::burn_wgpu_device;
use moba::bench::peers::{Peer, parse_peers, peers_table};
use moba::bench::{
    BenchOptions, DeviceDescription, Record, decode_table, markdown_table, measure, write_plots,
};
use moba::gpu::{AdapterRequest, GpuContext};
use moba::{MobaConfig, MobaError, Result, Shape};

use super::demo::KernelChoice;

mod nsa;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    report: Option<BenchCommand>,
    /// Sequence lengths to measure, comma-separated (with `--decode`: cache lengths).
    #[arg(long, value_delimiter = ',', default_value = "1024,2048")]
    seq_lens: Vec<usize>,
    /// Decode: one query per sequence (the next token) over a cache of each `--seq-lens`
    /// keys, reported as tokens per second.
    #[arg(long)]
    decode: bool,
    /// Sequences in the batch.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Query heads.
    #[arg(long, default_value_t = 2)]
    heads: usize,
    /// Key/value heads (GQA: a divisor of `--heads`); default `--heads`.
    #[arg(long)]
    kv_heads: Option<usize>,
    #[arg(long, default_value_t = 64)]
    head_dim: usize,
    #[arg(long, default_value_t = 128)]
    block_size: usize,
    #[arg(long, default_value_t = 3)]
    top_k: usize,
    /// Timed runs per kernel (the median is kept).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Skip the dense baseline.
    #[arg(long)]
    no_dense: bool,
    /// Also time a training step (forward + backward).
    #[arg(long)]
    backward: bool,
    /// Also time burn's own attention op (causal, burn's wgpu backend on the same adapter)
    /// as a baseline.
    #[arg(long)]
    burn_baseline: bool,
    #[arg(long, value_enum, default_value_t = KernelChoice::Auto)]
    kernel: KernelChoice,
    /// `cuda`: the CUDA path on GPU 0 (a build with `--features cuda`) instead of wgpu.
    #[arg(long)]
    cuda: bool,
    /// Element type of the CUDA path.
    #[arg(long, value_enum, default_value_t = CudaDtype::Bf16)]
    dtype: CudaDtype,
    /// JSON-lines file the records are appended to (created with its folder).
    #[arg(long, default_value = "results/bench.jsonl")]
    out: PathBuf,
    /// `nsa`: NSA (`../shared/NSA.md`, random gates) through burn's backend with the MoBA
    /// op: burn's wgpu, or with `--cuda` the CUDA path's (`--dtype`); forward, and with
    /// `--backward` the training step.
    #[arg(long, value_enum, default_value_t = BenchAttention::Moba)]
    attention: BenchAttention,
    #[command(flatten)]
    nsa: NsaBenchArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum BenchAttention {
    Moba,
    Nsa,
}

/// NSA's sizes (the paper's by default), with `--attention nsa`.
#[derive(Args, Debug)]
#[command(next_help_heading = "NSA (--attention nsa)")]
struct NsaBenchArgs {
    /// Keys per compressed block, l.
    #[arg(long, value_name = "L", default_value_t = 32)]
    compress_block: usize,
    /// Distance between compressed blocks, d.
    #[arg(long, value_name = "D", default_value_t = 16)]
    stride: usize,
    /// Keys per selection block, l'.
    #[arg(long, value_name = "L'", default_value_t = 64)]
    select_block: usize,
    /// Selection blocks per GQA group and query, the forced ones included.
    #[arg(long, value_name = "N", default_value_t = 16)]
    top_n: usize,
    /// Keys of the sliding window.
    #[arg(long, value_name = "W", default_value_t = 512)]
    window: usize,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum CudaDtype {
    F32,
    F16,
    Bf16,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Merge JSON-lines result files into one markdown table and SVG plots.
    Report {
        files: Vec<PathBuf>,
        /// Output of `peers_torch.py` (PyTorch SDPA and FlexAttention-MoBA on the same GPU):
        /// a second table with the ratios, and the peers on the time plot.
        #[arg(long, num_args = 1..)]
        peers: Vec<PathBuf>,
        /// Folder for time_vs_s.svg and speedup_vs_s.svg.
        #[arg(long, default_value = "results")]
        plots: PathBuf,
    },
}

pub fn run(args: &BenchArgs, request: &AdapterRequest) -> Result<()> {
    if let Some(BenchCommand::Report {
        files,
        peers: peer_files,
        plots,
    }) = &args.report
    {
        let mut records = Vec::new();
        for file in files {
            records.extend(read_records(file)?);
        }
        let mut peers = Vec::new();
        for file in peer_files {
            let text = std::fs::read_to_string(file).map_err(|e| MobaError::io(file, e))?;
            peers.extend(parse_peers(&text, &file.display().to_string())?);
        }
        let (decode, records): (Vec<Record>, Vec<Record>) =
            records.into_iter().partition(|r| r.pass == "decode");
        if !decode.is_empty() {
            println!("{}", decode_table(&decode));
        }
        if records.is_empty() {
            return Ok(());
        }
        print!("{}", markdown_table(&records));
        if !peers.is_empty() {
            print!("\nPyTorch peers on the same GPU (ratios: their time over ours)\n\n");
            print!("{}", peers_table(&records, &peers));
        }
        report_plots(&records, &peers, plots)?;
        return Ok(());
    }
    if args.runs == 0 {
        return Err(MobaError::Config("--runs must be at least 1".into()));
    }
    if args.attention == BenchAttention::Nsa {
        return nsa::run(args, request);
    }
    // The forward tables, plots and peers match records by sequence length and heads alone.
    if !args.decode && (args.batch != 1 || args.kv_heads.is_some()) {
        return Err(MobaError::Config(
            "--batch and --kv-heads go with --decode".into(),
        ));
    }
    if args.decode && (args.backward || args.burn_baseline) {
        return Err(MobaError::Config(
            "--decode times the forward step alone: no --backward or --burn-baseline".into(),
        ));
    }
    let mut out = RecordsFile::open(&args.out)?;
    let mut records = Vec::new();
    let gpu = match args.cuda {
        true => None,
        false => Some(GpuContext::new_blocking(request)?),
    };
    if let Some(gpu) = &gpu {
        eprintln!("adapter: {}", gpu.describe());
    }
    let pass = if args.decode { "decode" } else { "forward" };
    for (index, &seq_len) in args.seq_lens.iter().enumerate() {
        let shape = Shape {
            batch: args.batch,
            q_heads: args.heads,
            kv_heads: args.kv_heads.unwrap_or(args.heads),
            q_len: if args.decode { 1 } else { seq_len },
            kv_len: seq_len,
            head_dim: args.head_dim,
        };
        let config = MobaConfig::new(args.block_size, args.top_k);
        let step = format!("[{}/{}] S={seq_len}", index + 1, args.seq_lens.len());
        let progress = |what: &str| eprint!("\r{step}: {what:50}");
        let Some(gpu) = &gpu else {
            let mut record = measure_cuda(args, &shape, &config, progress)?;
            record.pass = pass.into();
            out.append(&record)?;
            records.push(record);
            continue;
        };
        let options = BenchOptions {
            kernel: args.kernel.resolve(gpu, args.head_dim),
            runs: args.runs,
            warmup: 1,
            dense: !args.no_dense,
            check_rows: 16,
            backward: args.backward,
            // A decode step reads the block means its cache keeps.
            cached_means: args.decode,
        };
        let found = measure(gpu, &shape, &config, &options, progress)?;
        let mut record = Record::new(&DeviceDescription::of(gpu), &found);
        record.pass = pass.into();
        if args.burn_baseline {
            progress("burn attention");
            let (device, _) = burn_wgpu_device(request)?;
            record.burn_ms = Some(burn_attention_seconds(&device, &shape, options.runs)? * 1e3);
        }
        out.append(&record)?;
        records.push(record);
    }
    out.report();
    if args.decode {
        // The plots' x axis is the sequence length: not a decode's.
        print!("{}", decode_table(&records));
    } else {
        print!("{}", markdown_table(&records));
        let folder = args
            .out
            .parent()
            .filter(|f| !f.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        report_plots(&records, &[], folder)?;
    }
    let failed: Vec<String> = records
        .iter()
        .filter(|r| r.passed == Some(false))
        .map(|r| {
            let bound = r.o_bound.unwrap_or(f64::NAN);
            format!(
                "{} S={} {}: o error {:.2e}, bound {bound:.2e}",
                r.pass, r.kv_len, r.kernel, r.o_error
            )
        })
        .collect();
    check_failures(&failed, records.len())
}

/// `Ok` where no measurement failed its check; else the failures (each described) as one
/// error, after every record was written.
fn check_failures(failed: &[String], measured: usize) -> Result<()> {
    match failed.is_empty() {
        true => Ok(()),
        false => Err(MobaError::CheckFailed(format!(
            "FAIL: {} of {measured} measurements disagree with the reference past the bound: {}",
            failed.len(),
            failed.join(", ")
        ))),
    }
}

/// One measurement of the CUDA path in the chosen element type (an error in a build without
/// the `cuda` feature).
fn measure_cuda(
    args: &BenchArgs,
    shape: &Shape,
    config: &MobaConfig,
    progress: impl FnMut(&str),
) -> Result<Record> {
    #[cfg(feature = "cuda")]
    {
        use moba::cuda::source::ElemKind;
        let elem = match args.dtype {
            CudaDtype::F32 => ElemKind::F32,
            CudaDtype::F16 => ElemKind::F16,
            CudaDtype::Bf16 => ElemKind::Bf16,
        };
        let options = moba::cuda::bench::Options {
            elem,
            runs: args.runs,
            backward: args.backward,
            check_rows: 16,
            cached_means: args.decode,
        };
        moba::cuda::bench::measure(shape, config, &options, progress)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (args, shape, config, progress);
        Err(moba::cuda::not_built())
    }
}

fn report_plots(records: &[Record], peers: &[Peer], folder: &Path) -> Result<()> {
    for path in write_plots(records, peers, folder)? {
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The JSON-lines file a bench run appends its records to, a line as soon as each is
/// measured (an interrupted run keeps what it measured).
struct RecordsFile {
    path: PathBuf,
    file: std::fs::File,
    written: usize,
}

impl RecordsFile {
    /// Opens `path` for appending, with its folder; a file whose last line lacks its newline
    /// gets one first.
    fn open(path: &Path) -> Result<Self> {
        use std::io::{Read, Seek, SeekFrom};
        if let Some(folder) = path.parent().filter(|f| !f.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder).map_err(|e| MobaError::io(folder, e))?;
        }
        let error = |e| MobaError::io(path, e);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(error)?;
        if file.metadata().map_err(error)?.len() > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::End(-1)).map_err(error)?;
            file.read_exact(&mut last).map_err(error)?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(error)?;
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            written: 0,
        })
    }

    /// Appends `record` as one line.
    fn append(&mut self, record: &impl serde::Serialize) -> Result<()> {
        let line = serde_json::to_string(record).expect("a record serialises");
        writeln!(self.file, "{line}").map_err(|e| MobaError::io(&self.path, e))?;
        self.written += 1;
        Ok(())
    }

    /// Says how many records went where, over the progress line.
    fn report(&self) {
        eprintln!(
            "\r{:60}\rwrote {} records to {}",
            "",
            self.written,
            self.path.display()
        );
    }
}

/// The MoBA records of one JSON-lines file (NSA's, which `--attention nsa` may have
/// appended to the same file, are its own table's); a bad line is an error naming the file
/// and line.
fn read_records(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).map_err(|e| MobaError::io(path, e))?;
    let mut records = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |e: serde_json::Error| MobaError::Io {
            path: format!("{}:{}", path.display(), number + 1),
            error: format!("not a benchmark record: {e}").into(),
        };
        let value: serde_json::Value = serde_json::from_str(line).map_err(bad)?;
        if value.get("attention").and_then(|a| a.as_str()) == Some("nsa") {
            continue;
        }
        records.push(serde_json::from_value(value).map_err(bad)?);
    }
    Ok(records)
}
