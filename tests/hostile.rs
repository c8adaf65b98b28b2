//! Hostile input and interrupted work, as a careless user, a broken file or a crash brings
//! them, through the `moba` binary: every case must end in a clear error (a non-zero exit and
//! a message naming what is wrong), never a panic, an abort, a run the out-of-memory killer
//! ends, a silent NaN, or a run that claims to have finished.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::binary::{self, BACKENDS, assert_ok, moba, scratch, small_bench_args, text};
use common::inputs;
use moba::train::Checkpoints;
use moba::{Shape, npy};

/// Asserts a clean refusal: exit status 1 (an error, not a panic's 101 or a signal), no panic
/// message, and `expected` in stderr.
#[track_caller]
fn assert_refused(output: &Output, expected: &str) {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(expected),
        "wanted {expected:?} in:\n{stderr}"
    );
}

const SHAPE: Shape = Shape {
    batch: 1,
    q_heads: 2,
    kv_heads: 1,
    q_len: 40,
    kv_len: 40,
    head_dim: 8,
};

/// q, k, v and dout of [`SHAPE`] in `dir` (dout is q: seed 3 for both).
fn write_inputs(dir: &Path) {
    binary::write_inputs(dir, &SHAPE, 3, 3);
}

/// `moba [GLOBALS] attend` of the inputs in `dir`, with `q` for q, block 8 and `top_k`,
/// on `backend`, its outputs into `dir/out`.
fn attend_args(globals: &[&str], dir: &Path, q: &Path, backend: &str, top_k: &str) -> Vec<String> {
    let attend = binary::attend_args(dir, q, top_k, backend, &dir.join("out"));
    let mut args: Vec<String> = globals.iter().map(|s| s.to_string()).collect();
    args.extend(attend);
    args
}

/// `moba attend` of the inputs in `dir` (`q` replaced by `q`), top-2, on `backend`.
fn attend(dir: &Path, q: &Path, backend: &str, extra: &[&str]) -> Output {
    let mut args = attend_args(&[], dir, q, backend, "2");
    args.extend(extra.iter().map(|s| s.to_string()));
    moba(&args)
}

/// A `.npy` file of f32 with a hand-written shape and `data` after its header.
fn npy_with_shape(shape: &str, data: &[u8]) -> Vec<u8> {
    let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}\n");
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

#[test]
fn npy_files_that_lie_about_their_size_are_refused_on_every_backend() {
    let dir = scratch("npy");
    write_inputs(&dir);
    // 4611686018427387905 * 2 * 256 * 64 f32 wraps to 131072 bytes in 64-bit arithmetic.
    let overflow = dir.join("overflow.npy");
    let data = vec![0u8; 131_072];
    std::fs::write(
        &overflow,
        npy_with_shape("(4611686018427387905, 2, 256, 64)", &data),
    )
    .unwrap();
    let huge = dir.join("huge.npy");
    std::fs::write(&huge, npy_with_shape("(1, 2, 1000000000000, 8)", &data)).unwrap();
    for backend in BACKENDS {
        let output = attend(&dir, &overflow, backend, &[]);
        assert_refused(&output, "more data than this machine can address");
        let output = attend(&dir, &huge, backend, &[]);
        assert_refused(&output, "needs 64000000000000 data bytes, file has 131072");
    }
    // An endless stream is read no further than its magic.
    assert_refused(
        &attend(&dir, Path::new("/dev/zero"), "reference", &[]),
        "bad magic",
    );
}

#[test]
fn nan_and_infinity_are_refused_on_every_backend() {
    let dir = scratch("nan");
    write_inputs(&dir);
    let (mut q, ..) = inputs(&SHAPE, 3);
    q[17] = f32::NAN;
    let bad_q = dir.join("bad_q.npy");
    npy::write(&bad_q, &[1, 2, 40, 8], &q).unwrap();
    let mut dout = inputs(&SHAPE, 3).0;
    dout[5] = f32::INFINITY;
    npy::write(&dir.join("bad_do.npy"), &[1, 2, 40, 8], &dout).unwrap();
    let bad_dout = dir.join("bad_do.npy").display().to_string();
    for backend in BACKENDS {
        assert_refused(
            &attend(&dir, &bad_q, backend, &[]),
            "q holds a non-finite value (NaN) at flat index 17",
        );
        let good_q = dir.join("q.npy");
        assert_refused(
            &attend(&dir, &good_q, backend, &["--dout", &bad_dout]),
            "dout holds a non-finite value (inf) at flat index 5",
        );
    }
}

