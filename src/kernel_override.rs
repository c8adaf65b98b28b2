//! Development switch shared by the WGSL and CUDA paths: a folder named by an environment
//! variable whose files replace the embedded kernel sources of the same name when a kernel
//! is compiled, so an edited kernel runs in an already built binary (carry the folder to
//! the lent GPU instead of a new build).

use std::borrow::Cow;
use std::sync::Mutex;

/// `file_name`'s text from the folder in `variable` where it is set and holds that file,
/// else `embedded`. Never silent: the first replaced file of each variable says so on
/// stderr.
pub(crate) fn source(variable: &str, file_name: &str, embedded: &'static str) -> Cow<'static, str> {
    let Some(dir) = std::env::var_os(variable) else {
        return Cow::Borrowed(embedded);
    };
    let path = std::path::Path::new(&dir).join(file_name);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            static SAID: Mutex<Vec<String>> = Mutex::new(Vec::new());
            let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
            if !said.iter().any(|v| v == variable) {
                said.push(variable.to_string());
                eprintln!(
                    "{variable}={}: the kernel files there replace the built-in ones",
                    dir.to_string_lossy()
                );
            }
            Cow::Owned(text)
        }
        Err(_) => Cow::Borrowed(embedded),
    }
}
