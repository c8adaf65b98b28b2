//! A language model as the GPU decoder reads it: plain host arrays, no burn types, so that a
//! model from any framework (or a file) can be decoded. `moba::model` makes one from a
//! [`crate::model::MobaLm`].

use crate::config::{MobaConfig, Shape};
use crate::decode_plan::Rows;
use crate::error::{MobaError, Result};

/// A linear map `y = x W + b`: `weight: [d_in, d_out]` row-major (burn's layout), `bias:
/// [d_out]` where the layer has one.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearWeights {
    pub d_in: usize,
    pub d_out: usize,
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
}

impl LinearWeights {
    fn check(&self, what: &str, d_in: usize, d_out: usize) -> Result<()> {
        let bias_ok = self.bias.as_ref().is_none_or(|b| b.len() == d_out);
        if (self.d_in, self.d_out) != (d_in, d_out) || self.weight.len() != d_in * d_out || !bias_ok
        {
            return Err(MobaError::Config(format!(
                "{what}: expected a [{d_in}, {d_out}] linear map, got [{}, {}] with {} weights",
                self.d_in,
                self.d_out,
                self.weight.len()
            )));
        }
        Ok(())
    }
}

/// One pre-norm transformer block: `h = x + o(attention(norm1(x)))`, then
/// `h + down(silu(norm2(h) W1) * (norm2(h) W2))`.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerWeights {
    /// The attention's MoBA config over the whole context: full attention is one block of
    /// the context's length with `top_k` 1.
    pub attention: MobaConfig,
    /// RMSNorm gains `[d_model]`.
    pub attention_norm: Vec<f32>,
    pub query: LinearWeights,
    pub key: LinearWeights,
    pub value: LinearWeights,
    pub output: LinearWeights,
    pub feed_forward_norm: Vec<f32>,
    /// The SwiGLU's two input maps (`silu(x W1) * (x W2)`) and its output map.
    pub gate_inner: LinearWeights,
    pub gate_outer: LinearWeights,
    pub down: LinearWeights,
}

/// A byte-level decoder-only transformer: embedding, pre-norm blocks of GQA attention with
/// RoPE and a SwiGLU feed-forward, a final RMSNorm and the output head.
#[derive(Debug, Clone, PartialEq)]
pub struct LmWeights {
    pub d_model: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub d_ff: usize,
    pub vocab: usize,
    /// Positions the model reads at most (the KV cache's capacity).
    pub max_seq_len: usize,
    /// Epsilon of every RMSNorm.
    pub norm_epsilon: f32,
    /// `[vocab, d_model]`.
    pub embedding: Vec<f32>,
    pub layers: Vec<LayerWeights>,
    pub final_norm: Vec<f32>,
    /// `[d_model, vocab]`.
    pub head: LinearWeights,
    /// RoPE's `(cos, sin)` of every angle at every position, `[max_seq_len, head_dim / 2,
    /// 2]`; `None`: no rotation.
    pub rope: Option<Vec<f32>>,
}

impl LmWeights {
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }

    /// The attention's problem in a decoder's submission of `rows`: each sequence's queries
    /// over its KV cache, planned for the cache's capacity (the model's context).
    pub fn attention_shape(&self, rows: Rows) -> Shape {
        Shape {
            batch: rows.sequences,
            q_heads: self.n_heads,
            kv_heads: self.n_kv_heads,
            q_len: rows.positions,
            kv_len: self.max_seq_len,
            head_dim: self.head_dim(),
        }
    }

    /// An error naming the first array whose size does not fit the dimensions, or a
    /// dimension the decoder's kernels cannot take.
    pub fn validate(&self) -> Result<()> {
        let (d, ff, v) = (self.d_model, self.d_ff, self.vocab);
        if self.n_heads == 0
            || self.n_kv_heads == 0
            || !d.is_multiple_of(self.n_heads)
            || !self.n_heads.is_multiple_of(self.n_kv_heads)
            || !self.head_dim().is_multiple_of(4)
        {
            return Err(MobaError::Unsupported(format!(
                "the GPU decoder needs n_kv_heads | n_heads | d_model and a head dim that is a \
                 multiple of 4 (d_model {d}, {} heads, {} kv heads)",
                self.n_heads, self.n_kv_heads
            )));
        }
        let sized = |what: &str, data: &[f32], len: usize| match data.len() == len {
            true => Ok(()),
            false => Err(MobaError::ShapeMismatch {
                what: what.into(),
                expected: len,
                actual: data.len(),
            }),
        };
        sized("embedding", &self.embedding, v * d)?;
        sized("final norm", &self.final_norm, d)?;
        self.head.check("head", d, v)?;
        let head_dim = self.head_dim();
        if let Some(rope) = &self.rope {
            sized(
                "RoPE table ([max_seq_len, head_dim / 2, 2])",
                rope,
                self.max_seq_len * head_dim,
            )?;
        }
        let kv = self.n_kv_heads * head_dim;
        for (i, layer) in self.layers.iter().enumerate() {
            let name = |part: &str| format!("layer {i} {part}");
            layer.attention.validate()?;
            sized(&name("attention norm"), &layer.attention_norm, d)?;
            sized(&name("feed-forward norm"), &layer.feed_forward_norm, d)?;
            layer.query.check(&name("query"), d, d)?;
            layer.key.check(&name("key"), d, kv)?;
            layer.value.check(&name("value"), d, kv)?;
            layer.output.check(&name("output"), d, d)?;
            layer.gate_inner.check(&name("SwiGLU inner"), d, ff)?;
            layer.gate_outer.check(&name("SwiGLU outer"), d, ff)?;
            layer.down.check(&name("down"), ff, d)?;
        }
        Ok(())
    }
}
