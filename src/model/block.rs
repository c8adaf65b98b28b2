//! One transformer block: pre-norm attention and pre-norm SwiGLU feed-forward, both residual.

use burn::module::Module;
use burn::nn::{Linear, RmsNorm, SwiGlu};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::backend::MobaBackend;
use crate::error::Result;
use crate::module::{GateChoices, KvCache, MobaAttention};

/// SwiGLU feed-forward: `down(silu(x W1) * (x W2))`.
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    pub gate: SwiGlu<B>,
    pub down: Linear<B>,
}

/// `h = x + attention(norm(x))`, then `h + feed_forward(norm(h))`.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub attention_norm: RmsNorm<B>,
    pub attention: MobaAttention<B>,
    pub feed_forward_norm: RmsNorm<B>,
    pub feed_forward: FeedForward<B>,
}

impl<B: MobaBackend> Block<B> {
    /// The block over `x: [batch, seq, d_model]`, the positions after those in `cache`.
    pub fn forward_cached(&self, x: Tensor<B, 3>, cache: &mut KvCache<B>) -> Result<Tensor<B, 3>> {
        self.around(x, |x| self.attention.forward_cached(x, cache))
    }

    /// The block over `x` whose rows hold several documents
    /// ([`MobaAttention::forward_packed`]).
    pub fn forward_packed(&self, x: Tensor<B, 3>, cu_seqlens: &[usize]) -> Result<Tensor<B, 3>> {
        self.around(x, |x| self.attention.forward_packed(x, cu_seqlens))
    }

    /// The block around an attention of the normed input.
    fn around(
        &self,
        x: Tensor<B, 3>,
        attention: impl FnOnce(Tensor<B, 3>) -> Result<Tensor<B, 3>>,
    ) -> Result<Tensor<B, 3>> {
        let h = x.clone() + attention(self.attention_norm.forward(x))?;
        let f = self.feed_forward_norm.forward(h.clone());
        Ok(h + self
            .feed_forward
            .down
            .forward(self.feed_forward.gate.forward(f)))
    }

    /// The gate's choices of this block's attention for the block input `x` (see
    /// [`MobaAttention::gate_selection`]).
    pub fn gate_selection(&self, x: Tensor<B, 3>) -> Result<Option<GateChoices>> {
        self.attention
            .gate_selection(self.attention_norm.forward(x))
    }
}
