//! The wasm API in headless Chromium (SwiftShader WebGPU): `Demo` through its JS-facing
//! methods, and the heatmap and reference check it reports. Run by `tests/browser.rs` at
//! the repository root (wasm-bindgen-test-runner with Debian's chromedriver).

use moba::gpu::GpuForward;
use moba::{MobaConfig, Shape, random, reference};
use moba_web::{
    AdapterReport, Check, Demo, Heatmap, ModelInfo, Report, Routing, Settings, TextModel,
};
use serde::Deserialize;
use wasm_bindgen::{JsCast, JsError, JsValue};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// The f32 kernel against the f64 reference on standard-normal inputs (about 1e-7).
const ERROR_BOUND: f64 = 1e-5;

fn settings(
    seq_len: usize,
    heads: usize,
    head_dim: usize,
    block_size: usize,
    top_k: usize,
) -> Settings {
    Settings {
        seq_len,
        heads,
        head_dim,
        block_size,
        top_k,
        runs: 1,
        dense: true,
    }
}

/// The page's model (`web/lm/`, see its README) and its greedy continuation of a prompt,
/// written by the native `moba generate --backend ndarray --temperature 0`.
const TRAIN_JSON: &str = include_str!("../lm/train.json");
const WEIGHTS: &[u8] = include_bytes!("../lm/model.mpk");
const GREEDY_SAMPLE: &str = include_str!("../lm/sample.json");

#[derive(Deserialize)]
struct Sample {
    prompt: String,
    generated: String,
}

/// The message of an error a wasm-bindgen function returned.
fn message(error: JsError) -> String {
    JsValue::from(error)
        .dyn_into::<js_sys::Error>()
        .unwrap()
        .message()
        .into()
}

/// `Demo::run` as the page calls it: a JS settings object in, a JS report object out.
async fn run(demo: &Demo, settings: &Settings) -> Result<Report, String> {
    let settings = serde_wasm_bindgen::to_value(settings).unwrap();
    match demo.run(settings).await {
        Ok(report) => Ok(serde_wasm_bindgen::from_value(report).unwrap()),
        Err(error) => Err(message(error)),
    }
}

#[wasm_bindgen_test]
async fn a_small_run_matches_the_reference() {
    let demo = Demo::open().await.unwrap();
    // 200 tokens in blocks of 16 (a partial last block), top-3, head dim 20 (not a power of 2).
    let report = run(&demo, &settings(200, 3, 20, 16, 3)).await.unwrap();
    let check = &report.check;
    assert!(check.all_rows && check.rows == 600, "{check:?}");
    assert!(check.o_error <= ERROR_BOUND, "{check:?}");
    assert!(check.lse_error <= ERROR_BOUND, "{check:?}");
    assert_eq!(check.selection_mismatches, 0);
    assert!(check.passed, "{check:?}");
    assert!(
        report.moba_ms > 0.0 && report.dense_ms.unwrap() > 0.0,
        "{report:?}"
    );
    assert_eq!(report.kernel, "Portable");
    // The same run as a `moba bench` record, which `moba bench report` reads back.
    let record = &report.record;
    assert_eq!(
        (
            record.seq_len,
            record.q_heads,
            record.head_dim,
            record.block_size
        ),
        (200, 3, 20, 16)
    );
    assert_eq!(
        (record.backend.as_str(), record.kernel.as_str()),
        ("BrowserWebGpu", "Portable")
    );
    // The record holds seconds * 1e3: equal to the report's milliseconds up to rounding.
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs();
    assert!(close(record.moba_ms, report.moba_ms), "{record:?}");
    assert!(
        close(record.dense_ms.unwrap(), report.dense_ms.unwrap()),
        "{record:?}"
    );
    assert_eq!(record.o_error, check.o_error);
    assert_eq!(record.attended_pairs, report.attended_pairs);
    assert!(record.memory_bytes.unwrap() > 0);
    let line = serde_json::to_string(record).unwrap();
    let read: moba::bench::Record = serde_json::from_str(&line).unwrap();
    assert_eq!((read.seq_len, &read.kernel), (200, &record.kernel));
    assert!((read.moba_ms - record.moba_ms).abs() < 1e-9, "{line}");
    // Every query attends its own block: the diagonal of every map is 1.
    let map = &report.heatmap;
    assert_eq!(
        (map.heads, map.rows, map.cols, map.blocks_per_cell),
        (3, 13, 13, 1)
    );
    for head in 0..3 {
        for block in 0..13 {
            assert_eq!(map.values[(head * 13 + block) * 13 + block], 1.0);
        }
    }
}

