//! The `moba` binary end to end: `attend` with .npy files, `demo` at a tiny size, `info`,
//! `train` on a recall task of explicit counts.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::binary::{self, BACKENDS, assert_ok, moba, scratch, small_bench_args, text, words};
use moba::{MobaConfig, NsaConfig, Shape, npy, reference};

/// Writes q, k, v (and dout) for a shape into `dir`.
fn write_inputs(dir: &Path, shape: &Shape) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    binary::write_inputs(dir, shape, 31, 32)
}

/// `moba attend` of the inputs in `dir`, top-2, on `backend`, its outputs into `out`.
fn attend_args(dir: &Path, backend: &str, out: &Path) -> Vec<String> {
    binary::attend_args(dir, &dir.join("q.npy"), "2", backend, out)
}

/// A folder for test `name` with the inputs of a problem whose 2 query heads share 1 k/v
/// head: the folder, the shape, and q, k, v.
fn gqa_problem(name: &str, len: usize, head_dim: usize) -> (PathBuf, Shape, [Vec<f32>; 3]) {
    let dir = scratch(name);
    let shape = Shape {
        kv_heads: 1,
        ..Shape::prefill(1, 2, len, head_dim)
    };
    let (q, k, v) = write_inputs(&dir, &shape);
    (dir, shape, [q, k, v])
}

/// Asserts that `moba attend` wrote `out/name` with `dims`, within 1e-5 of `want`.
#[track_caller]
fn assert_written(out: &Path, name: &str, dims: &[usize], want: &[f64]) {
    let path = out.join(name);
    let got = npy::read::<f32>(&path).unwrap();
    assert_eq!(got.shape, dims, "{}", path.display());
    let error = reference::max_abs_error(&got.data, want);
    assert!(error < 1e-5, "{}: error {error:e}", path.display());
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
    let (dir, shape, [q, k, v]) = gqa_problem("attend", 37, 16);
    let want = reference::forward(&q, &k, &v, &shape, &MobaConfig::new(8, 2)).unwrap();
    for backend in BACKENDS {
        let out = dir.join(backend);
        assert_ok(&moba(&attend_args(&dir, backend, &out)));
        assert_written(&out, "o.npy", &[1, 2, 37, 16], &want.o);
        assert_written(&out, "lse.npy", &[1, 2, 37], &want.lse);
        let selection = npy::read::<i32>(&out.join("selection.npy")).unwrap();
        assert_eq!(selection.shape, vec![1, 2, 37, 2]);
        assert_eq!(selection.data, want.selection, "{backend}");
    }
}

#[test]
fn attend_with_dout_writes_gradients_from_every_backend() {
    let (dir, shape, [q, k, v]) = gqa_problem("dout", 20, 8);
    let dout_path = dir.join("do.npy");
    let dout = npy::read::<f32>(&dout_path).unwrap().data;
    let grads = reference::backward(&q, &k, &v, &dout, &shape, &MobaConfig::new(8, 2)).unwrap();
    for backend in BACKENDS {
        let out = dir.join(backend);
        let mut args = attend_args(&dir, backend, &out);
        args.extend(["--dout".to_string(), dout_path.display().to_string()]);
        assert_ok(&moba(&args));
        assert_written(&out, "dq.npy", &[1, 2, 20, 8], &grads.dq);
        assert_written(&out, "dk.npy", &[1, 1, 20, 8], &grads.dk);
        assert_written(&out, "dv.npy", &[1, 1, 20, 8], &grads.dv);
    }
}

