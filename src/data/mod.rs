//! Training data for the byte-level model, generated or read at run time (no download):
//!
//! - [`TextCorpus`]: any files as bytes, split into training and validation parts;
//! - [`RecallTask`]: synthetic long-range recall (key-value records scattered through a long
//!   context, queried at the end), seeded, with the distance between record and query
//!   controllable;
//! - [`Curriculum`]: shorter sequences first, for the early steps of a run;
//! - [`SequenceLoader`]: a burn `DataLoader` that batches any [`SequenceSource`] into
//!   [`TokenBatch`]es, with fresh sequences on every pass.

mod batch;
mod corpus;
mod curriculum;
mod loader;
mod recall;

pub use batch::TokenBatch;
pub use corpus::{CorpusWindows, TextCorpus};
pub use curriculum::{Curriculum, curriculum_lengths};
pub use loader::SequenceLoader;
pub use recall::{RECORD_LEN, RecallQuery, RecallSample, RecallTask};

use rand::SeedableRng;
use rand::rngs::StdRng;

/// One example: the model reads `tokens[..len]` and predicts `tokens[1..]`; `weights[i]`
/// is how much the prediction of `tokens[i + 1]` counts in the loss. `documents` are the
/// input positions where a new document starts (ascending, none at 0): the model attends
/// within each document only (a varlen batch, [`crate::varlen`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    pub tokens: Vec<u8>,
    pub weights: Vec<f32>,
    pub documents: Vec<usize>,
}

impl Sequence {
    /// A sequence whose every prediction counts (plain language modelling), one document.
    pub fn uniform(tokens: Vec<u8>) -> Self {
        let weights = vec![1.0; tokens.len().saturating_sub(1)];
        Self {
            tokens,
            weights,
            documents: Vec::new(),
        }
    }

    /// Model input length (`tokens.len() - 1`).
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// True for a sequence with no prediction.
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }
}

/// Where sequences come from: a deterministic function of the index, so a run is
/// reproducible and a resumed run sees the sequences the interrupted one would have.
pub trait SequenceSource: Send + Sync {
    /// Model input length of every sequence.
    fn seq_len(&self) -> usize;

    /// Sequence number `index`.
    fn sequence(&self, index: u64) -> Sequence;

    /// What item `index` of a batch is: sequence `index` alone, by default. A
    /// [`Curriculum`]'s shorter stages give several short sequences in its place, the same
    /// bytes in all, so that a step reads as many bytes (and answers) at every stage.
    fn item(&self, index: u64) -> Vec<Sequence> {
        vec![self.sequence(index)]
    }

    /// How many distinct sequences there are, for a finite source (validation windows);
    /// `None` for an endless stream.
    fn distinct(&self) -> Option<u64> {
        None
    }
}

/// An RNG for item `index` of a stream seeded with `seed` (splitmix64 of both, so nearby
/// seeds and indices give unrelated streams).
pub(crate) fn item_rng(seed: u64, index: u64) -> StdRng {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}
