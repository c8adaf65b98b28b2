//! The byte-level language model and its training on burn-train, at toy size: a few steps
//! lower the loss, a resumed run ends where an uninterrupted one does, checkpoints
//! round-trip bit-exactly, KV-cache decode equals the full forward (ndarray, and wgpu on
//! lavapipe), the recall task puts its records where asked and its evaluation counts where
//! the gate routes, bad inputs are clear errors.

use std::path::{Path, PathBuf};

use burn::backend::{NdArray, Wgpu};
use burn::data::dataloader::DataLoader;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, ElementConversion, Tensor};
use moba::MobaError;
use moba::backend::MobaBackend;
use moba::backend::burn_wgpu_device;
use moba::data::{
    RECORD_LEN, RecallTask, Sequence, SequenceLoader, SequenceSource, TextCorpus, TokenBatch,
};
use moba::model::{Generator, LmConfig, MobaLm, Sampling, generate, generate::byte_tensor};
use moba::module::AttentionKind;
use moba::train::{
    Checkpoints, Curves, Dashboard, DataConfig, EvalOptions, EvalReport, TrainConfig, TrainSummary,
    TrainTarget, checkpoint_file, evaluate, initial_model, load_config, load_model, metrics_path,
    model_path, run_weights, save_model, train,
};

/// A fresh folder under the system temp dir for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("moba-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Two layers, d 32: MoBA (blocks of 8, top-2) then full attention (the hybrid).
fn tiny(max_seq_len: usize) -> LmConfig {
    let moba = AttentionKind::Moba {
        block_size: 8,
        top_k: 2,
    };
    LmConfig::new(32, 2, 4, 2, 64, moba, max_seq_len).with_full_layers(1)
}

/// The recall task (`pairs` records, `queries` queries) at the model's full length: `steps`
/// steps of 2 sequences.
fn recall_config(model: LmConfig, pairs: usize, queries: usize, steps: usize) -> TrainConfig {
    let seq_len = model.max_seq_len;
    TrainConfig::new(model, DataConfig::Recall { pairs, queries }, seq_len, steps)
        .with_batch_size(2)
}

/// The repository's own prose as the corpus (about 16 KB).
fn text_config(steps: usize, valid_every: usize) -> TrainConfig {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let paths = ["README.md", "DESIGN.md"].map(|f| root.join(f).display().to_string());
    let data = DataConfig::Text {
        paths: paths.to_vec(),
        valid_fraction: 0.1,
    };
    TrainConfig::new(tiny(64), data, 64, steps)
        .with_batch_size(4)
        .with_valid_every(valid_every)
        .with_valid_batches(2)
        .with_learning_rate(3e-3)
        .with_warmup_steps(2)
}

fn target(dir: &Path) -> TrainTarget<'_, NdArray> {
    TrainTarget {
        dir,
        devices: vec![Default::default()],
        memory: None,
        capacity: Default::default(),
        dashboard: Dashboard::Lines,
    }
}

/// Every float parameter's bits, in visiting order.
fn parameter_bits<B: Backend>(model: &MobaLm<B>) -> Vec<u32> {
    struct Bits(Vec<u32>);
    impl<B: Backend> ModuleVisitor<B> for Bits {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let data = param.val().into_data().convert::<f32>();
            self.0.extend(data.iter::<f32>().map(f32::to_bits));
        }
    }
    let mut bits = Bits(Vec::new());
    model.visit(&mut bits);
    bits.0
}

fn floats<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor.into_data().convert::<f32>().to_vec().unwrap()
}

/// Trains `config` on ndarray into `dir`: the evaluation of the untrained model (the same
/// seed gives the weights training starts from), the run's summary, and the evaluation of
/// the trained model.
fn train_and_evaluate(config: &TrainConfig, dir: &Path) -> (EvalReport, TrainSummary, EvalReport) {
    let device = Default::default();
    let options = EvalOptions {
        batches: 4,
        ..Default::default()
    };
    NdArray::<f32>::seed(&device, config.seed);
    let fresh = config.model.init::<NdArray>(&device).unwrap();
    let before = evaluate(&fresh, config, &options, &device).unwrap();
    let summary = train(config, false, target(dir)).unwrap();
    let trained = load_model::<NdArray>(&config.model, &model_path(dir), &device).unwrap();
    let after = evaluate(&trained, config, &options, &device).unwrap();
    (before, summary, after)
}

