//! `MobaAttention`: multi-head attention with q/k/v/o projections, GQA and RoPE, in the style
//! of burn-nn's `MultiHeadAttention`, whose attention is MoBA or one of the static patterns
//! that MoBA's gate expresses (DESIGN §1 variants).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig, RotaryEncoding, RotaryEncodingConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;

use super::{KeyConv, KvCache, NsaCompression};
use crate::backend::{
    MobaBackend, moba_attention_varlen, moba_attention_with_means, moba_attention_with_stats,
    nsa_attention, nsa_attention_with_compression,
};
use crate::config::{MobaConfig, NsaConfig};
use crate::error::{MobaError, Result};
use crate::varlen::Packing;

/// The block size full attention's packed documents are aligned to in rows of `seq`
/// positions: a sixteenth of the row (a power of two, at least 64), so that a document
/// costs at most that much padding and the `top_k` that covers the longest document stays
/// at most 16 (the selection holds `top_k` blocks per query).
fn full_packed_block(seq: usize) -> usize {
    seq.div_ceil(16).next_power_of_two().max(64)
}

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
    /// Sliding-window attention over exactly the `keys` keys that end at each query
    /// ([`MobaConfig::key_window`]: NSA's window branch alone, a local-attention baseline).
    KeyWindow { keys: usize },
    /// NSA (`NsaConfig` names the fields): a compressed, a selected and a sliding-window
    /// branch mixed by per-head gates, a sigmoid of a linear map of the layer input (the
    /// query projection makes them). All three branches run on MoBA's kernels
    /// ([`crate::backend::nsa_attention`]).
    Nsa {
        compress_block: usize,
        stride: usize,
        select_block: usize,
        top_n: usize,
        window: usize,
    },
}

impl AttentionKind {
    /// The MoBA config of this kind for keys of length `kv_len`; `None` for NSA.
    pub fn config(&self, kv_len: usize) -> Option<MobaConfig> {
        match *self {
            AttentionKind::Moba { block_size, top_k } => Some(MobaConfig::new(block_size, top_k)),
            AttentionKind::Full => Some(MobaConfig::new(kv_len.max(1), 1)),
            AttentionKind::SlidingWindow { block_size, blocks } => {
                Some(MobaConfig::sliding_window(block_size, blocks))
            }
            AttentionKind::Sink {
                block_size,
                first,
                recent,
            } => Some(MobaConfig::sink(block_size, first, recent)),
            AttentionKind::KeyWindow { keys } => Some(MobaConfig::key_window(keys)),
            AttentionKind::Nsa { .. } => None,
        }
    }

    /// The block size documents packed in rows of `seq` positions are aligned to (a varlen
    /// batch, [`crate::varlen`]): the MoBA block size; for full attention a sixteenth of the
    /// row (a power of two, at least 64). `None` for NSA, which has no varlen path yet.
    pub fn packed_block(&self, seq: usize) -> Option<usize> {
        match *self {
            AttentionKind::Full => Some(full_packed_block(seq)),
            _ => Some(self.config(seq)?.block_size),
        }
    }

    /// The MoBA config of this kind over documents packed in rows of `seq` positions: full
    /// attention runs in [`AttentionKind::packed_block`]s with a `top_k` that keeps every
    /// block of a document as long as the row (so it is dense within each one; the same
    /// `top_k` for every batch, so its kernels compile once), the other kinds as
    /// [`AttentionKind::config`]. `None` for NSA.
    pub fn packed_config(&self, seq: usize) -> Option<MobaConfig> {
        match *self {
            AttentionKind::Full => {
                let block_size = full_packed_block(seq);
                Some(MobaConfig::new(block_size, seq.div_ceil(block_size).max(1)))
            }
            _ => self.config(seq),
        }
    }

    /// The NSA config of this kind; `None` for the MoBA kinds.
    pub fn nsa_config(&self) -> Option<NsaConfig> {
        match *self {
            AttentionKind::Nsa {
                compress_block,
                stride,
                select_block,
                top_n,
                window,
            } => Some(NsaConfig::new(
                compress_block,
                stride,
                select_block,
                top_n,
                window,
            )),
            _ => None,
        }
    }

