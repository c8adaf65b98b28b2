//! The one error type of the crate: every way a call can fail is a value, never a panic.

use thiserror::Error;

/// Everything that can go wrong in `moba`.
#[derive(Debug, Error)]
pub enum MobaError {
    /// A tensor does not have the rank MoBA needs (`[B, H, S, D]`).
    #[error("{tensor} must have rank {expected} ([B, H, S, D]), got shape {shape:?}")]
    Rank {
        tensor: &'static str,
        expected: usize,
        shape: Vec<usize>,
    },
    /// Two tensors disagree on a dimension, or a buffer has the wrong length.
    #[error("{what}: expected {expected}, got {actual}")]
    ShapeMismatch {
        what: String,
        expected: usize,
        actual: usize,
    },
    /// Query heads are not a multiple of key/value heads.
    #[error("query heads ({q_heads}) must be a multiple of key/value heads ({kv_heads})")]
    HeadGroups { q_heads: usize, kv_heads: usize },
    /// A dimension is zero.
    #[error("{what} is empty (a dimension is 0)")]
    Empty { what: &'static str },
    /// More queries than keys: a query would sit before the first key.
    #[error("query length {q_len} exceeds key length {kv_len}: decode needs S <= Sk")]
    QueryLongerThanKeys { q_len: usize, kv_len: usize },
    /// A configuration value is out of range.
    #[error("invalid config: {0}")]
    Config(String),
    /// An input holds NaN or infinity.
    #[error("{tensor} holds a non-finite value ({value}) at flat index {index}")]
    NonFinite {
        tensor: &'static str,
        index: usize,
        value: f32,
    },
    /// The problem exceeds one of the adapter's limits and cannot be split further.
    #[error(
        "{what} needs {needed} but the adapter's `{limit}` is {available} ({excess} over); \
         use fewer heads per call, a shorter sequence, or an adapter with larger limits"
    )]
    LimitExceeded {
        what: String,
        limit: &'static str,
        needed: u64,
        available: u64,
        excess: u64,
    },
    /// The adapter lacks something a kernel needs.
    #[error("adapter does not support {0}")]
    Unsupported(String),
    /// No adapter matched the request.
    #[error("no GPU adapter found{0}")]
    NoAdapter(String),
    /// The GPU device was lost (driver reset, unplugged, out of memory).
    #[error("GPU device lost: {0}")]
    DeviceLost(String),
    /// wgpu reported an error (validation, out of memory) while running a kernel.
    #[error("GPU error: {0}")]
    Gpu(String),
    /// The CUDA path failed: no driver, NVRTC, a launch, or a kernel fault.
    #[error("CUDA: {0}")]
    Cuda(String),
    /// Reading or writing a file failed; `error` is the underlying error (an
    /// `std::io::Error`, a parser's error, or a message of ours). The message includes it, so
    /// it is not also given as `source()` (a printer of error chains would say it twice).
    #[error("{path}: {error}")]
    Io {
        path: String,
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A `.npy` file is malformed or has an unsupported dtype or layout.
    #[error("{path}: {message}")]
    Npy { path: String, message: String },
    /// A kernel's output disagrees with the reference past the tolerance (`moba demo`,
    /// `moba bench`): a wrong result on this adapter, reported, never returned silently.
    #[error("check failed: {0}")]
    CheckFailed(String),
    /// A long job stopped before its end (a signal, a loss that is not finite, a failed
    /// save); the message says what is kept and how to continue.
    #[error("{0}")]
    Interrupted(String),
    /// A training run's checkpoint or config is missing, truncated or of another model.
    #[error("{path}: cannot load the checkpoint: {message}")]
    Checkpoint { path: String, message: String },
}

/// Shorthand for results of this crate.
pub type Result<T, E = MobaError> = std::result::Result<T, E>;

impl MobaError {
    /// A [`MobaError::Io`] naming the file that failed, keeping its error.
    pub fn io(
        path: &std::path::Path,
        error: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        MobaError::Io {
            path: path.display().to_string(),
            error: error.into(),
        }
    }

    /// A [`MobaError::LimitExceeded`] with the excess filled in.
    pub fn limit(
        what: impl Into<String>,
        limit: &'static str,
        needed: u64,
        available: u64,
    ) -> Self {
        MobaError::LimitExceeded {
            what: what.into(),
            limit,
            needed,
            available,
            excess: needed.saturating_sub(available),
        }
    }
}
