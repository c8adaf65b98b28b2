//! One run of the page: MoBA and the dense kernel on the same WebGPU device, timed, and
//! MoBA's output checked against the reference.

use moba::bench::{DeviceDescription, Measurement, Record, median_seconds, memory_bytes};
use moba::gpu::{DenseForward, ForwardIo, GpuContext, GpuForward, MobaForward, StageTimer};
use moba::launch_plan::Stage;
use moba::{Result, random, sparsity};
use serde::{Deserialize, Serialize};

use crate::check::Check;
use crate::heatmap::Heatmap;
use crate::settings::Settings;

/// Cells of the selection map each way (longer sequences merge blocks).
const HEATMAP_CELLS: usize = 128;

/// GPU time of one stage of a MoBA forward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageTime {
    pub name: String,
    pub ms: f64,
}

/// What one run found. Times are milliseconds (median wall clock, submit to done).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub settings: Settings,
    /// The attention kernel (`Portable` in browsers: f32 WGSL).
    pub kernel: String,
    /// Threads per workgroup and keys per staged tile, from the adapter's limits.
    pub workgroup_size: u32,
    pub key_tile: u32,
    pub moba_ms: f64,
    pub dense_ms: Option<f64>,
    /// One timed run split by stage (GPU timestamps, which browsers coarsen); empty
    /// without `timestamp-query`.
    pub stages: Vec<StageTime>,
    /// (query, key) pairs MoBA attended, and those of dense causal attention.
    pub attended_pairs: u64,
    pub dense_pairs: u64,
    pub check: Check,
    pub heatmap: Heatmap,
    /// The run as a `moba bench` record (one JSON line), for `moba bench report` beside
    /// native runs. The page fills in `machine` (the browser) and, where wgpu has no adapter
    /// name, `adapter` (from `GPUAdapterInfo`).
    pub record: Record,
}

/// Runs MoBA, then the dense kernel, on seeded standard-normal inputs.
pub async fn measure(gpu: &GpuContext, settings: &Settings) -> Result<Report> {
    let (shape, config) = settings.problem()?;
    // Plans first: they check the adapter's limits before any input is made.
    let moba = MobaForward::new(gpu, &shape, &config)?;
    let dense = settings
        .dense
        .then(|| DenseForward::new(gpu, &shape, &config))
        .transpose()?;
    settings.check_host_memory(&shape)?;
    let q = random::normal(shape.q_elems(), 1);
    let k = random::normal(shape.kv_elems(), 2);
    let v = random::normal(shape.kv_elems(), 3);
    let io = ForwardIo::new(gpu, &q, &k, &v, shape.q_rows(), config.top_k);

    let moba_ms = median_seconds(gpu, settings.runs, 1, |encoder| {
        moba.encode(encoder, &io.buffers())
    })
    .await?
        * 1e3;
    // GPU seconds of each forward stage in one run, where the adapter has timestamps.
    let stage_seconds = match StageTimer::new(gpu) {
        Ok(timer) => {
            let mut encoder = gpu.device().create_command_encoder(&Default::default());
            moba.encode_timed(&mut encoder, &io.buffers(), &timer)?;
            gpu.queue().submit([encoder.finish()]);
            Some(timer.read(gpu).await?.0)
        }
        Err(_) => None,
    };
    // Read MoBA's output before the dense runs overwrite o and lse.
    let got = GpuForward {
        o: gpu.download(&io.o).await?,
        lse: gpu.download(&io.lse).await?,
        selection: gpu.download(&io.selection).await?,
    };
    let dense_ms = match &dense {
        Some(dense) => Some(
            median_seconds(gpu, settings.runs, 1, |encoder| {
                dense.encode(encoder, &io.buffers())
            })
            .await?
                * 1e3,
        ),
        None => None,
    };
    let check = Check::new(&got, (&q, &k, &v), &shape, &config)?;
    let measurement = Measurement {
        shape,
        config,
        kernel: format!("{:?}", moba.kernel()),
        runs: settings.runs,
        calls: 1,
        groups_per_call: shape.groups(),
        moba_seconds: moba_ms / 1e3,
        dense_seconds: dense_ms.map(|ms| ms / 1e3),
        stage_seconds,
        step_seconds: None,
        backward_stage_seconds: None,
        memory_bytes: memory_bytes(&shape, &config, moba.kernel(), false),
        attended_pairs: sparsity::attended_pairs(&got.selection, &shape, &config),
        dense_pairs: sparsity::dense_pairs(&shape, config.causal),
        check: check.reference_check(),
    };
    Ok(Report {
        settings: *settings,
        kernel: measurement.kernel.clone(),
        workgroup_size: moba.plan().workgroup_size,
        key_tile: moba.plan().key_tile,
        moba_ms,
        dense_ms,
        stages: stage_seconds.map_or_else(Vec::new, |seconds| {
            Stage::FORWARD
                .iter()
                .zip(seconds)
                .map(|(stage, seconds)| StageTime {
                    name: stage.name().to_string(),
                    ms: seconds * 1e3,
                })
                .collect()
        }),
        attended_pairs: measurement.attended_pairs,
        dense_pairs: measurement.dense_pairs,
        heatmap: Heatmap::new(&got.selection, &shape, &config, HEATMAP_CELLS),
        check,
        record: Record::new(&DeviceDescription::of(gpu), &measurement),
    })
}
