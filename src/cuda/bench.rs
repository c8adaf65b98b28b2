//! The CUDA path in `moba bench`: the same [`Record`] as the wgpu harness, measured on
//! burn-cuda tensors. Wall clock of whole calls (burn's queue drained, our stream waited
//! on) for the median; CUDA events between kernels for the stage split; random inputs
//! rotated between two sets; the error of sampled rows against the f64 reference.

use burn::backend::cuda::CudaDevice;
use burn::backend::wgpu::CubeBackend;
use burn::cubecl::cuda::CudaRuntime;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Distribution, Int, Tensor, TensorPrimitive};

use super::backend::{KernelTimes, backward, forward};
use super::launch::CudaPlan;
use super::runtime::CudaRuntime as Driver;
use super::source::{ElemKind, MmaKind};
use crate::backend::ForwardGiven;
use crate::bench::{DeviceDescription, Measurement, Record, median_wall_seconds};
use crate::config::{MobaConfig, Shape};
use crate::error::{MobaError, Result};
use crate::launch_plan::Stage;
use crate::module::KvCache;
use crate::reference::{Precision, SampledRows};
use crate::{reference, sparsity};

/// burn-cuda without fusion; the element type follows each tensor's dtype.
type Plain = CubeBackend<CudaRuntime, f32, i32, u8>;

/// GPU seconds of each of `stages`, summed over its kernels.
fn stage_split(times: &KernelTimes, stages: [Stage; 4]) -> [f64; 4] {
    let mut split = [0.0; 4];
    for &(stage, ms) in times {
        let at = stages.iter().position(|&s| s == stage);
        split[at.expect("every step's stage is one of its run's stages")] += ms * 1e-3;
    }
    split
}

fn floats<const D: usize>(tensor: Tensor<Plain, D>) -> Result<Vec<f32>> {
    tensor
        .into_data()
        .convert::<f32>()
        .to_vec()
        .map_err(|e| MobaError::Cuda(format!("reading back: {e:?}")))
}

/// What [`measure`] runs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The element type of q, k, v and o.
    pub elem: ElemKind,
    /// Timed runs (the median is reported).
    pub runs: usize,
    /// Also the training step (forward and backward).
    pub backward: bool,
    /// Query rows checked against the f64 reference.
    pub check_rows: usize,
    /// The gate reads the keys' block means, pooled once before timing, as a decode over a
    /// KV cache that keeps them does.
    pub cached_means: bool,
}

