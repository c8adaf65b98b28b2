//! Helpers of the tests that run the `moba` binary.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Every backend that `moba attend` offers.
pub const BACKENDS: [&str; 4] = ["reference", "wgpu", "burn-wgpu", "burn-ndarray"];

/// Runs the `moba` binary with `args`.
pub fn moba<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moba"))
        .args(args)
        .output()
        .expect("the moba binary runs")
}

/// A process's stdout or stderr as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that a run of the binary succeeded, showing its stdout and stderr if not.
#[track_caller]
pub fn assert_ok(output: &Output) {
    assert!(
        output.status.success(),
        "{}\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// A fresh folder under the system temp dir for one test, named after the test binary
/// (`CARGO_CRATE_NAME`) so that binaries running at once do not share it.
pub fn scratch(name: &str) -> PathBuf {
    let binary = env!("CARGO_CRATE_NAME");
    let dir = std::env::temp_dir().join(format!("moba-{binary}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