#[test]
fn attend_with_cu_seqlens_runs_each_packed_sequence_alone_on_every_backend() {
    let (dir, shape, [q, k, v]) = gqa_problem("varlen", 37, 8);
    let dout_path = dir.join("do.npy");
    let dout = npy::read::<f32>(&dout_path).unwrap().data;
    let cu = [0, 5, 20, 37];
    let config = MobaConfig::new(8, 2);
    let want = reference::varlen_forward(&q, &k, &v, &shape, &cu, &config).unwrap();
    let grads = reference::varlen_backward(&q, &k, &v, &dout, &shape, &cu, &config).unwrap();
    for backend in BACKENDS {
        let out = dir.join(backend);
        let mut args = attend_args(&dir, backend, &out);
        args.extend(
            [
                "--dout",
                &dout_path.display().to_string(),
                "--cu-seqlens",
                "0,5,20,37",
            ]
            .map(String::from),
        );
        assert_ok(&moba(&args));
        assert_written(&out, "o.npy", &[1, 2, 37, 8], &want.o);
        assert_written(&out, "lse.npy", &[1, 2, 37], &want.lse);
        assert_written(&out, "dq.npy", &[1, 2, 37, 8], &grads.dq);
        assert_written(&out, "dk.npy", &[1, 1, 37, 8], &grads.dk);
        assert_written(&out, "dv.npy", &[1, 1, 37, 8], &grads.dv);
        let selection = npy::read::<i32>(&out.join("selection.npy")).unwrap();
        assert_eq!(selection.data, want.selection, "{backend}");
    }
    let mut args = attend_args(&dir, "reference", &dir.join("bad"));
    args.extend(["--cu-seqlens", "0,5,30"].map(String::from));
    assert_fails(&moba(&args), "cu_seqlens covers 30 tokens; q has 37");
}

/// Without the `cuda` feature (as CI builds), or without a driver (as CI runs), the CUDA
/// backend says what is missing instead of crashing; a 16-bit dtype needs that backend.
#[test]
fn attend_on_cuda_says_what_is_missing() {
    let dir = scratch("cuda");
    write_inputs(&dir, &Shape::prefill(1, 1, 12, 16));
    let expected = match cfg!(feature = "cuda") {
        true => "no CUDA driver found",
        false => "rebuild with `cargo build --release --features cuda`",
    };
    assert_fails(&moba(&attend_args(&dir, "cuda", &dir)), expected);
    let mut args = attend_args(&dir, "wgpu", &dir);
    args.extend(["--dtype".to_string(), "bf16".to_string()]);
    let output = moba(&args);
    assert!(text(&output.stderr).contains("needs --backend cuda"));
}

#[test]
fn attend_reports_bad_input_clearly() {
    let dir = scratch("bad");
    write_inputs(&dir, &Shape::prefill(1, 1, 12, 4));
    // dout with another shape than q.
    let bad_dout = dir.join("bad_do.npy");
    npy::write(&bad_dout, &[1, 1, 11, 4], &[0.5f32; 44]).unwrap();
    let mut args = attend_args(&dir, "wgpu", &dir);
    args.extend(["--dout".to_string(), bad_dout.display().to_string()]);
    assert_fails(&moba(&args), "dout has shape");
    // v with another shape than k.
    npy::write(&dir.join("v.npy"), &[1, 1, 11, 4], &[0.5f32; 44]).unwrap();
    let output = moba(&attend_args(&dir, "reference", &dir));
    assert!(text(&output.stderr).contains("v has shape"), "{output:?}");
    // A missing file names its path.
    std::fs::remove_file(dir.join("q.npy")).unwrap();
    let output = moba(&attend_args(&dir, "reference", &dir));
    assert!(text(&output.stderr).contains("q.npy"), "{output:?}");
}

/// NSA's config in the tests: overlapping compressed blocks (l = 4, d = 2), selection blocks
/// of 4 keys, top-4 (one block beyond the three forced ones), a window of 5.
const NSA: NsaConfig = NsaConfig {
    compress_block: 4,
    stride: 2,
    select_block: 4,
    top_n: 4,
    window: 5,
    scale: None,
};

/// [`gqa_problem`] of 20 tokens, D 8, with NSA's gates (in (0, 1)) as g.npy: the folder, the
/// shape, and q, k, v, gates.
fn nsa_problem(name: &str) -> (PathBuf, Shape, [Vec<f32>; 4]) {
    let (dir, shape, [q, k, v]) = gqa_problem(name, 20, 8);
    let gate_shape = Shape {
        head_dim: 3,
        ..shape
    };
    let gates: Vec<f32> = common::inputs(&gate_shape, 41)
        .0
        .iter()
        .map(|x| 1.0 / (1.0 + (-x).exp()))
        .collect();
    npy::write(&dir.join("g.npy"), &gate_shape.q_dims(), &gates).unwrap();
    (dir, shape, [q, k, v, gates])
}

