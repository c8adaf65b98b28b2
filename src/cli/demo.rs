//! `moba demo`, the main job: MoBA on random inputs at a size that suits the adapter, its
//! sparsity, its error against the reference on sampled rows, and its time against the
//! dense kernel on the same adapter.

use std::time::Instant;

use clap::{Args, ValueEnum};
use moba::gpu::{
    AttentionKernel, DenseForward, ForwardBuffers, ForwardIo, GpuContext, MobaForward, STAGES,
    StageTimer,
};
use moba::{MobaConfig, Result, Shape, random, reference, sparsity};

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
    /// Untimed runs before the timed ones (default 1).
    #[arg(long)]
    warmup: Option<usize>,
    /// Rows checked against the f64 reference (default 64).
    #[arg(long)]
    check_rows: Option<usize>,
    /// Skip the dense baseline (it is quadratic: slow at long sequences).
    #[arg(long)]
    no_dense: bool,
    /// Attention kernel: the fastest the adapter runs, or a named one.
    #[arg(long, value_enum, default_value_t = KernelChoice::Auto)]
    kernel: KernelChoice,
}

#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq)]
pub enum KernelChoice {
    /// Cooperative matrices where the adapter has them, else portable f32.
    #[default]
    Auto,
    /// f32 WGSL, any adapter.
    Portable,
    /// f16 cooperative matrices (tensor cores), f32 accumulation.
    Cooperative,
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
    shape.validate()?;
    let config = MobaConfig::new(pick(args.block_size, 64, 512), args.top_k.unwrap_or(3));
    config.validate()?;
    let runs = args.runs.unwrap_or(5).max(1);
    let warmup = args.warmup.unwrap_or(1);
    let kernel = match args.kernel {
        KernelChoice::Auto => AttentionKernel::best(gpu, shape.head_dim),
        KernelChoice::Portable => AttentionKernel::Portable,
        KernelChoice::Cooperative => AttentionKernel::Cooperative,
    };

