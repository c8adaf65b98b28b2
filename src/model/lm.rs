//! The byte-level language model: embedding, MoBA blocks, final norm, output head.

use burn::module::Module;
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use super::block::Block;
use crate::backend::MobaBackend;
use crate::error::{MobaError, Result};
use crate::module::{GateChoices, KvCache};

/// A decoder-only transformer over bytes (see [`super::LmConfig`]).
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::{Int, Tensor};
/// use moba::model::LmConfig;
///
/// let device = Default::default();
/// let model = LmConfig::preset("tiny")?.init::<NdArray>(&device)?;
/// let bytes: Vec<i64> = b"MoBA routes each query".iter().map(|&b| b as i64).collect();
/// let tokens = Tensor::<NdArray, 1, Int>::from_ints(bytes.as_slice(), &device).unsqueeze::<2>();
/// let logits = model.forward(tokens)?; // [1, 22, 256]: the next byte's scores at every position
/// assert_eq!(logits.dims(), [1, 22, 256]);
/// # Ok::<(), moba::MobaError>(())
/// ```
#[derive(Module, Debug)]
pub struct MobaLm<B: Backend> {
    pub embedding: Embedding<B>,
    pub blocks: Vec<Block<B>>,
    pub norm: RmsNorm<B>,
    pub head: Linear<B>,
    pub max_seq_len: usize,
}

impl<B: MobaBackend> MobaLm<B> {
    /// Next-byte logits `[batch, seq, 256]` of `tokens: [batch, seq]` (bytes as integers).
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Result<Tensor<B, 3>> {
        self.forward_cached(tokens, &mut self.empty_cache())
    }

    /// Next-byte logits of `tokens: [batch, seq]` whose rows hold several documents, each
    /// read on its own: `cu_seqlens` are the documents' offsets in the flattened `[batch *
    /// seq]` positions ([`crate::data::TokenBatch::cu_seqlens`]); `None` is [`Self::forward`].
    pub fn forward_packed(
        &self,
        tokens: Tensor<B, 2, Int>,
        cu_seqlens: Option<&[usize]>,
    ) -> Result<Tensor<B, 3>> {
        let Some(cu_seqlens) = cu_seqlens else {
            return self.forward(tokens);
        };
        self.check_length(0, tokens.dims()[1])?;
        let mut x = self.embedding.forward(tokens);
        for block in &self.blocks {
            x = block.forward_packed(x, cu_seqlens)?;
        }
        Ok(self.head.forward(self.norm.forward(x)))
    }

    /// Logits of `tokens`, the positions after those in `cache` (one [`KvCache`] per block,
    /// from [`MobaLm::empty_cache`]): prefill on an empty cache, then decode steps of one
    /// token each. Every step is MoBA, the decode query gated over the cached blocks.
    pub fn forward_cached(
        &self,
        tokens: Tensor<B, 2, Int>,
        cache: &mut [KvCache<B>],
    ) -> Result<Tensor<B, 3>> {
        let [_, seq] = tokens.dims();
        if cache.len() != self.blocks.len() {
            return Err(MobaError::ShapeMismatch {
                what: "layer caches (one per block)".into(),
                expected: self.blocks.len(),
                actual: cache.len(),
            });
        }
        self.check_length(cache.first().map_or(0, KvCache::len), seq)?;
        let mut x = self.embedding.forward(tokens);
        for (block, cache) in self.blocks.iter().zip(cache.iter_mut()) {
            x = block.forward_cached(x, cache)?;
        }
        Ok(self.head.forward(self.norm.forward(x)))
    }

    /// The logits of `tokens` (a prefill, as [`MobaLm::forward`]) and, per layer, the blocks
    /// its gate chose for every position ([`crate::module::MobaAttention::gate_selection`];
    /// `None` for full layers).
    pub fn forward_with_gates(
        &self,
        tokens: Tensor<B, 2, Int>,
    ) -> Result<(Tensor<B, 3>, Vec<Option<GateChoices>>)> {
        self.check_length(0, tokens.dims()[1])?;
        let mut x = self.embedding.forward(tokens);
        let mut gates = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            let next = block.forward_cached(x.clone(), &mut KvCache::new())?;
            gates.push(block.gate_selection(x)?);
            x = next;
        }
        Ok((self.head.forward(self.norm.forward(x)), gates))
    }

    /// One empty cache per block.
    pub fn empty_cache(&self) -> Vec<KvCache<B>> {
        self.blocks.iter().map(|_| KvCache::new()).collect()
    }

    /// `seq` new positions after `past` cached ones: at least one, at most max_seq_len in all.
    fn check_length(&self, past: usize, seq: usize) -> Result<()> {
        let positions = past + seq;
        if seq == 0 || positions > self.max_seq_len {
            return Err(MobaError::Config(format!(
                "{positions} positions ({seq} new): the model takes 1 to max_seq_len = {}",
                self.max_seq_len
            )));
        }
        Ok(())
    }
}

/// Negative log-likelihood (nats) of each target: `logits: [batch, seq, vocab]`,
/// `targets: [batch, seq]` -> `[batch, seq]`.
pub fn token_nll<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 2> {
    log_softmax(logits, 2)
        .gather(2, targets.unsqueeze_dim(2))
        .squeeze_dim::<2>(2)
        .neg()
}
