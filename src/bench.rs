//! Measuring a MoBA forward on one adapter: the median of synchronised runs, the split by
//! stage (GPU timestamps), attended pairs and density, and the error on sampled rows against
//! the f64 reference. A problem too large for one call is measured call by call and summed.
//! `moba demo` prints a [`Measurement`]; `moba bench` writes it as a JSON-line [`Record`].

pub mod nsa;
pub mod peers;

use web_time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::{MobaConfig, Shape};
use crate::error::Result;
use crate::gpu::{
    AttentionKernel, DenseForward, ForwardBuffers, ForwardIo, GpuContext, MobaBackward,
    MobaForward, StageTimer,
};
use crate::reference::{Check, Precision, SampledRows};
use crate::{random, reference, sparsity};

/// How to measure.
#[derive(Debug, Clone, Copy)]
pub struct BenchOptions {
    pub kernel: AttentionKernel,
    /// Timed runs per kernel (the median is kept).
    pub runs: usize,
    /// Untimed runs before them (when any, they last at least [`WARMUP_SECONDS`]).
    pub warmup: usize,
    /// Also time the dense kernel (quadratic: slow at long sequences).
    pub dense: bool,
    /// Rows of the first call checked against the f64 reference.
    pub check_rows: usize,
    /// Also time a training step: the forward then the backward (dq, dk, dv).
    pub backward: bool,
    /// The gate reads the keys' block means from a buffer, as a decode over a KV cache that
    /// keeps them does (`MobaForward::with_given_means`; pooled once, before timing),
    /// instead of pooling every key each run. The mean-key gate only.
    pub cached_means: bool,
}

/// What one measurement found. Times are seconds, summed over the calls.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub shape: Shape,
    pub config: MobaConfig,
    /// The attention kernel, as records name it (`Portable`, `Cooperative`, `cuda-bf16`, ...).
    pub kernel: String,
    /// Timed runs of each median.
    pub runs: usize,
    /// Calls the problem was split into (the adapter's buffer limits).
    pub calls: usize,
    /// (batch, kv head) groups of the largest call: what `memory_bytes` covers.
    pub groups_per_call: usize,
    pub moba_seconds: f64,
    pub dense_seconds: Option<f64>,
    /// GPU time of each of [`crate::launch_plan::Stage::FORWARD`] (one run), where the adapter has timestamps.
    pub stage_seconds: Option<[f64; 4]>,
    /// Forward + backward, where [`BenchOptions::backward`] asked for it.
    pub step_seconds: Option<f64>,
    /// GPU time of each of [`crate::launch_plan::Stage::BACKWARD`] (one run).
    pub backward_stage_seconds: Option<[f64; 4]>,
    /// Bytes of every buffer one call binds: inputs, outputs and scratch of the forward (and
    /// of the backward when timed). Grows like `S * (D + top_k)` per head.
    pub memory_bytes: u64,
    pub attended_pairs: u64,
    pub dense_pairs: u64,
    /// Sampled rows of the first call against the f64 reference.
    pub check: Check,
}

impl Measurement {
    /// Bytes one call binds per cached token of a sequence: over the call's groups (one kv
    /// head of one sequence each), times the kv heads of a sequence.
    pub fn bytes_per_cached_token(&self) -> f64 {
        let tokens = (self.groups_per_call * self.shape.kv_len) as f64;
        self.memory_bytes as f64 / tokens * self.shape.kv_heads as f64
    }

    pub fn density(&self) -> f64 {
        self.attended_pairs as f64 / self.dense_pairs as f64
    }

    /// FLOP/s on attended pairs.
    pub fn moba_rate(&self) -> f64 {
        sparsity::forward_flops(self.attended_pairs, self.shape.head_dim) / self.moba_seconds
    }

    /// Training-step FLOP/s on attended pairs.
    pub fn step_rate(&self) -> Option<f64> {
        let flops = sparsity::training_flops(self.attended_pairs, self.shape.head_dim);
        self.step_seconds.map(|seconds| flops / seconds)
    }

