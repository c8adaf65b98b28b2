//! The model as burn-train sees it: a training step (forward, loss, backward) and a
//! validation step, and what they report to the metrics.

use burn::backend::NdArray;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
use burn::train::metric::{Adaptor, ItemLazy, LossInput};
use burn::train::{InferenceStep, TrainOutput, TrainStep};

use crate::backend::MobaBackend;
use crate::data::TokenBatch;
use crate::error::Result;
use crate::model::{MobaLm, token_nll};

/// The loss of one batch: the mean negative log-likelihood (nats) of the counted targets.
pub fn batch_loss<B: MobaBackend>(
    model: &MobaLm<B>,
    batch: &TokenBatch<B>,
) -> Result<Tensor<B, 1>> {
    Ok(weighted_nll(model, batch)?
        .sum()
        .div_scalar(batch.counted.max(1) as f32))
}

/// Negative log-likelihood of every target times its weight: `[batch, seq]`.
pub fn weighted_nll<B: MobaBackend>(
    model: &MobaLm<B>,
    batch: &TokenBatch<B>,
) -> Result<Tensor<B, 2>> {
    let logits = model.forward_packed(batch.inputs.clone(), batch.cu_seqlens.as_deref())?;
    let nll = token_nll(logits, batch.targets.clone());
    Ok(nll * batch.weights.clone())
}

/// What a step reports: the loss tensor (read on the metrics thread), how many targets
/// counted and how many bytes went in.
pub struct LmOutput<B: Backend> {
    pub loss: Tensor<B, 1>,
    pub counted: usize,
    pub tokens: usize,
}

/// [`LmOutput`] read back to the host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LmStats {
    /// Mean loss of the batch's counted targets (nats).
    pub loss: f64,
    pub counted: usize,
    pub tokens: usize,
}

/// A step's output; the loss stays on the device until the metrics thread reads it.
fn output<B: MobaBackend>(model: &MobaLm<B>, batch: &TokenBatch<B>) -> LmOutput<B> {
    let [batch_size, seq] = batch.dims();
    LmOutput {
        // Shapes were checked before training started (`train::run`): no error is left here.
        loss: batch_loss(model, batch).expect("batch shapes are checked before training"),
        counted: batch.counted,
        tokens: batch_size * seq,
    }
}

impl<B: AutodiffBackend + MobaBackend> TrainStep for MobaLm<B> {
    type Input = TokenBatch<B>;
    type Output = LmOutput<B>;

    fn step(&self, batch: TokenBatch<B>) -> TrainOutput<LmOutput<B>> {
        let output = output(self, &batch);
        // burn-train sums the devices' gradients: each share counts for its part.
        let grads = match batch.shards {
            1 => output.loss.backward(),
            shards => output.loss.clone().div_scalar(shards as f32).backward(),
        };
        TrainOutput::new(self, grads, output)
    }
}

impl<B: MobaBackend> InferenceStep for MobaLm<B> {
    type Input = TokenBatch<B>;
    type Output = LmOutput<B>;

    fn step(&self, batch: TokenBatch<B>) -> LmOutput<B> {
        output(self, &batch)
    }
}

impl<B: Backend> ItemLazy for LmOutput<B> {
    type ItemSync = LmStats;

    fn sync(self) -> LmStats {
        LmStats {
            loss: self.loss.into_scalar().elem(),
            counted: self.counted,
            tokens: self.tokens,
        }
    }
}

impl Adaptor<LmStats> for LmStats {
    fn adapt(&self) -> LmStats {
        *self
    }
}

// burn's loss metric reads a tensor; the loss is already on the host, so a CPU one.
impl Adaptor<LossInput<NdArray>> for LmStats {
    fn adapt(&self) -> LossInput<NdArray> {
        LossInput::new(Tensor::from_floats([self.loss as f32], &Default::default()))
    }
}
