//! burn integration: MoBA as a backend extension (a custom op with its own backward), not a
//! fork of burn.
//!
//! - [`MobaBackend`]: the forward (o, lse, selection) and backward (dq, dk, dv) ops;
//! - burn's wgpu backend runs the WGSL kernels through burn's `template` kernels on burn's
//!   own device and queue (`CubeBackend<WgpuRuntime, f32, i32, _>`, and `Fusion` of it:
//!   burn's default `Wgpu`);
//! - `Autodiff<B>` records a custom backward that calls `B::moba_backward`, saving q, k, v,
//!   o, lse and the selection;
//! - `NdArray` (and any backend through [`generic`]) composes burn tensor ops: slower, exact;
//! - [`moba_attention`] is the function to call; [`crate::module::MobaAttention`] the module;
//!   [`moba_attention_context_parallel`] splits one sequence over several devices.

mod api;
mod autodiff;
#[cfg(feature = "burn")]
pub mod baseline;
mod context_parallel;
#[cfg(feature = "burn")]
pub(crate) mod cube;
#[cfg(feature = "burn")]
mod fusion;
pub mod generic;
mod ndarray;
mod nsa;
mod nsa_profile;
#[cfg(feature = "burn")]
pub(crate) mod wgpu;
#[cfg(feature = "burn")]
mod wgpu_device;

pub use api::{
    MobaAttentionStats, moba_attention, moba_attention_varlen, moba_attention_with_means,
    moba_attention_with_selection, moba_attention_with_stats,
};
pub use context_parallel::{ContextShard, moba_attention_context_parallel};
pub(crate) use nsa::forward_stage_seconds as nsa_forward_stage_seconds;
#[cfg(any(feature = "cuda", test))]
pub(crate) use nsa::selection_chunk_blocks as nsa_selection_chunk_blocks;
#[cfg(feature = "burn")]
pub(crate) use nsa::selection_fits_a_chunk as nsa_selection_fits_a_chunk;
pub(crate) use nsa::step_stage_seconds as nsa_step_stage_seconds;
pub use nsa::{NsaAttention, nsa_attention, nsa_attention_with_compression};
#[cfg(feature = "burn")]
pub use wgpu::attention_kernel;
#[cfg(feature = "burn")]
pub use wgpu_device::burn_wgpu_device;

use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{Int, Tensor, TensorMetadata, TensorPrimitive};

use crate::config::{MobaConfig, NsaConfig, Shape};
use crate::error::Result;

/// What the forward returns: `o: [B, Hq, S, D]`, `lse: [B, Hq, S]` (natural log of the
/// scaled softmax normaliser), `selection: [B, Hq, S, top_k]` (ascending block ids, -1
/// padded).
#[derive(Debug, Clone)]
pub struct MobaForwardOutput<B: Backend> {
    pub o: FloatTensor<B>,
    pub lse: FloatTensor<B>,
    pub selection: IntTensor<B>,
}

/// What a caller may give the forward besides q, k and v (`None`: the forward works it out).
#[derive(Debug, Clone)]
pub struct ForwardGiven<B: Backend> {
    /// The keys' block means `[B, Hkv, ceil(Sk / block_size), D]`, the mean-key gate's (as
    /// [`crate::module::KvCache`] keeps them for decoding), so that a backend can skip
    /// pooling every key. They must be the means of `k`'s blocks: a backend that does not
    /// read them pools the keys instead.
    pub means: Option<FloatTensor<B>>,
    /// Int `[ceil(Sk / block_size)]`: the first block of each block's sequence, where
    /// sequences are packed into each batch entry from block boundaries (a varlen batch,
    /// [`crate::varlen`]); causal rows rank only their own sequence's blocks. Every backend
    /// reads it; without it every block's sequence starts at block 0.
    pub sequence_starts: Option<IntTensor<B>>,
    /// Int `[B, Hq, S, top_k]`: the blocks each query row attends, as the gate would write
    /// them (ascending, -1 padded, a causal row's own block among them and none after it;
    /// [`moba_attention_with_selection`] checks that). The gate does not run: the caller
    /// routes (NSA's group-shared selection, say). Every backend reads it.
    pub selection: Option<IntTensor<B>>,
}

