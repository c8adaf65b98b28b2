//! What a training run is: model, data, batch and schedule. Saved as `train.json` in the run
//! directory, so that `--resume`, `moba eval` and `moba generate` rebuild the same run.

use std::path::PathBuf;
use std::sync::Arc;

use burn::config::Config;

use crate::data::{
    CorpusWindows, Curriculum, RecallTask, SequenceSource, TextCorpus, curriculum_lengths,
};
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
    /// Length stages of the training data, shortest first ([`Curriculum`]): the first half
    /// of the steps climbs through `seq_len / 2^(n-1)`, ..., `seq_len / 2` in equal parts
    /// (as many more sequences per batch as they are shorter), the second half reads
    /// `seq_len`. `None` (the default, and what a `train.json` written before this setting
    /// existed reads as) or 1: every step reads `seq_len`. Validation reads `seq_len`.
    pub curriculum: Option<usize>,
    /// Start from the weights of the run in this directory (its `model.mpk`, else its latest
    /// checkpoint) instead of fresh ones, with a fresh optimizer and schedule: fine-tuning,
    /// for example at a longer context than that run's. The shapes must agree (the context
    /// length may differ: RoPE's tables are not weights). `None`: fresh weights.
    pub init_from: Option<String>,
    /// Seeds the weights and the data: two runs with the same seed start from the same
    /// weights (when their shapes agree) and see the same sequences.
    #[config(default = 42)]
    pub seed: u64,
}

/// Validation draws from a stream of its own.
const VALID_SEED: u64 = 0x05EE_D0F0_A11D;

impl TrainConfig {
    /// An error naming the first setting that does not fit.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        let positive = [
            ("seq_len", self.seq_len),
            ("steps", self.steps),
            ("batch_size", self.batch_size),
            ("grad_accumulation", self.grad_accumulation),
            ("valid_every", self.valid_every),
            ("valid_batches", self.valid_batches),
            ("curriculum", self.stages()),
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
        if self.stages() > 1 && self.steps_per_stage() == 0 {
            return Err(MobaError::Config(format!(
                "a curriculum of {} stages needs at least {} steps",
                self.stages(),
                2 * (self.stages() - 1)
            )));
        }
        if let Some(task) = self.recall_task()? {
            task.scaled(curriculum_lengths(self.seq_len, self.stages())[0])?;
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return Err(MobaError::Config(format!(
                "learning_rate must be in (0, 1], got {}",
                self.learning_rate
            )));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(MobaError::Config(format!(
                "weight_decay must be a finite number of at least 0, got {}",
                self.weight_decay
            )));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip > 0.0) {
            return Err(MobaError::Config(format!(
                "grad_clip must be a finite number above 0, got {}",
                self.grad_clip
            )));
        }
        Ok(())
    }

    /// The config with its text paths absolute (relative ones against the current
    /// directory), so that `eval` and `--resume` find the text from any directory. Runs
    /// written before paths were stored absolute compare equal to their absolute form.
    pub fn with_absolute_paths(mut self) -> Result<Self> {
        if let DataConfig::Text { paths, .. } = &mut self.data {
            for path in paths.iter_mut() {
                let absolute =
                    std::path::absolute(&*path).map_err(|e| MobaError::io(path.as_ref(), e))?;
                *path = absolute.display().to_string();
            }
        }
        Ok(self)
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

    /// Length stages of the curriculum (1 without one).
    pub fn stages(&self) -> usize {
        self.curriculum.unwrap_or(1)
    }

    /// Optimizer steps of each shorter stage of the curriculum (0 without one).
    fn steps_per_stage(&self) -> usize {
        match self.stages() {
            0 | 1 => 0,
            stages => self.steps / 2 / (stages - 1),
        }
    }

    /// Where text packs its files apart (a varlen batch), the shortest document a row
    /// tells apart ([`crate::model::LmConfig::packing_grain`]); `None` for the recall task
    /// and for models with an NSA layer, whose rows are one document each.
    pub fn document_grain(&self) -> Option<usize> {
        match self.data {
            DataConfig::Text { .. } => self.model.packing_grain(self.seq_len),
            DataConfig::Recall { .. } => None,
        }
    }

    /// The training and validation sources (reads the corpus for text data).
    pub fn sources(&self) -> Result<(Arc<dyn SequenceSource>, Arc<dyn SequenceSource>)> {
        let lengths = curriculum_lengths(self.seq_len, self.stages());
        let (mut stages, valid): (Vec<Arc<dyn SequenceSource>>, Arc<dyn SequenceSource>) =
            match &self.data {
                DataConfig::Recall { pairs, queries } => {
                    let task = RecallTask::with_counts(self.seq_len, *pairs, *queries, self.seed)?;
                    let stages = lengths
                        .iter()
                        .map(|&len| Ok(Arc::new(task.scaled(len)?) as _))
                        .collect::<Result<_>>()?;
                    (stages, Arc::new(task.with_seed(self.seed ^ VALID_SEED)))
                }
                DataConfig::Text {
                    paths,
                    valid_fraction,
                } => {
                    let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
                    let corpus = TextCorpus::load(&paths, *valid_fraction)?;
                    // Each file is a document the model reads on its own (a varlen batch),
                    // but where a layer is NSA, which has no varlen path yet.
                    let windows = |windows: CorpusWindows| match self.document_grain() {
                        Some(grain) => windows.by_document(&corpus, grain),
                        None => windows,
                    };
                    let stages = lengths
                        .iter()
                        .map(|&len| Ok(Arc::new(windows(corpus.train(len, self.seed)?)) as _))
                        .collect::<Result<_>>()?;
                    (stages, Arc::new(windows(corpus.valid(self.seq_len)?)))
                }
            };
        let train = match stages.len() {
            1 => stages.remove(0),
            _ => {
                let sequences = self.steps_per_stage() * self.batch_size * self.grad_accumulation;
                Arc::new(Curriculum::new(stages, sequences as u64))
            }
        };
        Ok((train, valid))
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