    /// Bytes a dense fallback that materialises attention (the generic burn path: scores,
    /// probabilities and their gradients, `[B, Hq, S, Sk]` f32 each) needs for one step,
    /// beside the same inputs and outputs: what MoBA's kernels avoid.
    pub fn dense_fallback_bytes(&self) -> u64 {
        let s = &self.shape;
        let matrix = (s.batch * s.q_heads * s.q_len * s.kv_len) as u64 * 4;
        4 * matrix + 2 * (2 * s.q_elems() + 2 * s.kv_elems()) as u64 * 4
    }

    /// FLOP/s of the dense kernel on the dense pairs.
    pub fn dense_rate(&self) -> Option<f64> {
        let flops = sparsity::forward_flops(self.dense_pairs, self.shape.head_dim);
        self.dense_seconds.map(|seconds| flops / seconds)
    }
}

/// Measures the forward of `shape` on random standard-normal inputs; `progress` hears what
/// runs now.
pub fn measure(
    gpu: &GpuContext,
    shape: &Shape,
    config: &MobaConfig,
    options: &BenchOptions,
    mut progress: impl FnMut(&str),
) -> Result<Measurement> {
    shape.validate()?;
    config.validate()?;
    let per_call = MobaForward::groups_per_call(gpu, shape, config)?;
    let calls = shape.groups().div_ceil(per_call);
    let timer = StageTimer::new(gpu).ok();
    let backward_timer = options
        .backward
        .then(|| StageTimer::new(gpu).ok())
        .flatten();
    let one_call = shape.group_chunk(per_call);
    one_call.check_host_memory(config.top_k)?;
    let mut found = Measurement {
        shape: *shape,
        config: *config,
        kernel: format!("{:?}", options.kernel),
        runs: options.runs,
        calls,
        groups_per_call: per_call,
        moba_seconds: 0.0,
        dense_seconds: options.dense.then_some(0.0),
        stage_seconds: timer.as_ref().map(|_| [0.0; 4]),
        step_seconds: options.backward.then_some(0.0),
        backward_stage_seconds: backward_timer.as_ref().map(|_| [0.0; 4]),
        memory_bytes: memory_bytes(&one_call, config, options.kernel, options.backward),
        attended_pairs: 0,
        dense_pairs: sparsity::dense_pairs(shape, config.causal),
        check: Check::default(),
    };
    for call in 0..calls {
        let part = shape.group_chunk(per_call.min(shape.groups() - call * per_call));
        progress(&format!("call {}/{calls}: inputs", call + 1));
        let seed = 3 * call as u64;
        let q = random::normal(part.q_elems(), seed);
        let k = random::normal(part.kv_elems(), seed + 1);
        let v = random::normal(part.kv_elems(), seed + 2);
        let owned = ForwardIo::new(gpu, &q, &k, &v, part.q_rows(), config.top_k);
        let io = owned.buffers();

        progress(&format!("call {}/{calls}: moba", call + 1));
        let (moba, means) = match options.cached_means {
            true => {
                let means = reference::block_means(&k, &part, config.block_size);
                let means: Vec<f32> = means.iter().map(|&x| x as f32).collect();
                let moba = MobaForward::with_given_means(gpu, &part, config, options.kernel)?;
                (moba, Some(gpu.upload("block means", &means)))
            }
            false => (
                MobaForward::with_kernel(gpu, &part, config, options.kernel)?,
                None,
            ),
        };
        if moba.splits_decode() {
            found.kernel = "SplitDecode".into();
        }
        let means: Vec<&wgpu::Buffer> = means.iter().collect();
        let run_moba = |encoder: &mut wgpu::CommandEncoder, timer: Option<&StageTimer>| {
            moba.encode_with(encoder, &io, &means, timer)
        };
        found.moba_seconds += pollster::block_on(median_seconds(
            gpu,
            options.runs,
            options.warmup,
            |encoder| run_moba(encoder, None),
        ))?;
        if let (Some(timer), Some(stages)) = (&timer, &mut found.stage_seconds) {
            add_stage_times(gpu, timer, stages, |encoder| run_moba(encoder, Some(timer)))?;
        }
        if let Some(total) = &mut found.step_seconds {
            progress(&format!("call {}/{calls}: forward + backward", call + 1));
            let backward = MobaBackward::with_kernel(gpu, &part, config, options.kernel)?;
            let dout = gpu.upload("dout", &random::normal(part.q_elems(), seed + 3));
            let [dq, dk, dv] = [part.q_elems(), part.kv_elems(), part.kv_elems()]
                .map(|elems| gpu.poisoned("gradient", elems));
            let grads = io.with_gradients(&dout, &dq, &dk, &dv);
            *total += pollster::block_on(median_seconds(
                gpu,
                options.runs,
                options.warmup,
                |encoder| {
                    run_moba(encoder, None)?;
                    backward.encode(encoder, &grads)
                },
            ))?;
            if let (Some(timer), Some(stages)) =
                (&backward_timer, &mut found.backward_stage_seconds)
            {
                add_stage_times(gpu, timer, stages, |encoder| {
                    backward.encode_timed(encoder, &grads, timer)
                })?;
            }
        }
        let chosen: Vec<i32> = pollster::block_on(gpu.download(&owned.selection))?;
        found.attended_pairs += sparsity::attended_pairs(&chosen, &part, config);
        if call == 0 {
            progress("checking against the reference");
            found.check = check_sample(
                gpu,
                &owned,
                (&q, &k, &v),
                &part,
                config,
                options.check_rows,
                options.kernel.precision(),
            )?;
        }
        if let Some(total) = &mut found.dense_seconds {
            progress(&format!("call {}/{calls}: dense", call + 1));
            *total += match options.cached_means {
                true => dense_decode_seconds(gpu, &part, config, options, &io, &means)?,
                false => {
                    let dense = DenseForward::new(gpu, &part, config)?;
                    pollster::block_on(median_seconds(
                        gpu,
                        options.runs,
                        options.warmup,
                        |encoder| dense.encode(encoder, &io),
                    ))?
                }
            };
        }
    }
    Ok(found)
}

