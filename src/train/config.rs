//! What a training run is: model, data, batch and schedule. Saved as `train.json` in the run
//! directory, so that `--resume`, `moba eval` and `moba generate` rebuild the same run.

use std::path::PathBuf;
use std::sync::Arc;

use burn::config::Config;

use crate::data::{RecallTask, SequenceSource, TextCorpus};
use crate::error::{MobaError, Result};
use crate::model::LmConfig;

/// The data of a run.
#[derive(Config, Debug, PartialEq)]
pub enum DataConfig {
    /// The synthetic recall task: `pairs` key-value records, `queries` of them asked.
    Recall { pairs: usize, queries: usize },
    /// Files (or directories of files) as bytes; the last `valid_fraction` validates.
    Text {
        paths: Vec<String>,
        valid_fraction: f64,
    },
}

/// A training run (see the module documentation of [`crate::train`]).
#[derive(Config, Debug, PartialEq)]
pub struct TrainConfig {
    pub model: LmConfig,
    pub data: DataConfig,
    /// Bytes the model reads per sequence.
    pub seq_len: usize,
    /// Optimizer steps.
    pub steps: usize,
    /// Sequences per forward.
    #[config(default = 1)]
    pub batch_size: usize,
    /// Forwards summed into one optimizer step (AdamW is invariant to the gradient's scale).
    #[config(default = 1)]
    pub grad_accumulation: usize,
    /// Optimizer steps between validations and checkpoints (one burn-train epoch).
    #[config(default = 100)]
    pub valid_every: usize,
    /// Batches of every validation.
    #[config(default = 4)]
    pub valid_batches: usize,
    /// Peak learning rate, reached after the warm-up, then cosine decay to a tenth of it.
    #[config(default = 1e-3)]
    pub learning_rate: f64,
    #[config(default = 100)]
    pub warmup_steps: usize,
    #[config(default = 0.1)]
    pub weight_decay: f32,
    /// Gradient norm clip.
    #[config(default = 1.0)]
    pub grad_clip: f32,
    /// Seeds the weights and the data: two runs with the same seed start from the same
    /// weights (when their shapes agree) and see the same sequences.
    #[config(default = 42)]
    pub seed: u64,
}

/// Validation draws from a stream of its own.
const VALID_SEED: u64 = 0x5EED_0F_0A11D;

impl TrainConfig {
    /// An error naming the first setting that does not fit.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("seq_len", self.seq_len),
            ("steps", self.steps),
            ("batch_size", self.batch_size),
            ("grad_accumulation", self.grad_accumulation),
            ("valid_every", self.valid_every),
            ("valid_batches", self.valid_batches),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(MobaError::Config(format!("{name} must be positive")));
        }
        if !self.steps.is_multiple_of(self.valid_every) {
            return Err(MobaError::Config(format!(
                "steps ({}) must be a multiple of valid_every ({})",
                self.steps, self.valid_every
            )));
        }
        if self.seq_len > self.model.max_seq_len {
            return Err(MobaError::Config(format!(
                "seq_len ({}) exceeds the model's max_seq_len ({})",
                self.seq_len, self.model.max_seq_len
            )));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return Err(MobaError::Config(format!(
                "learning_rate must be in (0, 1], got {}",
                self.learning_rate
            )));
        }
        Ok(())
    }

    /// Epochs of burn-train: one per validation.
    pub fn epochs(&self) -> usize {
        self.steps / self.valid_every
    }

    /// Forwards per epoch.
    pub fn iterations_per_epoch(&self) -> usize {
        self.valid_every * self.grad_accumulation
    }

    /// Bytes the model reads per optimizer step.
    pub fn tokens_per_step(&self) -> usize {
        self.seq_len * self.batch_size * self.grad_accumulation
    }

    /// The training and validation sources (reads the corpus for text data).
    pub fn sources(&self) -> Result<(Arc<dyn SequenceSource>, Arc<dyn SequenceSource>)> {
        match &self.data {
            DataConfig::Recall { pairs, queries } => {
                let task = RecallTask::with_counts(self.seq_len, *pairs, *queries, self.seed)?;
                let valid = task.with_seed(self.seed ^ VALID_SEED);
                Ok((Arc::new(task), Arc::new(valid)))
            }
            DataConfig::Text {
                paths,
                valid_fraction,
            } => {
                let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
                let corpus = TextCorpus::load(&paths, *valid_fraction)?;
                Ok((
                    Arc::new(corpus.train(self.seq_len, self.seed)?),
                    Arc::new(corpus.valid(self.seq_len)?),
                ))
            }
        }
    }

    /// The validation recall task of a recall run (`None` for text).
    pub fn recall_task(&self) -> Result<Option<RecallTask>> {
        match self.data {
            DataConfig::Recall { pairs, queries } => Ok(Some(RecallTask::with_counts(
                self.seq_len,
                pairs,
                queries,
                self.seed ^ VALID_SEED,
            )?)),
            DataConfig::Text { .. } => Ok(None),
        }
    }
}
