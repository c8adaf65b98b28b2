//! NSA's learned compression (arXiv 2502.11089, §3.3.1): each compressed block's key (and
//! value) is an MLP of the block's `l` keys with an intra-block position embedding added,
//! in place of their mean. The NSA op takes the result
//! ([`crate::backend::nsa_attention_with_compression`]); the selection it ranks is a
//! constant, the compressed branch's attention differentiable through the MLP.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::gelu;
use burn::tensor::backend::Backend;

use crate::config::NsaConfig;

/// One MLP over a block of `l` rows of `head_dim`: `l * head_dim -> head_dim -> head_dim`.
#[derive(Module, Debug)]
pub struct BlockMlp<B: Backend> {
    /// `[l, head_dim]`, added to the block's rows (zero at first).
    position: Param<Tensor<B, 2>>,
    hidden: Linear<B>,
    out: Linear<B>,
}

impl<B: Backend> BlockMlp<B> {
    fn new(block: usize, head_dim: usize, device: &B::Device) -> Self {
        BlockMlp {
            position: Param::from_tensor(Tensor::zeros([block, head_dim], device)),
            hidden: LinearConfig::new(block * head_dim, head_dim).init(device),
            out: LinearConfig::new(head_dim, head_dim).init(device),
        }
    }

    /// `x: [B, H, Sk, D]` -> `[B, H, nc, D]`: one row per compressed block of `config`
    /// (`nc >= 1`, the keys `[i d, i d + l)` of block `i`).
    fn forward(&self, x: Tensor<B, 4>, config: &NsaConfig, nc: usize) -> Tensor<B, 4> {
        let [b, h, _, d] = x.dims();
        let (stride, per_block) = (config.stride, config.compress_block / config.stride);
        let strides = nc + per_block - 1;
        let strided = x
            .slice([0..b, 0..h, 0..strides * stride, 0..d])
            .reshape([b, h, strides, stride, d]);
        // Block i is strides i..i + per_block, side by side.
        let parts = (0..per_block)
            .map(|u| {
                strided
                    .clone()
                    .slice([0..b, 0..h, u..u + nc, 0..stride, 0..d])
            })
            .collect();
        let l = config.compress_block;
        let blocks = Tensor::cat(parts, 3) + self.position.val().reshape([1, 1, 1, l, d]);
        self.out
            .forward(gelu(self.hidden.forward(blocks.reshape([b, h, nc, l * d]))))
    }
}

/// The learned compression of an NSA layer: one [`BlockMlp`] for the keys, one for the
/// values, shared by the layer's kv heads.
#[derive(Module, Debug)]
pub struct NsaCompression<B: Backend> {
    keys: BlockMlp<B>,
    values: BlockMlp<B>,
}

impl<B: Backend> NsaCompression<B> {
    /// Fresh MLPs for blocks of `config.compress_block` rows of `head_dim`.
    pub fn new(config: &NsaConfig, head_dim: usize, device: &B::Device) -> Self {
        NsaCompression {
            keys: BlockMlp::new(config.compress_block, head_dim, device),
            values: BlockMlp::new(config.compress_block, head_dim, device),
        }
    }

    /// The compressed keys and values `[B, Hkv, nc, D]` of `k, v: [B, Hkv, Sk, D]`; `None`
    /// before the first complete block.
    pub fn forward(
        &self,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        config: &NsaConfig,
    ) -> Option<(Tensor<B, 4>, Tensor<B, 4>)> {
        let nc = config.compressed_blocks(k.dims()[2]);
        (nc > 0).then(|| {
            (
                self.keys.forward(k, config, nc),
                self.values.forward(v, config, nc),
            )
        })
    }
}
