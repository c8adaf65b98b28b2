//! Sizes checked before anything is allocated: bytes of tensors computed without overflow,
//! against the memory the host has available. A request that cannot fit is an error naming
//! the limit, never an abort or a run that the out-of-memory killer ends.

use crate::error::{MobaError, Result};

/// Bytes of `elements` values of `element_bytes` each, `None` where that overflows.
pub fn bytes_of(dims: &[usize], element_bytes: usize) -> Option<u64> {
    dims.iter().try_fold(element_bytes as u64, |bytes, &dim| {
        bytes.checked_mul(dim as u64)
    })
}

/// Memory the host can still give this process, where the platform tells (native only).
pub fn host_available_bytes() -> Option<u64> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let mut system = sysinfo::System::new();
        system.refresh_memory();
        Some(system.available_memory()).filter(|&bytes| bytes > 0)
    }
    #[cfg(target_arch = "wasm32")]
    None
}

/// Fails unless `bytes` (`None`: more than a 64-bit size) fit in the host's available
/// memory; `what` names what needs them.
///
/// ```
/// use moba::memory::{bytes_of, check_host};
/// assert!(check_host("a small table", bytes_of(&[1024, 1024], 4)).is_ok());
/// let error = check_host("the selection", bytes_of(&[1 << 40, 1 << 30], 4)).unwrap_err();
/// assert!(error.to_string().contains("the selection"));
/// ```
pub fn check_host(what: &str, bytes: Option<u64>) -> Result<()> {
    let Some(bytes) = bytes else {
        return Err(MobaError::Config(format!(
            "{what} need more bytes than a 64-bit size holds"
        )));
    };
    match host_available_bytes() {
        Some(available) if bytes > available => Err(MobaError::limit(
            what,
            "available host memory",
            bytes,
            available,
        )),
        _ => Ok(()),
    }
}