#[test]
fn a_few_training_steps_lower_the_loss() {
    let config = text_config(24, 8);
    let dir = scratch("steps");
    let (before, summary, after) = train_and_evaluate(&config, &dir);
    // Uniform over 256 bytes is ln 256 = 5.55 nats; a byte unigram model of English prose
    // is about 3.2. Twenty-four steps get well past the midpoint.
    assert!(
        (5.0..6.5).contains(&before.valid_loss),
        "untrained loss {}",
        before.valid_loss
    );
    assert!(
        after.valid_loss < before.valid_loss - 1.0,
        "validation loss {} -> {}",
        before.valid_loss,
        after.valid_loss
    );
    assert!(after.trailing_loss.is_finite() && after.recall.is_empty());

    assert_eq!((summary.steps, summary.tokens), (24, 24 * 4 * 64));
    let curves = Curves::read(&metrics_path(&dir)).unwrap();
    assert_eq!(curves.train_values("Loss").len(), 24);
    assert_eq!(curves.valid_means("Loss").len(), 3);
    assert_eq!(summary.final_valid_loss, curves.valid_means("Loss")[2]);
    // The last two epochs' checkpoints are kept, the first deleted.
    let exists = |epoch| {
        checkpoint_file(&dir, "optim", epoch)
            .with_extension("mpk")
            .is_file()
    };
    assert_eq!((exists(1), exists(2), exists(3)), (false, true, true));
}

/// Copies into `cut` what a run in `whole` held after its first epoch: its config, its
/// metric log (all of it) and its epoch-1 checkpoint.
fn cut_after_epoch_1(whole: &Path, cut: &Path) {
    for file in ["train.json", "metrics.jsonl"] {
        std::fs::copy(whole.join(file), cut.join(file)).unwrap();
    }
    std::fs::create_dir_all(cut.join("checkpoint")).unwrap();
    for name in ["model", "optim", "scheduler"] {
        let file = checkpoint_file(whole, name, 1).with_extension("mpk");
        let to = cut.join("checkpoint").join(file.file_name().unwrap());
        std::fs::copy(&file, to).unwrap();
    }
}

#[test]
fn a_resumed_run_ends_where_an_uninterrupted_one_does() {
    let config = text_config(8, 4);
    let whole = scratch("whole");
    let whole_summary = train(&config, false, target(&whole)).unwrap();

    // The same run cut after epoch 1: its epoch-2 checkpoint and results gone, its metric
    // log still holding epoch 2's lines (a crash after the log, before the checkpoint).
    let cut = scratch("cut");
    cut_after_epoch_1(&whole, &cut);
    let err = train(&config, false, target(&cut)).unwrap_err();
    assert!(err.to_string().contains("--resume"), "{err}");
    let resumed = train(&config, true, target(&cut)).unwrap();

    assert_eq!(resumed.steps, 8);
    let rows = Curves::read(&metrics_path(&cut)).unwrap().train.len();
    assert_eq!(rows, 8, "the log was cut back to epoch 1, then grew");
    let device = Default::default();
    let load =
        |dir: &Path| load_model::<NdArray>(&config.model, &model_path(dir), &device).unwrap();
    let (a, b) = (parameter_bits(&load(&whole)), parameter_bits(&load(&cut)));
    let differing = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    assert_eq!(differing, 0, "{differing} of {} weights differ", a.len());
    assert_eq!(resumed.final_valid_loss, whole_summary.final_valid_loss);
}

#[test]
fn a_run_starts_from_another_runs_weights_at_a_longer_context() {
    let short = scratch("init-short");
    let config = text_config(2, 2);
    train(&config, false, target(&short)).unwrap();

    // RoPE's tables are not weights: 64-byte weights fit a 128-byte model of the same shape.
    let from_short = |model: LmConfig| TrainConfig {
        model,
        seq_len: 128,
        ..text_config(2, 1).with_init_from(Some(short.display().to_string()))
    };
    let long = from_short(tiny(128));
    let device = Default::default();
    let start = parameter_bits(&initial_model::<NdArray>(&long, &device).unwrap());
    let trained = load_model::<NdArray>(&config.model, &model_path(&short), &device).unwrap();
    assert_eq!(start, parameter_bits(&trained));
    let fresh = initial_model::<NdArray>(&long.clone().with_init_from(None), &device).unwrap();
    assert_ne!(start, parameter_bits(&fresh));
    let long_dir = scratch("init-long");
    train(&long, false, target(&long_dir)).unwrap();

    let wider = from_short(LmConfig {
        d_model: 64,
        ..tiny(128)
    });
    let err = initial_model::<NdArray>(&wider, &device).unwrap_err();
    assert!(err.to_string().contains("another model"), "{err}");
    let missing = long
        .clone()
        .with_init_from(Some(short.join("absent").display().to_string()));
    let err = initial_model::<NdArray>(&missing, &device).unwrap_err();
    assert!(err.to_string().contains("no such file"), "{err}");

    // Resuming reads the run's own checkpoint, not the run it started from (gone here).
    std::fs::remove_dir_all(&short).unwrap();
    for name in ["model", "optim", "scheduler"] {
        std::fs::remove_file(checkpoint_file(&long_dir, name, 2).with_extension("mpk")).unwrap();
    }
    let resumed = train(&long, true, target(&long_dir)).unwrap();
    assert_eq!(resumed.steps, 2);
}

