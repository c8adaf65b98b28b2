//! Training, evaluation and comparison of [`crate::model::MobaLm`] on burn-train.
//!
//! A run lives in a directory: [`TrainConfig`] as `train.json`, burn-train's checkpoints of
//! the last two epochs in `checkpoint/` (model, optimizer, scheduler), the metric log
//! `metrics.jsonl`, then `model.mpk` and `summary.json` when it ends; `moba eval` adds
//! `eval.json`. One epoch is `valid_every` optimizer steps, followed by a validation and a
//! checkpoint.
//!
//! ```no_run
//! use std::path::Path;
//! use burn::backend::Wgpu;
//! use moba::model::LmConfig;
//! use moba::train::{DataConfig, Dashboard, TrainConfig, TrainTarget, train};
//!
//! let model = LmConfig::preset("8k")?;
//! let config = TrainConfig::new(model, DataConfig::Recall { pairs: 64, queries: 16 }, 8192, 1000);
//! let target = TrainTarget::<Wgpu> {
//!     dir: Path::new("runs/recall-moba"),
//!     devices: vec![Default::default()], // several: data parallel
//!     memory: None,
//!     capacity: Default::default(),
//!     dashboard: Dashboard::Auto,
//! };
//! let summary = train(&config, false, target)?;
//! println!("{:.0} bytes/s, validation loss {:.3}", summary.tokens_per_second, summary.final_valid_loss);
//! # Ok::<(), moba::MobaError>(())
//! ```

mod capacity;
mod checkpoint;
mod config;
mod curve;
mod eval;
mod metrics;
mod renderer;
mod report;
mod run;
mod step;
mod stop;

pub use capacity::{
    DeviceCapacity, check_capacity, largest_tensor_bytes, parameter_count, training_bytes,
};
pub use checkpoint::{
    Checkpoints, Exported, RunRecorder, checkpoint_file, export_run, load_config, load_model,
    model_path, run_weights, save_model,
};
pub use config::{DataConfig, TrainConfig};
pub use curve::{CurveLogger, Curves, metrics_path};
pub use eval::{EvalOptions, EvalReport, LossDifference, RecallBucket, evaluate, gate_hit_text};
pub use metrics::{
    GpuMemoryMetric, MemoryProbe, PerplexityMetric, TokensPerSecondMetric, nvidia_memory_probe,
};
pub use renderer::LineRenderer;
pub use report::{Arm, write_report};
pub use run::{Dashboard, TrainSummary, TrainTarget, initial_model, train};
pub use step::{LmOutput, LmStats, batch_loss, weighted_nll};
pub use stop::{CheckpointThenStop, LossGuard, SignalGuard, StopRequest};
