//! `train`: a run on burn-train's `SupervisedTraining` — AdamW, warm-up then cosine decay,
//! gradient accumulation, metrics, checkpoints every epoch and resume.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use burn::backend::{Autodiff, NdArray};
use burn::grad_clipping::GradientClippingConfig;
use burn::lr_scheduler::composed::{ComposedLrScheduler, ComposedLrSchedulerConfig};
use burn::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::lr_scheduler::linear::LinearLrSchedulerConfig;
use burn::module::Module;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig};
use burn::record::Recorder;
use burn::tensor::backend::Backend;
use burn::train::checkpoint::KeepLastNCheckpoints;
use burn::train::metric::{LearningRateMetric, LossMetric};
use burn::train::{
    ExecutionStrategy, Learner, LearnerOptimizerRecord, LearnerSchedulerRecord,
    LearningComponentsMarker, MultiDeviceOptim, SupervisedTraining,
};
use serde::{Deserialize, Serialize};

use super::capacity::{DeviceCapacity, check_capacity};
use super::checkpoint::{
    Checkpoints, RunRecorder, checkpoint_error, checkpoint_file, config_path, load_model,
    model_path, run_weights, save_model,
};
use super::config::TrainConfig;
use super::curve::{CurveLogger, Curves, metrics_path};
use super::metrics::{GpuMemoryMetric, MemoryProbe, PerplexityMetric, TokensPerSecondMetric};
use super::renderer::LineRenderer;
use super::stop::{CheckpointThenStop, LossGuard, SignalGuard, StopRequest};
use crate::backend::MobaBackend;
use crate::bench::median;
use crate::config::Shape;
use crate::data::SequenceLoader;
use crate::error::{MobaError, Result};
use crate::files;
use crate::model::MobaLm;

type Model<B> = MobaLm<Autodiff<B>>;
type Optim<B> = OptimizerAdaptor<AdamW, Model<B>, Autodiff<B>>;
type Components<B> = LearningComponentsMarker<Autodiff<B>, ComposedLrScheduler, Model<B>, Optim<B>>;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dashboard {
    /// burn-train's terminal dashboard when stdout is a terminal, else lines.
    Auto,
    /// One line every few seconds on stderr.
    Lines,
}

/// Where and how to train.
pub struct TrainTarget<'a, B: Backend> {
    /// The run directory (created if missing).
    pub dir: &'a Path,
    /// Where the model trains: one device, or several of one machine for data parallel
    /// training (burn-train's multi-device strategy: each device takes an equal share of
    /// every batch, their gradients are summed into the first, which steps the optimizer;
    /// the same steps as one device with the same `batch_size`).
    pub devices: Vec<B::Device>,
    /// The backend's device memory, for the GPU memory metric.
    pub memory: Option<MemoryProbe>,
    /// What the device holds, checked against the run's needs before it starts.
    pub capacity: DeviceCapacity,
    pub dashboard: Dashboard,
}

/// What a finished run reports (`summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Optimizer steps taken (all epochs, resumed ones included).
    pub steps: usize,
    /// Bytes read by the training forwards.
    pub tokens: usize,
    pub params: usize,
    /// Wall time of this invocation's training (validation and compilation included).
    pub seconds: f64,
    /// Median over epochs of the epoch's training throughput (bytes per second).
    pub tokens_per_second: f64,
    /// Mean validation loss of the last epoch (nats per counted byte).
    pub final_valid_loss: f64,
    /// Largest device memory the backend held (MiB), where the backend tells.
    pub peak_memory_mib: Option<f64>,
}

impl TrainSummary {
    /// `DIR/summary.json` of a finished run.
    pub fn read(run: &Path) -> Result<Self> {
        let path = run.join("summary.json");
        let text = std::fs::read_to_string(&path).map_err(|e| MobaError::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| MobaError::io(&path, e))
    }
}

