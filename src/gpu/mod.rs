//! The wgpu runtime: adapter choice, pipelines, and the MoBA and dense forward kernels.
//!
//! It does not depend on burn, so the browser demo and plain wgpu users can use it. Two
//! levels of API:
//! - [`GpuContext::moba_forward`] on host slices (async; [`GpuContext::block_on`] runs it
//!   natively): checks the inputs, splits problems larger than the
//!   adapter's buffer limits over (batch, kv head) groups, pads odd head dims, and returns
//!   host vectors;
//! - [`MobaForward`] / [`MobaBackward`] (a [`PlannedPass`] each) / [`DenseForward`] on your own
//!   wgpu buffers: record into your encoder.
//!
//! And a language model's generation on the GPU, [`LmDecoder`]: its decode step as a few
//! kernels per layer around MoBA's split decode over a KV cache kept on the GPU.

mod backward;
pub(crate) mod buffers;
mod caps;
mod context;
mod dense;
mod forward;
pub(crate) mod host;
pub(crate) mod kernels;
mod lm_decode;
mod pass;
pub(crate) mod plan;
mod runner;
pub(crate) mod schedule;
mod timing;
mod unroll;

pub use backward::{BackwardBuffers, BackwardPass, MobaBackward};
pub use buffers::POISON;
pub use caps::DeviceCaps;
pub use context::{
    AdapterRequest, GpuContext, adapters, offers_cooperative_matrices, parse_api, select_adapter,
};
pub use dense::DenseForward;
pub use forward::{ForwardBuffers, ForwardIo, ForwardPass, MobaForward};
pub use host::{GpuForward, GpuGradients};
pub use lm_decode::{
    DecoderOptions, LayerWeights, LinearWeights, LmDecoder, LmWeights, WeightPrecision,
};
pub use pass::{Pass, PlannedPass};
pub use plan::{AttentionKernel, TilePlan};
pub use timing::{StageTimer, StageTimes};
