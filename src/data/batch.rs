//! A batch of sequences as tensors.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::Sequence;

/// `inputs` and `targets` (`[batch, seq]`, bytes as integers), `weights` (`[batch, seq]`:
/// how much each target counts), the number of targets with a weight above zero, and where
/// a sequence holds several documents, the offsets of every document in the flattened
/// `[batch * seq]` positions (`cu_seqlens`, [`crate::varlen`]).
#[derive(Debug, Clone)]
pub struct TokenBatch<B: Backend> {
    pub inputs: Tensor<B, 2, Int>,
    pub targets: Tensor<B, 2, Int>,
    pub weights: Tensor<B, 2>,
    pub counted: usize,
    pub cu_seqlens: Option<Vec<usize>>,
    /// Devices a data parallel step deals its batch to (this batch is one device's share):
    /// each share's loss gradient counts `1 / shards`, so that their sum is the batch's.
    pub shards: usize,
}

impl<B: Backend> TokenBatch<B> {
    /// The batch of `sequences` (all of one length) on `device`.
    pub fn new(sequences: &[Sequence], device: &B::Device) -> Self {
        let (batch, seq) = (sequences.len(), sequences[0].len());
        let ints = |range: fn(&[u8]) -> &[u8]| -> Tensor<B, 2, Int> {
            let values: Vec<i64> = sequences
                .iter()
                .flat_map(|s| range(&s.tokens).iter().map(|&b| b as i64))
                .collect();
            Tensor::from_data(TensorData::new(values, [batch, seq]), device)
        };
        let weights: Vec<f32> = sequences.iter().flat_map(|s| s.weights.clone()).collect();
        let counted = weights.iter().filter(|&&w| w > 0.0).count();
        // Every row starts a document, and so does every position a sequence lists.
        let cu_seqlens = sequences.iter().any(|s| !s.documents.is_empty()).then(|| {
            (sequences.iter().enumerate())
                .flat_map(|(row, s)| {
                    std::iter::once(0)
                        .chain(s.documents.iter().copied())
                        .map(move |at| row * seq + at)
                })
                .chain([batch * seq])
                .collect()
        });
        Self {
            cu_seqlens,
            shards: 1,
            inputs: ints(|t| &t[..t.len() - 1]),
            targets: ints(|t| &t[1..]),
            weights: Tensor::from_data(TensorData::new(weights, [batch, seq]), device),
            counted,
        }
    }

    /// `[batch, seq]`.
    pub fn dims(&self) -> [usize; 2] {
        self.inputs.dims()
    }
}
