//! A run directory on disk: `train.json` (the [`TrainConfig`]), `model.mpk` (the final
//! weights), `checkpoint/` (burn-train's model, optimizer and scheduler records of the last
//! epochs). Records are burn's named MessagePack at full precision: plain data, no code.
//!
//! Every record is written whole or not at all (a temporary file renamed into place) with
//! its CRC-32 beside it (`NAME.mpk.crc32`, written after the record: it marks the record
//! complete). An epoch's checkpoint counts only when all three of its records are complete
//! and match their checksums, so a kill during a save, a full disk or a flipped bit leaves
//! the run resumable from the newest complete epoch.

use std::path::{Path, PathBuf};

use burn::config::Config;
use burn::module::Module;
use burn::record::{FileRecorder, FullPrecisionSettings, Recorder, RecorderError};
use burn::tensor::backend::Backend;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::config::TrainConfig;
use crate::backend::MobaBackend;
use crate::error::{MobaError, Result};
use crate::files::write_atomically;
use crate::model::weights::{materialize, weights_error};
use crate::model::{LmConfig, MobaLm, WeightsRecorder, model_from_bytes};

/// The recorder of every model and checkpoint file: the bytes of burn's
/// `NamedMpkFileRecorder` at full precision, written atomically with a CRC-32 beside them,
/// and checked against it when read.
#[derive(Debug, Default, Clone)]
pub struct RunRecorder;

impl RunRecorder {
    pub fn new() -> Self {
        RunRecorder
    }
}

impl<B: Backend> Recorder<B> for RunRecorder {
    type Settings = FullPrecisionSettings;
    type RecordArgs = PathBuf;
    type RecordOutput = ();
    type LoadArgs = PathBuf;

    fn save_item<I: Serialize>(&self, item: I, mut file: PathBuf) -> Result<(), RecorderError> {
        file.set_extension("mpk");
        let bytes = Recorder::<B>::save_item(&WeightsRecorder::new(), item, ())?;
        write_checked(&file, &bytes).map_err(|e| RecorderError::Unknown(e.to_string()))
    }

    fn load_item<I: DeserializeOwned>(&self, file: &mut PathBuf) -> Result<I, RecorderError> {
        file.set_extension("mpk");
        let mut bytes = read_checked(file).map_err(|e| match e {
            MobaError::Io { error, .. } if !file.exists() => {
                RecorderError::FileNotFound(error.to_string())
            }
            other => RecorderError::Unknown(other.to_string()),
        })?;
        Recorder::<B>::load_item(&WeightsRecorder::new(), &mut bytes)
    }
}

impl<B: Backend> FileRecorder<B> for RunRecorder {
    fn file_extension() -> &'static str {
        "mpk"
    }
}

/// `FILE.crc32`: the checksum that marks `FILE` complete.
fn checksum_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".crc32");
    PathBuf::from(name)
}

/// The line a checksum file holds for `bytes`.
fn checksum_line(bytes: &[u8]) -> String {
    format!(
        "crc32 {:08x} bytes {}\n",
        crc32fast::hash(bytes),
        bytes.len()
    )
}

/// Writes `bytes` to `file` atomically, then its checksum; drops the checksums of records
/// burn-train has deleted beside it. A record replaced in place (`model.mpk`) loses its old
/// checksum first, so a kill between the two writes leaves a record without one, never
/// one beside another record's checksum.
fn write_checked(file: &Path, bytes: &[u8]) -> Result<()> {
    let checksum = checksum_path(file);
    if checksum.exists() {
        std::fs::remove_file(&checksum).map_err(|e| MobaError::io(&checksum, e))?;
    }
    write_atomically(file, bytes)?;
    write_atomically(&checksum, checksum_line(bytes).as_bytes())?;
    if let Some(dir) = file.parent().and_then(|dir| std::fs::read_dir(dir).ok()) {
        for entry in dir.flatten() {
            let path = entry.path();
            let record = path.with_extension("");
            if path.extension().is_some_and(|e| e == "crc32") && !record.exists() {
                std::fs::remove_file(&path).ok();
            }
        }
    }
    Ok(())
}

