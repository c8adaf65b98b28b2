//! A [`MobaLm`] as the GPU decoder reads it ([`LmWeights`]: host arrays, no burn types).

use burn::nn::{Linear, RmsNorm};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::config::VOCAB_SIZE;
use super::lm::MobaLm;
use crate::error::{MobaError, Result};
use crate::gpu::{LayerWeights, LinearWeights, LmWeights};

impl<B: Backend> MobaLm<B> {
    /// The model's weights for [`crate::gpu::LmDecoder`], read back to the host once. An
    /// `Unsupported` error for what the decoder does not run: NSA layers, a key
    /// convolution, layers whose RMS norms or RoPE tables differ.
    pub fn decode_weights(&self) -> Result<LmWeights> {
        let (n_heads, n_kv_heads) = self.blocks.first().map_or((1, 1), |b| b.attention.heads());
        let d_model = self.embedding.weight.dims()[1];
        let epsilon = self.norm.epsilon;
        let mut layers = Vec::with_capacity(self.blocks.len());
        let mut rope: Option<Vec<f32>> = None;
        for (i, block) in self.blocks.iter().enumerate() {
            let layer = &block.attention;
            let unsupported = |what: &str| {
                Err(MobaError::Unsupported(format!(
                    "the GPU decoder does not run {what} (layer {i})"
                )))
            };
            if layer.has_key_conv() {
                return unsupported("a key convolution");
            }
            if layer.heads() != (n_heads, n_kv_heads) {
                return unsupported("layers with different head counts");
            }
            if [&block.attention_norm, &block.feed_forward_norm]
                .iter()
                .any(|norm| norm.epsilon != epsilon)
            {
                return unsupported("RMS norms with different epsilons");
            }
            let Some(config) = layer.kind().config(self.max_seq_len) else {
                return unsupported(&format!("{:?}", layer.kind()));
            };
            let table = layer
                .rope()
                .map(|rope| rope_pairs(rope.freq_complex.clone(), self.max_seq_len));
            if i == 0 {
                rope = table;
            } else if table != rope {
                return unsupported("layers with different RoPE tables");
            }
            let [query, key, value, output] = layer.projections().map(linear);
            layers.push(LayerWeights {
                attention: config,
                attention_norm: gain(&block.attention_norm),
                query,
                key,
                value,
                output,
                feed_forward_norm: gain(&block.feed_forward_norm),
                gate_inner: linear(&block.feed_forward.gate.linear_inner),
                gate_outer: linear(&block.feed_forward.gate.linear_outer),
                down: linear(&block.feed_forward.down),
            });
        }
        let weights = LmWeights {
            d_model,
            n_heads,
            n_kv_heads,
            d_ff: self
                .blocks
                .first()
                .map_or(0, |b| b.feed_forward.gate.linear_inner.weight.dims()[1]),
            vocab: VOCAB_SIZE,
            max_seq_len: self.max_seq_len,
            norm_epsilon: epsilon as f32,
            embedding: host(self.embedding.weight.val()),
            layers,
            final_norm: gain(&self.norm),
            head: linear(&self.head),
            rope,
        };
        weights.validate()?;
        Ok(weights)
    }
}

fn host<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32 data")
}

fn linear<B: Backend>(map: &Linear<B>) -> LinearWeights {
    let [d_in, d_out] = map.weight.dims();
    LinearWeights {
        d_in,
        d_out,
        weight: host(map.weight.val()),
        bias: map.bias.as_ref().map(|bias| host(bias.val())),
    }
}

fn gain<B: Backend>(norm: &RmsNorm<B>) -> Vec<f32> {
    host(norm.gamma.val())
}

/// The first `positions` of burn's RoPE table `[positions, head_dim, 2]`, whose columns 2i
/// and 2i + 1 both hold the (cos, sin) of angle i, as `[positions, head_dim / 2, 2]`: each
/// angle once.
fn rope_pairs<B: Backend>(table: Tensor<B, 3>, positions: usize) -> Vec<f32> {
    let [len, head_dim, _] = table.dims();
    let table = table.slice([0..positions.min(len), 0..head_dim]);
    host(table)
        .chunks_exact(4)
        .flat_map(|pair| [pair[0], pair[1]])
        .collect()
}