#[test]
fn a_top_k_past_memory_is_refused_before_allocating() {
    let dir = scratch("top-k");
    write_inputs(&dir);
    let q = dir.join("q.npy");
    for backend in BACKENDS {
        let output = moba(&attend_args(&[], &dir, &q, backend, "1000000000000000"));
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{backend}: {stderr}");
        assert!(!stderr.contains("panicked"), "{backend}: {stderr}");
        assert!(
            stderr.contains("host memory") || stderr.contains("max_storage_buffer_binding_size"),
            "{backend}: {stderr}"
        );
    }
}

/// `moba COMMAND` flags for a tiny run on 64-byte sequences (unless `extra` sets another
/// length) on the CPU, then `extra`.
fn tiny(command: &str, run: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        command,
        "--run",
        &run.display().to_string(),
        "--backend",
        "ndarray",
        "--preset",
        "tiny",
        "--recall-pairs",
        "1",
        "--recall-queries",
        "1",
        "--lines",
    ]
    .map(String::from)
    .into();
    if !extra.contains(&"--seq-len") {
        args.extend(["--seq-len".to_string(), "64".to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn sizes_past_memory_are_refused_before_training() {
    let dir = scratch("train-sizes");
    for (flags, expected) in [
        (
            &["--d-model", "65536"][..],
            "training this model needs at least",
        ),
        (&["--batch-size", "1000000000"][..], "--batch-size"),
        (&["--seq-len", "1000000000000"][..], "--seq-len"),
        (&["--d-model", "1000000000000"][..], "--d-model"),
    ] {
        let run = dir.join("run");
        let output = moba(&tiny("train", &run, flags));
        assert_refused(&output, expected);
        assert!(!run.exists(), "{flags:?} left {}", run.display());
    }
}

#[test]
fn bad_numbers_are_refused_not_run() {
    let dir = scratch("numbers");
    let run = dir.join("run");
    assert_refused(
        &moba(&tiny(
            "train",
            &run,
            &["--weight-decay", "NaN", "--steps", "2"],
        )),
        "weight_decay must be a finite number",
    );
    assert!(!run.exists());
    assert_ok(&moba(&tiny("train", &run, &["--steps", "1"])));
    let eval = [
        "eval",
        "--run",
        &run.display().to_string(),
        "--backend",
        "ndarray",
        "--eval-batches",
        "0",
    ];
    assert_refused(&moba(&eval), "eval batches must be at least 1");
    assert_refused(
        &moba(&["demo", "--seq-len", "64", "--runs", "0"]),
        "--runs must be at least 1",
    );
}

#[test]
fn a_failed_start_leaves_no_run_behind_and_a_corrected_one_starts() {
    let dir = scratch("failed-start");
    let run = dir.join("run");
    for (flags, expected) in [
        (&["--top-k", "0"][..], "top_k"),
        (&["--heads", "3"][..], "multiple of n_heads"),
        (&["--init-from", "/nonexistent/run"][..], "/nonexistent/run"),
    ] {
        let output = moba(&tiny("train", &run, &[flags, &["--steps", "1"]].concat()));
        assert_refused(&output, expected);
        assert!(
            !run.join("train.json").exists(),
            "{flags:?} wrote train.json"
        );
    }
    assert_ok(&moba(&tiny("train", &run, &["--steps", "1"])));
}

#[test]
fn a_failed_checkpoint_save_stops_the_run_and_says_so() {
    let dir = scratch("failed-save");
    let run = dir.join("run");
    // The record of epoch 3 cannot be written: its name is taken by a folder.
    std::fs::create_dir_all(run.join("checkpoint/optim-3.mpk")).unwrap();
    let output = moba(&tiny(
        "train",
        &run,
        &["--steps", "10", "--valid-every", "2"],
    ));
    assert_refused(&output, "stopped before its 10 steps");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("epoch 2 (step 4)"), "{stderr}");
    assert!(!run.join("model.mpk").exists() && !run.join("summary.json").exists());
}

#[test]
fn resume_falls_back_past_an_incomplete_or_corrupt_checkpoint() {
    let dir = scratch("resume");
    let run = dir.join("run");
    assert_ok(&moba(&tiny(
        "train",
        &run,
        &["--steps", "3", "--valid-every", "1"],
    )));
    assert_eq!(Checkpoints::scan(&run).newest_complete, Some(3));

    // A save killed before its checksum: epoch 3 is not complete.
    std::fs::remove_file(run.join("checkpoint/optim-3.mpk.crc32")).unwrap();
    let scan = Checkpoints::scan(&run);
    assert_eq!(scan.newest_complete, Some(2), "{scan:?}");
    assert!(scan.incomplete[0].1.contains("no checksum"), "{scan:?}");
    let resume = |run: &Path| {
        let run = run.display().to_string();
        moba(&[
            "train",
            "--run",
            &run,
            "--resume",
            "--backend",
            "ndarray",
            "--lines",
        ])
    };
    let output = resume(&run);
    assert_ok(&output);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("epoch 3 is not used"), "{stderr}");
    assert!(
        stderr.contains("from the checkpoint of epoch 2 (step 2 of 3)"),
        "{stderr}"
    );

    // A flipped bit: the record no longer matches its checksum.
    let record = run.join("checkpoint/model-3.mpk");
    let mut bytes = std::fs::read(&record).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&record, bytes).unwrap();
    let scan = Checkpoints::scan(&run);
    assert_eq!(scan.newest_complete, Some(2), "{scan:?}");
    assert!(
        scan.incomplete[0].1.contains("does not match its checksum"),
        "{scan:?}"
    );

    // No checkpoint at all: --resume says it starts over.
    let fresh = dir.join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    std::fs::copy(run.join("train.json"), fresh.join("train.json")).unwrap();
    let output = resume(&fresh);
    assert_ok(&output);
    assert!(text(&output.stderr).contains("training starts from step 0"));
}

