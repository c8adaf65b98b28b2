//! The `moba` binary end to end: `attend` with .npy files, `demo` at a tiny size, `info`,
//! `train` on a recall task of explicit counts.

mod common;

use std::path::Path;
use std::process::Output;

use common::binary::{BACKENDS, assert_ok, moba, scratch, text};
use common::inputs;
use moba::{MobaConfig, Shape, npy, reference};

/// Writes q, k, v (and dout) for a shape into `dir`.
fn write_inputs(dir: &Path, shape: &Shape) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (q, k, v) = inputs(shape, 31);
    let (q_dims, kv_dims) = (shape.q_dims(), shape.kv_dims());
    npy::write(&dir.join("q.npy"), &q_dims, &q).unwrap();
    npy::write(&dir.join("k.npy"), &kv_dims, &k).unwrap();
    npy::write(&dir.join("v.npy"), &kv_dims, &v).unwrap();
    npy::write(&dir.join("do.npy"), &q_dims, &inputs(shape, 32).0).unwrap();
    (q, k, v)
}

fn attend_args<'a>(dir: &'a str, backend: &'a str, out: &'a str) -> Vec<String> {
    [
        "attend",
        "--q",
        &format!("{dir}/q.npy"),
        "--k",
        &format!("{dir}/k.npy"),
        "--v",
        &format!("{dir}/v.npy"),
        "--block-size",
        "8",
        "--top-k",
        "2",
        "--backend",
        backend,
        "--out-dir",
        out,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Asserts that a run failed with `expected` in its stderr.
#[track_caller]
fn assert_fails(output: &Output, expected: &str) {
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains(expected), "{stderr}");
}

#[test]
fn attend_writes_the_same_answer_from_every_backend() {
    let dir = scratch("attend");
    let shape = Shape {
        kv_heads: 1,
        ..Shape::prefill(1, 2, 37, 16)
    };
    let (q, k, v) = write_inputs(&dir, &shape);
    let d = dir.to_str().unwrap();
    for backend in BACKENDS {
        assert_ok(&moba(&attend_args(d, backend, &format!("{d}/{backend}"))));
    }
    let read = |backend: &str, name: &str| npy::read::<f32>(&dir.join(backend).join(name)).unwrap();
    let want = reference::forward(&q, &k, &v, &shape, &MobaConfig::new(8, 2)).unwrap();
    for backend in BACKENDS {
        let o = read(backend, "o.npy");
        assert_eq!(o.shape, vec![1, 2, 37, 16]);
        assert!(
            reference::max_abs_error(&o.data, &want.o) < 1e-5,
            "{backend}"
        );
        let lse = read(backend, "lse.npy");
        assert_eq!(lse.shape, vec![1, 2, 37]);
        assert!(
            reference::max_abs_error(&lse.data, &want.lse) < 1e-5,
            "{backend}"
        );
        let selection = npy::read::<i32>(&dir.join(backend).join("selection.npy")).unwrap();
        assert_eq!(selection.shape, vec![1, 2, 37, 2]);
        assert_eq!(selection.data, want.selection, "{backend}");
    }
}

#[test]
fn attend_with_dout_writes_gradients_from_every_backend() {
    let dir = scratch("dout");
    let shape = Shape {
        kv_heads: 1,
        ..Shape::prefill(1, 2, 20, 8)
    };
    let (q, k, v) = write_inputs(&dir, &shape);
    let d = dir.to_str().unwrap();
    let dout = npy::read::<f32>(&dir.join("do.npy")).unwrap().data;
    let grads = reference::backward(&q, &k, &v, &dout, &shape, &MobaConfig::new(8, 2)).unwrap();
    for backend in BACKENDS {
        let out = format!("{d}/{backend}");
        let mut args = attend_args(d, backend, &out);
        args.extend(["--dout".to_string(), format!("{d}/do.npy")]);
        assert_ok(&moba(&args));
        for (name, shape, want) in [
            ("dq.npy", vec![1, 2, 20, 8], &grads.dq),
            ("dk.npy", vec![1, 1, 20, 8], &grads.dk),
            ("dv.npy", vec![1, 1, 20, 8], &grads.dv),
        ] {
            let got = npy::read::<f32>(&dir.join(backend).join(name)).unwrap();
            assert_eq!(got.shape, shape, "{backend} {name}");
            let error = reference::max_abs_error(&got.data, want);
            assert!(error < 1e-5, "{backend} {name}: error {error:e}");
        }
    }
}

/// Without the `cuda` feature (as CI builds), or without a driver (as CI runs), the CUDA
/// backend says what is missing instead of crashing; a 16-bit dtype needs that backend.
#[test]
fn attend_on_cuda_says_what_is_missing() {
    let dir = scratch("cuda");
    let d = dir.to_str().unwrap();
    write_inputs(&dir, &Shape::prefill(1, 1, 12, 16));
    let expected = match cfg!(feature = "cuda") {
        true => "no CUDA driver found",
        false => "rebuild with `cargo build --release --features cuda`",
    };
    assert_fails(&moba(&attend_args(d, "cuda", d)), expected);
    let mut args = attend_args(d, "wgpu", d);
    args.extend(["--dtype".to_string(), "bf16".to_string()]);
    let output = moba(&args);
    assert!(text(&output.stderr).contains("needs --backend cuda"));
}

#[test]
fn attend_reports_bad_input_clearly() {
    let dir = scratch("bad");
    let d = dir.to_str().unwrap();
    write_inputs(&dir, &Shape::prefill(1, 1, 12, 4));
    // dout with another shape than q.
    npy::write(&dir.join("bad_do.npy"), &[1, 1, 11, 4], &[0.5f32; 44]).unwrap();
    let mut args = attend_args(d, "wgpu", d);
    args.extend(["--dout".to_string(), format!("{d}/bad_do.npy")]);
    assert_fails(&moba(&args), "dout has shape");
    // v with another shape than k.
    npy::write(&dir.join("v.npy"), &[1, 1, 11, 4], &[0.5f32; 44]).unwrap();
    let output = moba(&attend_args(d, "reference", d));
    assert!(text(&output.stderr).contains("v has shape"), "{output:?}");
    // A missing file names its path.
    std::fs::remove_file(dir.join("q.npy")).unwrap();
    let output = moba(&attend_args(d, "reference", d));
    assert!(text(&output.stderr).contains("q.npy"), "{output:?}");
}

#[test]
fn demo_checks_itself_against_the_reference() {
    let output = moba(&[
        "demo",
        "--seq-len",
        "200",
        "--heads",
        "2",
        "--head-dim",
        "16",
        "--block-size",
        "16",
        "--runs",
        "1",
    ]);
    assert_ok(&output);
    let stdout = text(&output.stdout);
    for line in [
        "adapter :",
        "density :",
        "moba    :",
        "dense   :",
        "speedup :",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
    let check = stdout
        .lines()
        .find(|l| l.starts_with("check"))
        .expect("a check line");
    assert!(check.starts_with("check   : PASS: "), "{check}");
    let error: f64 = check
        .split("max |o err| ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(error < 1e-5, "{check}");
}

/// Mesa's OpenGL adapter is what CI (Linux) has beside lavapipe.
#[cfg(target_os = "linux")]
#[test]
fn demo_on_the_opengl_adapter_passes_its_check() {
    // The case: top-3 on llvmpipe's GL gave duplicate blocks (Mesa miscompiled the
    // gate's in-place sort) and an error of 0.48 with exit 0.
    let output = moba(&[
        "--api",
        "gl",
        "demo",
        "--seq-len",
        "512",
        "--heads",
        "2",
        "--head-dim",
        "64",
        "--block-size",
        "64",
        "--runs",
        "1",
        "--no-dense",
    ]);
    assert_ok(&output);
    let stdout = text(&output.stdout);
    assert!(stdout.contains("(Gl, "), "{stdout}");
    assert!(stdout.contains("check   : PASS: "), "{stdout}");
}

#[test]
fn info_lists_an_adapter() {
    let output = moba(&["info"]);
    assert_ok(&output);
    assert!(text(&output.stdout).contains("limits:"));
}

#[test]
fn bench_writes_records_and_report_merges_them() {
    let dir = scratch("bench");
    let out = dir.join("run.jsonl");
    let output = moba(&[
        "bench",
        "--seq-lens",
        "64,96",
        "--heads",
        "1",
        "--head-dim",
        "16",
        "--block-size",
        "16",
        "--runs",
        "1",
        "--burn-baseline",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_ok(&output);
    let lines: Vec<moba::bench::Record> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(
        lines.iter().map(|r| r.seq_len).collect::<Vec<_>>(),
        vec![64, 96]
    );
    for record in &lines {
        assert!(
            record.moba_ms > 0.0 && record.density > 0.0 && record.density <= 1.0,
            "{record:?}"
        );
        assert!(record.o_error < 1e-5, "{record:?}");
        assert!(!record.adapter.is_empty() && record.dense_ms.is_some());
        assert!(record.burn_ms.is_some_and(|ms| ms > 0.0), "{record:?}");
    }
    // Two files (here the same one twice) merge into one table of four rows.
    let report = moba(&[
        "bench",
        "report",
        out.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    let table = text(&report.stdout);
    assert_eq!(
        table
            .lines()
            .filter(|l| l.contains(&lines[0].adapter))
            .count(),
        4,
        "{table}"
    );
    // PyTorch's peers (peers_torch.py's output, progress lines and all) join the report:
    // their table matches the 64-token record, and they are drawn on the time plot.
    let peers = dir.join("peers.log");
    std::fs::write(
        &peers,
        "check S=64: ok\n\
         {\"S\": 64, \"bs\": 16, \"topk\": 3, \"H\": 1, \"D\": 16, \"sdpa_ms\": 0.5, \"flex_total_ms\": 2.0, \"density\": 0.6}\n",
    )
    .unwrap();
    let plots = dir.join("plots");
    let report = moba(&[
        "bench",
        "report",
        out.to_str().unwrap(),
        "--peers",
        peers.to_str().unwrap(),
        "--plots",
        plots.to_str().unwrap(),
    ]);
    assert_ok(&report);
    let table = text(&report.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with("| 64 | 1 | 16 | 16 | 3 | 0.600 | 0.50 | 2.00 |"))
        .unwrap_or_else(|| panic!("no peer row: {table}"));
    let expected = format!("| {:.2}x |", 0.5 / lines[0].moba_ms);
    assert!(
        row.contains(&lines[0].adapter) && row.contains(&expected),
        "{row}"
    );
    let svg = std::fs::read_to_string(plots.join("time_vs_s.svg")).unwrap();
    assert!(
        svg.contains("PyTorch SDPA (dense) H1 D16"),
        "no peer line in the plot"
    );

    // A line that is not a record names its file and line.
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"seq_len\": 1}\n").unwrap();
    let report = moba(&["bench", "report", bad.to_str().unwrap()]);
    assert_fails(&report, "bad.jsonl:1");
}

/// `moba COMMAND` flags for one step of the tiny model on 64-byte sequences, on the CPU.
fn one_tiny_step(command: &str) -> Vec<String> {
    let flags = [
        "--backend",
        "ndarray",
        "--preset",
        "tiny",
        "--seq-len",
        "64",
    ];
    let steps = ["--steps", "1", "--batch-size", "1"];
    std::iter::once(command)
        .chain(flags)
        .chain(steps)
        .map(String::from)
        .collect()
}

#[test]
fn train_takes_explicit_recall_counts_where_the_defaults_do_not_fit() {
    // At 64 bytes the default counts (4 records) need more slots than there are; one record
    // and one query fit and must be accepted.
    let dir = scratch("train-recall-counts");
    let run = dir.join("run").display().to_string();
    let mut args = one_tiny_step("train");
    args.extend(["--run".to_string(), run.clone()]);
    assert_fails(&moba(&args), "slots");
    args.extend(["--recall-pairs", "1", "--recall-queries", "1"].map(String::from));
    assert_ok(&moba(&args));
    let summary = std::fs::read_to_string(dir.join("run").join("train.json")).unwrap();
    assert!(summary.contains("\"pairs\": 1"), "{summary}");
}

#[test]
fn compare_continues_each_arm_from_the_same_arm_of_an_earlier_comparison() {
    let dir = scratch("compare-continue");
    let (first, second) = (dir.join("first"), dir.join("second"));
    let compare = |out: &Path, extra: &[&str]| -> Vec<String> {
        let mut args = one_tiny_step("compare");
        let counts = [
            "--recall-pairs",
            "1",
            "--recall-queries",
            "1",
            "--eval-batches",
            "1",
        ];
        args.extend(counts.map(String::from));
        args.extend(["--out".to_string(), out.display().to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    assert_ok(&moba(&compare(&first, &[])));
    let earlier = first.display().to_string();
    assert_ok(&moba(&compare(&second, &["--continue-from", &earlier])));
    for arm in ["moba", "full"] {
        let config = std::fs::read_to_string(second.join(arm).join("train.json")).unwrap();
        let from = first.join(arm).display().to_string();
        assert!(
            config.contains(&format!("\"init_from\": \"{from}\"")),
            "{config}"
        );
    }

    // With --init-from it is refused (one start for every arm, or one per arm).
    let both = moba(&compare(
        &dir.join("both"),
        &["--continue-from", &earlier, "--init-from", &earlier],
    ));
    assert_fails(&both, "cannot be used with");
    // An earlier folder without the arm names the file it looked for.
    let missing = moba(&compare(
        &dir.join("missing"),
        &["--continue-from", &dir.join("absent").display().to_string()],
    ));
    assert_fails(&missing, "model.mpk");
}