/// The weights a run starts from: those of the run `config.init_from` names, else fresh
/// ones drawn from `config.seed` (same seed, same weights: the MoBA and full attention arms
/// of a comparison start from one initialisation).
pub fn initial_model<B: MobaBackend>(
    config: &TrainConfig,
    device: &B::Device,
) -> Result<MobaLm<B>> {
    match &config.init_from {
        Some(run) => load_model(&config.model, &run_weights(Path::new(run))?, device),
        None => fresh_model(config, device),
    }
}

/// Fresh weights drawn from `config.seed`.
fn fresh_model<B: MobaBackend>(config: &TrainConfig, device: &B::Device) -> Result<MobaLm<B>> {
    B::seed(device, config.seed);
    config.model.init::<B>(device)
}

/// Trains `config` in `target.dir`, or with `resume` continues the run there from its
/// newest complete checkpoint (same config, same data order). Writes `train.json`,
/// `checkpoint/`, `metrics.jsonl`, `model.mpk` and `summary.json`.
///
/// Everything that can be checked is checked before the run directory is touched (the
/// config, the data, the weights it starts from, the attention on this device, the memory
/// it needs), so a refused start leaves nothing behind. A run that stops early (a signal, a
/// loss that is not finite, a failed checkpoint save, the dashboard) writes no `model.mpk`
/// and returns [`MobaError::Interrupted`], which says where `--resume` continues.
pub fn train<B: MobaBackend>(
    config: &TrainConfig,
    resume: bool,
    target: TrainTarget<'_, B>,
) -> Result<TrainSummary> {
    config.validate()?;
    let (train_source, valid_source) = config.sources()?;
    let dir = target.dir;
    let Some(device) = target.devices.first().cloned() else {
        return Err(MobaError::Config("training needs a device".into()));
    };
    let parallel = target.devices.len();
    if !config.batch_size.is_multiple_of(parallel) {
        return Err(MobaError::Config(format!(
            "a batch of {} sequences is not dealt evenly over {parallel} devices: give a \
             --batch-size that is a multiple of the device count",
            config.batch_size
        )));
    }
    match (resume, config_path(dir).is_file()) {
        (false, true) => {
            return Err(MobaError::Config(format!(
                "{} already holds a run: --resume continues it, or pick another directory",
                dir.display()
            )));
        }
        (true, false) => {
            return Err(checkpoint_error(
                &config_path(dir),
                "no such file: nothing to resume",
            ));
        }
        _ => {}
    }
    let done = match resume {
        true => resume_point(dir, config),
        false => 0,
    };
    // Each device holds the weights and its share of the batch.
    let share = TrainConfig {
        batch_size: config.batch_size / parallel,
        ..config.clone()
    };
    check_capacity(&share, &target.capacity)?;
    check_attention::<B>(config, parallel, &device)?;
    // A resumed run's weights come from its checkpoint: only a new one reads `init_from`
    // (which may be gone by then).
    let model = match done {
        0 => initial_model::<Autodiff<B>>(config, &device)?,
        _ => fresh_model::<Autodiff<B>>(config, &device)?,
    };
    let params = model.num_params();
    if done > 0 {
        check_checkpoint::<B>(config, dir, done, &device)?;
    }

    std::fs::create_dir_all(dir).map_err(|e| MobaError::io(dir, e))?;
    let json = serde_json::to_string_pretty(config).expect("a config serialises");
    files::write_atomically(&config_path(dir), json.as_bytes())?;
    let curve = match done {
        0 => CurveLogger::create(&metrics_path(dir))?,
        epoch => CurveLogger::resume(&metrics_path(dir), epoch)?,
    };

    let train_loader = SequenceLoader::<Autodiff<B>>::training(
        train_source,
        config.batch_size,
        config.iterations_per_epoch(),
        done as u64,
        device.clone(),
    )
    .sharded(parallel);
    let valid_loader = SequenceLoader::<B>::validation(
        valid_source,
        config.batch_size,
        config.valid_batches,
        device.clone(),
    );
    let optimizer = AdamWConfig::new()
        .with_weight_decay(config.weight_decay)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(config.grad_clip)))
        .init::<Autodiff<B>, Model<B>>();
    let learner: Learner<Components<B>> = Learner::new(model, optimizer, schedule(config)?);

    let mut training = SupervisedTraining::new(
        dir,
        std::sync::Arc::new(train_loader),
        std::sync::Arc::new(valid_loader),
    );
    let stop = StopRequest::new(training.interrupter());
    training = training
        .metrics((LossMetric::<NdArray>::new(), PerplexityMetric::default()))
        .metric_train_numeric(TokensPerSecondMetric::default())
        .metric_train_numeric(LearningRateMetric::new())
        .metric_train(LossGuard::new(stop.clone()))
        .metric_valid(LossGuard::new(stop.clone()))
        .with_metric_logger(curve)
        .with_file_checkpointer(RunRecorder::new())
        .with_checkpointing_strategy(CheckpointThenStop::new(
            KeepLastNCheckpoints::new(2),
            stop.clone(),
        ))
        .num_epochs(config.epochs());
    if let Some(probe) = target.memory {
        training = training.metric_train_numeric(GpuMemoryMetric::new(probe));
    }
    if config.grad_accumulation > 1 {
        training = training.grads_accumulation(config.grad_accumulation);
    }
    if parallel > 1 {
        let devices = target.devices.clone();
        training = training.with_training_strategy(
            ExecutionStrategy::multi(devices, MultiDeviceOptim::OptimMainDevice).into(),
        );
    }
    if target.dashboard == Dashboard::Lines || !std::io::stdout().is_terminal() {
        training = training.renderer(LineRenderer::new(Duration::from_secs(5)));
    }
    if done > 0 {
        training = training.checkpoint(done);
    }
    let start = Instant::now();
    let signals = SignalGuard::install(stop.clone());
    let result = training.launch(learner);
    drop(signals);
    let seconds = start.elapsed().as_secs_f64();
    let stopped = stop.reason();
    // Dropping the renderer closes the dashboard (and restores the terminal) before any
    // message is printed.
    drop(result.renderer);

    let newest = Checkpoints::scan(dir).newest_complete;
    if newest != Some(config.epochs()) {
        let reason = stopped.unwrap_or_else(|| "it stopped early".into());
        return Err(MobaError::Interrupted(format!(
            "training of {} stopped before its {} steps: {reason}. {}",
            dir.display(),
            config.steps,
            match newest {
                Some(epoch) => format!(
                    "Its newest complete checkpoint is epoch {epoch} (step {}): `moba train \
                     --run {} --resume` continues from there",
                    epoch * config.valid_every,
                    dir.display()
                ),
                None => format!(
                    "It has no complete checkpoint yet: `moba train --run {} --resume` starts \
                     it again from step 0",
                    dir.display()
                ),
            }
        )));
    }
    save_model(&result.model, &model_path(dir))?;

    let curves = Curves::read(&metrics_path(dir))?;
    // Every epoch is done (checked above), on however many devices each ran.
    let summary = TrainSummary {
        steps: config.steps,
        tokens: config.steps * config.tokens_per_step(),
        params,
        seconds,
        tokens_per_second: median(
            curves
                .train_epoch_ends
                .iter()
                .filter_map(|m| m.get("Tokens/s").copied())
                .collect::<Vec<_>>(),
        ),
        final_valid_loss: curves
            .valid_means("Loss")
            .last()
            .copied()
            .unwrap_or(f64::NAN),
        peak_memory_mib: curves
            .train_values("GPU memory")
            .into_iter()
            .reduce(f64::max),
    };
    let path = dir.join("summary.json");
    let json = serde_json::to_string_pretty(&summary).expect("plain numbers");
    files::write_atomically(&path, json.as_bytes())?;
    Ok(summary)
}

