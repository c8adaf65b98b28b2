//! What the CUDA path builds, kept across runs in one per-user folder: our NVRTC modules
//! (PTX, under `nvrtc/`) and burn's (cubecl's) compiled kernels and autotune results (under
//! `cubecl/`). The first `--backend cuda` run builds them (minutes, most of it burn's
//! autotuning); later runs start in seconds. The folder is `$MOBA_CACHE_DIR`, else the
//! platform's cache folder (`~/.cache/moba` on Linux).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use crate::error::{MobaError, Result};
use crate::files::write_atomically;

/// The cache folder (see the module documentation); created, and announced on stderr the
/// first time it is.
pub fn cache_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os("MOBA_CACHE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => dirs::cache_dir()
            .ok_or_else(|| {
                MobaError::Cuda("no cache folder on this platform: set MOBA_CACHE_DIR".into())
            })?
            .join("moba"),
    };
    if !dir.is_dir() {
        std::fs::create_dir_all(&dir).map_err(|e| MobaError::io(&dir, e))?;
        eprintln!(
            "moba: the CUDA path keeps its compiled kernels and burn's autotune results in {} \
             (this first run builds them: minutes; later runs start in seconds)",
            dir.display()
        );
    }
    Ok(dir)
}

/// A compiled module stored under `dir`: found by its name, target and a hash of its
/// source, and used only where the stored source is the same text.
pub struct StoredModule {
    ptx: PathBuf,
    source: PathBuf,
}

impl StoredModule {
    pub fn new(dir: &Path, name: &str, target: &str, source: &str) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        source.hash(&mut hasher);
        let stem = format!("{name}-{target}-{:016x}", hasher.finish());
        StoredModule {
            ptx: dir.join(format!("{stem}.ptx")),
            source: dir.join(format!("{stem}.cu")),
        }
    }

    /// The stored PTX, where it was built from `source`.
    pub fn load(&self, source: &str) -> Option<String> {
        let stored = std::fs::read_to_string(&self.source).ok()?;
        (stored == source).then(|| std::fs::read_to_string(&self.ptx).ok())?
    }

    /// Keeps `ptx` built from `source` (the PTX first: a source file marks a complete pair).
    pub fn store(&self, source: &str, ptx: &str) -> Result<()> {
        if let Some(dir) = self.ptx.parent() {
            std::fs::create_dir_all(dir).map_err(|e| MobaError::io(dir, e))?;
        }
        write_atomically(&self.ptx, ptx.as_bytes())?;
        write_atomically(&self.source, source.as_bytes())
    }
}

/// Points burn's (cubecl's) kernel and autotune caches at `dir/cubecl` where the user's
/// own `cubecl.toml` (or `burn.toml`) leaves them at cubecl's defaults (no kernel cache, the
/// autotune cache in the current project's `target/`). Must run before burn-cuda's first
/// use; later calls, or a configuration burn has read already, change nothing.
#[cfg(feature = "cuda")]
pub fn configure_burn_caches(dir: &Path) {
    use burn::cubecl::config::cache::CacheConfig;
    use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
    let mut state = CubeClRuntimeConfig::storage().lock();
    if state.is_some() {
        return;
    }
    let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
    let ours = CacheConfig::File(dir.join("cubecl"));
    if config.compilation.cache.is_none() {
        config.compilation.cache = Some(ours.clone());
    }
    if matches!(config.autotune.cache, CacheConfig::Target) {
        config.autotune.cache = ours;
    }
    *state = Some(std::sync::Arc::new(config));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_module_is_found_only_for_its_own_source() {
        let dir = std::env::temp_dir().join(format!("moba-nvrtc-{}", std::process::id()));
        let stored = StoredModule::new(&dir, "gate", "sm_90a", "kernel A");
        assert_eq!(stored.load("kernel A"), None);
        stored.store("kernel A", ".version 8.0 // A").unwrap();
        assert_eq!(
            stored.load("kernel A").as_deref(),
            Some(".version 8.0 // A")
        );
        assert_eq!(stored.load("kernel B"), None);
        // Another source is another file: both are kept.
        let other = StoredModule::new(&dir, "gate", "sm_90a", "kernel B");
        other.store("kernel B", "// B").unwrap();
        assert_eq!(
            stored.load("kernel A").as_deref(),
            Some(".version 8.0 // A")
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