#[test]
fn checkpoints_round_trip_bit_exactly() {
    let dir = scratch("round-trip");
    let device = Default::default();
    let config = tiny(48);
    let model = config.init::<NdArray>(&device).unwrap();
    save_model(&model, &dir.join("model")).unwrap();
    let loaded = load_model::<NdArray>(&config, &dir.join("model"), &device).unwrap();
    let bits = parameter_bits(&model);
    assert!(bits.len() > 10_000, "{} parameters", bits.len());
    assert_eq!(bits, parameter_bits(&loaded));
    let tokens = || byte_tensor::<NdArray>(b"Round trip through the recorder.", &device);
    let (a, b) = (
        floats(model.forward(tokens()).unwrap()),
        floats(loaded.forward(tokens()).unwrap()),
    );
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
}

#[test]
fn an_nsa_model_trains_like_a_moba_model() {
    let mut config = text_config(24, 8);
    config.model.attention = AttentionKind::Nsa {
        compress_block: 8,
        stride: 4,
        select_block: 8,
        top_n: 3,
        window: 16,
    };
    let (before, _, after) = train_and_evaluate(&config, &scratch("nsa"));
    // As the MoBA model of `a_few_training_steps_lower_the_loss` does.
    assert!(
        after.valid_loss < before.valid_loss - 1.0,
        "validation loss {} -> {}",
        before.valid_loss,
        after.valid_loss
    );
}

/// Moves every key convolution (the model's only rank-3 parameters) away from the identity
/// it starts as, so that a check of it can fail.
struct PerturbKeyConvs;

impl<B: Backend> ModuleMapper<B> for PerturbKeyConvs {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let tensor = match D {
            3 => {
                let noise = tensor.random_like(Distribution::Normal(0.0, 0.5));
                tensor + noise
            }
            _ => tensor,
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// Full-forward logits against a prefill of the first 30 bytes and 10 decode steps, with a
/// key convolution of `key_conv` taps (moved off the identity) where given.
fn check_decode<B: MobaBackend>(device: B::Device, key_conv: Option<usize>) {
    let model = tiny(48)
        .with_key_conv(key_conv)
        .init::<B>(&device)
        .unwrap()
        .map(&mut PerturbKeyConvs);
    let text = b"MoBA gates each query to a few blocks of keys.";
    let full = floats(
        model
            .forward(byte_tensor::<B>(&text[..40], &device))
            .unwrap(),
    );
    let mut cache = model.empty_cache();
    let mut rows = floats(
        model
            .forward_cached(byte_tensor::<B>(&text[..30], &device), &mut cache)
            .unwrap(),
    );
    for position in 30..40 {
        let step = model.forward_cached(
            byte_tensor::<B>(&text[position..position + 1], &device),
            &mut cache,
        );
        rows.extend(floats(step.unwrap()));
    }
    assert_eq!((rows.len(), cache[0].len()), (full.len(), 40));
    let error = full
        .iter()
        .zip(&rows)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let scale = full.iter().fold(0f32, |m, x| m.max(x.abs()));
    // f32 sums of one row against many: errors of order 1e-6 of the logits' scale (about 1).
    assert!(
        error < 1e-4 * scale.max(1.0),
        "decode differs by {error:e} (scale {scale})"
    );
}

#[test]
fn decode_with_the_cache_equals_the_full_forward() {
    check_decode::<NdArray>(Default::default(), None);
    // Each decode step's convolved key reads the keys before it from the cache.
    check_decode::<NdArray>(Default::default(), Some(4));
}

#[test]
fn decode_with_the_cache_equals_the_full_forward_on_wgpu() {
    check_decode::<Wgpu>(burn_wgpu_device(&Default::default()).unwrap().0, None);
}

#[test]
fn generation_stops_when_the_context_is_full() {
    let device = Default::default();
    let model = tiny(48).init::<NdArray>(&device).unwrap();
    let greedy = Sampling {
        temperature: 0.0,
        ..Sampling::default()
    };
    // 46 prompt bytes: two more are read (positions 47 and 48), three drawn.
    let mut generator = Generator::new(&model, &[b'a'; 46], greedy).unwrap();
    let drawn: Vec<Option<u8>> = (0..4)
        .map(|_| generator.next_byte(&model).unwrap())
        .collect();
    assert!(
        drawn[..3].iter().all(Option::is_some) && drawn[3].is_none(),
        "{drawn:?}"
    );
    assert_eq!(generator.position(), 48);
    // `generate` draws the same bytes and stops there too, whatever it is asked for.
    let bytes = generate(&model, &[b'a'; 46], 100, &greedy, |_| {}).unwrap();
    assert_eq!(
        bytes,
        drawn[..3].iter().flatten().copied().collect::<Vec<u8>>()
    );

    for prompt in [&[][..], &[b'a'; 49][..]] {
        let err = Generator::new(&model, prompt, greedy).unwrap_err();
        assert!(err.to_string().contains("1 to 48"), "{err}");
    }
}

/// The browser demo's model (`web/lm/`): natively too, its greedy continuation of the prompt
/// is the checked-in sample that the page's tests expect of the wasm build.
#[test]
fn the_web_demo_model_generates_its_checked_in_sample() {
    #[derive(serde::Deserialize)]
    struct Sample {
        prompt: String,
        generated: String,
    }
    let run = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/lm");
    let text = std::fs::read_to_string(run.join("sample.json")).unwrap();
    let sample: Sample = serde_json::from_str(&text).unwrap();
    let config = load_config(&run).unwrap();
    let model = load_model::<NdArray>(
        &config.model,
        &run_weights(&run).unwrap(),
        &Default::default(),
    )
    .unwrap();
    let greedy = Sampling {
        temperature: 0.0,
        ..Sampling::default()
    };
    let bytes = generate(
        &model,
        sample.prompt.as_bytes(),
        sample.generated.len(),
        &greedy,
        |_| {},
    )
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&bytes), sample.generated);
}

