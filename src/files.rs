//! Files written whole or not at all. Each goes to a temporary sibling, is synced, and is
//! renamed over its target, so a crash, a kill or a full disk leaves either the old file or
//! the new one, never a truncated mix.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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
/// failure while writing (a full disk) leaves every target as it was. (A rename that fails
/// midway, which a full disk does not cause, can leave some targets new and some old.)
pub fn write_all_atomically(files: &[(PathBuf, &[u8])]) -> Result<()> {
    let mut written: Vec<(PathBuf, &Path)> = Vec::new();
    let clean_up = |written: &[(PathBuf, &Path)]| {
        written
            .iter()
            .for_each(|(t, _)| drop(std::fs::remove_file(t)));
    };
    for (path, bytes) in files {
        let temporary = temporary_path(path);
        if let Err(error) = write_synced(&temporary, bytes) {
            std::fs::remove_file(&temporary).ok();
            clean_up(&written);
            return Err(error);
        }
        written.push((temporary, path));
    }
    for (index, (temporary, path)) in written.iter().enumerate() {
        if let Err(error) = std::fs::rename(temporary, path) {
            clean_up(&written[index..]);
            return Err(MobaError::io(path, error));
        }
    }
    if let Some(dir) = files.first().and_then(|(path, _)| path.parent()) {
        sync_dir(dir);
    }
    Ok(())
}

/// `DIR/.NAME.PID-N.tmp`: beside the target (a rename within one file system), hidden, and
/// unique to this write, so that two writers of one target never share a temporary file.
pub fn temporary_path(path: &Path) -> PathBuf {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let write = WRITES.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}-{write}.tmp", std::process::id()))
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
        let first = dir.join("a.txt");
        std::fs::write(&first, b"old a").unwrap();
        // The second target's folder does not exist: its temporary file cannot be written.
        let second = dir.join("missing").join("b.txt");
        let files = [
            (first.clone(), &b"new a"[..]),
            (second.clone(), &b"new b"[..]),
        ];
        assert!(write_all_atomically(&files).is_err());
        assert_eq!(std::fs::read(&first).unwrap(), b"old a");
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["a.txt"], "temporary files left behind");
        std::fs::create_dir_all(dir.join("missing")).unwrap();
        write_all_atomically(&files).unwrap();
        assert_eq!(std::fs::read(&second).unwrap(), b"new b");
        assert_eq!(std::fs::read(&first).unwrap(), b"new a");
        std::fs::remove_dir_all(&dir).ok();
    }
}