    println!("adapter : {}", gpu.describe());
    println!(
        "host    : {} {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    let per_call = MobaForward::groups_per_call(gpu, &shape, &config)?;
    let calls = shape.groups().div_ceil(per_call);
    println!(
        "problem : B={} Hq={} Hkv={} S={} D={} block={} top_k={} causal, f32 ({} call{} of up to {} (batch, kv head) groups)",
        shape.batch,
        shape.q_heads,
        shape.kv_heads,
        shape.q_len,
        shape.head_dim,
        config.block_size,
        config.top_k,
        calls,
        if calls == 1 { "" } else { "s" },
        per_call
    );
    println!("kernel  : {kernel:?} attention");

    let mut moba_seconds = 0.0;
    let mut dense_seconds = 0.0;
    let mut pairs = 0u64;
    let mut check = String::new();
    // Where the adapter has timestamps, one more run per call splits the time by stage.
    let timer = StageTimer::new(gpu).ok();
    let mut stage_seconds = [0.0f64; 4];
    for call in 0..calls {
        let groups = per_call.min(shape.groups() - call * per_call);
        let part = shape.group_chunk(groups);
        eprint!("\rcall {}/{calls}: inputs", call + 1);
        let seed = 3 * call as u64;
        let (q, k, v) = (
            random::normal(part.q_elems(), seed),
            random::normal(part.kv_elems(), seed + 1),
            random::normal(part.kv_elems(), seed + 2),
        );
        let owned = ForwardIo::new(gpu, &q, &k, &v, part.q_rows(), config.top_k);
        let io = owned.buffers();
        eprint!("\rcall {}/{calls}: moba  ", call + 1);
        let moba = MobaForward::with_kernel(gpu, &part, &config, kernel)?;
        moba_seconds += median_seconds(gpu, warmup, runs, |encoder| moba.encode(encoder, &io))?;
        if let Some(timer) = &timer {
            let mut encoder = gpu.device().create_command_encoder(&Default::default());
            moba.encode_timed(&mut encoder, &io, timer)?;
            gpu.submit_and_wait(encoder.finish())?;
            let times = pollster::block_on(timer.read(gpu))?;
            stage_seconds
                .iter_mut()
                .zip(times.0)
                .for_each(|(total, t)| *total += t);
        }
        let chosen: Vec<i32> = pollster::block_on(gpu.download(&owned.selection))?;
        pairs += sparsity::attended_pairs(&chosen, &part, &config);
        if call == 0 {
            check = check_sample(
                gpu,
                &io,
                (&q, &k, &v),
                &part,
                &config,
                args.check_rows.unwrap_or(64),
            )?;
        }
        if !args.no_dense {
            eprint!("\rcall {}/{calls}: dense ", call + 1);
            let dense = DenseForward::new(gpu, &part, &config)?;
            dense_seconds += median_seconds(gpu, warmup, runs, |encoder| {
                dense.encode(encoder, io.q, io.k, io.v, io.o, io.lse)
            })?;
        }
    }
    eprint!("\r{:40}\r", "");
    println!("{check}");

    let dense_pairs = sparsity::dense_pairs(&shape, config.causal);
    let flops = sparsity::forward_flops(pairs, shape.head_dim);
    println!(
        "density : {:.4} ({pairs} attended pairs of {dense_pairs} causal pairs)",
        pairs as f64 / dense_pairs as f64
    );
    println!(
        "moba    : {:10.3} ms  (median of {runs}; {} on attended pairs)",
        moba_seconds * 1e3,
        rate(flops / moba_seconds)
    );
    if timer.is_some() {
        let split: Vec<String> = STAGES
            .iter()
            .zip(stage_seconds)
            .map(|(name, seconds)| format!("{name} {:.3} ms", seconds * 1e3))
            .collect();
        println!("stages  : {} (GPU timestamps, one run)", split.join(", "));
    }
    if !args.no_dense {
        let dense_flops = sparsity::forward_flops(dense_pairs, shape.head_dim);
        println!(
            "dense   : {:10.3} ms  (median of {runs}; {})",
            dense_seconds * 1e3,
            rate(dense_flops / dense_seconds)
        );
        println!(
            "speedup : {:.2}x over dense on the same adapter",
            dense_seconds / moba_seconds
        );
    }
    Ok(())
}

/// FLOP/s with a readable unit.
fn rate(flops_per_second: f64) -> String {
    if flops_per_second >= 1e12 {
        format!("{:.2} TFLOP/s", flops_per_second / 1e12)
    } else {
        format!("{:.2} GFLOP/s", flops_per_second / 1e9)
    }
}

/// Median wall time of `runs` synchronised runs after `warmup` untimed ones.
fn median_seconds(
    gpu: &GpuContext,
    warmup: usize,
    runs: usize,
    mut encode: impl FnMut(&mut wgpu::CommandEncoder) -> Result<()>,
) -> Result<f64> {
    let mut run = || -> Result<f64> {
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        encode(&mut encoder)?;
        let start = Instant::now();
        gpu.submit_and_wait(encoder.finish())?;
        Ok(start.elapsed().as_secs_f64())
    };
    for _ in 0..warmup {
        run()?;
    }
    let mut times = (0..runs).map(|_| run()).collect::<Result<Vec<f64>>>()?;
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Compares sampled rows of the GPU output with the f64 reference; returns the report line.
fn check_sample(
    gpu: &GpuContext,
    io: &ForwardBuffers,
    (q, k, v): (&[f32], &[f32], &[f32]),
    shape: &Shape,
    config: &MobaConfig,
    count: usize,
) -> Result<String> {
    let total = shape.q_rows();
    let mut rows: Vec<usize> = (0..count.min(total))
        .map(|i| i * total / count.min(total))
        .collect();
    rows.push(total - 1);
    let exact = reference::forward_rows(q, k, v, shape, config, &rows)?;
    let o: Vec<f32> = pollster::block_on(gpu.download(io.o))?;
    let lse: Vec<f32> = pollster::block_on(gpu.download(io.lse))?;
    let d = shape.head_dim;
    let sampled_o: Vec<f32> = rows
        .iter()
        .flat_map(|&row| &o[row * d..(row + 1) * d])
        .copied()
        .collect();
    let sampled_lse: Vec<f32> = rows.iter().map(|&row| lse[row]).collect();
    Ok(format!(
        "check   : {} sampled rows vs the f64 reference: max |o err| {:.2e}, max |lse err| {:.2e}",
        rows.len(),
        reference::max_abs_error(&sampled_o, &exact.o),
        reference::max_abs_error(&sampled_lse, &exact.lse)
    ))
}