#[wasm_bindgen_test]
async fn kernels_are_planned_within_the_browser_limits() {
    let demo = Demo::open().await.unwrap();
    let adapter: AdapterReport = serde_wasm_bindgen::from_value(demo.adapter().unwrap()).unwrap();
    assert_eq!(adapter.backend, "BrowserWebGpu");
    let limit = |name: &str| {
        adapter
            .limits
            .iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("{name}"))
            .value
    };
    let report = run(&demo, &settings(64, 1, 128, 16, 2)).await.unwrap();
    assert!(report.workgroup_size as u64 <= limit("max_compute_invocations_per_workgroup"));
    // The attention tile stages keys and values of 128 f32 dims in workgroup memory.
    let tile_bytes = report.key_tile as u64 * 2 * 128 * 4;
    assert!(
        tile_bytes <= limit("max_compute_workgroup_storage_size"),
        "{report:?}"
    );
    assert!(report.check.o_error <= ERROR_BOUND, "{:?}", report.check);
}

#[wasm_bindgen_test]
async fn sizes_over_a_limit_are_errors_that_name_it() {
    let demo = Demo::open().await.unwrap();
    // One key and value of 4096 f32 dims do not fit 32 KiB of workgroup memory.
    let error = run(&demo, &settings(64, 1, 4096, 16, 2)).await.unwrap_err();
    assert!(
        error.contains("max_compute_workgroup_storage_size"),
        "{error}"
    );
    // 65536 tokens x 16 heads x 64 dims fit the adapter's buffers but not the page's memory.
    let error = run(&demo, &settings(65536, 16, 64, 512, 2))
        .await
        .unwrap_err();
    assert!(error.contains("page memory"), "{error}");
    let error = run(&demo, &settings(64, 1, 16, 0, 2)).await.unwrap_err();
    assert!(error.contains("block_size"), "{error}");
}

#[wasm_bindgen_test]
fn the_heatmap_counts_the_share_of_queries_per_block() {
    // 6 tokens in blocks of 2, one head, top-2: query t chooses its own block t/2 and one other.
    let shape = Shape::prefill(1, 1, 6, 4);
    let config = MobaConfig::new(2, 2);
    let selection = [0, -1, 0, -1, 0, 1, 1, -1, 0, 2, 1, 2];
    let map = Heatmap::new(&selection, &shape, &config, 8);
    assert_eq!((map.rows, map.cols, map.blocks_per_cell), (3, 3, 1));
    #[rustfmt::skip]
    assert_eq!(map.values, [
        1.0, 0.0, 0.0,
        0.5, 1.0, 0.0,
        0.5, 0.5, 1.0,
    ]);
    // Two blocks per cell: 2 x 2 cells; the last cell holds one block each way.
    let merged = Heatmap::new(&selection, &shape, &config, 2);
    assert_eq!(
        (merged.rows, merged.cols, merged.blocks_per_cell),
        (2, 2, 2)
    );
    // Cell (0, 0): 4 queries x 2 blocks, 5 chosen; cell (1, 0): 2 queries x 2 blocks, 2 chosen.
    assert_eq!(merged.values, [5.0 / 8.0, 0.0, 0.5, 1.0]);
}

#[wasm_bindgen_test]
fn the_check_reports_a_wrong_output_and_a_wrong_selection() {
    let shape = Shape::prefill(1, 2, 40, 8);
    let config = MobaConfig::new(8, 2);
    let (q, k, v) = (
        random::normal(shape.q_elems(), 7),
        random::normal(shape.kv_elems(), 8),
        random::normal(shape.kv_elems(), 9),
    );
    let exact = reference::forward(&q, &k, &v, &shape, &config).unwrap();
    let mut got = GpuForward {
        o: exact.o.iter().map(|&x| x as f32).collect(),
        lse: exact.lse.iter().map(|&x| x as f32).collect(),
        selection: exact.selection.clone(),
    };
    let clean = Check::new(&got, (&q, &k, &v), &shape, &config).unwrap();
    assert!(clean.o_error < 1e-6 && clean.lse_error < 1e-6, "{clean:?}");
    assert_eq!(
        (clean.rows, clean.near_ties, clean.selection_mismatches),
        (80, 0, 0)
    );

    got.o[5 * 8 + 3] += 0.5;
    got.selection[79 * 2] = (got.selection[79 * 2] + 1) % 4; // the last row's non-forced block
    let broken = Check::new(&got, (&q, &k, &v), &shape, &config).unwrap();
    assert!((broken.o_error - 0.5).abs() < 1e-6, "{broken:?}");
    assert_eq!(broken.selection_mismatches, 1, "{broken:?}");
    assert!(clean.passed && !broken.passed, "{broken:?}");
}

/// `TextModel::nextByte` as the page awaits it: the byte, `None` once the context is full,
/// or the error's message.
async fn next_byte(model: &TextModel) -> Result<Option<u8>, String> {
    match wasm_bindgen_futures::JsFuture::from(model.next_byte()).await {
        Ok(value) => Ok(value.as_f64().map(|byte| byte as u8)),
        Err(error) => Err(error.dyn_into::<js_sys::Error>().unwrap().message().into()),
    }
}

