//! A run directory on disk: `train.json` (the [`TrainConfig`]), `model.mpk` (the final
//! weights), `checkpoint/` (burn-train's model, optimizer and scheduler records of the last
//! epochs). Records are burn's named MessagePack at full precision: plain data, no code.

use std::path::{Path, PathBuf};

use burn::config::Config;
use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::backend::Backend;

use super::config::TrainConfig;
use crate::backend::MobaBackend;
use crate::error::{MobaError, Result};
use crate::model::weights::weights_error;
use crate::model::{LmConfig, MobaLm, model_from_bytes};

/// The recorder of every model and checkpoint file.
pub type RunRecorder = NamedMpkFileRecorder<FullPrecisionSettings>;

/// `DIR/train.json`.
pub fn config_path(run: &Path) -> PathBuf {
    run.join("train.json")
}

/// `DIR/model` (the recorder adds `.mpk`).
pub fn model_path(run: &Path) -> PathBuf {
    run.join("model")
}

/// Saves `model` to `path` (`.mpk` is added).
pub fn save_model<B: Backend>(model: &MobaLm<B>, path: &Path) -> Result<()> {
    materialize(model);
    model
        .clone()
        .save_file(path, &RunRecorder::new())
        .map_err(|e| MobaError::io(path, e))
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
    let bytes = std::fs::read(&file).map_err(|e| checkpoint_error(&file, e))?;
    model_from_bytes(config, bytes, &file.display().to_string(), device)
}

/// Draws every parameter that is still lazy. burn initialises a fresh module's weights on
/// first use, and a clone of a lazy parameter draws its own: without this, the saved clone
/// would hold other weights than `model`.
fn materialize<B: Backend>(model: &MobaLm<B>) {
    struct Materialize;
    impl<B: Backend> burn::module::ModuleVisitor<B> for Materialize {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<B, D>>,
        ) {
            param.val();
        }
    }
    model.visit(&mut Materialize);
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

/// The weights a finished or interrupted run offers: `model.mpk`, else its latest checkpoint.
pub fn run_weights(run: &Path) -> Result<PathBuf> {
    if model_path(run).with_extension("mpk").is_file() {
        return Ok(model_path(run));
    }
    match latest_checkpoint(run) {
        Some(epoch) => Ok(checkpoint_file(run, "model", epoch)),
        None => Err(checkpoint_error(
            &run.join("model.mpk"),
            "no such file, and no checkpoint in checkpoint/",
        )),
    }
}

/// `DIR/checkpoint/{name}-{epoch}` (the recorder adds `.mpk`), as burn-train names them.
pub fn checkpoint_file(run: &Path, name: &str, epoch: usize) -> PathBuf {
    run.join("checkpoint").join(format!("{name}-{epoch}"))
}

/// The last epoch with a model checkpoint in `DIR/checkpoint`.
pub fn latest_checkpoint(run: &Path) -> Option<usize> {
    std::fs::read_dir(run.join("checkpoint"))
        .ok()?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("model-")?
                .strip_suffix(".mpk")?
                .parse()
                .ok()
        })
        .max()
}

pub(crate) fn checkpoint_error(path: &Path, message: impl ToString) -> MobaError {
    weights_error(&path.display().to_string(), message)
}
