//! # moba — Mixture of Block Attention on every GPU
//!
//! Keys are split into blocks; each query scores the mean key of every earlier block, keeps
//! its own block plus the `top_k - 1` best, and attends only those blocks with one softmax.
//!
//! - [`reference`](mod@reference): the exact CPU reference (f64), the oracle of every backend;
//! - [`launch_plan`]: the steps of a forward and a backward, which every backend lowers;
//! - [`gpu`]: WGSL kernels through wgpu (Vulkan, Metal, DX12, GL, WebGPU);
//! - [`backend`]: burn integration (custom op + custom backward, `Autodiff`, `Fusion`);
//! - [`cuda`]: the CUDA path (tensor cores, NVRTC; `--features cuda`);
//! - [`npy`]: `.npy` reading and writing for the `moba attend` CLI;
//! - [`files`]: files written whole or not at all (outputs, checkpoints);
//! - [`model`], [`data`], [`train`]: a byte-level MoBA language model, its data, and its
//!   training, evaluation and comparison on burn-train.
//!
//! The burn parts (`backend`, `cuda`, `data`, `model`, `module`, `train`) are behind the
//! default `burn` feature: the rest builds without burn, for wasm too. The `model` feature
//! alone gives `backend` (ndarray and autodiff only), `module` and `model`, which build for
//! wasm32 too: `web/` generates text with them.
//!
//! ```no_run
//! use moba::{MobaConfig, Shape, gpu::GpuContext};
//! let gpu = GpuContext::new_blocking(&Default::default())?;       // high-performance adapter
//! let shape = Shape::prefill(1, 8, 4096, 64);                      // [B, H, S, D]
//! let q = moba::random::normal(shape.q_elems(), 1);
//! let (k, v) = (moba::random::normal(shape.kv_elems(), 2), moba::random::normal(shape.kv_elems(), 3));
//! let config = MobaConfig::new(256, 3);                            // block 256, top-3, causal
//! let out = gpu.block_on(gpu.moba_forward(&q, &k, &v, &shape, &config))?;
//! let exact = moba::reference::forward(&q, &k, &v, &shape, &config)?;
//! // f32 kernel: about 1e-7; tensor-core kernel (f16 tiles): about 1e-3.
//! assert!((out.o[0] as f64 - exact.o[0]).abs() < 1e-2);
//! # Ok::<(), moba::MobaError>(())
//! ```

#[cfg(feature = "model")]
pub mod backend;
pub mod bench;
pub mod config;
#[cfg(feature = "burn")]
pub mod cuda;
#[cfg(feature = "burn")]
pub mod data;
pub mod decode_plan;
pub mod error;
pub mod files;
pub mod gpu;
mod kernel_override;
pub mod kernel_params;
pub mod launch_plan;
pub mod memory;
#[cfg(feature = "model")]
pub mod model;
#[cfg(feature = "model")]
pub mod module;
pub mod npy;
pub mod plot;
pub mod random;
pub mod reference;
pub mod shared_constants;
pub mod sparsity;
#[cfg(feature = "burn")]
pub mod train;
pub mod varlen;

pub use config::{Gate, MobaConfig, NsaConfig, Shape};
pub use error::{MobaError, Result};