/// `moba attend --attention nsa` of [`nsa_problem`]'s inputs with [`NSA`], on `backend`,
/// its outputs into `out`.
fn nsa_args(dir: &Path, backend: &str, out: &Path) -> Vec<String> {
    let path = |name: &str| dir.join(name).display().to_string();
    let mut args = words(
        "attend --attention nsa --compress-block 4 --stride 2 --select-block 4 --top-n 4 \
         --window 5 --backend",
    );
    args.push(backend.to_string());
    for (flag, value) in [
        ("--q", path("q.npy")),
        ("--k", path("k.npy")),
        ("--v", path("v.npy")),
        ("--gates", path("g.npy")),
        ("--out-dir", out.display().to_string()),
    ] {
        args.extend([flag.to_string(), value]);
    }
    args
}

/// Asserts that `out/name` is a `.npy` of `T` (its header's dtype) with `dims` and exactly
/// `want`.
#[track_caller]
fn assert_npy<T: npy::Element + PartialEq + std::fmt::Debug>(
    out: &Path,
    name: &str,
    dims: &[usize],
    want: &[T],
) {
    let path = out.join(name);
    let header = std::fs::read(&path).unwrap();
    let descr = format!("'descr': '{}'", T::DESCR);
    assert!(
        text(&header[..header.len().min(128)]).contains(&descr),
        "{}: not {descr}",
        path.display()
    );
    let got = npy::read::<T>(&path).unwrap();
    assert_eq!(got.shape, dims, "{}", path.display());
    assert!(got.data == want, "{}: other values", path.display());
}

fn rounded(data: &[f64]) -> Vec<f32> {
    data.iter().map(|&x| x as f32).collect()
}

#[test]
fn attend_nsa_writes_the_reference_outputs_and_gradients() {
    let (dir, shape, [q, k, v, gates]) = nsa_problem("nsa");
    let dout = npy::read::<f32>(&dir.join("do.npy")).unwrap().data;
    let want = reference::nsa_forward(&q, &k, &v, &gates, &shape, &NSA).unwrap();
    let grads = reference::nsa_backward(&q, &k, &v, &gates, &dout, &shape, &NSA).unwrap();
    // The selection is NSA's own: per GQA group, with blocks beyond the forced ones chosen
    // and -1 padding where fewer blocks are eligible.
    assert!(want.selection.contains(&-1) && want.selection.contains(&1));
    let out = dir.join("out");
    let mut args = nsa_args(&dir, "reference", &out);
    args.extend([
        "--dout".to_string(),
        dir.join("do.npy").display().to_string(),
    ]);
    assert_ok(&moba(&args));
    let (q_dims, kv_dims) = (shape.q_dims(), shape.kv_dims());
    assert_npy(&out, "o.npy", &q_dims, &rounded(&want.o));
    assert_npy(&out, "selection.npy", &[1, 1, 20, 4], &want.selection);
    assert_npy(&out, "dq.npy", &q_dims, &rounded(&grads.dq));
    assert_npy(&out, "dk.npy", &kv_dims, &rounded(&grads.dk));
    assert_npy(&out, "dv.npy", &kv_dims, &rounded(&grads.dv));
    assert_npy(&out, "dgates.npy", &[1, 2, 20, 3], &rounded(&grads.dgates));
    assert!(!out.join("lse.npy").exists(), "NSA writes no lse.npy");
}

