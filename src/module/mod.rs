//! burn modules built on MoBA.

mod attention;
mod cache;
mod key_conv;
mod nsa_compression;

pub use attention::{AttentionKind, GateChoices, MobaAttention, MobaAttentionConfig};
pub use cache::KvCache;
pub use key_conv::KeyConv;
pub use nsa_compression::{BlockMlp, NsaCompression};
