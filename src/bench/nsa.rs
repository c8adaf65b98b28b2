//! `moba bench --attention nsa`: NSA's forward and training step through a burn backend
//! with the MoBA op (burn's wgpu, or the CUDA path's `Cuda<bf16>`), timed on the wall clock
//! with the device synchronised, the output checked on sampled rows against the reference
//! ([`reference::check_nsa_rows`]).

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::median_wall_seconds;
use crate::backend::{
    MobaBackend, nsa_attention, nsa_forward_stage_seconds, nsa_step_stage_seconds,
};
use crate::config::{NsaConfig, Shape};
use crate::error::{MobaError, Result};
use crate::random;
use crate::reference::{self, Check, NsaInputs, Precision};

/// What to time.
#[derive(Debug, Clone, Copy)]
pub struct NsaBenchOptions {
    /// Timed runs of each (the median is kept), after a warm-up.
    pub runs: usize,
    /// Also time a training step: the forward and the backward to q, k, v and the gates.
    pub backward: bool,
    /// Query rows checked against the reference (the last row besides).
    pub check_rows: usize,
    /// The arithmetic of the backend's kernels (the check's bound).
    pub precision: Precision,
}

/// One NSA measurement, a line of `moba bench`'s JSON output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NsaRecord {
    /// `"nsa"`.
    pub attention: String,
    /// The device, as the caller describes it (adapter and driver, or the CUDA GPU).
    pub device: String,
    /// The backend and its element type: `wgpu f32`, `cuda bf16`.
    pub backend: String,
    pub batch: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub seq_len: usize,
    pub head_dim: usize,
    pub compress_block: usize,
    pub stride: usize,
    pub select_block: usize,
    pub top_n: usize,
    pub window: usize,
    pub forward_ms: f64,
    /// The forward's stages each run alone (pool, compressed, select, selected, window):
    /// where its time goes.
    #[serde(default)]
    pub stages: Vec<NsaStageTime>,
    /// Forward and backward, where timed.
    pub step_ms: Option<f64>,
    /// The step's branches each run alone, forward and backward (compressed with its
    /// pooling, selected, window), where the step is timed.
    #[serde(default)]
    pub step_stages: Vec<NsaStageTime>,
    pub o_error: f64,
    pub o_bound: f64,
    pub near_ties: usize,
    pub wrong_selections: usize,
    pub passed: bool,
}

impl NsaRecord {
    /// The record of a measurement on `device` through `backend`.
    pub fn new(
        device: String,
        backend: String,
        shape: &Shape,
        config: &NsaConfig,
        measured: &NsaMeasured,
    ) -> Self {
        let check = &measured.check;
        NsaRecord {
            attention: "nsa".into(),
            device,
            backend,
            batch: shape.batch,
            q_heads: shape.q_heads,
            kv_heads: shape.kv_heads,
            seq_len: shape.q_len,
            head_dim: shape.head_dim,
            compress_block: config.compress_block,
            stride: config.stride,
            select_block: config.select_block,
            top_n: config.top_n,
            window: config.window,
            forward_ms: measured.forward_seconds * 1e3,
            stages: measured.stages.clone(),
            step_ms: measured.step_seconds.map(|s| s * 1e3),
            step_stages: measured.step_stages.clone(),
            o_error: check.o_error,
            o_bound: check.o_bound,
            near_ties: check.near_ties,
            wrong_selections: check.wrong_selections,
            passed: check.passed(),
        }
    }
}

/// One stage of NSA's forward or step run alone ([`NsaRecord::stages`],
/// [`NsaRecord::step_stages`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NsaStageTime {
    pub stage: String,
    pub ms: f64,
}

/// What [`measure_nsa`] found.
#[derive(Debug, Clone)]
pub struct NsaMeasured {
    pub forward_seconds: f64,
    pub stages: Vec<NsaStageTime>,
    pub step_seconds: Option<f64>,
    pub step_stages: Vec<NsaStageTime>,
    pub check: Check,
}

