//! burn modules built on MoBA.

mod attention;
mod cache;
mod key_conv;

pub use attention::{AttentionKind, GateChoices, MobaAttention, MobaAttentionConfig};
pub use cache::KvCache;
pub use key_conv::KeyConv;