/// The epoch a resumed run continues from: its newest complete checkpoint (0: none), said
/// on stderr together with any newer checkpoint that is not complete.
fn resume_point(dir: &Path, config: &TrainConfig) -> usize {
    let found = Checkpoints::scan(dir);
    for (epoch, problem) in &found.incomplete {
        eprintln!("moba: the checkpoint of epoch {epoch} is not used: {problem}");
    }
    match found.newest_complete {
        Some(epoch) => {
            eprintln!(
                "moba: resuming {} from the checkpoint of epoch {epoch} (step {} of {})",
                dir.display(),
                epoch * config.valid_every,
                config.steps
            );
            epoch
        }
        None => {
            eprintln!(
                "moba: {} has no complete checkpoint: training starts from step 0",
                dir.display()
            );
            0
        }
    }
}

/// Every attention layer's problem, checked on this device before training starts
/// ([`MobaBackend::moba_prepare`]: limits, kernels, memory) for one device's share of a
/// batch: its rows as they are, and where text packs files apart, as the one packed row
/// of the most padding its documents can need (at most `seq / grain + 1` of them a row,
/// each padded to a block: [`crate::data::CorpusWindows::by_document`]). Validation's
/// sequences are the longest a step sees.
fn check_attention<B: MobaBackend>(
    config: &TrainConfig,
    devices: usize,
    device: &B::Device,
) -> Result<()> {
    let model = &config.model;
    let (rows, seq) = (config.batch_size / devices, config.seq_len);
    let shape = |batch, len| Shape {
        batch,
        q_heads: model.n_heads,
        kv_heads: model.n_kv_heads,
        q_len: len,
        kv_len: len,
        head_dim: model.d_model / model.n_heads,
    };
    for layer in 0..model.n_layers {
        // NSA runs on burn's tensor ops, which check as they go.
        let kind = model.layer_attention(layer);
        if let Some(attention) = kind.config(seq) {
            Autodiff::<B>::moba_prepare(&shape(rows, seq), &attention, device)?;
        }
        let packed = (config.document_grain(), kind.packed_block(seq));
        if let ((Some(grain), Some(block)), Some(attention)) = (packed, kind.packed_config(seq)) {
            let documents = (seq - 1) / grain + 1;
            let len = rows * (seq + documents * (block - 1));
            Autodiff::<B>::moba_prepare(&shape(1, len), &attention, device)?;
        }
    }
    Ok(())
}