/// Times NSA on `device` for a prefill `shape` (B, Hq over Hkv, S, D) and checks it.
pub fn measure_nsa<B: MobaBackend>(
    device: &B::Device,
    shape: &Shape,
    config: &NsaConfig,
    options: &NsaBenchOptions,
    mut progress: impl FnMut(&str),
) -> Result<NsaMeasured> {
    progress("inputs");
    let data = random::nsa_inputs(shape, 7);
    let gate_dims = [shape.batch, shape.q_heads, shape.q_len, 3];
    let dims = [shape.q_dims(), shape.kv_dims(), shape.kv_dims(), gate_dims];
    let inputs: [Tensor<B, 4>; 4] = std::array::from_fn(|i| {
        Tensor::from_data(TensorData::new(data[i].clone(), dims[i]), device)
    });
    let sync = || B::sync(device).map_err(|e| MobaError::Gpu(format!("NSA bench: {e:?}")));
    progress("forward");
    let forward = median_wall_seconds(options.runs, 1, |_| {
        let [q, k, v, gates] = inputs.clone();
        drop(nsa_attention(q, k, v, gates, config)?);
        sync()
    })?;
    let time_stage = |stage: &mut dyn FnMut() -> Result<()>| {
        median_wall_seconds(options.runs, 1, |_| {
            stage()?;
            sync()
        })
    };
    let qkv = || [0, 1, 2].map(|i| inputs[i].clone());
    progress("the forward's stages");
    let stages = stage_times(nsa_forward_stage_seconds(qkv(), config, time_stage)?);
    let [q, k, v, gates] = inputs.clone();
    let out = nsa_attention(q, k, v, gates, config)?;
    let (step, step_stages) = match options.backward {
        false => (None, Vec::new()),
        true => {
            progress("forward and backward");
            let step = median_wall_seconds(options.runs, 1, |_| {
                let [q, k, v, gates] = inputs
                    .clone()
                    .map(|x| Tensor::<Autodiff<B>, 4>::from_inner(x).require_grad());
                let o = nsa_attention(q, k, v, gates, config)?.o;
                drop(o.sum().backward());
                sync()
            })?;
            progress("the step's branches");
            let selection = out.selection.clone();
            let stages = nsa_step_stage_seconds(qkv(), selection, config, time_stage)?;
            (Some(step), stage_times(stages))
        }
    };
    progress("checking against the reference");
    Ok(NsaMeasured {
        forward_seconds: forward,
        stages,
        step_seconds: step,
        step_stages,
        check: check_sample(&data, out.o, out.selection, shape, config, options)?,
    })
}

/// The stages that ran, in milliseconds.
fn stage_times<const N: usize>(stages: [(&str, Option<f64>); N]) -> Vec<NsaStageTime> {
    (stages.into_iter())
        .filter_map(|(stage, seconds)| {
            Some(NsaStageTime {
                stage: stage.into(),
                ms: seconds? * 1e3,
            })
        })
        .collect()
}

/// The output and selection of `options.check_rows` spread rows and the last, checked.
fn check_sample<B: Backend>(
    data: &[Vec<f32>; 4],
    o: Tensor<B, 4>,
    selection: Tensor<B, 4, Int>,
    shape: &Shape,
    config: &NsaConfig,
    options: &NsaBenchOptions,
) -> Result<Check> {
    let total = shape.q_rows();
    let count = options.check_rows.min(total);
    let mut rows: Vec<usize> = (0..count).map(|i| i * total / count.max(1)).collect();
    rows.push(total - 1);
    let (d, s, top_n) = (shape.head_dim, shape.q_len, config.top_n);
    let read = |e| MobaError::Gpu(format!("reading NSA's output: {e:?}"));
    let (mut got_o, mut got_selection) = (Vec::new(), Vec::new());
    for &row in &rows {
        let (head, t) = (row / s, row % s);
        let (b, h) = (head / shape.q_heads, head % shape.q_heads);
        let group = h / shape.group_size();
        let o_row = o.clone().slice([b..b + 1, h..h + 1, t..t + 1, 0..d]);
        got_o.extend(
            o_row
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(read)?,
        );
        let chosen = selection
            .clone()
            .slice([b..b + 1, group..group + 1, t..t + 1, 0..top_n]);
        got_selection.extend(
            chosen
                .into_data()
                .convert::<i32>()
                .to_vec::<i32>()
                .map_err(read)?,
        );
    }
    let [q, k, v, gates] = data;
    let inputs = NsaInputs { q, k, v, gates };
    reference::check_nsa_rows(
        inputs,
        shape,
        config,
        &rows,
        &got_o,
        &got_selection,
        options.precision,
    )
}
