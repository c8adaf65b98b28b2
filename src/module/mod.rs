//! burn modules built on MoBA.

mod attention;
mod cache;

pub use attention::{AttentionKind, GateChoices, MobaAttention, MobaAttentionConfig};
pub use cache::KvCache;