/// Warm-up (linear from near 0) then cosine decay to a tenth, in forwards: burn-train
/// steps the scheduler once per forward, accumulated or not.
fn schedule(config: &TrainConfig) -> Result<ComposedLrScheduler> {
    let total = config.steps * config.grad_accumulation;
    let warmup = config.warmup_steps * config.grad_accumulation;
    let mut schedule = ComposedLrSchedulerConfig::new().cosine(
        CosineAnnealingLrSchedulerConfig::new(config.learning_rate, total)
            .with_min_lr(config.learning_rate / 10.0),
    );
    if warmup > 0 {
        schedule = schedule.linear(LinearLrSchedulerConfig::new(
            1.0 / warmup as f64,
            1.0,
            warmup,
        ));
    }
    schedule.init().map_err(MobaError::Config)
}

/// An error naming the file unless the checkpoint of `epoch` loads (burn-train would panic).
fn check_checkpoint<B: MobaBackend>(
    config: &TrainConfig,
    dir: &Path,
    epoch: usize,
    device: &B::Device,
) -> Result<()> {
    load_model::<Autodiff<B>>(&config.model, &checkpoint_file(dir, "model", epoch), device)?;
    let recorder = RunRecorder::new();
    let file = |name| checkpoint_file(dir, name, epoch);
    load_record::<B, LearnerOptimizerRecord<Components<B>>>(&recorder, file("optim"), device)?;
    load_record::<B, LearnerSchedulerRecord<Components<B>>>(&recorder, file("scheduler"), device)?;
    Ok(())
}

/// Loads one record of a checkpoint, or an error naming its file.
fn load_record<B: MobaBackend, R: burn::record::Record<Autodiff<B>>>(
    recorder: &RunRecorder,
    file: std::path::PathBuf,
    device: &B::Device,
) -> Result<R> {
    Recorder::<Autodiff<B>>::load::<R>(recorder, file.clone(), device)
        .map_err(|e| checkpoint_error(&file.with_extension("mpk"), e))
}