/// Dense decode over the same cache: the same split-decode kernels with every block
/// selected (flash-decoding over all keys), so that the ratio to MoBA's step is what the
/// sparsity buys. Its outputs go to buffers of its own.
fn dense_decode_seconds(
    gpu: &GpuContext,
    shape: &Shape,
    config: &MobaConfig,
    options: &BenchOptions,
    io: &ForwardBuffers<'_>,
    means: &[&wgpu::Buffer],
) -> Result<f64> {
    let every_block = MobaConfig {
        top_k: shape.num_blocks(config.block_size),
        ..*config
    };
    let dense = MobaForward::with_given_means(gpu, shape, &every_block, options.kernel)?;
    let (o, lse) = (
        gpu.poisoned("dense o", shape.q_elems()),
        gpu.poisoned("dense lse", shape.q_rows()),
    );
    let selection = gpu.poisoned("dense selection", shape.q_rows() * every_block.top_k);
    let io = ForwardBuffers {
        o: &o,
        lse: &lse,
        selection: &selection,
        ..*io
    };
    pollster::block_on(median_seconds(
        gpu,
        options.runs,
        options.warmup,
        |encoder| dense.encode_with(encoder, &io, means, None),
    ))
}

/// Runs one timed encoding and adds its per-stage GPU times to `stages`.
fn add_stage_times(
    gpu: &GpuContext,
    timer: &StageTimer,
    stages: &mut [f64; 4],
    encode_timed: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<()>,
) -> Result<()> {
    let mut encoder = gpu.device().create_command_encoder(&Default::default());
    encode_timed(&mut encoder)?;
    gpu.submit_and_wait(encoder.finish())?;
    let times = pollster::block_on(timer.read(gpu))?;
    stages
        .iter_mut()
        .zip(times.0)
        .for_each(|(total, t)| *total += t);
    Ok(())
}

/// Bytes of every buffer one call of `shape` binds with `kernel`'s passes: the forward's
/// inputs, outputs and scratch, and the backward's too when `backward` (see
/// [`Measurement::memory_bytes`]).
pub fn memory_bytes(
    shape: &Shape,
    config: &MobaConfig,
    kernel: AttentionKernel,
    backward: bool,
) -> u64 {
    let mut buffers = MobaForward::buffer_sizes_with(shape, config, kernel);
    if backward {
        buffers.extend(MobaBackward::buffer_sizes_with(shape, config, kernel));
    }
    // A buffer both passes bind (q, k, v, lse, ...) counts once, at its larger size.
    let mut seen = std::collections::BTreeMap::new();
    for (name, bytes) in buffers {
        let at = seen.entry(name).or_insert(0);
        *at = bytes.max(*at);
    }
    seen.values().sum()
}

