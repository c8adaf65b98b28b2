//! The CUDA path: MoBA on NVIDIA GPUs at tensor-core speed, inside burn-cuda.
//!
//! CUDA C++ kernels (`shaders/cuda/`) are compiled at run time by NVRTC for the GPU's
//! compute capability and launched through cudarc on the memory of burn-cuda tensors.
//! Tensor cores (`mma.sync`, sm_80+; the forward's products as `wgmma` warpgroup MMAs on
//! sm_90) multiply in bf16 or f16 with f32 accumulation; f32 inputs are rounded to bf16 for
//! the products (use the wgpu backend for f32 products).
//!
//! The same algorithm as the WGSL path (DESIGN §3): a streaming gate (no score matrix),
//! the selection inverted into per-block row lists, dense tiles of gathered rows x one
//! block per slot merged by online softmax, and a backward that reuses the lists:
//! deterministic, no atomics on floats.
//!
//! With the `cuda` feature, burn's `Cuda` backend (and `Autodiff<Cuda>`) implements
//! [`crate::backend::MobaBackend`]:
//!
//! ```no_run
//! # #[cfg(feature = "cuda")] {
//! use burn::backend::cuda::{Cuda, CudaDevice};
//! use burn::tensor::{Distribution, Tensor, bf16};
//! use moba::{MobaConfig, backend::moba_attention};
//!
//! let device = CudaDevice::default();
//! let q = Tensor::<Cuda<bf16>, 4>::random([1, 16, 8192, 128], Distribution::Normal(0.0, 1.0), &device);
//! let (k, v) = (q.clone(), q.clone());
//! let o = moba_attention(q, k, v, &MobaConfig::new(512, 3))?;
//! # }
//! # Ok::<(), moba::MobaError>(())
//! ```
//!
//! [`CudaLmDecoder`] runs a language model's decode step with the same plan as the wgpu
//! decoder ([`crate::decode_plan`]), for `moba generate --backend cuda`.
//!
//! Without the feature, the sources and the launch arithmetic still build (and are tested):
//! [`source`], [`launch`], [`schedule`].

pub mod cache;
pub mod launch;
pub mod schedule;
pub mod source;

#[cfg(feature = "cuda")]
mod backend;
#[cfg(feature = "cuda")]
pub mod bench;
#[cfg(feature = "cuda")]
mod lm_decode;
#[cfg(feature = "cuda")]
mod runtime;

#[cfg(feature = "cuda")]
pub use lm_decode::{CudaDecoderOptions, CudaLmDecoder};
#[cfg(feature = "cuda")]
pub use runtime::CudaRuntime;

/// The error of a CUDA request in a build without the `cuda` feature.
pub fn not_built() -> crate::MobaError {
    crate::MobaError::Cuda(
        "this build has no CUDA path: rebuild with `cargo build --release --features cuda`".into(),
    )
}
