//! Key convolution (FlashMoBA, arXiv 2511.11571): a short causal depthwise convolution of
//! the keys over positions, so that a block's mean key (what the gate scores) carries what
//! the keys around each position say. The convolved keys are the layer's keys, for the gate
//! and the attention both, so the weights learn through the attention's gradient.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// `k'[t] = sum over lag < taps of weight[lag] * k[t - lag]` per kv head and channel, the keys
/// before the first position (or before the position's document) taken as zero.
#[derive(Module, Debug)]
pub struct KeyConv<B: Backend> {
    /// `[taps, n_kv_heads, head_dim]`: `weight[lag]` weighs the key `lag` positions back.
    weight: Param<Tensor<B, 3>>,
}

impl<B: Backend> KeyConv<B> {
    /// A convolution of `taps` taps that starts as the identity (the current key alone), so
    /// a layer with it begins as the layer without.
    pub fn new(taps: usize, kv_heads: usize, head_dim: usize, device: &B::Device) -> Self {
        let mut weight = vec![0.0f32; taps * kv_heads * head_dim];
        weight[..kv_heads * head_dim].fill(1.0);
        let weight = TensorData::new(weight, [taps, kv_heads, head_dim]);
        Self {
            weight: Param::from_tensor(Tensor::from_data(weight, device)),
        }
    }

    /// How many positions each convolved key reads (its own included).
    pub fn taps(&self) -> usize {
        self.weight.dims()[0]
    }

    /// The convolved keys of `k: [batch, n_kv_heads, seq, head_dim]`, the positions after
    /// the unconvolved keys `history` (the last `taps - 1` or fewer, from a cache). Where
    /// `document_starts` is given (`[batch * seq]`, each position's first position of its
    /// document, both counted in the flattened rows), no lag reaches into another document.
    pub fn forward(
        &self,
        k: Tensor<B, 4>,
        history: Option<Tensor<B, 4>>,
        document_starts: Option<&[usize]>,
    ) -> Tensor<B, 4> {
        let [batch, heads, seq, dim] = k.dims();
        let taps = self.taps();
        let device = k.device();
        let known = history.as_ref().map_or(0, |h| h.dims()[2]);
        // Zeros before everything known, so that every lag of every position is a slice.
        let missing = (taps - 1).saturating_sub(known);
        let zeros = Tensor::<B, 4>::zeros([batch, heads, missing, dim], &device).cast(k.dtype());
        let parts: Vec<Tensor<B, 4>> = [zeros].into_iter().chain(history).chain([k]).collect();
        let all = Tensor::cat(parts, 2);
        let first = all.dims()[2] - seq; // where `k` begins in `all`
        (0..taps)
            .map(|lag| {
                let lagged = all.clone().slice_dim(2, first - lag..first - lag + seq);
                let weight = self.weight.val().slice_dim(0, lag..lag + 1);
                let term = lagged * weight.reshape([1, heads, 1, dim]);
                match document_starts {
                    Some(starts) if lag > 0 => {
                        term * same_document(starts, batch, seq, lag, &device)
                    }
                    _ => term,
                }
            })
            .reduce(|sum, term| sum + term)
            .expect("at least one tap")
    }
}

/// `[batch, 1, seq, 1]`: 1 where the position `lag` back is in the same document.
fn same_document<B: Backend>(
    starts: &[usize],
    batch: usize,
    seq: usize,
    lag: usize,
    device: &B::Device,
) -> Tensor<B, 4> {
    let mask: Vec<f32> = (0..batch * seq)
        .map(|at| f32::from(u8::from(at % seq >= lag && at - lag >= starts[at])))
        .collect();
    Tensor::from_data(TensorData::new(mask, [batch, 1, seq, 1]), device)
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::Distribution;

    use super::*;

    type B = NdArray;

    fn max_difference(a: Tensor<B, 4>, b: Tensor<B, 4>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    /// A 4-tap convolution off the identity, and keys of 10 positions.
    fn problem() -> (KeyConv<B>, Tensor<B, 4>) {
        let device = Default::default();
        let conv = KeyConv::<B> {
            weight: Param::from_tensor(Tensor::random(
                [4, 2, 8],
                Distribution::Normal(0.0, 1.0),
                &device,
            )),
        };
        let k = Tensor::random([1, 2, 10, 8], Distribution::Normal(0.0, 1.0), &device);
        (conv, k)
    }

    #[test]
    fn the_identity_keeps_the_keys() {
        let (_, k) = problem();
        let identity = KeyConv::<B>::new(4, 2, 8, &Default::default());
        assert_eq!(
            max_difference(identity.forward(k.clone(), None, None), k),
            0.0
        );
    }

    #[test]
    fn keys_after_a_history_are_the_keys_of_the_whole() {
        let (conv, k) = problem();
        let whole = conv.forward(k.clone(), None, None);
        let history = k.clone().slice_dim(2, 3..6);
        let rest = conv.forward(k.slice_dim(2, 6..10), Some(history), None);
        assert!(max_difference(whole.slice_dim(2, 6..10), rest) < 1e-6);
    }

    #[test]
    fn no_key_reads_a_later_one_or_another_document() {
        let (conv, k) = problem();
        let whole = conv.forward(k.clone(), None, None);
        // A later key changed: no earlier output moves.
        let changed = Tensor::cat(
            vec![
                k.clone().slice_dim(2, 0..7),
                k.clone().slice_dim(2, 7..10) * 3.0,
            ],
            2,
        );
        let after = conv.forward(changed, None, None);
        assert_eq!(
            max_difference(whole.slice_dim(2, 0..7), after.slice_dim(2, 0..7)),
            0.0
        );
        // A document from position 4 reads as if it were alone.
        let starts = [0, 0, 0, 0, 4, 4, 4, 4, 4, 4];
        let packed = conv.forward(k.clone(), None, Some(&starts));
        let alone = conv.forward(k.clone().slice_dim(2, 4..10), None, None);
        assert!(max_difference(packed.clone().slice_dim(2, 4..10), alone) < 1e-6);
        let first = conv.forward(k.slice_dim(2, 0..4), None, None);
        assert!(max_difference(packed.slice_dim(2, 0..4), first) < 1e-6);
    }
}
