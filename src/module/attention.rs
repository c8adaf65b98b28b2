//! `MobaAttention`: multi-head attention with q/k/v/o projections, GQA and RoPE, in the style
//! of burn-nn's `MultiHeadAttention`, whose attention is MoBA or one of the static patterns
//! that MoBA's gate expresses (DESIGN §1 variants).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig, RotaryEncoding, RotaryEncodingConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::KvCache;
use crate::backend::{
    MobaBackend, moba_attention, moba_attention_with_means, moba_attention_with_stats,
};
use crate::config::MobaConfig;
use crate::error::{MobaError, Result};

/// Which attention a layer runs. Every kind runs on the same MoBA kernels.
#[derive(Config, Debug, Copy, PartialEq)]
pub enum AttentionKind {
    /// MoBA: each query attends its own block and the `top_k - 1` best earlier blocks.
    Moba { block_size: usize, top_k: usize },
    /// Dense causal attention (one block that covers the sequence).
    Full,
    /// Each query attends its own block and the `blocks - 1` before it.
    SlidingWindow { block_size: usize, blocks: usize },
    /// The first `first` blocks plus the `recent` most recent ones (its own included).
    Sink {
        block_size: usize,
        first: usize,
        recent: usize,
    },
}

impl AttentionKind {
    /// The MoBA config of this kind for keys of length `kv_len`.
    pub fn config(&self, kv_len: usize) -> MobaConfig {
        match *self {
            AttentionKind::Moba { block_size, top_k } => MobaConfig::new(block_size, top_k),
            AttentionKind::Full => MobaConfig::new(kv_len.max(1), 1),
            AttentionKind::SlidingWindow { block_size, blocks } => {
                MobaConfig::sliding_window(block_size, blocks)
            }
            AttentionKind::Sink {
                block_size,
                first,
                recent,
            } => MobaConfig::sink(block_size, first, recent),
        }
    }
}

/// The blocks a layer's gate chose for every query of a prefill
/// ([`MobaAttention::gate_selection`]).
#[derive(Debug, Clone, PartialEq)]
pub struct GateChoices {
    pub block_size: usize,
    pub top_k: usize,
    /// Query heads.
    pub heads: usize,
    /// Positions of each sequence.
    pub seq: usize,
    /// `[batch, heads, seq, top_k]` block ids, ascending, padded with -1.
    pub blocks: Vec<i32>,
}

impl GateChoices {
    /// Whether head `head` of sequence `row` attends, at query position `query`, the block
    /// holding key position `key`.
    pub fn sees(&self, row: usize, head: usize, query: usize, key: usize) -> bool {
        let at = ((row * self.heads + head) * self.seq + query) * self.top_k;
        self.blocks[at..at + self.top_k].contains(&((key / self.block_size) as i32))
    }
}

/// Configuration of a [`MobaAttention`] layer.
#[derive(Config, Debug)]
pub struct MobaAttentionConfig {
    /// Width of the layer's input and output.
    pub d_model: usize,
    /// Query heads; the head dim is `d_model / n_heads`.
    pub n_heads: usize,
    /// Key/value heads (GQA); must divide `n_heads`.
    pub n_kv_heads: usize,
    pub kind: AttentionKind,
    /// Longest sequence RoPE is prepared for; `None` means no positional rotation.
    #[config(default = "Some(8192)")]
    pub rope_max_len: Option<usize>,
    #[config(default = 10000.0)]
    pub rope_theta: f32,
}

/// Multi-head MoBA attention: `x: [batch, seq, d_model]` -> `[batch, seq, d_model]`.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::tensor::{Distribution, Tensor};
/// use moba::module::{AttentionKind, MobaAttentionConfig};
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let layer = MobaAttentionConfig::new(32, 4, 2, AttentionKind::Moba { block_size: 8, top_k: 2 })
///     .init::<B>(&device)?;
/// let x = Tensor::<B, 3>::random([2, 24, 32], Distribution::Normal(0.0, 1.0), &device);
/// let y = layer.forward(x)?;
/// let grads = y.sum().backward(); // gradients flow through the MoBA kernels
/// # Ok::<(), moba::MobaError>(())
/// ```
#[derive(Module, Debug)]
pub struct MobaAttention<B: Backend> {
    query: Linear<B>,
    key: Linear<B>,
    value: Linear<B>,
    output: Linear<B>,
    rope: Option<RotaryEncoding<B>>,
    #[module(skip)]
    kind: AttentionKind,
    d_model: usize,
    n_heads: usize,
    n_kv_heads: usize,
}

impl MobaAttentionConfig {
    /// An error naming the first setting that does not fit (what [`Self::init`] checks).
    pub fn validate(&self) -> Result<()> {
        if self.n_heads == 0 || self.n_kv_heads == 0 || !self.d_model.is_multiple_of(self.n_heads) {
            return Err(MobaError::Config(format!(
                "d_model ({}) must be a positive multiple of n_heads ({})",
                self.d_model, self.n_heads
            )));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(MobaError::HeadGroups {
                q_heads: self.n_heads,
                kv_heads: self.n_kv_heads,
            });
        }
        let head_dim = self.d_model / self.n_heads;
        if self.rope_max_len.is_some() && !head_dim.is_multiple_of(2) {
            return Err(MobaError::Config(format!(
                "RoPE needs an even head dim, got {head_dim}"
            )));
        }
        self.kind.config(1).validate()
    }

