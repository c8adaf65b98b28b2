//! `MOBA_NSA_PROFILE=1`: where an NSA call's time goes, host and device together. Each
//! mark waits for the device, then prints the wall time since the previous mark on standard
//! error (`moba nsa: <what>: <ms> ms`), so a line holds its stage's GPU work and the host's
//! around it (burn's op dispatch, autodiff's bookkeeping). Off, a mark costs one check.

use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use burn::tensor::backend::Backend;

/// Marks the end of stage `what` on `device` (see the module's comment).
pub(crate) fn mark<B: Backend>(device: &B::Device, what: &str) {
    static ON: OnceLock<bool> = OnceLock::new();
    let on = ON.get_or_init(|| std::env::var_os("MOBA_NSA_PROFILE").is_some_and(|v| v != "0"));
    if !on {
        return;
    }
    static LAST: Mutex<Option<Instant>> = Mutex::new(None);
    let _ = B::sync(device);
    let now = Instant::now();
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(previous) = *last {
        let ms = now.duration_since(previous).as_secs_f64() * 1e3;
        eprintln!("moba nsa: {what}: {ms:.3} ms");
    }
    *last = Some(now);
}