/// A warm-up of at least one run also lasts this long: GPUs raise their clocks
/// under sustained load, and on the H200 a process's first 20 ms forwards ran 1.3-2.9x
/// slower than the same kernels later in the same call
/// (`bench-results/h200-vulkan-coop/unrolled/`).
pub const WARMUP_SECONDS: f64 = 0.5;

/// Whether warm-up that started at `start` and has done `done` runs is over (`warmup` 0:
/// none at all).
fn warmed_up(start: Instant, done: usize, warmup: usize) -> bool {
    done >= warmup && (warmup == 0 || start.elapsed().as_secs_f64() >= WARMUP_SECONDS)
}

/// Median wall time of `runs` synchronised runs of what `encode` records, after `warmup`
/// untimed ones (lasting at least [`WARMUP_SECONDS`] when `warmup > 0`): from the submit
/// until the queue reports the work done. Async, so that the browser (whose event loop
/// delivers that report) times the same way; `web_time`'s clock is `performance.now()` there.
pub async fn median_seconds(
    gpu: &GpuContext,
    runs: usize,
    warmup: usize,
    mut encode: impl FnMut(&mut wgpu::CommandEncoder) -> Result<()>,
) -> Result<f64> {
    let mut submit = async || -> Result<f64> {
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        encode(&mut encoder)?;
        let start = Instant::now();
        gpu.queue().submit([encoder.finish()]);
        gpu.work_done().await?;
        Ok(start.elapsed().as_secs_f64())
    };
    let start = Instant::now();
    let mut done = 0;
    while !warmed_up(start, done, warmup) {
        submit().await?;
        done += 1;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        times.push(submit().await?);
    }
    Ok(median(times))
}