async fn routing(model: &TextModel) -> Result<Routing, String> {
    match wasm_bindgen_futures::JsFuture::from(model.routing()).await {
        Ok(value) => Ok(serde_wasm_bindgen::from_value(value).unwrap()),
        Err(error) => Err(error.dyn_into::<js_sys::Error>().unwrap().message().into()),
    }
}

#[wasm_bindgen_test]
async fn the_page_model_continues_its_prompt_as_the_native_build_does() {
    let sample: Sample = serde_json::from_str(GREEDY_SAMPLE).unwrap();
    let demo = Demo::open().await.unwrap();
    for on_gpu in [false, true] {
        let mut model = TextModel::new(TRAIN_JSON, WEIGHTS.to_vec())
            .map_err(message)
            .unwrap();
        let info: ModelInfo = serde_wasm_bindgen::from_value(model.info().unwrap()).unwrap();
        assert_eq!(info, model.model_info());
        assert_eq!(
            (info.block_size, info.top_k, info.context),
            (Some(512), Some(3), 8192),
            "{info:?}"
        );
        assert!(info.parameters > 100_000, "{info:?}");
        if on_gpu {
            model.use_gpu(&demo);
        }

        // Greedy: the same bytes as the native build drew, on the CPU (MoBA prefill, then
        // decode) and on the GPU decoder (the prompt in chunks, then a position at a time).
        model
            .start(&sample.prompt, 0.0, 1.0, 0)
            .map_err(message)
            .unwrap();
        assert_eq!(model.runs_on(), if on_gpu { "WebGPU" } else { "CPU" });
        let mut generated = Vec::new();
        for _ in 0..sample.generated.len() {
            generated.push(next_byte(&model).await.unwrap().unwrap());
        }
        assert_eq!(String::from_utf8_lossy(&generated), sample.generated);
        assert_eq!(
            model.position(),
            sample.prompt.len() + sample.generated.len() - 1
        );
        // A new start forgets the last generation.
        model.start("x", 0.0, 1.0, 0).map_err(message).unwrap();
        next_byte(&model).await.unwrap();
        assert_eq!(model.position(), 1);
    }
}

#[wasm_bindgen_test]
async fn the_routing_view_reads_the_blocks_each_head_chose_on_both_paths() {
    let demo = Demo::open().await.unwrap();
    // 1,600 bytes: four of the model's blocks of 512, so its top-3 gate ranks three.
    let prompt = "def double(x):\n    return x * 2\n".repeat(50);
    let mut routings = Vec::new();
    for on_gpu in [false, true] {
        let mut model = TextModel::new(TRAIN_JSON, WEIGHTS.to_vec())
            .map_err(message)
            .unwrap();
        if on_gpu {
            model.use_gpu(&demo);
        }
        model.start(&prompt, 0.0, 1.0, 0).map_err(message).unwrap();
        // Nothing to show before the first byte is read.
        let error = routing(&model).await.unwrap_err();
        assert!(error.contains("no byte"), "{error}");
        next_byte(&model).await.unwrap();
        let chosen = routing(&model).await.unwrap();
        assert_eq!(chosen.position, 1599);
        assert_eq!(chosen.layers.len(), 6);
        for heads in &chosen.layers {
            let heads = heads.as_ref().expect("every layer is MoBA's");
            assert_eq!(heads.len(), 5);
            for blocks in heads {
                // The own block (1599 / 512 = 3) and two of the three before it.
                assert_eq!(blocks.len(), 3, "{blocks:?}");
                assert!(blocks.contains(&3), "{blocks:?}");
                assert!(blocks.iter().all(|&b| (0..4).contains(&b)), "{blocks:?}");
            }
        }
        routings.push(chosen);
    }
    // The GPU decoder's gate chose what burn's did.
    assert_eq!(routings[0], routings[1]);
}

#[wasm_bindgen_test]
async fn bad_model_files_and_calls_are_errors_that_say_what_is_wrong() {
    let error = message(TextModel::new("{}", WEIGHTS.to_vec()).err().unwrap());
    assert!(error.contains("train.json"), "{error}");
    let half = WEIGHTS[..WEIGHTS.len() / 2].to_vec();
    let error = message(TextModel::new(TRAIN_JSON, half).err().unwrap());
    assert!(error.contains("model.mpk"), "{error}");

    let mut model = TextModel::new(TRAIN_JSON, WEIGHTS.to_vec())
        .map_err(message)
        .unwrap();
    let error = next_byte(&model).await.unwrap_err();
    assert!(error.contains("start"), "{error}");
    let error = routing(&model).await.unwrap_err();
    assert!(error.contains("start"), "{error}");
    let error = message(model.start("", 0.8, 0.95, 1).unwrap_err());
    assert!(error.contains("1 to 8192"), "{error}");
    let error = message(model.start("def", 0.8, 1.5, 1).unwrap_err());
    assert!(error.contains("top_p"), "{error}");
}