    /// An error naming the first setting that does not fit.
    pub fn validate(&self) -> Result<()> {
        match (self.config(1), self.nsa_config()) {
            (Some(moba), _) => moba.validate(),
            (None, Some(nsa)) => nsa.validate(),
            (None, None) => unreachable!("every kind is MoBA's or NSA's"),
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

/// What [`MobaAttention::project`] makes: q, k, v and, for NSA, the gates.
type Projected<B> = (
    Tensor<B, 4>,
    Tensor<B, 4>,
    Tensor<B, 4>,
    Option<Tensor<B, 4>>,
);

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
    /// Taps of the key convolution (FlashMoBA's short causal depthwise convolution of the
    /// keys, [`super::KeyConv`]); `None`: none.
    #[config(default = "None")]
    pub key_conv: Option<usize>,
    /// NSA layers only: compress each block of keys (and of values) with a learned MLP
    /// ([`super::NsaCompression`]) instead of taking its mean.
    #[config(default = false)]
    pub learned_compression: bool,
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
    key_conv: Option<KeyConv<B>>,
    compression: Option<NsaCompression<B>>,
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
        if self.key_conv == Some(0) {
            return Err(MobaError::Config(
                "key convolution needs at least one tap".into(),
            ));
        }
        if self.learned_compression && self.kind.nsa_config().is_none() {
            return Err(MobaError::Config(format!(
                "a learned compression is NSA's; this layer's attention is {:?}",
                self.kind
            )));
        }
        self.kind.validate()
    }

    /// The layer, or an error naming the setting that does not fit.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<MobaAttention<B>> {
        self.validate()?;
        let head_dim = self.d_model / self.n_heads;
        let linear = |out| LinearConfig::new(self.d_model, out).init(device);
        // NSA's gates (three per head) come out of the query projection.
        let gates = match self.kind {
            AttentionKind::Nsa { .. } => 3 * self.n_heads,
            _ => 0,
        };
        Ok(MobaAttention {
            query: linear(self.d_model + gates),
            key: linear(self.n_kv_heads * head_dim),
            value: linear(self.n_kv_heads * head_dim),
            output: linear(self.d_model),
            rope: self.rope_max_len.map(|len| {
                RotaryEncodingConfig::new(len, head_dim)
                    .with_theta(self.rope_theta)
                    .init(device)
            }),
            key_conv: (self.key_conv)
                .map(|taps| KeyConv::new(taps, self.n_kv_heads, head_dim, device)),
            compression: (self.kind.nsa_config())
                .filter(|_| self.learned_compression)
                .map(|nsa| NsaCompression::new(&nsa, head_dim, device)),
            kind: self.kind,
            d_model: self.d_model,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
        })
    }
}

impl<B: Backend> MobaAttention<B> {
    /// The query, key, value and output projections, in that order.
    pub(crate) fn projections(&self) -> [&Linear<B>; 4] {
        [&self.query, &self.key, &self.value, &self.output]
    }

    /// RoPE's table, where the layer rotates.
    pub(crate) fn rope(&self) -> Option<&RotaryEncoding<B>> {
        self.rope.as_ref()
    }

    /// Whether the layer convolves its keys.
    pub(crate) fn has_key_conv(&self) -> bool {
        self.key_conv.is_some()
    }

    /// Which attention the layer runs.
    pub fn kind(&self) -> AttentionKind {
        self.kind
    }

    /// (query heads, kv heads).
    pub fn heads(&self) -> (usize, usize) {
        (self.n_heads, self.n_kv_heads)
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
        let (q, projected, v, gates) = self.project(x, past);
        let k = self.keys(projected.clone(), past, cache.key_history(), None);
        if let Some(conv) = &self.key_conv {
            cache.extend_key_history(projected, conv.taps() - 1);
        }
        let (k, v) = cache.append(k, v);
        let o = match (self.kind.config(past + seq), self.kind.nsa_config(), gates) {
            (None, Some(nsa), Some(gates)) => {
                cache.set_selection(None);
                match &self.compression {
                    Some(mlp) => {
                        let compressed = mlp.forward(k.clone(), v.clone(), &nsa);
                        nsa_attention_with_compression(q, k, v, compressed, gates, &nsa)?.o
                    }
                    None => nsa_attention(q, k, v, gates, &nsa)?.o,
                }
            }
            // After the prefill, the gate reads the block means the cache keeps (one block
            // pooled again per step) rather than pooling the whole cache every step.
            (Some(config), ..) if past > 0 && matches!(self.kind, AttentionKind::Moba { .. }) => {
                let means = cache
                    .block_means(config.block_size)
                    .expect("the cache holds keys");
                let stats = moba_attention_with_means(q, k, v, means, &config)?;
                cache.set_selection(Some(stats.selection));
                stats.o
            }
            (Some(config), ..) => {
                let stats = moba_attention_with_stats(q, k, v, &config)?;
                cache.set_selection(Some(stats.selection));
                stats.o
            }
            _ => unreachable!("every kind is MoBA's or NSA's, and NSA's makes gates"),
        };
        Ok(self
            .output
            .forward(o.swap_dims(1, 2).reshape([batch, seq, self.d_model])))
    }