/// Median wall time of `runs` calls of `run` after `warmup` untimed ones (lasting at least
/// [`WARMUP_SECONDS`] when `warmup > 0`); `run` gets the call's index (to rotate inputs)
/// and returns once its work is done. The loop of the CUDA benchmark and of burn's
/// attention baseline.
pub fn median_wall_seconds(
    runs: usize,
    warmup: usize,
    mut run: impl FnMut(usize) -> Result<()>,
) -> Result<f64> {
    let start = Instant::now();
    let mut index = 0;
    while !warmed_up(start, index, warmup) {
        run(index)?;
        index += 1;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        run(index)?;
        index += 1;
        times.push(start.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

/// The middle value (the upper of the two middle ones for an even count); NaN when empty.
pub fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Checks `count` evenly spaced rows and the last row of the first call against the f64
/// reference.
fn check_sample(
    gpu: &GpuContext,
    io: &ForwardIo,
    inputs: (&[f32], &[f32], &[f32]),
    shape: &Shape,
    config: &MobaConfig,
    count: usize,
    precision: Precision,
) -> Result<Check> {
    let total = shape.q_rows();
    let count = count.min(total);
    let mut rows: Vec<usize> = (0..count).map(|i| i * total / count.max(1)).collect();
    rows.push(total - 1);
    let o: Vec<f32> = pollster::block_on(gpu.download(&io.o))?;
    let lse: Vec<f32> = pollster::block_on(gpu.download(&io.lse))?;
    let selection: Vec<i32> = pollster::block_on(gpu.download(&io.selection))?;
    let (d, top_k) = (shape.head_dim, config.top_k);
    let pick = |data: &[f32], width: usize| -> Vec<f32> {
        rows.iter()
            .flat_map(|&row| &data[row * width..(row + 1) * width])
            .copied()
            .collect()
    };
    let sampled_selection: Vec<i32> = rows
        .iter()
        .flat_map(|&row| &selection[row * top_k..(row + 1) * top_k])
        .copied()
        .collect();
    let (sampled_o, sampled_lse) = (pick(&o, d), pick(&lse, 1));
    let got = SampledRows {
        o: &sampled_o,
        lse: Some(&sampled_lse),
        selection: &sampled_selection,
    };
    reference::check_rows(inputs, shape, config, &rows, &got, precision)
}

/// One measurement as a JSON line, with the machine and adapter beside the numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub machine: String,
    pub adapter: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub kernel: String,
    /// `forward`, or `decode` for one query per sequence over a cache of `kv_len` keys.
    pub pass: String,
    /// Sequences in the batch (records before this field: 1).
    #[serde(default = "one")]
    pub batch: usize,
    /// Queries per sequence (1 when decoding).
    pub seq_len: usize,
    pub kv_len: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub top_k: usize,
    pub runs: usize,
    pub density: f64,
    pub attended_pairs: u64,
    pub moba_ms: f64,
    pub moba_tflops: f64,
    pub dense_ms: Option<f64>,
    pub stage_ms: Option<[f64; 4]>,
    pub o_error: f64,
    /// The bound `o_error` is checked against (DESIGN §4), where recorded.
    #[serde(default)]
    pub o_bound: Option<f64>,
    /// Whether the sampled rows passed the check (the bound, and the gate's blocks).
    #[serde(default)]
    pub passed: Option<bool>,
    /// Forward + backward time, where measured.
    #[serde(default)]
    pub step_ms: Option<f64>,
    #[serde(default)]
    pub step_tflops: Option<f64>,
    #[serde(default)]
    pub backward_stage_ms: Option<[f64; 4]>,
    /// Bytes of every buffer one call binds (see [`Measurement::memory_bytes`]).
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    #[serde(default)]
    pub dense_fallback_bytes: Option<u64>,
    /// `memory_bytes` per cached token of a sequence (its keys and values over every kv head,
    /// block means and scratch): what a decode cache costs.
    #[serde(default)]
    pub bytes_per_cached_token: Option<f64>,
    /// burn's own attention op (causal, burn's default wgpu device), where measured.
    #[serde(default)]
    pub burn_ms: Option<f64>,
}

fn one() -> usize {
    1
}

/// The device a measurement ran on, as a [`Record`] names it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceDescription {
    /// The adapter's or GPU's name.
    pub adapter: String,
    /// The API: `Vulkan`, `Metal`, `Gl`, `BrowserWebGpu`, `CUDA`, ...
    pub backend: String,
    pub device_type: String,
    pub driver: String,
}

impl DeviceDescription {
    /// The adapter of a wgpu context.
    pub fn of(gpu: &GpuContext) -> Self {
        let info = gpu.info();
        Self {
            adapter: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: format!("{} {}", info.driver, info.driver_info)
                .trim()
                .to_string(),
        }
    }
}

impl Record {
    /// The record of one measurement on `device`: the one place a record is made, for every
    /// harness (wgpu, CUDA, the browser page).
    pub fn new(device: &DeviceDescription, found: &Measurement) -> Self {
        let ms = |seconds: f64| seconds * 1e3;
        Self {
            machine: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            adapter: device.adapter.clone(),
            backend: device.backend.clone(),
            device_type: device.device_type.clone(),
            driver: device.driver.clone(),
            kernel: found.kernel.clone(),
            pass: "forward".into(),
            batch: found.shape.batch,
            seq_len: found.shape.q_len,
            kv_len: found.shape.kv_len,
            q_heads: found.shape.q_heads,
            kv_heads: found.shape.kv_heads,
            head_dim: found.shape.head_dim,
            block_size: found.config.block_size,
            top_k: found.config.top_k,
            runs: found.runs,
            density: found.density(),
            attended_pairs: found.attended_pairs,
            moba_ms: ms(found.moba_seconds),
            moba_tflops: found.moba_rate() / 1e12,
            dense_ms: found.dense_seconds.map(ms),
            stage_ms: found.stage_seconds.map(|s| s.map(ms)),
            o_error: found.check.o_error,
            o_bound: Some(found.check.o_bound),
            passed: Some(found.check.passed()),
            step_ms: found.step_seconds.map(ms),
            step_tflops: found.step_rate().map(|rate| rate / 1e12),
            backward_stage_ms: found.backward_stage_seconds.map(|s| s.map(ms)),
            memory_bytes: Some(found.memory_bytes),
            dense_fallback_bytes: Some(found.dense_fallback_bytes()),
            bytes_per_cached_token: Some(found.bytes_per_cached_token()),
            burn_ms: None,
        }
    }
}

/// A markdown table of records, one row each, the adapter beside every number.
pub fn markdown_table(records: &[Record]) -> String {
    let mut table = String::from(
        "| adapter | api | kernel | S | H | D | block | top_k | density | MoBA ms | dense ms | speedup | burn attention ms | GFLOP/s | error | fwd+bwd ms | MiB (dense fallback) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in records {
        let dense = ms_cell(r.dense_ms);
        let speedup = r
            .dense_ms
            .map_or("-".to_string(), |ms| format!("{:.2}x", ms / r.moba_ms));
        let step = ms_cell(r.step_ms);
        let error = error_cell(r);
        let burn = ms_cell(r.burn_ms);
        let mib = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
        let memory = match (r.memory_bytes, r.dense_fallback_bytes) {
            (Some(moba), Some(dense)) => format!("{:.1} ({:.1})", mib(moba), mib(dense)),
            _ => "-".to_string(),
        };
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.3} | {:.2} | {dense} | {speedup} | {burn} | {:.1} | {error} | {step} | {memory} |\n",
            r.adapter, r.backend, r.kernel, r.seq_len, r.q_heads, r.head_dim, r.block_size, r.top_k, r.density,
            r.moba_ms, r.moba_tflops * 1e3
        ));
    }
    table
}

