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
use crate::error::{MobaError, Result};
use crate::model::MobaLm;
use crate::module::GateChoices;

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

impl EvalOptions {
    /// An error naming the first count that is zero (a loss over no batch is NaN).
    pub fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("eval batches", self.batches),
            ("recall buckets", self.buckets),
            ("recall sequences", self.recall_sequences),
        ] {
            if value == 0 {
                return Err(MobaError::Config(format!("{name} must be at least 1")));
            }
        }
        Ok(())
    }
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
    /// Per layer with a gate, first to last: the (query, head) pairs whose gate, at the
    /// position that predicts the value's first digit, chose the block holding the queried
    /// record. Empty without such layers (and in reports written before it was counted).
    #[serde(default)]
    pub gate_hits: Vec<usize>,
    /// The (query, head) pairs each entry of `gate_hits` counts from.
    #[serde(default)]
    pub gate_pairs: usize,
}

impl RecallBucket {
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.queries.max(1) as f64
    }

    /// Per layer with a gate: the share of (query, head) pairs routed to the record's block.
    pub fn gate_hit_rates(&self) -> Vec<f64> {
        let pairs = self.gate_pairs.max(1) as f64;
        self.gate_hits
            .iter()
            .map(|&hits| hits as f64 / pairs)
            .collect()
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
    /// Each validation sequence's summed loss and counted bytes, in order, so that two runs
    /// evaluated on the same data pair up ([`EvalReport::loss_difference`]). Empty in
    /// reports written before it was kept.
    #[serde(default)]
    pub sequence_losses: Vec<[f64; 2]>,
    /// By distance, nearest first (recall runs only).
    pub recall: Vec<RecallBucket>,
}

/// How much higher one run's validation loss is than another's on the same sequences.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossDifference {
    /// `valid_loss / base.valid_loss - 1`.
    pub relative: f64,
    /// Its standard error from the spread of the per-sequence differences (paired: the
    /// sequences' own difficulty cancels).
    pub standard_error: f64,
    pub sequences: usize,
}

impl EvalReport {
    /// The difference from `base`, or `None` unless both evaluated the same sequences (two
    /// or more, with the same counted bytes each).
    pub fn loss_difference(&self, base: &EvalReport) -> Option<LossDifference> {
        let (ours, theirs) = (&self.sequence_losses, &base.sequence_losses);
        let n = ours.len();
        let same_data = ours.iter().zip(theirs).all(|(a, b)| a[1] == b[1]);
        if n < 2 || theirs.len() != n || !same_data {
            return None;
        }
        let differences: Vec<f64> = ours.iter().zip(theirs).map(|(a, b)| a[0] - b[0]).collect();
        let base_total: f64 = theirs.iter().map(|b| b[0]).sum();
        let mean = differences.iter().sum::<f64>() / n as f64;
        let variance = differences.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        Some(LossDifference {
            relative: mean * n as f64 / base_total,
            // The sum of n differences spreads sqrt(n) times as much as one of them.
            standard_error: (variance * n as f64).sqrt() / base_total,
            sequences: n,
        })
    }
}

/// Evaluates `model` on the validation data of the run `config`, printing progress.
pub fn evaluate<B: MobaBackend>(
    model: &MobaLm<B>,
    config: &TrainConfig,
    options: &EvalOptions,
    device: &B::Device,
) -> Result<EvalReport> {
    options.validate()?;
    let (_, valid) = config.sources()?;
    let mut trailing = Sums::default();
    let mut sequence_losses = Vec::new();
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
        let losses: Vec<f64> = nll
            .clone()
            .sum_dim(1)
            .into_data()
            .convert::<f64>()
            .to_vec()
            .expect("float losses");
        // The counted bytes are the sequences' own weights, already on the host.
        let counted = sequences
            .iter()
            .map(|s| s.weights.iter().map(|&w| f64::from(w)).sum::<f64>());
        sequence_losses.extend(losses.into_iter().zip(counted).map(|(l, c)| [l, c]));
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
                gate_hits: Vec::new(),
                gate_pairs: 0,
            };
            for index in 0..options.recall_sequences.div_ceil(per_batch) {
                let first = (index * per_batch) as u64;
                let samples: Vec<RecallSample> = (first..first + per_batch as u64)
                    .map(|i| near.sample(i))
                    .collect();
                answer(model, &samples, device, &mut result)?;
            }
            eprintln!(
                "eval: recall at distance {start}..{end}: {:.3} ({} queries){}",
                result.accuracy(),
                result.queries,
                gate_hit_text(&result)
            );
            recall.push(result);
        }
    }
    let total = |i: usize| sequence_losses.iter().map(|pair| pair[i]).sum::<f64>();
    Ok(EvalReport {
        valid_loss: total(0) / total(1),
        trailing_loss: trailing.mean(),
        sequences: batches * per_batch,
        sequence_losses,
        recall,
    })
}

/// Counts into `bucket` the queries of `samples` whose three digits are all the model's
/// greedy choice, and where each layer's gate routed them.
fn answer<B: MobaBackend>(
    model: &MobaLm<B>,
    samples: &[RecallSample],
    device: &B::Device,
    bucket: &mut RecallBucket,
) -> Result<()> {
    let sequences: Vec<_> = samples.iter().map(|s| s.sequence.clone()).collect();
    let batch = TokenBatch::<B>::new(&sequences, device);
    let [_, seq] = batch.dims();
    let (logits, gates) = model.forward_with_gates(batch.inputs)?;
    let gates: Vec<GateChoices> = gates.into_iter().flatten().collect();
    let predicted: Vec<i64> = logits
        .argmax(2)
        .into_data()
        .convert::<i64>()
        .to_vec()
        .expect("integer predictions");
    bucket.gate_hits.resize(gates.len(), 0);
    let heads = gates.first().map_or(0, |gate| gate.heads);
    for (row, sample) in samples.iter().enumerate() {
        for query in &sample.queries {
            // The digit at token `at + i` is predicted at input position `at + i - 1`.
            let right = query
                .value
                .bytes()
                .enumerate()
                .all(|(i, digit)| predicted[row * seq + query.at + i - 1] == digit as i64);
            bucket.correct += usize::from(right);
            bucket.queries += 1;
            for (hits, gate) in bucket.gate_hits.iter_mut().zip(&gates) {
                *hits += (0..heads)
                    .filter(|&head| gate.sees(row, head, query.at - 1, query.record))
                    .count();
            }
            bucket.gate_pairs += heads;
        }
    }
    Ok(())
}

/// "; the gate chose the record's block: 23.4%, 61.0% (layers with a gate)", or nothing.
pub fn gate_hit_text(bucket: &RecallBucket) -> String {
    let rates = bucket.gate_hit_rates();
    if rates.is_empty() {
        return String::new();
    }
    let rates: Vec<String> = rates.iter().map(|r| format!("{:.1}%", r * 100.0)).collect();
    format!(
        "; the gate chose the record's block: {} (layers with a gate)",
        rates.join(", ")
    )
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