    /// Causal self-attention over `x: [batch, seq, d_model]` whose rows hold several
    /// documents each: `cu_seqlens` are the documents' offsets in the flattened `[batch *
    /// seq]` positions (every row's start among them, as [`crate::data::TokenBatch`] makes
    /// them), and no position attends another document ([`crate::varlen`]). Full attention
    /// keeps every block of each document. NSA over packed documents is not built yet: an
    /// error.
    pub fn forward_packed(&self, x: Tensor<B, 3>, cu_seqlens: &[usize]) -> Result<Tensor<B, 3>> {
        let [batch, seq, _] = x.dims();
        // Checked before any index arithmetic: ascending from 0 to every position, each
        // row's start among the offsets.
        Packing::new(cu_seqlens, 1)?;
        let row_starts = (0..=batch).map(|row| row * seq);
        if let Some(missing) = row_starts
            .into_iter()
            .find(|at| cu_seqlens.binary_search(at).is_err())
        {
            return Err(MobaError::Config(format!(
                "cu_seqlens must hold every row's start and the end ({} rows of {seq}); \
                 {missing} is missing",
                batch
            )));
        }
        let Some(config) = self.kind.packed_config(seq) else {
            return Err(MobaError::Unsupported(
                "NSA over packed documents (varlen); train NSA on one document per sequence".into(),
            ));
        };
        let (q, k, v, _) = self.project(x, 0);
        let starts: Vec<usize> = (cu_seqlens.windows(2))
            .flat_map(|w| std::iter::repeat_n(w[0], w[1] - w[0]))
            .collect();
        let k = self.keys(k, 0, None, Some(&starts));
        // [batch, heads, seq, d] -> [1, heads, batch * seq, d]: the rows one after another.
        let packed = |t: Tensor<B, 4>| {
            let [b, h, s, d] = t.dims();
            t.swap_dims(0, 1).reshape([1, h, b * s, d])
        };
        let o = moba_attention_varlen(packed(q), packed(k), packed(v), cu_seqlens, &config)?.o;
        let o = o.reshape([self.n_heads, batch, seq, self.d_model / self.n_heads]);
        Ok(self
            .output
            .forward(o.permute([1, 2, 0, 3]).reshape([batch, seq, self.d_model])))
    }

    /// The blocks this layer's gate chooses for every query of `x` (a prefill from position
    /// 0; at most the RoPE length, as for [`MobaAttention::forward`]): the selection the
    /// backend's own forward returns on the layer's queries and keys, where a trained model
    /// routes (`moba eval`). `None` for full attention, which has no gate.
    pub fn gate_selection(&self, x: Tensor<B, 3>) -> Result<Option<GateChoices>> {
        let seq = x.dims()[1];
        let config = match self.kind.config(seq) {
            Some(config) if self.kind != AttentionKind::Full => config,
            _ => return Ok(None),
        };
        let (q, k, v, _) = self.project(x, 0);
        let k = self.keys(k, 0, None, None);
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

    /// The layer's keys from projected ones `k` at positions from `past`: the key
    /// convolution (after `history`, the unconvolved keys before them; within each document
    /// of `document_starts`, [`KeyConv::forward`]) where the layer has one, then RoPE.
    fn keys(
        &self,
        k: Tensor<B, 4>,
        past: usize,
        history: Option<Tensor<B, 4>>,
        document_starts: Option<&[usize]>,
    ) -> Tensor<B, 4> {
        let k = match &self.key_conv {
            Some(conv) => conv.forward(k, history, document_starts),
            None => k,
        };
        match &self.rope {
            Some(rope) => rope.apply(k, past),
            None => k,
        }
    }

    /// Queries (RoPE at positions from `past`), projected keys (before [`Self::keys`]) and
    /// values of `x`, per head: `[batch, heads, seq, head_dim]`; and NSA's gates `[batch,
    /// heads, seq, 3]`.
    fn project(&self, x: Tensor<B, 3>, past: usize) -> Projected<B> {
        let [batch, seq, _] = x.dims();
        let head_dim = self.d_model / self.n_heads;
        let heads = |x: Tensor<B, 3>, n: usize| -> Tensor<B, 4> {
            x.reshape([batch, seq, n, head_dim]).swap_dims(1, 2)
        };
        let queries = self.query.forward(x.clone());
        let gates = (queries.dims()[2] > self.d_model).then(|| {
            let width = self.d_model + 3 * self.n_heads;
            let gates = queries
                .clone()
                .slice([0..batch, 0..seq, self.d_model..width]);
            sigmoid(gates.reshape([batch, seq, self.n_heads, 3]).swap_dims(1, 2))
        });
        let queries = queries.slice([0..batch, 0..seq, 0..self.d_model]);
        let q = heads(queries, self.n_heads);
        let q = match &self.rope {
            Some(rope) => rope.apply(q, past),
            None => q,
        };
        let k = heads(self.key.forward(x.clone()), self.n_kv_heads);
        let v = heads(self.value.forward(x), self.n_kv_heads);
        (q, k, v, gates)
    }
}
