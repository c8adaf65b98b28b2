//! What to compute: the MoBA configuration and the problem shape, with their validation.

use std::ops::Range;

use crate::error::{MobaError, Result};
use crate::memory::{bytes_of, check_host};
use crate::shared_constants::{GATE_KEY_WINDOW, GATE_MEAN_KEY, GATE_RECENT, GATE_SINK_AND_RECENT};

/// How the gate scores the eligible blocks. Every gate feeds the same top-k rule and the
/// same kernels: the static patterns of DESIGN §1 are MoBA with a fixed score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Gate {
    /// MoBA: `q . mean(keys of the block)`.
    #[default]
    MeanKey,
    /// Sliding window: the most recent blocks win (score = block id).
    Recent,
    /// Attention sink: the first `sink_blocks` blocks always win, then the most recent.
    SinkAndRecent { sink_blocks: usize },
    /// A window of keys: the most recent blocks win, as [`Gate::Recent`], and a query at `p`
    /// sees only the `block_size` keys `(p - block_size, p]` of them (NSA's window branch;
    /// [`MobaConfig::key_window`]).
    KeyWindow,
}

impl Gate {
    /// The fixed score of block `j` for the static gates; `None` for the learned one.
    /// Sinks score above every recent block; all gaps are >= 1, so never a near tie.
    pub fn static_score(&self, block: usize, num_blocks: usize) -> Option<f64> {
        match *self {
            Gate::MeanKey => None,
            Gate::Recent | Gate::KeyWindow => Some(block as f64),
            Gate::SinkAndRecent { sink_blocks } if block < sink_blocks => {
                Some((num_blocks + block) as f64)
            }
            Gate::SinkAndRecent { .. } => Some(block as f64),
        }
    }

    /// The gate as the kernels' `(gate, sink_blocks)` parameters (the codes of
    /// [`crate::shared_constants`]).
    pub fn kernel_code(&self) -> (u32, u32) {
        match *self {
            Gate::MeanKey => (GATE_MEAN_KEY, 0),
            Gate::Recent => (GATE_RECENT, 0),
            Gate::SinkAndRecent { sink_blocks } => (GATE_SINK_AND_RECENT, sink_blocks as u32),
            Gate::KeyWindow => (GATE_KEY_WINDOW, 0),
        }
    }
}

/// How MoBA routes queries to key blocks (DESIGN §1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MobaConfig {
    /// Keys per block (>= 1).
    pub block_size: usize,
    /// Blocks each query attends, its own block included in causal mode (>= 1).
    pub top_k: usize,
    /// Softmax scale; `None` means `1 / sqrt(head_dim)`.
    pub scale: Option<f32>,
    /// Causal mode: no future blocks, own block forced, keys after the query masked.
    pub causal: bool,
    /// How blocks are scored (MoBA's mean-key gate by default).
    pub gate: Gate,
}

impl MobaConfig {
    /// An error unless the gate is the mean-key gate: the only one that reads block means
    /// (what a caller that gives them needs).
    pub(crate) fn check_given_means(&self) -> Result<()> {
        match self.gate {
            Gate::MeanKey => Ok(()),
            gate => Err(MobaError::Config(format!(
                "block means are the mean-key gate's; this config's gate is {gate:?}"
            ))),
        }
    }

    /// A causal config with the default scale.
    pub fn new(block_size: usize, top_k: usize) -> Self {
        Self {
            block_size,
            top_k,
            scale: None,
            causal: true,
            gate: Gate::MeanKey,
        }
    }

    /// Sliding-window attention as a gate: each query attends its own block and the
    /// `blocks - 1` blocks before it.
    pub fn sliding_window(block_size: usize, blocks: usize) -> Self {
        Self {
            gate: Gate::Recent,
            ..Self::new(block_size, blocks)
        }
    }

