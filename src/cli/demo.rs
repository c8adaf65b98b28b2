//! `moba demo`, the main job: MoBA on random inputs at a size that suits the adapter, its
//! sparsity, its error against the reference on sampled rows, and its time against the
//! dense kernel on the same adapter.

use clap::{Args, ValueEnum};
use moba::bench::{BenchOptions, measure};
use moba::gpu::{AttentionKernel, GpuContext};
use moba::launch_plan::Stage;
use moba::{MobaConfig, MobaError, Result, Shape};

#[derive(Args, Debug, Default)]
pub struct DemoArgs {
    /// Sequence length (default: 1024 on a CPU adapter, 32768 on a GPU).
    #[arg(long)]
    seq_len: Option<usize>,
    /// Query heads (default: 2 on a CPU adapter, 16 on a GPU).
    #[arg(long)]
    heads: Option<usize>,
    /// Key/value heads (default: as many as query heads).
    #[arg(long)]
    kv_heads: Option<usize>,
    /// Head dim (default: 64 on a CPU adapter, 128 on a GPU).
    #[arg(long)]
    head_dim: Option<usize>,
    /// Keys per block (default: 64 on a CPU adapter, 512 on a GPU).
    #[arg(long)]
    block_size: Option<usize>,
    /// Blocks per query (default 3).
    #[arg(long)]
    top_k: Option<usize>,
    /// Timed runs per kernel; the median is reported (default 5).
    #[arg(long)]
    runs: Option<usize>,
    /// Untimed runs before the timed ones (default 1; when any, they last at least half a
    /// second, so that the GPU has raised its clocks).
    #[arg(long)]
    warmup: Option<usize>,
    /// Rows checked against the f64 reference (default 64).
    #[arg(long)]
    check_rows: Option<usize>,
    /// Skip the dense baseline (it is quadratic: slow at long sequences).
    #[arg(long)]
    no_dense: bool,
    /// Also time a training step: the forward then the backward (dq, dk, dv).
    #[arg(long)]
    backward: bool,
    /// Attention kernel: the fastest the adapter runs, or a named one.
    #[arg(long, value_enum, default_value_t = KernelChoice::Auto)]
    kernel: KernelChoice,
}

#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq)]
pub(crate) enum KernelChoice {
    /// Cooperative matrices where the adapter has them, else the subgroup kernel, else
    /// portable f32.
    #[default]
    Auto,
    /// f32 WGSL, any adapter.
    Portable,
    /// f32 WGSL, each row split over 4 subgroup lanes, forward and backward (adapters with
    /// subgroups).
    Subgroup,
    /// The subgroup kernels staging f16 tiles (k, v, and dk/dv's q and dout rounded to f16),
    /// f32 arithmetic (adapters with subgroups and shader-f16).
    SubgroupF16,
    /// f16 cooperative matrices (tensor cores), f32 accumulation.
    Cooperative,
}

impl KernelChoice {
    pub(crate) fn resolve(self, gpu: &GpuContext, head_dim: usize) -> AttentionKernel {
        match self {
            KernelChoice::Auto => AttentionKernel::best(gpu.caps(), head_dim),
            KernelChoice::Portable => AttentionKernel::Portable,
            KernelChoice::Subgroup => AttentionKernel::Subgroup,
            KernelChoice::SubgroupF16 => AttentionKernel::SubgroupF16,
            KernelChoice::Cooperative => AttentionKernel::Cooperative,
        }
    }
}

pub fn run(args: &DemoArgs, gpu: &GpuContext) -> Result<()> {
    let cpu = gpu.is_cpu();
    let pick = |value: Option<usize>, on_cpu: usize, on_gpu: usize| {
        value.unwrap_or(if cpu { on_cpu } else { on_gpu })
    };
    let heads = pick(args.heads, 2, 16);
    let seq_len = pick(args.seq_len, 1024, 32768);
    let shape = Shape {
        batch: 1,
        q_heads: heads,
        kv_heads: args.kv_heads.unwrap_or(heads),
        q_len: seq_len,
        kv_len: seq_len,
        head_dim: pick(args.head_dim, 64, 128),
    };
    let config = MobaConfig::new(pick(args.block_size, 64, 512), args.top_k.unwrap_or(3));
    let runs = args.runs.unwrap_or(5);
    if runs == 0 {
        return Err(MobaError::Config("--runs must be at least 1".into()));
    }
    let options = BenchOptions {
        kernel: args.kernel.resolve(gpu, shape.head_dim),
        runs,
        warmup: args.warmup.unwrap_or(1),
        dense: !args.no_dense,
        check_rows: args.check_rows.unwrap_or(64),
        backward: args.backward,
        cached_means: false,
    };

    println!("adapter : {}", gpu.describe());
    println!(
        "host    : {} {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    println!(
        "problem : B={} Hq={} Hkv={} S={} D={} block={} top_k={} causal, f32",
        shape.batch,
        shape.q_heads,
        shape.kv_heads,
        shape.q_len,
        shape.head_dim,
        config.block_size,
        config.top_k,
    );
    println!("kernel  : {:?} attention", options.kernel);
    let found = measure(gpu, &shape, &config, &options, |what| {
        eprint!("\r{what:40}")
    })?;
    eprint!("\r{:40}\r", "");
    if found.calls > 1 {
        println!(
            "calls   : {} (the adapter's buffer limits split the (batch, kv head) groups)",
            found.calls
        );
    }
    println!("check   : {}", found.check.summary());
    println!(
        "density : {:.4} ({} attended pairs of {} causal pairs)",
        found.density(),
        found.attended_pairs,
        found.dense_pairs
    );
    println!(
        "moba    : {:10.3} ms  (median of {}; {} on attended pairs)",
        found.moba_seconds * 1e3,
        options.runs,
        rate(found.moba_rate())
    );
    if let Some(stages) = found.stage_seconds {
        let split = Stage::describe(&Stage::FORWARD, &stages);
        println!("stages  : {split} (GPU timestamps, one run)");
    }
    if let (Some(seconds), Some(step_rate)) = (found.step_seconds, found.step_rate()) {
        println!(
            "fwd+bwd : {:10.3} ms  (median of {}; {} on attended pairs)",
            seconds * 1e3,
            options.runs,
            rate(step_rate)
        );
    }
    if let Some(stages) = found.backward_stage_seconds {
        let split = Stage::describe(&Stage::BACKWARD, &stages);
        println!("backward: {split} (GPU timestamps, one run)");
    }
    let mib = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
    println!(
        "memory  : {:.1} MiB bound per call (a dense fallback materialising attention: {:.1} MiB)",
        mib(found.memory_bytes),
        mib(found.dense_fallback_bytes())
    );
    if let (Some(seconds), Some(dense_rate)) = (found.dense_seconds, found.dense_rate()) {
        println!(
            "dense   : {:10.3} ms  (median of {}; {})",
            seconds * 1e3,
            options.runs,
            rate(dense_rate)
        );
        println!(
            "speedup : {:.2}x over dense on the same adapter",
            seconds / found.moba_seconds
        );
    }
    match found.check.passed() {
        true => Ok(()),
        false => Err(MobaError::CheckFailed(format!(
            "MoBA on {} disagrees with the reference: {}",
            gpu.describe(),
            found.check.summary()
        ))),
    }
}

/// FLOP/s with a readable unit.
fn rate(flops_per_second: f64) -> String {
    if flops_per_second >= 1e12 {
        format!("{:.2} TFLOP/s", flops_per_second / 1e12)
    } else {
        format!("{:.2} GFLOP/s", flops_per_second / 1e9)
    }
}