/// The bytes of `file`, checked against its checksum where it has one (records written
/// before checksums existed have none).
fn read_checked(file: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(file).map_err(|e| MobaError::io(file, e))?;
    match verify(file, &bytes) {
        Checksum::Matches | Checksum::Missing => Ok(bytes),
        Checksum::Differs(expected) => Err(checkpoint_error(
            file,
            format!(
                "the file does not match its checksum (expected {}, found {}): it is corrupt",
                expected.trim(),
                checksum_line(&bytes).trim()
            ),
        )),
    }
}

/// What a record's checksum file says of its bytes.
enum Checksum {
    Matches,
    Missing,
    Differs(String),
}

fn verify(file: &Path, bytes: &[u8]) -> Checksum {
    match std::fs::read_to_string(checksum_path(file)) {
        Err(_) => Checksum::Missing,
        Ok(line) if line == checksum_line(bytes) => Checksum::Matches,
        Ok(line) => Checksum::Differs(line),
    }
}

/// `DIR/train.json`.
pub fn config_path(run: &Path) -> PathBuf {
    run.join("train.json")
}

/// `DIR/model` (the recorder adds `.mpk`).
pub fn model_path(run: &Path) -> PathBuf {
    run.join("model")
}

/// Saves `model` to `path` (`.mpk` is added), atomically and with its checksum.
pub fn save_model<B: Backend>(model: &MobaLm<B>, path: &Path) -> Result<()> {
    materialize(model);
    model
        .clone()
        .save_file(path, &RunRecorder::new())
        .map_err(|e| MobaError::io(&path.with_extension("mpk"), e))
}

/// The weights at `path` (`.mpk` is added) into a model of `config`'s shape; an error
/// names the file when it is missing, unreadable, or the weights of another model.
pub fn load_model<B: MobaBackend>(
    config: &LmConfig,
    path: &Path,
    device: &B::Device,
) -> Result<MobaLm<B>> {
    let file = path.with_extension("mpk");
    if !file.is_file() {
        return Err(checkpoint_error(&file, "no such file"));
    }
    let bytes = read_checked(&file)?;
    model_from_bytes(config, bytes, &file.display().to_string(), device)
}

/// What [`export_run`] wrote: the weights file and its size, beside the size of the run's
/// weights it read.
#[derive(Debug, Clone)]
pub struct Exported {
    pub weights: PathBuf,
    pub bytes: u64,
    pub source: PathBuf,
    pub source_bytes: u64,
}

/// Writes the run in `run` to `out` as a run of its own, what a page or a repository ships:
/// its `train.json` and the weights `moba generate` would read (`model.mpk`, else the newest
/// complete checkpoint's) as `model.mpk` with its checksum, in f16 with `half` (half the
/// bytes; [`crate::model::model_from_bytes`] widens them again). Refuses to write into `run`
/// itself, whose full-precision weights it would replace.
pub fn export_run(run: &Path, out: &Path, half: bool) -> Result<Exported> {
    let config = load_config(run)?;
    let source = run_weights(run)?.with_extension("mpk");
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same(run, out) {
        return Err(MobaError::Config(format!(
            "{} is the run itself: export writes another directory and keeps the run's weights",
            out.display()
        )));
    }
    if out.join("checkpoint").exists() {
        return Err(MobaError::Config(format!(
            "{} is a training run (it has checkpoint/): export writes a directory of its own \
             (an earlier export's is fine) and replaces no run's weights",
            out.display()
        )));
    }
    let device = Default::default();
    let model = load_model::<burn::backend::NdArray>(&config.model, &source, &device)?;
    let bytes = crate::model::weights_bytes(&model, half)?;
    std::fs::create_dir_all(out).map_err(|e| MobaError::io(out, e))?;
    let json = serde_json::to_string_pretty(&config).expect("a config serialises");
    write_atomically(&config_path(out), json.as_bytes())?;
    let weights = model_path(out).with_extension("mpk");
    write_checked(&weights, &bytes)?;
    let source_bytes = std::fs::metadata(&source).map_or(0, |m| m.len());
    Ok(Exported {
        bytes: bytes.len() as u64,
        weights,
        source_bytes,
        source,
    })
}