    /// Attention sink as a gate: the first `sink_blocks` blocks plus the `recent_blocks`
    /// most recent ones (its own block included).
    pub fn sink(block_size: usize, sink_blocks: usize, recent_blocks: usize) -> Self {
        Self {
            gate: Gate::SinkAndRecent { sink_blocks },
            ..Self::new(block_size, sink_blocks + recent_blocks)
        }
    }

    /// Sliding-window attention over keys: each query attends exactly the `keys` keys that
    /// end at it (fewer at the start), as NSA's window branch does. Blocks of `keys` keys,
    /// the query's own and the one before, with the earlier keys masked in the kernels.
    ///
    /// ```
    /// use moba::MobaConfig;
    ///
    /// let window = MobaConfig::key_window(512);
    /// assert_eq!((window.block_size, window.top_k), (512, 2));
    /// // The query at 1000 sees keys 489..=1000.
    /// assert!(window.sees(489, 1000) && !window.sees(488, 1000) && !window.sees(1001, 1000));
    /// assert!(window.with_causal(false).validate().is_err());
    /// ```
    pub fn key_window(keys: usize) -> Self {
        Self {
            gate: Gate::KeyWindow,
            ..Self::new(keys, 2)
        }
    }

    /// The keys the query at `position` may see in the blocks it attends: none after it
    /// (causal), none before its window ([`Gate::KeyWindow`]: from `position + 1 -
    /// block_size`). The kernels' `key_visible` (WGSL) and `key_hidden` (CUDA) state the same
    /// rule.
    pub fn visible_keys(&self, position: usize) -> Range<usize> {
        let start = match self.gate {
            Gate::KeyWindow => (position + 1).saturating_sub(self.block_size),
            _ => 0,
        };
        let end = if self.causal {
            position + 1
        } else {
            usize::MAX
        };
        start..end
    }

    /// Whether the query at `position` sees key `key` of a block it attends
    /// ([`MobaConfig::visible_keys`]).
    pub fn sees(&self, key: usize, position: usize) -> bool {
        self.visible_keys(position).contains(&key)
    }

    /// Whether the only mask is the causal one (no key window): what NSA's group-centric
    /// selected kernels apply, so the backends run them for no other config.
    #[cfg(feature = "burn")]
    pub(crate) fn masks_causally_only(&self) -> bool {
        self.causal && self.gate != Gate::KeyWindow
    }

    /// The same config with an explicit softmax scale.
    pub fn with_scale(mut self, scale: f32) -> Self {
        self.scale = Some(scale);
        self
    }

    /// The same config with causal masking switched on or off.
    pub fn with_causal(mut self, causal: bool) -> Self {
        self.causal = causal;
        self
    }

    /// The scale actually used for a head dimension.
    pub fn scale_for(&self, head_dim: usize) -> f32 {
        self.scale.unwrap_or(1.0 / (head_dim as f32).sqrt())
    }

    /// Checks the values that do not depend on the shape.
    pub fn validate(&self) -> Result<()> {
        if self.block_size == 0 {
            return Err(MobaError::Config("block_size must be >= 1".into()));
        }
        if self.top_k == 0 {
            return Err(MobaError::Config("top_k must be >= 1".into()));
        }
        if let Some(s) = self.scale
            && !(s.is_finite() && s > 0.0)
        {
            return Err(MobaError::Config(format!(
                "scale must be finite and > 0, got {s}"
            )));
        }
        // A third block would hold no key any row sees (every kernel's merge then meets a
        // slot with nothing in it for every row).
        if self.gate == Gate::KeyWindow && !(self.causal && self.top_k == 2) {
            return Err(MobaError::Config(format!(
                "a key window is causal and spans two blocks (the query's own and the one \
                 before): causal {} and top_k {} will not do",
                self.causal, self.top_k
            )));
        }
        Ok(())
    }
}