/// Measures the CUDA forward (and with `options.backward` the training step) of `shape`
/// (head dim a multiple of 16); `progress` hears what runs now.
pub fn measure(
    shape: &Shape,
    config: &MobaConfig,
    options: &Options,
    mut progress: impl FnMut(&str),
) -> Result<Record> {
    let Options {
        elem,
        runs,
        backward: backward_too,
        check_rows,
        cached_means,
    } = *options;
    shape.validate()?;
    config.validate()?;
    if !shape.head_dim.is_multiple_of(16) {
        return Err(MobaError::Config(format!(
            "the CUDA benchmark needs a head dim multiple of 16, got {}",
            shape.head_dim
        )));
    }
    let driver = Driver::get(0)?;
    let device = CudaDevice::default();
    let config = config.with_scale(config.scale_for(shape.head_dim));
    let (q_dims, kv_dims) = (shape.q_dims(), shape.kv_dims());
    let normal = Distribution::Normal(0.0, 1.0);
    let primitive = |t: Tensor<Plain, 4>| t.into_primitive().tensor();
    progress("inputs");
    let sets: Vec<[Tensor<Plain, 4>; 4]> = (0..2)
        .map(|_| {
            [q_dims, kv_dims, kv_dims, q_dims]
                .map(|dims| Tensor::random(dims, normal, (&device, elem.dtype())))
        })
        .collect();
    // The keys' block means, as a KV cache keeps them.
    let means: Vec<Option<FloatTensor<Plain>>> = sets
        .iter()
        .map(|[_, k, v, _]| {
            let mut cache = KvCache::new();
            cache.append(k.clone(), v.clone());
            let means = cached_means.then(|| cache.block_means(config.block_size));
            means.flatten().map(primitive)
        })
        .collect();
    let run_forward = |set: usize, timed: bool| {
        let [q, k, v, _] = sets[set].clone().map(primitive);
        let given = ForwardGiven {
            means: means[set].clone(),
            ..ForwardGiven::none()
        };
        forward::<f32, u8>([q, k, v], given, &config, timed)
    };

    progress("compiling (NVRTC) and warming up");
    run_forward(0, false)?;
    progress("forward");
    let moba_seconds = median_wall_seconds(runs, 0, |run| run_forward(run % 2, false).map(drop))?;
    let ([o, lse, selection], forward_times) = run_forward(0, true)?;
    let stage_seconds = stage_split(&forward_times, Stage::FORWARD);

    let mut step_seconds = None;
    let mut backward_stage_seconds = None;
    if backward_too {
        progress("forward + backward");
        let run_step = |set: usize, timed: bool| -> Result<KernelTimes> {
            let [q, k, v, dout] = sets[set].clone().map(primitive);
            let ([o, lse, selection], _) = forward::<f32, u8>(
                [q.clone(), k.clone(), v.clone()],
                ForwardGiven::none(),
                &config,
                false,
            )?;
            let saved = [q, k, v, o, lse, selection];
            let (_, times) = backward::<f32, u8>(saved, dout, &config, timed)?;
            Ok(times)
        };
        step_seconds = Some(median_wall_seconds(runs, 1, |run| {
            run_step((run + 1) % 2, false).map(drop)
        })?);
        backward_stage_seconds = Some(stage_split(&run_step(0, true)?, Stage::BACKWARD));
    }

    progress("checking sampled rows against the reference");
    let chosen: Vec<i32> = Tensor::<Plain, 4, Int>::from_primitive(selection)
        .into_data()
        .convert::<i32>()
        .to_vec()
        .map_err(|e| MobaError::Cuda(format!("reading back: {e:?}")))?;
    let attended_pairs = sparsity::attended_pairs(&chosen, shape, &config);
    // Rows of the first (batch, head): its q and its kv head suffice for the reference.
    let one_head = Shape {
        batch: 1,
        q_heads: 1,
        kv_heads: 1,
        ..*shape
    };
    let [q, k, v, _] = sets[0].clone();
    let first = |t: Tensor<Plain, 4>, len: usize| t.slice([0..1, 0..1, 0..len, 0..shape.head_dim]);
    let (q, k, v) = (
        floats(first(q, shape.q_len))?,
        floats(first(k, shape.kv_len))?,
        floats(first(v, shape.kv_len))?,
    );
    let count = check_rows.clamp(1, shape.q_len);
    let rows: Vec<usize> = (0..count)
        .map(|i| i * shape.q_len / count)
        .chain([shape.q_len - 1])
        .collect();
    let first_head = |t: FloatTensor<Plain>| {
        Tensor::<Plain, 4>::from_primitive(TensorPrimitive::Float(t)).slice([
            0..1,
            0..1,
            0..shape.q_len,
            0..shape.head_dim,
        ])
    };
    let o = floats(first_head(o))?;
    let lse = floats(
        Tensor::<Plain, 3>::from_primitive(TensorPrimitive::Float(lse)).slice([
            0..1,
            0..1,
            0..shape.q_len,
        ]),
    )?;
    let (d, top_k) = (shape.head_dim, config.top_k);
    let sampled_o: Vec<f32> = rows
        .iter()
        .flat_map(|&r| o[r * d..(r + 1) * d].to_vec())
        .collect();
    let sampled_lse: Vec<f32> = rows.iter().map(|&r| lse[r]).collect();
    let sampled_selection: Vec<i32> = rows
        .iter()
        .flat_map(|&r| chosen[r * top_k..(r + 1) * top_k].to_vec())
        .collect();
    let got = SampledRows {
        o: &sampled_o,
        lse: Some(&sampled_lse),
        selection: &sampled_selection,
    };
    let precision = match elem {
        ElemKind::F16 => Precision::F16,
        // f32 inputs multiply in bf16 on the tensor cores.
        ElemKind::Bf16 | ElemKind::F32 => Precision::Bf16,
    };
    let check = reference::check_rows((&q, &k, &v), &one_head, &config, &rows, &got, precision)?;

    let mma = driver.mma_kind(shape.head_dim);
    let plan = CudaPlan::new(shape, &config, mma, elem);
    let scratch_bytes = 4 * plan.scratch_words(true).total();
    let elem_bytes = elem.bytes();
    let tensors = elem_bytes * (2 * shape.q_elems() + 2 * shape.kv_elems())
        + 4 * shape.q_rows() * (1 + config.top_k);
    let training = if backward_too {
        elem_bytes * (2 * shape.q_elems() + 2 * shape.kv_elems())
    } else {
        0
    };
    let found = Measurement {
        shape: *shape,
        config,
        kernel: match mma {
            MmaKind::Sync => format!("cuda-{}", elem.name()),
            MmaKind::Warpgroup => format!("cuda-{}-wgmma", elem.name()),
        },
        runs,
        calls: 1,
        groups_per_call: shape.groups(),
        moba_seconds,
        dense_seconds: None,
        stage_seconds: Some(stage_seconds),
        step_seconds,
        backward_stage_seconds,
        memory_bytes: (scratch_bytes + tensors + training) as u64,
        attended_pairs,
        dense_pairs: sparsity::dense_pairs(shape, config.causal),
        check,
    };
    let device = DeviceDescription {
        adapter: driver.describe().to_string(),
        backend: "CUDA".into(),
        device_type: "DiscreteGpu".into(),
        driver: "CUDA driver (cudarc, NVRTC)".into(),
    };
    Ok(Record::new(&device, &found))
}