#[test]
fn recall_records_lie_at_the_asked_distance() {
    let task = RecallTask::new(2048, 3).unwrap();
    let (pairs, queries) = task.counts();
    assert_eq!((pairs, queries), (16, 4));
    let far = task.at_distance(1500..2000).unwrap();
    for index in 0..20 {
        let sample = far.sample(index);
        let tokens = &sample.sequence.tokens;
        assert_eq!(tokens.len(), 2049);
        // Each query's loss covers 2 key letters and 3 digits.
        assert_eq!(
            sample.sequence.weights.iter().sum::<f32>(),
            5.0 * queries as f32
        );
        for query in &sample.queries {
            assert!((1500..2000).contains(&query.distance), "{}", query.distance);
            // The record: `#KEYVAL;` `distance` bytes before the first query.
            let record = far.context() - query.distance;
            assert_eq!(query.record, record);
            let key = &tokens[query.at - 3..query.at];
            assert_eq!(tokens[record], b'#');
            assert_eq!(&tokens[record + 1..record + 4], key);
            assert_eq!(&tokens[record + 4..record + 7], query.value.as_bytes());
            assert_eq!(tokens[query.at - 4], b'?');
            // Predicted from the byte before: the key's last two letters, then the value.
            let weights = &sample.sequence.weights;
            assert_eq!(&weights[query.at - 3..query.at + 2], &[1.0; 5]);
            assert_eq!((weights[query.at - 4], weights[query.at + 2]), (0.0, 0.0));
        }
        assert_eq!(
            far.sequence(index),
            sample.sequence,
            "a function of the index"
        );
    }
    assert_ne!(task.sequence(0), task.sequence(1));
    let err = task.at_distance(10..12).unwrap_err();
    assert!(err.to_string().contains("slots"), "{err}");
    assert!(
        RecallTask::with_counts(64, 8, 2, 0).is_err(),
        "8 records need 8 slots of 16 bytes"
    );
    assert_eq!(RECORD_LEN, 8);

    // 128 queries at 8K: the nearest quarter holds 109 slots, so it is asked 109 of them
    // (evaluation by distance used to fail there after the whole training run).
    let many = RecallTask::with_counts(8192, 128, 128, 3).unwrap();
    assert!(many.at_distance(0..1760).is_err());
    let near = many.near(0..1760).unwrap();
    let (pairs, queries) = near.counts();
    assert!(pairs == 128 && (100..128).contains(&queries), "{queries}");
    let sample = near.sample(0);
    assert_eq!(sample.queries.len(), queries);
    assert!(sample.queries.iter().all(|q| q.distance < 1760));
    // Asking fewer queries lengthens the context: the records' positions say where they are
    // (the gate's hits were counted from `many`'s context, 8 bytes per missing query off).
    assert!(near.context() > many.context());
    for query in &sample.queries {
        assert_eq!(query.record, near.context() - query.distance);
        assert_eq!(sample.sequence.tokens[query.record], b'#');
    }
    assert!(
        many.near(0..4).is_err(),
        "no slot lies 0..4 bytes before the queries"
    );
}

