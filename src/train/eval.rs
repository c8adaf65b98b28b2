//! `evaluate`: validation loss, trailing loss (the last eighth of every full-length
//! sequence, the MoBA paper's measure of long-context use) and, for the recall task,
//! recall accuracy by distance between record and query.

use std::ops::Range;

use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor};
use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use super::step::weighted_nll;
use crate::backend::MobaBackend;
use crate::data::{RecallSample, TokenBatch};
use crate::error::Result;
use crate::model::MobaLm;

/// How much to evaluate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalOptions {
    /// Validation batches (of the run's batch size) for the losses.
    pub batches: usize,
    /// Distance buckets of the recall accuracy (equal widths over the context).
    pub buckets: usize,
    /// Sequences per distance bucket.
    pub recall_sequences: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            batches: 8,
            buckets: 4,
            recall_sequences: 16,
        }
    }
}

/// Recall accuracy of the queries whose record lies `distance` bytes before them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecallBucket {
    pub distance: Range<usize>,
    /// Queries answered with all three digits right (greedy, teacher-forced).
    pub correct: usize,
    pub queries: usize,
}

impl RecallBucket {
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.queries.max(1) as f64
    }
}

/// What `moba eval` reports (`eval.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Mean loss of the counted validation bytes (nats).
    pub valid_loss: f64,
    /// The same over the last eighth of every sequence.
    pub trailing_loss: f64,
    /// Validation sequences read.
    pub sequences: usize,
    /// By distance, nearest first (recall runs only).
    pub recall: Vec<RecallBucket>,
}

/// Evaluates `model` on the validation data of the run `config`, printing progress.
pub fn evaluate<B: MobaBackend>(
    model: &MobaLm<B>,
    config: &TrainConfig,
    options: &EvalOptions,
    device: &B::Device,
) -> Result<EvalReport> {
    let (_, valid) = config.sources()?;
    let (mut loss, mut trailing) = (Sums::default(), Sums::default());
    let per_batch = config.batch_size;
    let batches = match valid.distinct() {
        Some(n) => options.batches.min((n as usize).div_ceil(per_batch)),
        None => options.batches,
    };
    let tail = config.seq_len - config.seq_len / 8;
    for index in 0..batches {
        let first = (index * per_batch) as u64;
        let sequences: Vec<_> = (first..first + per_batch as u64)
            .map(|i| valid.sequence(i))
            .collect();
        let batch = TokenBatch::<B>::new(&sequences, device);
        let nll = weighted_nll(model, &batch)?;
        let [b, s] = nll.dims();
        loss.add(nll.clone().sum(), batch.weights.clone().sum());
        trailing.add(
            nll.slice([0..b, tail..s]).sum(),
            batch.weights.slice([0..b, tail..s]).sum(),
        );
        eprintln!("eval: validation batch {}/{batches}", index + 1);
    }

    let mut recall = Vec::new();
    if let Some(task) = config.recall_task()? {
        let context = task.context();
        for bucket in 0..options.buckets {
            let start = bucket * context / options.buckets;
            // The last bucket reaches the farthest record, `context` bytes away.
            let end = (bucket + 1) * context / options.buckets
                + usize::from(bucket + 1 == options.buckets);
            // At short lengths a bucket can be narrower than a record's slot and hold none:
            // it is left out, not the whole evaluation.
            let Ok(near) = task.near(start..end) else {
                eprintln!("eval: no record fits {start}..{end} bytes before the queries: skipped");
                continue;
            };
            let mut result = RecallBucket {
                distance: start..end,
                correct: 0,
                queries: 0,
            };
            for index in 0..options.recall_sequences.div_ceil(per_batch) {
                let first = (index * per_batch) as u64;
                let samples: Vec<RecallSample> = (first..first + per_batch as u64)
                    .map(|i| near.sample(i))
                    .collect();
                let (correct, queries) = answered(model, &samples, device)?;
                result.correct += correct;
                result.queries += queries;
            }
            eprintln!(
                "eval: recall at distance {start}..{end}: {:.3} ({} queries)",
                result.accuracy(),
                result.queries
            );
            recall.push(result);
        }
    }
    Ok(EvalReport {
        valid_loss: loss.mean(),
        trailing_loss: trailing.mean(),
        sequences: batches * per_batch,
        recall,
    })
}

/// Queries of `samples` whose three digits are all the model's greedy choice, and all queries.
fn answered<B: MobaBackend>(
    model: &MobaLm<B>,
    samples: &[RecallSample],
    device: &B::Device,
) -> Result<(usize, usize)> {
    let sequences: Vec<_> = samples.iter().map(|s| s.sequence.clone()).collect();
    let batch = TokenBatch::<B>::new(&sequences, device);
    let [_, seq] = batch.dims();
    let predicted: Vec<i64> = model
        .forward(batch.inputs)?
        .argmax(2)
        .into_data()
        .convert::<i64>()
        .to_vec()
        .expect("integer predictions");
    let mut correct = 0;
    let mut queries = 0;
    for (row, sample) in samples.iter().enumerate() {
        for query in &sample.queries {
            // The digit at token `at + i` is predicted at input position `at + i - 1`.
            let right = query
                .value
                .bytes()
                .enumerate()
                .all(|(i, digit)| predicted[row * seq + query.at + i - 1] == digit as i64);
            correct += usize::from(right);
            queries += 1;
        }
    }
    Ok((correct, queries))
}

/// Running sums of weighted losses and weights.
#[derive(Default)]
struct Sums {
    loss: f64,
    weight: f64,
}

impl Sums {
    fn add<B: Backend>(&mut self, loss: Tensor<B, 1>, weight: Tensor<B, 1>) {
        self.loss += loss.into_scalar().elem::<f64>();
        self.weight += weight.into_scalar().elem::<f64>();
    }

    fn mean(&self) -> f64 {
        self.loss / self.weight
    }
}
