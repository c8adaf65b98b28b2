//! Files written whole or not at all. Each goes to a temporary sibling, is synced, and is
//! renamed over its target, so a crash, a kill or a full disk leaves either the old file or
//! the new one, never a truncated mix.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{MobaError, Result};

/// Writes `bytes` to `path` atomically (see the module documentation).
///
/// ```
/// let path = std::env::temp_dir().join("moba-doc-atomic.txt");
/// moba::files::write_atomically(&path, b"whole")?;
/// assert_eq!(std::fs::read(&path).unwrap(), b"whole");
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), moba::MobaError>(())
/// ```
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_all_atomically(&[(path.to_path_buf(), bytes)])
}

/// Writes every `(path, bytes)` pair: all temporary files first, then the renames, so that a
/// failure while writing (a full disk) leaves every target as it was.
pub fn write_all_atomically(files: &[(PathBuf, &[u8])]) -> Result<()> {
    let mut written: Vec<(PathBuf, &Path)> = Vec::new();
    for (path, bytes) in files {
        let temporary = temporary_path(path);
        if let Err(error) = write_synced(&temporary, bytes) {
            std::fs::remove_file(&temporary).ok();
            written
                .iter()
                .for_each(|(t, _)| drop(std::fs::remove_file(t)));
            return Err(error);
        }
        written.push((temporary, path));
    }
    for (temporary, path) in &written {
        std::fs::rename(temporary, path).map_err(|e| MobaError::io(path, e))?;
    }
    if let Some(dir) = files.first().and_then(|(path, _)| path.parent()) {
        sync_dir(dir);
    }
    Ok(())
}

/// `DIR/.NAME.tmp`: beside the target (a rename within one file system), hidden.
pub fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = std::fs::File::create(path).map_err(|e| MobaError::io(path, e))?;
    file.write_all(bytes).map_err(|e| MobaError::io(path, e))?;
    file.sync_all().map_err(|e| MobaError::io(path, e))
}

/// Makes the renames in `dir` durable where the platform allows (Unix); elsewhere a no-op.
fn sync_dir(dir: &Path) {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    if cfg!(unix)
        && let Ok(handle) = std::fs::File::open(dir)
    {
        handle.sync_all().ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_every_target_as_it_was() {
        let dir = std::env::temp_dir().join(format!("moba-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (first, second) = (dir.join("a.txt"), dir.join("b.txt"));
        std::fs::write(&first, b"old a").unwrap();
        // The second target's temporary name is a folder: its write fails.
        std::fs::create_dir_all(temporary_path(&second)).unwrap();
        let files = [
            (first.clone(), &b"new a"[..]),
            (second.clone(), &b"new b"[..]),
        ];
        assert!(write_all_atomically(&files).is_err());
        assert_eq!(std::fs::read(&first).unwrap(), b"old a");
        assert!(!second.exists() && !temporary_path(&first).exists());
        std::fs::remove_dir(temporary_path(&second)).unwrap();
        write_all_atomically(&files).unwrap();
        assert_eq!(std::fs::read(&second).unwrap(), b"new b");
        std::fs::remove_dir_all(&dir).ok();
    }
}