#[test]
fn a_curriculum_reads_short_sequences_first_at_the_same_bytes_per_step() {
    // 8 steps of 2 sequences of 512 bytes, 3 stages: 2 steps at 128 bytes, 2 at 256, 4 at 512.
    let config = recall_config(tiny(512), 16, 8, 8)
        .with_valid_every(4)
        .with_curriculum(Some(3));
    config.validate().unwrap();
    let (train_source, valid_source) = config.sources().unwrap();
    assert_eq!(valid_source.seq_len(), 512);
    let loader = SequenceLoader::<NdArray>::training(train_source, 2, 8, 0, Default::default());
    let shapes: Vec<[usize; 2]> = loader.iter().map(|batch| batch.dims()).collect();
    assert_eq!(
        shapes,
        [
            [8, 128],
            [8, 128],
            [4, 256],
            [4, 256],
            [2, 512],
            [2, 512],
            [2, 512],
            [2, 512]
        ]
    );
    // The short stages keep the density of queries: 8 per 512 bytes, 5 bytes in the loss each.
    let (first, _) = config.sources().unwrap();
    let answers: f32 = first.item(0).iter().flat_map(|s| s.weights.clone()).sum();
    assert_eq!(answers, 5.0 * 8.0);

    let too_few_steps = TrainConfig {
        steps: 3,
        valid_every: 3,
        ..config.clone()
    };
    let err = too_few_steps.validate().unwrap_err();
    assert!(err.to_string().contains("at least 4 steps"), "{err}");
    // 512 / 2^5 = 16 bytes hold no record.
    let too_short = TrainConfig {
        steps: 16,
        curriculum: Some(6),
        ..config.clone()
    };
    let err = too_short.validate().unwrap_err();
    assert!(err.to_string().contains("recall task"), "{err}");
    let none = TrainConfig {
        curriculum: Some(0),
        ..config.clone()
    };
    let err = none.validate().unwrap_err();
    assert!(
        err.to_string().contains("curriculum must be positive"),
        "{err}"
    );
}

#[test]
fn rope_theta_must_be_above_one() {
    let device = Default::default();
    for theta in [0.0, 1.0, f32::NAN] {
        let config = tiny(64).with_rope_theta(theta);
        let err = config.init::<NdArray>(&device).unwrap_err();
        assert!(err.to_string().contains("rope_theta"), "{err}");
    }
    // A run with it is refused before anything is written.
    let run = scratch("bad-rope").join("run");
    let bad = TrainConfig {
        model: tiny(64).with_rope_theta(0.0),
        ..text_config(2, 2)
    };
    let err = train(&bad, false, target(&run)).unwrap_err();
    assert!(err.to_string().contains("rope_theta"), "{err}");
    assert!(!run.exists(), "nothing is written for a bad model");
    // A long-context base changes the rotation, not the weights' shapes.
    let long = tiny(64)
        .with_rope_theta(1e6)
        .init::<NdArray>(&device)
        .unwrap();
    let short = tiny(64).init::<NdArray>(&device).unwrap();
    let long = long.load_record(short.clone().into_record());
    let logits = |model: &MobaLm<NdArray>| {
        floats(model.forward(byte_tensor(b"rotations", &device)).unwrap())
    };
    assert_ne!(
        logits(&short),
        logits(&long),
        "the base reaches the attention"
    );
}