impl<B: Backend> ForwardGiven<B> {
    /// Nothing given.
    pub fn none() -> Self {
        Self {
            means: None,
            sequence_starts: None,
            selection: None,
        }
    }
}

/// What the backward reads: the inputs and the forward's outputs.
#[derive(Debug, Clone)]
pub struct MobaSaved<B: Backend> {
    pub q: FloatTensor<B>,
    pub k: FloatTensor<B>,
    pub v: FloatTensor<B>,
    pub o: FloatTensor<B>,
    pub lse: FloatTensor<B>,
    pub selection: IntTensor<B>,
}

/// Gradients: `dq: [B, Hq, S, D]`, `dk, dv: [B, Hkv, Sk, D]` (summed over the query heads of
/// each GQA group).
#[derive(Debug, Clone)]
pub struct MobaGradients<B: Backend> {
    pub dq: FloatTensor<B>,
    pub dk: FloatTensor<B>,
    pub dv: FloatTensor<B>,
}

/// [`MobaBackend::moba_forward_group_selection`] through
/// [`MobaBackend::moba_forward_given`]: the group's selection copied to each of its heads.
pub(crate) fn forward_per_head<B: MobaBackend>(
    qkv: [FloatTensor<B>; 3],
    selection: IntTensor<B>,
    config: &MobaConfig,
) -> MobaForwardOutput<B> {
    let q_heads = qkv[0].shape().dims::<4>()[1];
    let selection = Tensor::<B, 4, Int>::from_primitive(selection);
    let [batch, kv_heads, q_len, top_k] = selection.dims();
    let per_head = selection
        .unsqueeze_dim::<5>(2)
        .expand([batch, kv_heads, q_heads / kv_heads, q_len, top_k])
        .reshape([batch, q_heads, q_len, top_k]);
    let given = ForwardGiven {
        selection: Some(per_head.into_primitive()),
        ..ForwardGiven::none()
    };
    B::moba_forward_given(qkv, given, config)
}

/// A one-to-one move of the rows (dim 2) of a `[B, H, S_in, D]` tensor to `[B, H, S_out,
/// D]` ([`MobaBackend::moba_move_rows`]): how a varlen batch lays its tokens out from block
/// boundaries and back ([`crate::varlen`]). No input row goes to two places.
#[derive(Debug, Clone)]
pub struct RowMove<B: Backend> {
    /// Int `[S_out]`: the input row each output row takes, or `S_in` for a row of zeros.
    pub sources: IntTensor<B>,
    /// Int `[S_in]`: the output row each input row goes to, or `S_out` where it goes nowhere.
    pub destinations: IntTensor<B>,
}

impl<B: Backend> RowMove<B> {
    /// The move back: what the gradient of a moved tensor takes.
    pub fn reversed(self) -> Self {
        Self {
            sources: self.destinations,
            destinations: self.sources,
        }
    }
}

/// A burn backend that runs MoBA (DESIGN §1). Inputs are validated by [`moba_attention`]
/// before these ops see them: q `[B, Hq, S, D]`, k and v `[B, Hkv, Sk, D]`, `Hq % Hkv == 0`,
/// `S <= Sk`, a valid config, and [`MobaBackend::moba_prepare`] passed.
pub trait MobaBackend: Backend {
    /// Checks, before anything runs, that this backend can run the forward and the backward
    /// of `shape` with `config` on `device`: its driver, every buffer within the device's
    /// limits, the memory a CPU backend materialises, and (the CUDA path, whose kernels are
    /// built at run time) its compiled kernels. The forward and
    /// the backward cannot return errors (burn's `Fusion` runs them later, and its autodiff
    /// calls the backward from `backward()`), so every way they could fail on a working
    /// device is found here; [`moba_attention`] calls it first.
    fn moba_prepare(shape: &Shape, config: &MobaConfig, device: &Self::Device) -> Result<()>;

    /// The forward of `[q, k, v]`: gate, selection and attention over the selected blocks.
    fn moba_forward(qkv: [FloatTensor<Self>; 3], config: &MobaConfig) -> MobaForwardOutput<Self> {
        Self::moba_forward_given(qkv, ForwardGiven::none(), config)
    }

