//! A byte-level MoBA language model: [`LmConfig`] (sizes, presets, the hybrid of MoBA and
//! full layers), [`MobaLm`] (forward, KV-cache decode), [`generate`](fn@generate) and [`Generator`]
//! (sampling through burn), [`GpuGenerator`] (sampling on the GPU decoder,
//! [`crate::gpu::LmDecoder`]), [`model_from_bytes`] (trained weights).
//!
//! Training, evaluation and the comparison of MoBA with full attention are in
//! [`crate::train`]; the data in [`crate::data`].

mod block;
mod config;
mod decode_weights;
pub mod generate;
mod lm;
pub(crate) mod weights;

pub use block::{Block, FeedForward};
pub use config::{LmConfig, PRESETS, VOCAB_SIZE};
pub use generate::{Generator, GpuGenerator, Sampling, generate};
pub use lm::{MobaLm, token_nll};
pub use weights::{HalfWeightsRecorder, WeightsRecorder, model_from_bytes, weights_bytes};
