//! Helpers of the tests that run the `moba` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use moba::{Shape, npy};

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

/// Writes q, k, v of `shape` (random, from `seed`) into `dir` as q.npy, k.npy and v.npy, and
/// the q of `dout_seed` as do.npy; returns q, k, v.
pub fn write_inputs(
    dir: &Path,
    shape: &Shape,
    seed: u64,
    dout_seed: u64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (q, k, v) = super::inputs(shape, seed);
    let (q_dims, kv_dims) = (shape.q_dims(), shape.kv_dims());
    npy::write(&dir.join("q.npy"), &q_dims, &q).unwrap();
    npy::write(&dir.join("k.npy"), &kv_dims, &k).unwrap();
    npy::write(&dir.join("v.npy"), &kv_dims, &v).unwrap();
    let dout = super::inputs(shape, dout_seed).0;
    npy::write(&dir.join("do.npy"), &q_dims, &dout).unwrap();
    (q, k, v)
}

/// `moba attend` of `q` with k.npy and v.npy of `dir` ([`write_inputs`]), blocks of 8 and
/// `top_k`, on `backend`, its outputs into `out`.
pub fn attend_args(dir: &Path, q: &Path, top_k: &str, backend: &str, out: &Path) -> Vec<String> {
    let path = |p: &Path| p.display().to_string();
    [
        "attend",
        "--q",
        &path(q),
        "--k",
        &path(&dir.join("k.npy")),
        "--v",
        &path(&dir.join("v.npy")),
        "--block-size",
        "8",
        "--top-k",
        top_k,
        "--backend",
        backend,
        "--out-dir",
        &path(out),
    ]
    .map(String::from)
    .into()
}

/// The arguments of a command line written as one string: its words (split at white space,
/// no quoting: paths, which may hold spaces, go separately).
pub fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(String::from).collect()
}

/// `moba bench` at `seq_lens` on a shape small enough for lavapipe (1 head, D 16, blocks of
/// 16, one run), then `extra`.
pub fn small_bench_args(seq_lens: &str, extra: &[&str]) -> Vec<String> {
    let mut args = words("bench --heads 1 --head-dim 16 --block-size 16 --runs 1 --seq-lens");
    args.push(seq_lens.to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}
