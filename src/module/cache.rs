//! The key/value cache of one attention layer, for generation: prefill fills it, each decode
//! step appends one position and attends the whole cache through MoBA's gate.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// Keys (already rotated by RoPE) and values of the positions a layer has seen:
/// `[batch, n_kv_heads, len, head_dim]` each. Empty until the first call.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    entries: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
}

impl<B: Backend> Default for KvCache<B> {
    fn default() -> Self {
        Self { entries: None }
    }
}

impl<B: Backend> KvCache<B> {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many positions the cache holds.
    pub fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, |(k, _)| k.dims()[2])
    }

    /// True before the first call.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The batch size of the cached positions, if any.
    pub fn batch(&self) -> Option<usize> {
        self.entries.as_ref().map(|(k, _)| k.dims()[0])
    }

    /// Appends `k, v: [batch, n_kv_heads, new, head_dim]` and returns the whole cache.
    /// A concatenation: it copies the cache once per call, which is small beside the
    /// attention of a long prompt; the attention itself only reads the selected blocks.
    pub fn append(&mut self, k: Tensor<B, 4>, v: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let entries = match self.entries.take() {
            Some((past_k, past_v)) => (
                Tensor::cat(vec![past_k, k], 2),
                Tensor::cat(vec![past_v, v], 2),
            ),
            None => (k, v),
        };
        self.entries = Some(entries.clone());
        entries
    }
}