/// How NSA (Native Sparse Attention, `../shared/NSA.md`) mixes its three branches: a
/// compressed branch over mean-pooled key blocks, a selected branch over the `top_n` most
/// important key blocks (shared by the query heads of a GQA group), and a sliding window.
///
/// ```
/// use moba::config::NsaConfig;
///
/// // The paper's setting: l = 32, d = 16, l' = 64, top-16 blocks, a window of 512.
/// let config = NsaConfig::new(32, 16, 64, 16, 512);
/// assert!(config.validate().is_ok());
/// assert_eq!(config.scale_for(64), 0.125);
/// // 1000 keys: floor((1000 - 32) / 16) + 1 compressed blocks, ceil(1000 / 64) selection blocks.
/// assert_eq!(config.compressed_blocks(1000), 61);
/// assert_eq!(config.selection_blocks(1000), 16);
///
/// // The stride must divide both block sizes, and top_n counts the three forced blocks.
/// assert!(NsaConfig::new(32, 12, 64, 16, 512).validate().is_err());
/// assert!(NsaConfig { top_n: 2, ..config }.validate().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NsaConfig {
    /// Keys per compressed block, `l` (a multiple of `stride`).
    pub compress_block: usize,
    /// Distance between the starts of consecutive compressed blocks, `d` (>= 1); blocks
    /// overlap when `d < l`.
    pub stride: usize,
    /// Keys per selection block, `l'` (a multiple of `stride`).
    pub select_block: usize,
    /// Selection blocks each GQA group attends, the forced ones (block 0, the current block
    /// and the one before it) included (>= 3).
    pub top_n: usize,
    /// Keys of the sliding window, the query's own included, `w` (>= 1).
    pub window: usize,
    /// Softmax scale of all three branches; `None` means `1 / sqrt(head_dim)`.
    pub scale: Option<f32>,
}

impl NsaConfig {
    /// A config with the default scale.
    pub fn new(
        compress_block: usize,
        stride: usize,
        select_block: usize,
        top_n: usize,
        window: usize,
    ) -> Self {
        Self {
            compress_block,
            stride,
            select_block,
            top_n,
            window,
            scale: None,
        }
    }

    /// The same config with an explicit softmax scale.
    pub fn with_scale(mut self, scale: f32) -> Self {
        self.scale = Some(scale);
        self
    }

    /// The scale actually used for a head dimension.
    pub fn scale_for(&self, head_dim: usize) -> f32 {
        self.scale.unwrap_or(1.0 / (head_dim as f32).sqrt())
    }

    /// Compressed blocks of `kv_len` keys: `floor((Sk - l) / d) + 1`, 0 when `Sk < l`.
    pub fn compressed_blocks(&self, kv_len: usize) -> usize {
        match kv_len.checked_sub(self.compress_block) {
            Some(rest) => rest / self.stride + 1,
            None => 0,
        }
    }

    /// Selection blocks of `kv_len` keys: `ceil(Sk / l')` (the last one may be partial).
    pub fn selection_blocks(&self, kv_len: usize) -> usize {
        kv_len.div_ceil(self.select_block)
    }

    /// Checks the values that do not depend on the shape.
    pub fn validate(&self) -> Result<()> {
        for (what, value) in [
            ("compress_block", self.compress_block),
            ("stride", self.stride),
            ("select_block", self.select_block),
            ("window", self.window),
        ] {
            if value == 0 {
                return Err(MobaError::Config(format!("NSA {what} must be >= 1")));
            }
        }
        if self.top_n < 3 {
            return Err(MobaError::Config(format!(
                "NSA top_n must be >= 3 (it counts the forced blocks 0, c and c - 1), got {}",
                self.top_n
            )));
        }
        for (what, block) in [
            ("compress_block", self.compress_block),
            ("select_block", self.select_block),
        ] {
            if !block.is_multiple_of(self.stride) {
                return Err(MobaError::Config(format!(
                    "NSA stride ({}) must divide {what} ({block})",
                    self.stride
                )));
            }
        }
        if let Some(s) = self.scale
            && !(s.is_finite() && s > 0.0)
        {
            return Err(MobaError::Config(format!(
                "scale must be finite and > 0, got {s}"
            )));
        }
        Ok(())
    }
}