#[test]
fn corrupt_checkpoints_and_bad_data_paths_are_clear_errors() {
    let dir = scratch("errors");
    let device = Default::default();
    let config = tiny(48);
    let path = dir.join("model");
    let load = |config: &LmConfig| load_model::<NdArray>(config, &path, &device).unwrap_err();
    let message = |err: MobaError| match &err {
        MobaError::Checkpoint { path, .. } => {
            assert!(path.ends_with("model.mpk"), "{err}");
            err.to_string()
        }
        other => panic!("not a checkpoint error: {other}"),
    };

    assert!(message(load(&config)).contains("no such file"));
    std::fs::write(path.with_extension("mpk"), b"not a checkpoint").unwrap();
    message(load(&config));
    save_model(&config.init::<NdArray>(&device).unwrap(), &path).unwrap();
    let bytes = std::fs::read(path.with_extension("mpk")).unwrap();
    std::fs::write(path.with_extension("mpk"), &bytes[..bytes.len() / 2]).unwrap();
    message(load(&config));
    std::fs::write(path.with_extension("mpk"), &bytes).unwrap();
    let wider = LmConfig {
        d_ff: 96,
        ..config.clone()
    };
    assert!(message(load(&wider)).contains("another model"));

    let missing = PathBuf::from("/no/such/corpus");
    let err = TextCorpus::load(std::slice::from_ref(&missing), 0.1).unwrap_err();
    assert!(
        matches!(&err, MobaError::Io { path, .. } if path == "/no/such/corpus"),
        "{err}"
    );
    let mut config = text_config(4, 2);
    config.data = DataConfig::Text {
        paths: vec![missing.display().to_string()],
        valid_fraction: 0.1,
    };
    let run = dir.join("run");
    let err = train(&config, false, target(&run)).unwrap_err();
    assert!(err.to_string().contains("/no/such/corpus"), "{err}");
    assert!(!run.exists(), "nothing is written before the data loads");

    // A finished run whose newest optimizer checkpoint was damaged: the scan names the
    // file, and resuming falls back to the complete epoch before it.
    let run = dir.join("damaged");
    let config = text_config(4, 2);
    train(&config, false, target(&run)).unwrap();
    let optim = checkpoint_file(&run, "optim", 2).with_extension("mpk");
    std::fs::write(&optim, b"garbage").unwrap();
    let scan = Checkpoints::scan(&run);
    assert_eq!(scan.newest_complete, Some(1), "{scan:?}");
    assert!(scan.incomplete[0].1.contains("optim-2.mpk"), "{scan:?}");
    let summary = train(&config, true, target(&run)).unwrap();
    // Epoch 2 trained again from epoch 1's checkpoint: four steps in all, as before.
    assert_eq!(summary.steps, 4);
    assert_eq!(Checkpoints::scan(&run).newest_complete, Some(2));

    // A record without a checksum beside it in a run written before checksums existed
    // (none in the folder): still resumable, the old way.
    let legacy = dir.join("legacy");
    train(&config, false, target(&legacy)).unwrap();
    for entry in std::fs::read_dir(legacy.join("checkpoint"))
        .unwrap()
        .flatten()
    {
        if entry.path().extension().is_some_and(|e| e == "crc32") {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
    assert_eq!(Checkpoints::scan(&legacy).newest_complete, Some(2));
    assert!(TrainSummary::read(&legacy).is_ok());
}

#[test]
fn recall_evaluation_skips_distances_no_record_can_take() {
    // 128 bytes, 4 records and 4 queries: the nearest quarter of the context (0..24 bytes) is
    // narrower than a slot, so it holds none; the other buckets are measured.
    let config = recall_config(tiny(128), 4, 4, 4).with_valid_every(4);
    config.validate().unwrap();
    let device = Default::default();
    let model = config.model.init::<NdArray>(&device).unwrap();
    let options = EvalOptions {
        batches: 1,
        recall_sequences: 2,
        ..Default::default()
    };
    let report = evaluate(&model, &config, &options, &device).unwrap();
    assert!((1..4).contains(&report.recall.len()), "{:?}", report.recall);
    assert!(
        report
            .recall
            .iter()
            .all(|bucket| bucket.queries > 0 && bucket.distance.start >= 24)
    );
}

#[test]
fn recall_evaluation_counts_where_the_gate_routes() {
    // The hybrid at 128 bytes (16 blocks of 8): with top-1 a query sees only its own block,
    // never a record's (records lie at least 24 bytes before the queries); with top-16 it
    // sees every block up to its own. The full layer has no gate and no count.
    let device = Default::default();
    let options = EvalOptions {
        batches: 1,
        recall_sequences: 2,
        ..Default::default()
    };
    for (top_k, rate) in [(1, 0.0), (16, 1.0)] {
        let moba = AttentionKind::Moba {
            block_size: 8,
            top_k,
        };
        let model_config = LmConfig::new(32, 2, 4, 2, 64, moba, 128).with_full_layers(1);
        let config = recall_config(model_config, 4, 4, 4);
        let model = config.model.init::<NdArray>(&device).unwrap();
        let report = evaluate(&model, &config, &options, &device).unwrap();
        assert!(!report.recall.is_empty());
        // One batch of two sequences, each with its four queries' five counted bytes.
        assert_eq!(report.sequence_losses.len(), 2);
        let total = |i: usize| report.sequence_losses.iter().map(|s| s[i]).sum::<f64>();
        assert_eq!(total(1), 40.0);
        assert!((total(0) / total(1) - report.valid_loss).abs() < 1e-12);
        for bucket in &report.recall {
            // Four query heads per query.
            assert_eq!(bucket.gate_pairs, 4 * bucket.queries, "{bucket:?}");
            assert_eq!(
                bucket.gate_hit_rates(),
                vec![rate],
                "top-{top_k}: {bucket:?}"
            );
        }
    }
}

#[test]
fn the_loss_difference_pairs_the_sequences() {
    let report = |sequence_losses: Vec<[f64; 2]>| EvalReport {
        valid_loss: 0.0,
        trailing_loss: 0.0,
        sequences: sequence_losses.len(),
        sequence_losses,
        recall: Vec::new(),
    };
    let base = report(vec![[1.0, 2.0], [2.0, 2.0], [3.0, 2.0]]);
    // Differences 0.1, 0.3, 0.2: 0.6 more of 6 (+10%); their variance 0.01, so the sum's
    // standard error is sqrt(3 * 0.01) of 6.
    let arm = report(vec![[1.1, 2.0], [2.3, 2.0], [3.2, 2.0]]);
    let d = arm.loss_difference(&base).unwrap();
    assert!((d.relative - 0.1).abs() < 1e-12, "{d:?}");
    assert!(
        (d.standard_error - 0.03f64.sqrt() / 6.0).abs() < 1e-12,
        "{d:?}"
    );
    assert_eq!(d.sequences, 3);
    // Other data (other counted bytes), other counts or a single sequence: no pairing.
    let other = report(vec![[1.1, 3.0], [2.3, 2.0], [3.2, 2.0]]);
    assert_eq!(other.loss_difference(&base), None);
    assert_eq!(report(vec![[1.0, 2.0]]).loss_difference(&base), None);
    let one = report(vec![[1.0, 2.0]]);
    assert_eq!(one.loss_difference(&one), None);
}

#[test]
fn the_forward_with_gates_is_the_forward() {
    let device = Default::default();
    let model = tiny(48).init::<NdArray>(&device).unwrap();
    let tokens = || byte_tensor::<NdArray>(b"MoBA gates each query to a few blocks.", &device);
    let (logits, gates) = model.forward_with_gates(tokens()).unwrap();
    assert_eq!(floats(logits), floats(model.forward(tokens()).unwrap()));
    // The MoBA layer: blocks of 8, top-2, so a query sees its own block and one before it.
    let gate = gates[0].as_ref().expect("the MoBA layer's gate");
    assert_eq!((gate.heads, gate.seq, gate.top_k), (4, 38, 2));
    for head in 0..4 {
        assert!(gate.sees(0, head, 5, 0) && !gate.sees(0, head, 5, 8));
        let seen = (0..38).filter(|&key| gate.sees(0, head, 37, key)).count();
        assert_eq!(
            seen,
            6 + 8,
            "its own block (keys 32..38) and one earlier block"
        );
    }
    assert!(gates[1].is_none(), "the full layer has no gate");
}

/// A model reads the documents packed in a batch's rows as it reads each one alone (a varlen
/// batch): the MoBA layer (blocks of 32) and the full layer attend within each document only.
/// The key convolution (moved off the identity) reads no key of another document either.
fn check_packed_documents<B: MobaBackend>(device: &B::Device) {
    let model = LmConfig::preset("tiny")
        .unwrap()
        .with_full_layers(1)
        .with_key_conv(Some(3))
        .init::<B>(device)
        .unwrap()
        .map(&mut PerturbKeyConvs);
    let seq = 120;
    let text: Vec<u8> = (0..2 * (seq + 1)).map(|i| (i * 37 % 251) as u8).collect();
    let rows: Vec<Sequence> = [vec![50], vec![7, 100]]
        .into_iter()
        .zip(text.chunks(seq + 1))
        .map(|(documents, tokens)| Sequence {
            documents,
            ..Sequence::uniform(tokens.to_vec())
        })
        .collect();
    let batch = TokenBatch::<B>::new(&rows, device);
    assert_eq!(
        batch.cu_seqlens.as_deref(),
        Some(&[0, 50, 120, 127, 220, 240][..])
    );
    let packed = model
        .forward_packed(batch.inputs.clone(), batch.cu_seqlens.as_deref())
        .unwrap();
    // Offsets that decrease, or that leave out a row's start, are errors.
    for bad in [&[0, 50, 10, 240][..], &[0, 50, 240][..]] {
        let err = model
            .forward_packed(batch.inputs.clone(), Some(bad))
            .unwrap_err();
        assert!(matches!(err, MobaError::Config(_)), "{bad:?}: {err}");
    }
    for (row, sequence) in rows.iter().enumerate() {
        let bounds: Vec<usize> = [0]
            .into_iter()
            .chain(sequence.documents.iter().copied())
            .chain([seq])
            .collect();
        for w in bounds.windows(2) {
            let alone = model
                .forward(byte_tensor::<B>(&sequence.tokens[w[0]..w[1]], device))
                .unwrap();
            let part = packed.clone().slice([row..row + 1, w[0]..w[1]]);
            let error = (part - alone).abs().max().into_scalar().elem::<f32>();
            assert!(
                error < 1e-4,
                "row {row}, document {w:?}: logits differ by {error:e}"
            );
        }
    }
}

#[test]
fn packed_documents_read_as_each_alone() {
    check_packed_documents::<NdArray>(&Default::default());
    check_packed_documents::<Wgpu>(&burn_wgpu_device(&Default::default()).unwrap().0);
}

#[test]
fn corpus_windows_tell_where_files_start() {
    let dir = scratch("documents");
    std::fs::write(dir.join("a.txt"), vec![b'a'; 300]).unwrap();
    std::fs::write(dir.join("b.txt"), vec![b'b'; 300]).unwrap();
    let corpus = TextCorpus::load(&[dir], 0.0).unwrap();
    let windows = corpus.train(100, 7).unwrap().by_document(&corpus, 1);
    let mut crossings = 0;
    for i in 0..50 {
        let s = windows.sequence(i);
        let starts: Vec<usize> = (1..100)
            .filter(|&p| s.tokens[p - 1..=p] == *b"ab")
            .collect();
        crossings += starts.len();
        assert_eq!(s.documents, starts, "window {i}");
    }
    assert!(crossings > 0, "no window crossed the boundary");
}

/// A file shorter than the grain shares its attention with the next one, so a window of
/// `seq` bytes tells apart at most `seq / grain + 1` documents (their padding is bounded).
#[test]
fn corpus_windows_merge_files_shorter_than_the_grain() {
    let dir = scratch("grain");
    let lengths = [40, 3, 9, 30, 1, 1, 25, 60];
    for (i, &len) in lengths.iter().enumerate() {
        std::fs::write(dir.join(format!("{i}.txt")), vec![b'a' + i as u8; len]).unwrap();
    }
    let corpus = TextCorpus::load(&[dir], 0.0).unwrap();
    let (seq, grain) = (100, 16);
    let windows = corpus.train(seq, 3).unwrap().by_document(&corpus, grain);
    let mut dropped = 0;
    for i in 0..40 {
        let s = windows.sequence(i);
        let starts: Vec<usize> = (1..seq)
            .filter(|&p| s.tokens[p - 1] != s.tokens[p])
            .collect();
        // Kept: every file start at least `grain` after the last one kept (or the window's
        // first byte); the others are dropped.
        let mut last = 0;
        for &at in &starts {
            let kept = s.documents.contains(&at);
            assert_eq!(kept, at - last >= grain, "window {i}, start {at}: {s:?}");
            if kept {
                last = at;
            } else {
                dropped += 1;
            }
        }
        assert!(s.documents.iter().all(|at| starts.contains(at)));
        assert!(s.documents.len() <= (seq - 1) / grain, "window {i}");
    }
    assert!(dropped > 0, "no window held a short file");
}

/// Data parallel on two ndarray workers (burn-train's multi-device strategy) takes the steps
/// one device takes with the same batch: each worker reads half of every batch (windows of
/// two files, so packed documents too), and their gradients summed are the batch's.
#[test]
fn data_parallel_training_takes_the_steps_of_one_device() {
    let config = text_config(4, 2);
    let dir = scratch("data-parallel");
    let (one, two) = (dir.join("one"), dir.join("two"));
    let single = train(&config, false, target(&one)).unwrap();
    let two_workers = TrainTarget {
        devices: vec![Default::default(); 2],
        ..target(&two)
    };
    let parallel = train(&config, false, two_workers).unwrap();
    assert_eq!(
        (single.steps, single.tokens),
        (parallel.steps, parallel.tokens)
    );
    let weights = |run: &Path| -> Vec<f32> {
        let model = load_model::<NdArray>(&config.model, &model_path(run), &Default::default());
        parameter_bits(&model.unwrap())
            .into_iter()
            .map(f32::from_bits)
            .collect()
    };
    let (a, b) = (weights(&one), weights(&two));
    let moved = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    // Sums in another order: far below a step's change (about the learning rate, 3e-3).
    assert!(moved < 1e-5, "the weights differ by {moved:e}");
    let loss_gap = (single.final_valid_loss - parallel.final_valid_loss).abs();
    assert!(
        loss_gap < 1e-4,
        "validation loss {single:?} vs {parallel:?}"
    );

    // A batch the devices cannot share evenly is refused before anything starts.
    let refused = dir.join("three");
    let three = TrainTarget {
        devices: vec![Default::default(); 3],
        ..target(&refused)
    };
    let err = train(&config, false, three).unwrap_err().to_string();
    assert!(err.contains("not dealt evenly over 3 devices"), "{err}");
    assert!(!refused.exists());
}