/// The config of the run in `run`.
pub fn load_config(run: &Path) -> Result<TrainConfig> {
    let path = config_path(run);
    if !path.is_file() {
        return Err(checkpoint_error(
            &path,
            "no such file: not a training run directory",
        ));
    }
    TrainConfig::load(&path).map_err(|e| checkpoint_error(&path, e))
}

/// The weights a finished or interrupted run offers: `model.mpk`, else the model of its
/// newest complete checkpoint.
pub fn run_weights(run: &Path) -> Result<PathBuf> {
    if model_path(run).with_extension("mpk").is_file() {
        return Ok(model_path(run));
    }
    match Checkpoints::scan(run).newest_complete {
        Some(epoch) => Ok(checkpoint_file(run, "model", epoch)),
        None => Err(checkpoint_error(
            &run.join("model.mpk"),
            "no such file, and no complete checkpoint in checkpoint/",
        )),
    }
}

/// `DIR/checkpoint/{name}-{epoch}` (the recorder adds `.mpk`), as burn-train names them.
pub fn checkpoint_file(run: &Path, name: &str, epoch: usize) -> PathBuf {
    run.join("checkpoint").join(format!("{name}-{epoch}"))
}

/// The records of one epoch's checkpoint.
const RECORDS: [&str; 3] = ["model", "optim", "scheduler"];

/// What `DIR/checkpoint` holds: the newest epoch whose checkpoint is complete, and why any
/// newer one is not.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoints {
    pub newest_complete: Option<usize>,
    /// Newer epochs with some record, each with what is wrong with it.
    pub incomplete: Vec<(usize, String)>,
}

impl Checkpoints {
    /// Reads every record's bytes and checksum. Epochs saved before checksums existed (older
    /// than every epoch with a checksum: a run written by an earlier `moba`, resumed since)
    /// count as complete when their three records exist.
    pub fn scan(run: &Path) -> Self {
        let dir = run.join("checkpoint");
        let names: Vec<String> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().into_string().ok())
            .collect();
        let epoch_of = |name: &str, suffix: &str| -> Option<usize> {
            let (_, epoch) = name.strip_suffix(suffix)?.rsplit_once('-')?;
            epoch.parse().ok()
        };
        let first_checksummed = names
            .iter()
            .filter_map(|name| epoch_of(name, ".mpk.crc32"))
            .min();
        let mut epochs: Vec<usize> = names
            .iter()
            .filter_map(|name| epoch_of(name, ".mpk"))
            .collect();
        epochs.sort_unstable_by(|a, b| b.cmp(a));
        epochs.dedup();
        let mut found = Checkpoints {
            newest_complete: None,
            incomplete: Vec::new(),
        };
        for epoch in epochs {
            let before_checksums = first_checksummed.is_none_or(|first| epoch < first);
            match Self::problem(run, epoch, before_checksums) {
                None => {
                    found.newest_complete = Some(epoch);
                    break;
                }
                Some(problem) => found.incomplete.push((epoch, problem)),
            }
        }
        found
    }

    /// What keeps `epoch`'s checkpoint from being complete, if anything.
    fn problem(run: &Path, epoch: usize, before_checksums: bool) -> Option<String> {
        for name in RECORDS {
            let file = checkpoint_file(run, name, epoch).with_extension("mpk");
            let Ok(bytes) = std::fs::read(&file) else {
                return Some(format!("{} is missing", file.display()));
            };
            match (verify(&file, &bytes), before_checksums) {
                (Checksum::Matches, _) | (Checksum::Missing, true) => {}
                (Checksum::Missing, false) => {
                    return Some(format!(
                        "{} has no checksum: its save did not finish",
                        file.display()
                    ));
                }
                (Checksum::Differs(_), _) => {
                    return Some(format!(
                        "{} does not match its checksum: it is corrupt",
                        file.display()
                    ));
                }
            }
        }
        None
    }
}

pub(crate) fn checkpoint_error(path: &Path, message: impl ToString) -> MobaError {
    weights_error(&path.display().to_string(), message)
}