/// Sizes of one attention problem: `q: [batch, q_heads, q_len, head_dim]`,
/// `k, v: [batch, kv_heads, kv_len, head_dim]`, all row-major.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub batch: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub q_len: usize,
    pub kv_len: usize,
    pub head_dim: usize,
}

impl Shape {
    /// Prefill shape: as many queries as keys, one kv head per query head.
    pub fn prefill(batch: usize, heads: usize, seq_len: usize, head_dim: usize) -> Self {
        Self {
            batch,
            q_heads: heads,
            kv_heads: heads,
            q_len: seq_len,
            kv_len: seq_len,
            head_dim,
        }
    }

    /// Builds a shape from the dims of q and k (`[B, H, S, D]` each), checking they agree.
    pub fn from_dims(q: &[usize], k: &[usize]) -> Result<Self> {
        for (tensor, dims) in [("q", q), ("k", k)] {
            if dims.len() != 4 {
                return Err(MobaError::Rank {
                    tensor,
                    expected: 4,
                    shape: dims.to_vec(),
                });
            }
        }
        let shape = Self::of_dims(q, k);
        for (what, expected, actual) in [("k batch", q[0], k[0]), ("k head_dim", q[3], k[3])] {
            if expected != actual {
                return Err(MobaError::ShapeMismatch {
                    what: what.into(),
                    expected,
                    actual,
                });
            }
        }
        shape.validate()?;
        Ok(shape)
    }

    /// The shape of q `[B, Hq, S, D]` and k `[B, Hkv, Sk, D]` dims as they are (no checks:
    /// for tensors that [`Shape::from_dims`] has checked already).
    pub fn of_dims(q: &[usize], k: &[usize]) -> Self {
        Self {
            batch: q[0],
            q_heads: q[1],
            kv_heads: k[1],
            q_len: q[2],
            kv_len: k[2],
            head_dim: q[3],
        }
    }

    /// What a kernel that reads the head dim in steps of `multiple` runs: this shape with
    /// its head dim padded to the multiple (zero columns change no dot product), and the
    /// config with its scale fixed for the true head dim.
    pub fn padded(&self, config: &MobaConfig, multiple: usize) -> (Shape, MobaConfig) {
        let shape = Shape {
            head_dim: self.head_dim.next_multiple_of(multiple),
            ..*self
        };
        (shape, config.with_scale(config.scale_for(self.head_dim)))
    }

    /// Query heads that share one kv head.
    pub fn group_size(&self) -> usize {
        self.q_heads / self.kv_heads
    }

    /// The shape of `groups` (batch, kv head) groups of this problem, each an independent
    /// batch entry with one kv head: row-major tensors of consecutive groups are contiguous
    /// slices of the whole, so a problem can be split into calls of whole groups.
    pub fn group_chunk(&self, groups: usize) -> Shape {
        Shape {
            batch: groups,
            q_heads: self.group_size(),
            kv_heads: 1,
            ..*self
        }
    }

    /// Number of (batch, kv head) groups.
    pub fn groups(&self) -> usize {
        self.batch * self.kv_heads
    }

    /// Absolute position of query `t`: queries are the last `q_len` positions.
    pub fn query_position(&self, t: usize) -> usize {
        self.kv_len - self.q_len + t
    }

    /// Number of key blocks for a block size.
    pub fn num_blocks(&self, block_size: usize) -> usize {
        self.kv_len.div_ceil(block_size)
    }

    pub fn q_elems(&self) -> usize {
        self.batch * self.q_heads * self.q_len * self.head_dim
    }
    pub fn kv_elems(&self) -> usize {
        self.batch * self.kv_heads * self.kv_len * self.head_dim
    }
    /// q's dims: `[B, Hq, S, D]`.
    pub fn q_dims(&self) -> [usize; 4] {
        [self.batch, self.q_heads, self.q_len, self.head_dim]
    }
    /// k's and v's dims: `[B, Hkv, Sk, D]`.
    pub fn kv_dims(&self) -> [usize; 4] {
        [self.batch, self.kv_heads, self.kv_len, self.head_dim]
    }
    /// Rows of the output: one per (batch, query head, query).
    pub fn q_rows(&self) -> usize {
        self.batch * self.q_heads * self.q_len
    }

