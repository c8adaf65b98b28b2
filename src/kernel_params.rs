//! The parameters every kernel receives, defined once: a WGSL kernel reads them from a
//! storage buffer at binding 0, a CUDA kernel takes them by value. Both declarations of
//! `struct Params` are generated from the definition below (see [`KernelParams::WGSL`] and
//! [`KernelParams::CUDA`]), so the Rust, WGSL and CUDA layouts cannot drift apart.

use bytemuck::{Pod, Zeroable};

use crate::config::{MobaConfig, Shape};

/// Declares the `repr(C)` Rust struct and its WGSL and CUDA text from one field list
/// (`u32` and `f32` fields only: 4 bytes each, no padding in any of the three languages).
macro_rules! kernel_params {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[doc = $doc:literal])* pub $field:ident: $ty:ident,)* }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
        pub struct $name { $($(#[doc = $doc])* pub $field: $ty,)* }

        impl $name {
            /// `struct Params` in WGSL.
            pub const WGSL: &'static str = concat!(
                "struct Params {\n",
                $("    ", stringify!($field), ": ", stringify!($ty), ",\n",)*
                "}\n"
            );
            /// `struct Params` in CUDA C++.
            pub const CUDA: &'static str = concat!(
                "struct Params {\n",
                $("    ", kernel_params!(@cuda $ty), " ", stringify!($field), ";\n",)*
                "};\n"
            );
        }
    };
    (@cuda u32) => { "unsigned int" };
    (@cuda f32) => { "float" };
}

kernel_params! {
    /// A problem as every kernel sees it (DESIGN §1). 16 fields of 4 bytes: a multiple of
    /// 16 bytes, as WGSL storage structs want.
    pub struct KernelParams {
        pub batch: u32,
        pub q_heads: u32,
        pub kv_heads: u32,
        pub q_len: u32,
        pub kv_len: u32,
        pub block_size: u32,
        pub num_blocks: u32,
        /// 1: causal MoBA; 0: every block eligible, no mask.
        pub causal: u32,
        /// The gate's code (`crate::shared_constants`).
        pub gate: u32,
        /// The sink gate's always-chosen first blocks.
        pub sink_blocks: u32,
        /// Softmax scale (of the true, unpadded head dim).
        pub scale: f32,
        /// `scale * log2(e)`: the kernels score in base 2.
        pub scale_log2: f32,
        /// The selection slot of one per-slot pass (WGSL; CUDA passes it as an argument).
        pub slot: u32,
        /// Workgroups of one per-slot pass per kv group (WGSL): an upper bound on the row
        /// tiles of one slot's lists.
        pub tile_capacity: u32,
        /// Key (and value) rows between two (batch, kv head) groups in k and v: `kv_len`,
        /// or a KV cache's capacity where the decode kernels read a preallocated cache.
        pub kv_stride: u32,
        /// Block means between two groups' in the gate's given means: `num_blocks`, or a
        /// cache's capacity in blocks.
        pub means_stride: u32,
    }
}

impl KernelParams {
    /// The parameters of a problem; `config.scale`, where set, is the true head dim's.
    pub fn new(shape: &Shape, config: &MobaConfig) -> Self {
        let scale = config.scale_for(shape.head_dim);
        let (gate, sink_blocks) = config.gate.kernel_code();
        KernelParams {
            batch: shape.batch as u32,
            q_heads: shape.q_heads as u32,
            kv_heads: shape.kv_heads as u32,
            q_len: shape.q_len as u32,
            kv_len: shape.kv_len as u32,
            block_size: config.block_size as u32,
            num_blocks: shape.num_blocks(config.block_size) as u32,
            causal: config.causal as u32,
            gate,
            sink_blocks,
            scale,
            scale_log2: scale * std::f32::consts::LOG2_E,
            slot: 0,
            tile_capacity: 0,
            kv_stride: shape.kv_len as u32,
            means_stride: shape.num_blocks(config.block_size) as u32,
        }
    }

    /// These parameters for the per-slot pass over `slot`.
    pub fn for_slot(self, slot: usize, tile_capacity: u32) -> Self {
        KernelParams {
            slot: slot as u32,
            tile_capacity,
            ..self
        }
    }

    /// These parameters, planned for a KV cache's capacity (its strides), for a run over
    /// its first `len` positions in blocks of `block_size`.
    pub fn with_cached_len(self, len: usize, block_size: usize) -> Self {
        KernelParams {
            kv_len: len as u32,
            num_blocks: len.div_ceil(block_size) as u32,
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_layout_in_three_languages() {
        assert_eq!(std::mem::size_of::<KernelParams>(), 64);
        assert!(KernelParams::WGSL.contains("    scale_log2: f32,\n"));
        assert!(KernelParams::CUDA.contains("    float scale_log2;\n"));
        assert!(KernelParams::CUDA.contains("    unsigned int tile_capacity;\n"));
        let fields = |text: &str| text.lines().count() - 2;
        assert_eq!(fields(KernelParams::WGSL), 16);
        assert_eq!(fields(KernelParams::CUDA), 16);
    }

    #[test]
    fn the_scale_is_the_true_head_dims() {
        let shape = Shape::prefill(2, 4, 1000, 64);
        let config = MobaConfig::sink(128, 1, 2);
        let params = KernelParams::new(&shape, &config);
        assert_eq!((params.gate, params.sink_blocks), (2, 1));
        assert_eq!(params.num_blocks, 8);
        assert!((params.scale - 0.125).abs() < 1e-7);
        assert_eq!(params.for_slot(2, 9).slot, 2);
        // A cache of 1000 positions holding 300: the capacity's strides stay.
        let cached = params.with_cached_len(300, 128);
        assert_eq!(
            (cached.kv_len, cached.num_blocks, cached.kv_stride),
            (300, 3, 1000)
        );
    }
}