#[cfg(unix)]
#[test]
fn sigint_stops_a_run_at_a_checkpoint_and_exits_non_zero() {
    let dir = scratch("sigint");
    let run = dir.join("run");
    let child = Command::new(env!("CARGO_BIN_EXE_moba"))
        .args(tiny(
            "train",
            &run,
            &["--steps", "4000", "--valid-every", "4"],
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !run.join("checkpoint/scheduler-1.mpk.crc32").exists() {
        assert!(
            started.elapsed().as_secs() < 300,
            "no checkpoint after 300 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let output = child.wait_with_output().unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("stopping at the next checkpoint"),
        "{stderr}"
    );
    assert!(stderr.contains("SIGINT received"), "{stderr}");
    assert!(
        stderr.contains("--resume` continues from there"),
        "{stderr}"
    );
    assert!(!run.join("model.mpk").exists());
    let newest = Checkpoints::scan(&run)
        .newest_complete
        .expect("a complete checkpoint");
    assert!(
        newest >= 2,
        "stopped at epoch {newest}, before the next checkpoint"
    );
}

#[test]
fn relative_text_paths_are_kept_absolute() {
    let dir = scratch("text");
    std::fs::write(
        dir.join("corpus.txt"),
        "the quick brown fox jumps over the lazy dog. ".repeat(200),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_moba"))
        .current_dir(&dir)
        .args(tiny(
            "train",
            Path::new("run"),
            &["--text", "corpus.txt", "--steps", "1"],
        ))
        .output()
        .unwrap();
    assert_ok(&output);
    let config = std::fs::read_to_string(dir.join("run/train.json")).unwrap();
    let absolute = dir.join("corpus.txt").display().to_string();
    assert!(config.contains(&absolute), "{config}");
    // From another directory, eval finds the text.
    let eval = moba(&[
        "eval",
        "--run",
        &dir.join("run").display().to_string(),
        "--backend",
        "ndarray",
        "--eval-batches",
        "1",
    ]);
    assert_ok(&eval);
}

#[test]
fn attend_replaces_its_outputs_whole_and_drops_stale_gradients() {
    let dir = scratch("outputs");
    write_inputs(&dir);
    let q = dir.join("q.npy");
    let dout = dir.join("do.npy").display().to_string();
    assert_ok(&attend(&dir, &q, "reference", &["--dout", &dout]));
    assert!(dir.join("out/dq.npy").exists());
    assert_ok(&attend(&dir, &q, "reference", &[]));
    for name in ["dq.npy", "dk.npy", "dv.npy"] {
        assert!(
            !dir.join("out").join(name).exists(),
            "{name} survived a run without --dout"
        );
    }
    let o = npy::read::<f32>(&dir.join("out/o.npy")).unwrap();
    assert_eq!(o.shape, vec![1, 2, 40, 8]);
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("out"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn bench_records_start_a_line_of_their_own() {
    let dir = scratch("bench-newline");
    let out = dir.join("bench.jsonl");
    let args = small_bench_args("64", &["--no-dense", "--out", &out.display().to_string()]);
    assert_ok(&moba(&args));
    // Cut the trailing newline, as an editor or a truncated copy might.
    let first = std::fs::read_to_string(&out).unwrap();
    std::fs::write(&out, first.trim_end()).unwrap();
    assert_ok(&moba(&args));
    let report = moba(&[
        "bench",
        "report",
        &out.display().to_string(),
        "--plots",
        &dir.display().to_string(),
    ]);
    assert_ok(&report);
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 2);
}

#[test]
fn generate_checks_the_prompt_first_and_says_when_the_context_is_full() {
    let dir = scratch("generate");
    let run = dir.join("run");
    assert_ok(&moba(&tiny("train", &run, &["--steps", "1"])));
    let generate = |prompt: &str, max_new: &str| {
        moba(&[
            "generate",
            "--run",
            &run.display().to_string(),
            "--backend",
            "ndarray",
            "--prompt",
            prompt,
            "--max-new",
            max_new,
        ])
    };
    let long = "x".repeat(300);
    let rejected = generate(&long, "4");
    assert_refused(&rejected, "the prompt has 300 bytes");
    assert!(
        rejected.stdout.is_empty(),
        "echoed {:?}",
        text(&rejected.stdout)
    );
    // The tiny preset's context is 256 bytes: 10 of prompt leave room for 247 more.
    let full = generate("0123456789", "500");
    assert_ok(&full);
    assert!(
        text(&full.stderr).contains("stopped after 247 of --max-new 500 bytes"),
        "{}",
        text(&full.stderr)
    );
}

/// Mesa's OpenGL adapter is what CI (Linux) has beside lavapipe.
#[cfg(target_os = "linux")]
#[test]
fn burn_wgpu_runs_on_the_adapter_asked_for() {
    let dir = scratch("burn-adapter");
    write_inputs(&dir);
    let q = dir.join("q.npy");
    let on_gl = moba(&attend_args(&["--api", "gl"], &dir, &q, "burn-wgpu", "2"));
    assert_ok(&on_gl);
    assert!(
        text(&on_gl.stderr).contains("(Gl)"),
        "{}",
        text(&on_gl.stderr)
    );
    let globals = ["--adapter", "no such gpu"];
    let nowhere = moba(&attend_args(&globals, &dir, &q, "burn-wgpu", "2"));
    assert_refused(&nowhere, "whose name contains 'no such gpu' (found: [");
}

#[test]
fn an_adapter_that_is_not_there_is_named() {
    // No DX12 on Linux, Metal elsewhere: either way no adapter of that API.
    let api = if cfg!(target_os = "macos") {
        "dx12"
    } else {
        "metal"
    };
    let output = moba(&["--api", api, "demo", "--seq-len", "64"]);
    assert_refused(&output, "no GPU adapter found");
}

/// `moba ARGS` with writes past `kib` KiB failing as they do on a full disk (EFBIG from the
/// file-size limit, its signal ignored): what a run leaves behind when the disk fills.
#[cfg(unix)]
fn moba_on_a_full_disk(kib: u64, args: &[String]) -> Output {
    let script = format!("trap '' XFSZ; ulimit -f {kib}; exec \"$0\" \"$@\"");
    Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_moba"))
        .args(args)
        .output()
        .expect("bash runs")
}

#[cfg(unix)]
#[test]
fn a_full_disk_leaves_earlier_outputs_whole_and_no_empty_model() {
    let dir = scratch("full-disk");
    write_inputs(&dir);
    let q = dir.join("q.npy");
    assert_ok(&attend(&dir, &q, "reference", &[]));
    let before = std::fs::read(dir.join("out/o.npy")).unwrap();
    // o.npy takes 2.6 KiB: past a 1 KiB limit its write fails.
    let (mut other_q, ..) = inputs(&SHAPE, 4);
    other_q[0] += 1.0;
    npy::write(&dir.join("q2.npy"), &[1, 2, 40, 8], &other_q).unwrap();
    let full = moba_on_a_full_disk(
        1,
        &attend_args(&[], &dir, &dir.join("q2.npy"), "reference", "2"),
    );
    assert_refused(&full, "File too large");
    assert_eq!(
        std::fs::read(dir.join("out/o.npy")).unwrap(),
        before,
        "o.npy changed"
    );
    let names: Vec<String> = std::fs::read_dir(dir.join("out"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");

    // A run whose checkpoints do not fit (the tiny model's records take about 140 KiB).
    let run = dir.join("run");
    let train = tiny("train", &run, &["--steps", "4", "--valid-every", "2"]);
    let full = moba_on_a_full_disk(64, &train);
    assert_refused(&full, "stopped before its 4 steps");
    assert!(
        !run.join("model.mpk").exists(),
        "a final model on a full disk"
    );
    assert_eq!(Checkpoints::scan(&run).newest_complete, None);
}