    /// Checks the shape on its own.
    pub fn validate(&self) -> Result<()> {
        for (what, n) in [
            ("batch", self.batch),
            ("q_heads", self.q_heads),
            ("kv_heads", self.kv_heads),
            ("q_len", self.q_len),
            ("kv_len", self.kv_len),
            ("head_dim", self.head_dim),
        ] {
            if n == 0 {
                return Err(MobaError::Empty { what });
            }
        }
        if !self.q_heads.is_multiple_of(self.kv_heads) {
            return Err(MobaError::HeadGroups {
                q_heads: self.q_heads,
                kv_heads: self.kv_heads,
            });
        }
        if self.q_len > self.kv_len {
            return Err(MobaError::QueryLongerThanKeys {
                q_len: self.q_len,
                kv_len: self.kv_len,
            });
        }
        if self.host_bytes(1).is_none() {
            return Err(MobaError::Config(format!(
                "{self:?} has more elements than a 64-bit size holds"
            )));
        }
        Ok(())
    }

    /// Bytes of this problem's tensors on the host in f32 (q, k, v, o, lse) and its
    /// selection with `top_k` blocks per row (i32); `None` where that overflows.
    pub fn host_bytes(&self, top_k: usize) -> Option<u64> {
        let q = bytes_of(&[self.batch, self.q_heads, self.q_len, self.head_dim], 4)?;
        let kv = bytes_of(&[self.batch, self.kv_heads, self.kv_len, self.head_dim], 4)?;
        let rows = bytes_of(&[self.batch, self.q_heads, self.q_len], 4)?;
        let selection = rows.checked_mul(top_k as u64)?;
        [q, kv, kv, q, rows, selection]
            .into_iter()
            .try_fold(0u64, |sum, bytes| sum.checked_add(bytes))
    }

    /// Fails unless this problem's tensors (see [`Shape::host_bytes`]) fit in the host's
    /// available memory: checked before a host API allocates them.
    pub fn check_host_memory(&self, top_k: usize) -> Result<()> {
        check_host(
            &format!("the inputs and outputs of {self:?} with top_k {top_k}"),
            self.host_bytes(top_k),
        )
    }

    /// Checks that host slices have the lengths this shape needs and hold finite values.
    pub fn check_inputs(&self, q: &[f32], k: &[f32], v: &[f32]) -> Result<()> {
        self.validate()?;
        for (tensor, data, expected) in [
            ("q", q, self.q_elems()),
            ("k", k, self.kv_elems()),
            ("v", v, self.kv_elems()),
        ] {
            check_len(tensor, data.len(), expected)?;
            check_finite(tensor, data)?;
        }
        Ok(())
    }

    /// Checks an output gradient `dout: [B, Hq, S, D]`: its length and finite values.
    pub fn check_dout(&self, dout: &[f32]) -> Result<()> {
        check_len("dout", dout.len(), self.q_elems())?;
        check_finite("dout", dout)
    }
}

/// Fails unless a slice named `what` has `expected` elements.
pub fn check_len(what: &str, actual: usize, expected: usize) -> Result<()> {
    if actual != expected {
        return Err(MobaError::ShapeMismatch {
            what: format!("{what} length"),
            expected,
            actual,
        });
    }
    Ok(())
}

/// Fails on the first NaN or infinity: it would otherwise spread silently through the softmax.
pub fn check_finite(tensor: &'static str, data: &[f32]) -> Result<()> {
    match data.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(MobaError::NonFinite {
            tensor,
            index,
            value: data[index],
        }),
        None => Ok(()),
    }
}