#[test]
fn attend_nsa_on_burns_backends_matches_the_reference() {
    let (dir, shape, [q, k, v, gates]) = nsa_problem("nsa-burn");
    let dout = npy::read::<f32>(&dir.join("do.npy")).unwrap().data;
    let want = reference::nsa_forward(&q, &k, &v, &gates, &shape, &NSA).unwrap();
    let grads = reference::nsa_backward(&q, &k, &v, &gates, &dout, &shape, &NSA).unwrap();
    for backend in ["burn-ndarray", "burn-wgpu"] {
        let out = dir.join(backend);
        let mut args = nsa_args(&dir, backend, &out);
        args.extend([
            "--dout".to_string(),
            dir.join("do.npy").display().to_string(),
        ]);
        assert_ok(&moba(&args));
        let selection = npy::read::<i32>(&out.join("selection.npy")).unwrap().data;
        assert_eq!(selection, want.selection, "{backend}");
        // f32 arithmetic against f64: about 1e-6 here; a wrong key or gate is off by 1e-2.
        for (name, want) in [
            ("o.npy", &want.o),
            ("dq.npy", &grads.dq),
            ("dk.npy", &grads.dk),
            ("dv.npy", &grads.dv),
            ("dgates.npy", &grads.dgates),
        ] {
            let got = npy::read::<f32>(&out.join(name)).unwrap().data;
            let error = reference::max_abs_error(&got, want);
            assert!(error < 1e-4, "{backend}: {name} error {error:e}");
        }
    }
}

#[test]
fn attend_removes_the_outputs_that_a_run_does_not_write() {
    let (dir, _, _) = nsa_problem("nsa-stale");
    let out = dir.join("out");
    let dout = [
        "--dout".to_string(),
        dir.join("do.npy").display().to_string(),
    ];
    let gradients = ["dq.npy", "dk.npy", "dv.npy", "dgates.npy"];
    // MoBA's lse.npy, then NSA's gradients.
    assert_ok(&moba(&attend_args(&dir, "reference", &out)));
    assert!(out.join("lse.npy").exists());
    let mut args = nsa_args(&dir, "reference", &out);
    args.extend(dout.clone());
    assert_ok(&moba(&args));
    assert!(!out.join("lse.npy").exists(), "MoBA's lse.npy is left");
    assert!(gradients.iter().all(|name| out.join(name).exists()));
    // Without --dout no gradient of the earlier run survives.
    assert_ok(&moba(&nsa_args(&dir, "reference", &out)));
    for name in gradients {
        assert!(!out.join(name).exists(), "{name} is left");
    }
    for name in ["o.npy", "selection.npy"] {
        assert!(out.join(name).exists(), "{name} is missing");
    }
    // MoBA with --dout writes no dgates.npy, and NSA's is not left beside its gradients.
    assert_ok(&moba(&args));
    let mut moba_args = attend_args(&dir, "reference", &out);
    moba_args.extend(dout);
    assert_ok(&moba(&moba_args));
    assert!(out.join("dq.npy").exists() && !out.join("dgates.npy").exists());
}

#[test]
fn attend_refuses_what_does_not_fit_the_attention_and_writes_nothing() {
    let (dir, _, _) = nsa_problem("nsa-refusals");
    let without = |args: Vec<String>, flag: &str| -> Vec<String> {
        let at = args.iter().position(|a| a == flag).unwrap();
        [&args[..at], &args[at + 2..]].concat()
    };
    let with = |mut args: Vec<String>, extra: &str| -> Vec<String> {
        args.extend(words(extra));
        args
    };
    let out = dir.join("out");
    npy::write(&dir.join("g2.npy"), &[1, 2, 20, 2], &[0.5f32; 80]).unwrap();
    let wrong_gates = {
        let mut args = nsa_args(&dir, "reference", &out);
        let at = args.iter().position(|a| a == "--gates").unwrap();
        args[at + 1] = dir.join("g2.npy").display().to_string();
        args
    };
    let cases = [
        (
            nsa_args(&dir, "wgpu", &out),
            "NSA runs through burn: use --backend burn-wgpu",
        ),
        (
            with(nsa_args(&dir, "reference", &out), "--top-k 2"),
            "--top-k belongs to --attention moba, not --attention nsa",
        ),
        (
            with(nsa_args(&dir, "reference", &out), "--non-causal"),
            "--non-causal belongs to --attention moba, not --attention nsa",
        ),
        (
            without(nsa_args(&dir, "reference", &out), "--stride"),
            "--attention nsa needs --stride",
        ),
        (
            without(attend_args(&dir, "reference", &out), "--block-size"),
            "--attention moba needs --block-size",
        ),
        (
            with(attend_args(&dir, "reference", &out), "--window 5"),
            "--window belongs to --attention nsa, not --attention moba",
        ),
        (
            wrong_gates,
            "gates has shape [1, 2, 20, 2]; NSA needs [B, Hq, S, 3] = [1, 2, 20, 3]",
        ),
    ];
    for (args, expected) in cases {
        assert_fails(&moba(&args), expected);
        assert!(!out.exists(), "{expected}: the run wrote {}", out.display());
    }
}

