//! What the page asks for: the problem its controls describe.

use moba::{MobaConfig, MobaError, Result, Shape};
use serde::{Deserialize, Serialize};

/// Host memory the page lets one problem's tensors take: wasm32 addresses at most 4 GiB,
/// and a tab gets less.
const HOST_BUDGET_BYTES: u64 = 512 << 20;

/// One run of the page: a causal prefill of one sequence, one kv head per query head.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// Tokens (queries and keys).
    pub seq_len: usize,
    /// Query heads, each with its own kv head.
    pub heads: usize,
    /// Head dim (a multiple of 4: the kernels read vec4s).
    pub head_dim: usize,
    /// Keys per block.
    pub block_size: usize,
    /// Blocks per query, its own included.
    pub top_k: usize,
    /// Timed runs per kernel, after one warm-up; the median is reported.
    pub runs: usize,
    /// Also time the dense kernel (quadratic in the sequence length).
    pub dense: bool,
}

impl Settings {
    /// The shape and config, checked.
    pub fn problem(&self) -> Result<(Shape, MobaConfig)> {
        let shape = Shape::prefill(1, self.heads, self.seq_len, self.head_dim);
        let config = MobaConfig::new(self.block_size, self.top_k);
        shape.validate()?;
        config.validate()?;
        if self.runs == 0 {
            return Err(MobaError::Config("runs must be >= 1".into()));
        }
        Ok((shape, config))
    }

    /// Fails when the tensors the page makes (q, k, v, and the outputs read back) would
    /// take more host memory than the page allows.
    pub fn check_host_memory(&self, shape: &Shape) -> Result<()> {
        let bytes = 4 * shape.q_elems() as u64 * 4;
        if bytes > HOST_BUDGET_BYTES {
            return Err(MobaError::Config(format!(
                "{} tokens x {} heads x head dim {} need {} MiB of page memory for q, k, v \
                 and o; the demo stays under {} MiB",
                shape.q_len,
                shape.q_heads,
                shape.head_dim,
                bytes >> 20,
                HOST_BUDGET_BYTES >> 20
            )));
        }
        Ok(())
    }
}