/// A markdown table of decode records (`moba bench --decode`): one step of one query per
/// sequence over a cache of `kv_len` keys, as time and tokens per second, MoBA beside dense
/// attention over the same cache, and the bytes one step binds per cached token (keys,
/// values, block means and scratch).
pub fn decode_table(records: &[Record]) -> String {
    let mut table = String::from(
        "| adapter | api | kernel | batch | cache | Hq/Hkv | D | block | top_k | MoBA ms | MoBA tokens/s | dense ms | dense tokens/s | bytes per cached token | error |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let tokens_per_second = |ms: f64, batch: usize| format!("{:.0}", batch as f64 / ms * 1e3);
    for r in records {
        let dense_rate = r
            .dense_ms
            .map_or("-".to_string(), |ms| tokens_per_second(ms, r.batch));
        let per_token = r
            .bytes_per_cached_token
            .map_or("-".to_string(), |bytes| format!("{bytes:.0}"));
        let error = error_cell(r);
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {}/{} | {} | {} | {} | {:.3} | {} | {} | {dense_rate} | {per_token} | {error} |\n",
            r.adapter, r.backend, r.kernel, r.batch, r.kv_len, r.q_heads, r.kv_heads, r.head_dim,
            r.block_size, r.top_k, r.moba_ms, tokens_per_second(r.moba_ms, r.batch), ms_cell(r.dense_ms),
        ));
    }
    table
}

/// A record's error in a table cell, marked FAIL where its check failed.
fn error_cell(r: &Record) -> String {
    match r.passed {
        Some(false) => format!("{:.1e} FAIL", r.o_error),
        _ => format!("{:.1e}", r.o_error),
    }
}

/// A time in a table cell: milliseconds to two decimals, `-` where not measured.
pub(crate) fn ms_cell(ms: Option<f64>) -> String {
    ms.map_or("-".to_string(), |ms| format!("{ms:.2}"))
}