/// Runs `moba` with the words of `line`; asserts that it succeeded and returns its stdout.
#[track_caller]
fn stdout_of(line: &str) -> String {
    let output = moba(&words(line));
    assert_ok(&output);
    text(&output.stdout)
}

#[test]
fn demo_checks_itself_against_the_reference() {
    let stdout = stdout_of("demo --seq-len 200 --heads 2 --head-dim 16 --block-size 16 --runs 1");
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
    let stdout = stdout_of(
        "--api gl demo --seq-len 512 --heads 2 --head-dim 64 --block-size 64 --runs 1 --no-dense",
    );
    assert!(stdout.contains("(Gl, "), "{stdout}");
    assert!(stdout.contains("check   : PASS: "), "{stdout}");
}

/// The GL adapter has neither subgroups nor cooperative matrices: asking for their kernels
/// is a clear error, not a silent fallback.
#[cfg(target_os = "linux")]
#[test]
fn kernels_the_opengl_adapter_lacks_are_refused_by_name() {
    let demo = "--api gl demo --seq-len 256 --heads 2 --head-dim 64 --block-size 64 --runs 1 --no-dense --kernel";
    for (kernel, expected) in [
        (
            "subgroup",
            "does not support the subgroup kernel (subgroup operations",
        ),
        ("cooperative", "does not support cooperative matrices"),
    ] {
        assert_fails(&moba(&words(&format!("{demo} {kernel}"))), expected);
    }
}

#[test]
fn info_lists_an_adapter() {
    assert!(stdout_of("info").contains("limits:"));
}

#[test]
fn bench_decode_measures_one_query_per_sequence_over_a_cache() {
    let out = scratch("bench-decode").join("decode.jsonl");
    let mut args = words(
        "bench --decode --batch 2 --heads 4 --kv-heads 2 --head-dim 16 --block-size 16 \
         --runs 1 --seq-lens 300 --out",
    );
    args.push(out.to_str().unwrap().to_string());
    let output = moba(&args);
    assert_ok(&output);
    let record: moba::bench::Record =
        serde_json::from_str(std::fs::read_to_string(&out).unwrap().trim()).unwrap();
    assert_eq!(
        (
            record.pass.as_str(),
            record.batch,
            record.seq_len,
            record.kv_len
        ),
        ("decode", 2, 1, 300)
    );
    assert_eq!((record.q_heads, record.kv_heads), (4, 2));
    // Two rows per kv group: the split decode, with the block means the cache would keep.
    assert_eq!(record.kernel, "SplitDecode");
    assert!(
        record.o_error < 1e-5 && record.passed == Some(true),
        "{record:?}"
    );
    assert!(record.dense_ms.is_some_and(|ms| ms > 0.0), "{record:?}");
    let table = text(&output.stdout);
    assert!(table.contains("MoBA tokens/s"), "{table}");
    assert!(table.contains("| 2 | 300 | 4/2 |"), "{table}");
}

#[test]
fn bench_times_nsa_and_checks_it_against_the_reference() {
    let out = scratch("bench-nsa").join("nsa.jsonl");
    let mut args = words(
        "bench --attention nsa --heads 4 --kv-heads 2 --head-dim 16 --compress-block 8 \
         --stride 4 --select-block 16 --top-n 3 --window 16 --runs 1 --backward \
         --seq-lens 70 --out",
    );
    args.push(out.to_str().unwrap().to_string());
    let output = moba(&args);
    assert_ok(&output);
    let record: moba::bench::nsa::NsaRecord =
        serde_json::from_str(std::fs::read_to_string(&out).unwrap().trim()).unwrap();
    assert_eq!(
        (
            record.attention.as_str(),
            record.seq_len,
            record.q_heads,
            record.kv_heads
        ),
        ("nsa", 70, 4, 2)
    );
    assert!(record.passed && record.o_error < 1e-5, "{record:?}");
    assert_eq!(record.wrong_selections, 0, "{record:?}");
    assert!(record.forward_ms > 0.0 && record.step_ms.is_some_and(|ms| ms > 0.0));
    // The step's three branches, each timed alone.
    let branches: Vec<&str> = (record.step_stages.iter())
        .map(|s| s.stage.as_str())
        .collect();
    assert_eq!(branches, ["compressed", "selected", "window"], "{record:?}");
    assert!(record.step_stages.iter().all(|s| s.ms > 0.0), "{record:?}");
    let table = text(&output.stdout);
    assert!(
        table.contains("| 70 | 4 (2) | 16 | 8, 4, 16, 3, 16 |"),
        "{table}"
    );
}