    /// The layer, or an error naming the setting that does not fit.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<MobaAttention<B>> {
        self.validate()?;
        let head_dim = self.d_model / self.n_heads;
        let linear = |out| LinearConfig::new(self.d_model, out).init(device);
        Ok(MobaAttention {
            query: linear(self.d_model),
            key: linear(self.n_kv_heads * head_dim),
            value: linear(self.n_kv_heads * head_dim),
            output: linear(self.d_model),
            rope: self.rope_max_len.map(|len| {
                RotaryEncodingConfig::new(len, head_dim)
                    .with_theta(self.rope_theta)
                    .init(device)
            }),
            kind: self.kind,
            d_model: self.d_model,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
        })
    }
}

impl<B: MobaBackend> MobaAttention<B> {
    /// Causal self-attention over `x: [batch, seq, d_model]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Result<Tensor<B, 3>> {
        self.forward_cached(x, &mut KvCache::new())
    }

    /// Causal self-attention of `x: [batch, seq, d_model]`, the `seq` positions that follow
    /// those in `cache`: their keys and values are appended to the cache, and the queries sit
    /// at positions `cache.len()..` (RoPE included). An empty cache is prefill; `seq == 1`
    /// is a MoBA decode step: the one query is gated over the cached blocks (DESIGN §1,
    /// `S < Sk`), so generation stays sparse.
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::tensor::{Distribution, Tensor};
    /// use moba::module::{AttentionKind, KvCache, MobaAttentionConfig};
    ///
    /// let device = Default::default();
    /// let layer = MobaAttentionConfig::new(32, 4, 2, AttentionKind::Moba { block_size: 8, top_k: 2 })
    ///     .init::<NdArray>(&device)?;
    /// let mut cache = KvCache::new();
    /// let prompt = Tensor::<NdArray, 3>::random([1, 20, 32], Distribution::Normal(0.0, 1.0), &device);
    /// layer.forward_cached(prompt, &mut cache)?;                      // prefill: 20 positions
    /// let next = Tensor::<NdArray, 3>::random([1, 1, 32], Distribution::Normal(0.0, 1.0), &device);
    /// let y = layer.forward_cached(next, &mut cache)?;                // decode: position 20
    /// assert_eq!((y.dims(), cache.len()), ([1, 1, 32], 21));
    /// # Ok::<(), moba::MobaError>(())
    /// ```
    pub fn forward_cached(&self, x: Tensor<B, 3>, cache: &mut KvCache<B>) -> Result<Tensor<B, 3>> {
        let [batch, seq, width] = x.dims();
        if width != self.d_model {
            return Err(MobaError::ShapeMismatch {
                what: "x last dimension (d_model)".into(),
                expected: self.d_model,
                actual: width,
            });
        }
        if let Some(cached) = cache.batch().filter(|&cached| cached != batch) {
            return Err(MobaError::ShapeMismatch {
                what: "batch size (that of the cache)".into(),
                expected: cached,
                actual: batch,
            });
        }
        let past = cache.len();
        if let Some(rope) = &self.rope {
            let max = rope.freq_complex.dims()[0];
            if past + seq > max {
                return Err(MobaError::ShapeMismatch {
                    what: "sequence length (at most rope_max_len)".into(),
                    expected: max,
                    actual: past + seq,
                });
            }
        }
        let (q, k, v) = self.project(x, past);
        let (k, v) = cache.append(k, v);
        let config = self.kind.config(past + seq);
        let o = match self.kind {
            // After the prefill, the gate reads the block means the cache keeps (one block
            // pooled again per step) rather than pooling the whole cache every step.
            AttentionKind::Moba { block_size, .. } if past > 0 => {
                let means = cache.block_means(block_size).expect("the cache holds keys");
                moba_attention_with_means(q, k, v, means, &config)?.o
            }
            _ => moba_attention(q, k, v, &config)?,
        };
        Ok(self
            .output
            .forward(o.swap_dims(1, 2).reshape([batch, seq, self.d_model])))
    }

    /// The blocks this layer's gate chooses for every query of `x` (a prefill from position
    /// 0; at most the RoPE length, as for [`MobaAttention::forward`]): the selection the
    /// backend's own forward returns on the layer's queries and keys, where a trained model
    /// routes (`moba eval`). `None` for full attention, which has no gate.
    pub fn gate_selection(&self, x: Tensor<B, 3>) -> Result<Option<GateChoices>> {
        if self.kind == AttentionKind::Full {
            return Ok(None);
        }
        let seq = x.dims()[1];
        let (q, k, v) = self.project(x, 0);
        let config = self.kind.config(seq);
        let selection = moba_attention_with_stats(q, k, v, &config)?.selection;
        let blocks = selection
            .into_data()
            .convert::<i32>()
            .to_vec::<i32>()
            .map_err(|e| MobaError::Config(format!("reading the gate's selection: {e:?}")))?;
        Ok(Some(GateChoices {
            block_size: config.block_size,
            top_k: config.top_k,
            heads: self.n_heads,
            seq,
            blocks,
        }))
    }

    /// Queries and keys (RoPE at positions from `past`) and values of `x`, per head:
    /// `[batch, heads, seq, head_dim]`.
    fn project(&self, x: Tensor<B, 3>, past: usize) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
        let [batch, seq, _] = x.dims();
        let head_dim = self.d_model / self.n_heads;
        let heads = |x: Tensor<B, 3>, n: usize| -> Tensor<B, 4> {
            x.reshape([batch, seq, n, head_dim]).swap_dims(1, 2)
        };
        let mut q = heads(self.query.forward(x.clone()), self.n_heads);
        let mut k = heads(self.key.forward(x.clone()), self.n_kv_heads);
        let v = heads(self.value.forward(x), self.n_kv_heads);
        if let Some(rope) = &self.rope {
            q = rope.apply(q, past);
            k = rope.apply(k, past);
        }
        (q, k, v)
    }
}
