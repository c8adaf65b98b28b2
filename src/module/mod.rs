//! burn modules built on MoBA.

mod attention;

pub use attention::{AttentionKind, MobaAttention, MobaAttentionConfig};