#[test]
fn bench_writes_records_and_report_merges_them() {
    let dir = scratch("bench");
    let out = dir.join("run.jsonl");
    let extra = ["--burn-baseline", "--out", out.to_str().unwrap()];
    let output = moba(&small_bench_args("64,96", &extra));
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
    // Two files (here the same one twice) merge into one table of four rows; an NSA record
    // in a file (`--attention nsa` appends to the same file), however it is spaced, is its
    // own table's and left out.
    let with_nsa = dir.join("with-nsa.jsonl");
    let nsa_line = "{\"attention\": \"nsa\", \"seq_len\": 70}\n";
    std::fs::write(&with_nsa, std::fs::read_to_string(&out).unwrap() + nsa_line).unwrap();
    let report = moba(&[
        "bench",
        "report",
        out.to_str().unwrap(),
        with_nsa.to_str().unwrap(),
    ]);
    assert_ok(&report);
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

/// `moba COMMAND` flags for one step of the tiny model on 64-byte sequences, on the CPU,
/// in batches of `batch_size`.
fn one_tiny_step(command: &str, batch_size: &str) -> Vec<String> {
    let flags = [
        "--backend",
        "ndarray",
        "--preset",
        "tiny",
        "--seq-len",
        "64",
    ];
    let steps = ["--steps", "1", "--batch-size", batch_size];
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
    let mut args = one_tiny_step("train", "1");
    args.extend(["--run".to_string(), run.clone()]);
    assert_fails(&moba(&args), "slots");
    args.extend(["--recall-pairs", "1", "--recall-queries", "1"].map(String::from));
    // The MoBA layers' keys convolved (FlashMoBA), as the run's config records.
    args.extend(["--key-conv", "3"].map(String::from));
    assert_ok(&moba(&args));
    let summary = std::fs::read_to_string(dir.join("run").join("train.json")).unwrap();
    assert!(summary.contains("\"pairs\": 1"), "{summary}");
    assert!(summary.contains("\"key_conv\": 3"), "{summary}");
    // The GPU decoder has no key convolution: generation says so and runs on burn's ops.
    let generated = moba(&[
        "generate",
        "--run",
        &run,
        "--prompt",
        "ab",
        "--max-new",
        "4",
    ]);
    assert_ok(&generated);
    let said = String::from_utf8_lossy(&generated.stderr);
    assert!(
        said.contains("key convolution") && said.contains("burn's ops"),
        "{said}"
    );
}

/// The page's model (`web/lm`, f16 weights) exported again: in f16 the same size, in f32
/// twice it, and both generate the checked-in greedy sample; nothing is exported into a run.
#[test]
fn export_writes_runs_that_generate_the_shipped_sample() {
    let dir = scratch("export");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/lm");
    let sample = std::fs::read_to_string(shipped.join("sample.json")).unwrap();
    let sample: serde_json::Value = serde_json::from_str(&sample).unwrap();
    let (prompt, want) = (
        sample["prompt"].as_str().unwrap(),
        sample["generated"].as_str().unwrap(),
    );
    let size = |run: &Path| std::fs::metadata(run.join("model.mpk")).unwrap().len();
    for (name, half, ratio) in [("half", true, 1.0), ("full", false, 2.0)] {
        let out = dir.join(name);
        let mut args = vec!["export", "--run", shipped.to_str().unwrap()];
        args.extend(["--out", out.to_str().unwrap()]);
        if half {
            args.push("--half");
        }
        assert_ok(&moba(&args));
        let grown = size(&out) as f64 / size(&shipped) as f64;
        assert!((grown - ratio).abs() < 0.01, "{name}: {grown}");
        let mut args = vec![
            "generate",
            "--backend",
            "ndarray",
            "--run",
            out.to_str().unwrap(),
        ];
        args.extend(["--temperature", "0", "--max-new", "64", "--prompt", prompt]);
        let generated = moba(&args);
        assert_ok(&generated);
        assert_eq!(
            String::from_utf8_lossy(&generated.stdout),
            format!("{prompt}{want}")
        );
    }
    let run = dir.join("half");
    let before = std::fs::read(run.join("model.mpk")).unwrap();
    let into_itself = moba(&[
        "export",
        "--run",
        run.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    assert_fails(&into_itself, "the run itself");
    assert_eq!(std::fs::read(run.join("model.mpk")).unwrap(), before);
    // Nor into another training run, whose checkpoints would no longer match its weights.
    std::fs::create_dir_all(run.join("checkpoint")).unwrap();
    let shipped = shipped.to_str().unwrap();
    let into_a_run = moba(&["export", "--run", shipped, "--out", run.to_str().unwrap()]);
    assert_fails(&into_a_run, "a training run");
    assert_eq!(std::fs::read(run.join("model.mpk")).unwrap(), before);
}

#[test]
fn generate_draws_the_same_greedy_bytes_on_the_gpu_decoder_as_on_burn() {
    let dir = scratch("generate-decoder");
    let run = dir.join("run").display().to_string();
    let mut args = one_tiny_step("train", "1");
    let counts = ["--recall-pairs", "1", "--recall-queries", "1"];
    args.extend(counts.map(String::from));
    args.extend(["--run".to_string(), run.clone()]);
    assert_ok(&moba(&args));
    // 150 bytes: the prompt and the new bytes span five of the tiny model's blocks of 32.
    let prompt = "def main():\n    return 0\n".repeat(3);
    let generate = |extra: &[&str]| {
        let mut args = vec!["generate", "--run", &run, "--prompt", &prompt];
        args.extend(["--max-new", "70", "--temperature", "0"]);
        args.extend(extra);
        let output = moba(&args);
        assert_ok(&output);
        output
    };
    let decoder = generate(&[]);
    let said = String::from_utf8_lossy(&decoder.stderr);
    assert!(
        said.contains("GPU decoder") && said.contains("bytes/s"),
        "{said}"
    );
    let burn = generate(&["--backend", "ndarray"]);
    assert_eq!(
        String::from_utf8_lossy(&decoder.stdout),
        String::from_utf8_lossy(&burn.stdout)
    );
    assert_eq!(decoder.stdout.len(), prompt.len() + 70);
    // f16 weights on the decoder (each weight rounded: the bytes may differ), and a refusal
    // where no wgpu decoder runs.
    let half = generate(&["--half-weights"]);
    assert_eq!(half.stdout.len(), prompt.len() + 70);
    let said = String::from_utf8_lossy(&half.stderr);
    assert!(said.contains("GPU decoder"), "{said}");
    let mut args = vec!["generate", "--run", &run, "--prompt", &prompt];
    args.extend(["--backend", "ndarray", "--half-weights"]);
    assert_fails(&moba(&args), "the wgpu decoder's");
}

#[test]
fn train_deals_each_batch_over_the_devices_given() {
    let dir = scratch("train-devices");
    let run = dir.join("run").display().to_string();
    let args = |devices: &str| -> Vec<String> {
        let mut args = one_tiny_step("train", "2");
        let counts = ["--recall-pairs", "1", "--recall-queries", "1"];
        args.extend(counts.map(String::from));
        args.extend(["--devices", devices, "--run", &run].map(String::from));
        args
    };
    assert_fails(&moba(&args("0,1,2")), "not dealt evenly over 3 devices");
    assert_ok(&moba(&args("0,1")));
}

#[test]
fn compare_continues_each_arm_from_the_same_arm_of_an_earlier_comparison() {
    let dir = scratch("compare-continue");
    let (first, second) = (dir.join("first"), dir.join("second"));
    let compare = |out: &Path, extra: &[&str]| -> Vec<String> {
        let mut args = one_tiny_step("compare", "1");
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