    /// The forward with what a caller gives besides q, k and v ([`ForwardGiven`]).
    fn moba_forward_given(
        qkv: [FloatTensor<Self>; 3],
        given: ForwardGiven<Self>,
        config: &MobaConfig,
    ) -> MobaForwardOutput<Self>;

    /// The forward over a selection each GQA group shares, Int `[B, Hkv, S, top_k]` (NSA's
    /// selected branch: ascending, -1 padded, a causal row's own block listed and none after
    /// it): o and lse as [`MobaBackend::moba_forward_given`] with that selection given to
    /// every query head of the group, and that per-head selection `[B, Hq, S, top_k]` (what
    /// the backward reads). Burn's wgpu backend reads each selected block once for a group
    /// of 8 heads or more (`nsa_selected.wgsl`); the others, and smaller groups, give each
    /// head its copy.
    fn moba_forward_group_selection(
        qkv: [FloatTensor<Self>; 3],
        selection: IntTensor<Self>,
        config: &MobaConfig,
    ) -> MobaForwardOutput<Self> {
        forward_per_head::<Self>(qkv, selection, config)
    }

    /// Gradients of `sum(o * dout)` with the selection held constant (DESIGN §1.6).
    fn moba_backward(
        saved: MobaSaved<Self>,
        dout: FloatTensor<Self>,
        config: &MobaConfig,
    ) -> MobaGradients<Self>;

    /// `x: [B, H, S_in, D]` with its rows moved by `rows` (a gather). Under autodiff its
    /// gradient is the gather back ([`RowMove::reversed`]), where burn's `select` would
    /// scatter-add (atomic adds: 100 ms of an 8K training step on wgpu).
    fn moba_move_rows(x: FloatTensor<Self>, rows: RowMove<Self>) -> FloatTensor<Self> {
        let x = Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(x));
        let [batch, heads, _, dim] = x.dims();
        let zero = Tensor::<Self, 4>::zeros([batch, heads, 1, dim], &x.device()).cast(x.dtype());
        let sources = Tensor::<Self, 1, Int>::from_primitive(rows.sources);
        Tensor::cat(vec![x, zero], 2)
            .select(2, sources)
            .into_primitive()
            .tensor()
    }

    /// Whether this backend chooses NSA's selection on the device for `config` and a problem
    /// of `shape` ([`MobaBackend::nsa_select`]). The others rank importances from burn
    /// tensor ops on the host ([`nsa_attention`] does that).
    fn nsa_selects_on_device(shape: &Shape, config: &NsaConfig) -> bool {
        let _ = (shape, config);
        false
    }

    /// Whether burn moves this backend's tensors from one of its devices to another
    /// (`Tensor::to_device`), as context parallel attention does
    /// ([`moba_attention_context_parallel`]): ndarray (one device) and CUDA do; burn 0.21's
    /// wgpu backend does not (burn-cubecl asks cubecl's server for a device-to-device copy,
    /// which cubecl's wgpu server does not have: it panics).
    fn moba_moves_between_devices() -> bool {
        true
    }

    /// NSA's group-shared top-n (`../shared/NSA.md`, a constant for autodiff) on the
    /// device, called only where [`MobaBackend::nsa_selects_on_device`]: from `q: [B, Hq, S,
    /// D]` at the last `S` of `kv_len` positions, the pooled keys `[B, Hkv, nc, D]` (`nc >=
    /// 1`) and the compressed branch's lse `[B, Hq, S]` (natural log), Int `[B, Hkv, S,
    /// top_n]`: ascending, -1 padded.
    fn nsa_select(
        q: FloatTensor<Self>,
        pooled_keys: FloatTensor<Self>,
        compressed_lse: FloatTensor<Self>,
        kv_len: usize,
        config: &NsaConfig,
    ) -> IntTensor<Self> {
        let _ = (q, pooled_keys, compressed_lse, kv_len, config);
        unreachable!("nsa_select runs only where nsa_selects_on_device says so")
    }
}