/// Writes `time_vs_s.svg` and `speedup_vs_s.svg` into `dir`: one line per adapter, API,
/// kernel and problem family (heads, head dim, block, top-k), and PyTorch's peers (SDPA and
/// FlexAttention-MoBA) on the time plot. Returns the files written.
pub fn write_plots(
    records: &[Record],
    peers: &[peers::Peer],
    dir: &std::path::Path,
) -> Result<Vec<std::path::PathBuf>> {
    use crate::plot::{Scale, Series, line_plot};
    use std::collections::BTreeMap;

    let mut times: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut speedups: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in records {
        // What tells lines apart comes first: the legend may cut the end.
        let family = format!(
            "H{} D{} b{} k{}, {} ({})",
            r.q_heads, r.head_dim, r.block_size, r.top_k, r.adapter, r.backend
        );
        let s = r.seq_len as f64;
        let moba = format!("MoBA {} {family}", r.kernel);
        times.entry(moba.clone()).or_default().push((s, r.moba_ms));
        if let Some(burn) = r.burn_ms {
            times
                .entry(format!("burn attention {family}"))
                .or_default()
                .push((s, burn));
        }
        if let Some(dense) = r.dense_ms {
            times
                .entry(format!("dense {family}"))
                .or_default()
                .push((s, dense));
            speedups
                .entry(moba)
                .or_default()
                .push((s, dense / r.moba_ms));
        }
    }
    for peer in peers {
        let (s, heads, dim) = (peer.seq_len as f64, peer.heads, peer.head_dim);
        times
            .entry(format!("PyTorch SDPA (dense) H{heads} D{dim}"))
            .or_default()
            .push((s, peer.sdpa_ms));
        times
            .entry(format!(
                "PyTorch FlexAttention-MoBA H{heads} D{dim} b{} k{}",
                peer.block_size, peer.top_k
            ))
            .or_default()
            .push((s, peer.flex_ms));
    }
    let series = |map: BTreeMap<String, Vec<(f64, f64)>>| -> Vec<Series> {
        map.into_iter()
            .map(|(name, points)| Series { name, points })
            .collect()
    };
    std::fs::create_dir_all(dir).map_err(|e| crate::MobaError::io(dir, e))?;
    let plots = [
        (
            "time_vs_s.svg",
            "MoBA and dense forward time",
            "ms",
            Scale::Log,
            series(times),
        ),
        (
            "speedup_vs_s.svg",
            "MoBA speedup over dense (same adapter)",
            "x",
            Scale::Linear,
            series(speedups),
        ),
    ];
    let mut written = Vec::new();
    for (name, title, y_label, y_scale, series) in plots {
        let path = dir.join(name);
        let svg = line_plot(title, "sequence length S", y_label, y_scale, &series)
            .map_err(|e| crate::MobaError::io(&path, e))?;
        std::fs::write(&path, svg).map_err(|e| crate::MobaError::io(&path, e))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as an older `moba bench` wrote it: no `batch`, no bytes per cached token.
    const OLD_RECORD: &str = r#"{"machine":"linux x86_64","adapter":"GPU","backend":"Vulkan","device_type":"DiscreteGpu","driver":"d","kernel":"Cooperative","pass":"forward","seq_len":1,"kv_len":8192,"q_heads":16,"kv_heads":2,"head_dim":128,"block_size":512,"top_k":3,"runs":5,"density":0.1,"attended_pairs":1,"moba_ms":0.5,"moba_tflops":1.0,"dense_ms":2.0,"stage_ms":null,"o_error":1e-5}"#;

    #[test]
    fn decode_rows_give_tokens_per_second_and_old_records_read_as_batch_one() {
        let old: Record = serde_json::from_str(OLD_RECORD).unwrap();
        assert_eq!((old.batch, old.bytes_per_cached_token), (1, None));
        let decode = Record {
            pass: "decode".into(),
            batch: 16,
            bytes_per_cached_token: Some(1025.4),
            ..old
        };
        let table = decode_table(&[decode]);
        // 16 tokens in 0.5 ms: 32,000 tokens/s; dense in 2 ms: 8,000.
        let row = table.lines().nth(2).unwrap();
        assert!(
            row.contains(
                "| 16 | 8192 | 16/2 | 128 | 512 | 3 | 0.500 | 32000 | 2.00 | 8000 | 1025 |"
            ),
            "{row}"
        );
    }

    #[test]
    fn bytes_per_cached_token_count_one_call() {
        // Two sequences of two kv heads, split into calls of three groups: one call binds
        // 3 * 100 tokens of one kv head each.
        let shape = Shape {
            batch: 2,
            q_heads: 4,
            kv_heads: 2,
            q_len: 1,
            kv_len: 100,
            head_dim: 16,
        };
        let found = Measurement {
            shape,
            config: MobaConfig::new(10, 2),
            kernel: "Portable".into(),
            runs: 1,
            calls: 2,
            groups_per_call: 3,
            moba_seconds: 1.0,
            dense_seconds: None,
            stage_seconds: None,
            step_seconds: None,
            backward_stage_seconds: None,
            memory_bytes: 3 * 100 * 160,
            attended_pairs: 0,
            dense_pairs: 0,
            check: Check::default(),
        };
        assert_eq!(found.bytes_per_cached_token(), 320.0);
    }
}
