//! A model's weights as `moba train` writes them (`model.mpk`: burn's named MessagePack at
//! full precision, plain data, no code), read from bytes: a file's contents natively, a
//! fetched file in the browser demo. Weights written in half precision
//! ([`HalfWeightsRecorder`], `moba export --half`: half the bytes to ship) read the same
//! way, widened to the backend's floats.

use burn::module::Module;
use burn::record::{FullPrecisionSettings, HalfPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::Backend;

use super::config::LmConfig;
use super::lm::MobaLm;
use crate::error::{MobaError, Result};

/// The recorder of `model.mpk` in memory; the same bytes as burn's `NamedMpkFileRecorder`.
pub type WeightsRecorder = NamedMpkBytesRecorder<FullPrecisionSettings>;

/// [`WeightsRecorder`] with f16 floats: half the bytes, each weight rounded to f16.
/// [`model_from_bytes`] reads its bytes too.
pub type HalfWeightsRecorder = NamedMpkBytesRecorder<HalfPrecisionSettings>;

/// The bytes of `model`'s weights as a `model.mpk` holds them: f32, or f16 with `half`.
///
/// ```
/// use burn::backend::NdArray;
/// use moba::model::{LmConfig, model_from_bytes, weights_bytes};
///
/// let config = LmConfig::preset("tiny")?;
/// let model = config.init::<NdArray>(&Default::default())?;
/// let (full, half) = (weights_bytes(&model, false)?, weights_bytes(&model, true)?);
/// assert!(half.len() * 10 < full.len() * 6);
/// let loaded = model_from_bytes::<NdArray>(&config, half, "model.mpk", &Default::default())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn weights_bytes<B: Backend>(model: &MobaLm<B>, half: bool) -> Result<Vec<u8>> {
    materialize(model);
    let record = model.clone().into_record();
    let bytes = if half {
        Recorder::<B>::record(&HalfWeightsRecorder::new(), record, ())
    } else {
        Recorder::<B>::record(&WeightsRecorder::new(), record, ())
    };
    bytes.map_err(|e| MobaError::Config(format!("writing the weights: {e}")))
}

/// The weights in `bytes` (the contents of a `model.mpk`) in a model of `config`'s shape.
/// `source` names the bytes in errors: corrupt data, or the weights of another model.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::module::Module;
/// use moba::model::{LmConfig, WeightsRecorder, model_from_bytes};
///
/// let config = LmConfig::preset("tiny")?;
/// let model = config.init::<NdArray>(&Default::default())?;
/// let bytes = model.clone().into_record();
/// let bytes = burn::record::Recorder::<NdArray>::record(&WeightsRecorder::new(), bytes, ())?;
/// let loaded = model_from_bytes::<NdArray>(&config, bytes, "model.mpk", &Default::default())?;
/// assert_eq!(loaded.num_params(), model.num_params());
/// assert!(model_from_bytes::<NdArray>(&config, vec![1, 2, 3], "bad.mpk", &Default::default()).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn model_from_bytes<B: Backend>(
    config: &LmConfig,
    bytes: Vec<u8>,
    source: &str,
    device: &B::Device,
) -> Result<MobaLm<B>> {
    let record = WeightsRecorder::new()
        .load(bytes, device)
        .map_err(|e| weights_error(source, e))?;
    let fresh = config.init::<B>(device)?;
    // burn loads a record of another size without a word: compare every shape.
    let (want, model) = (shapes(&fresh), fresh.load_record(record));
    let got = shapes(&model);
    if want != got {
        let at = (0..want.len().max(got.len()))
            .find(|&i| want.get(i) != got.get(i))
            .unwrap_or(0);
        return Err(weights_error(
            source,
            format!(
                "parameter {at} has shape {:?} where the config wants {:?}: the weights of another model",
                got.get(at),
                want.get(at)
            ),
        ));
    }
    Ok(model)
}

/// Draws every parameter that is still lazy. burn initialises a fresh module's weights on
/// first use, and a clone of a lazy parameter draws its own: without this, a saved clone
/// would hold other weights than `model`.
pub(crate) fn materialize<B: Backend>(model: &MobaLm<B>) {
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

/// The shapes of every parameter, in visiting order.
fn shapes<B: Backend>(model: &MobaLm<B>) -> Vec<Vec<usize>> {
    struct Shapes(Vec<Vec<usize>>);
    impl<B: Backend> burn::module::ModuleVisitor<B> for Shapes {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<B, D>>,
        ) {
            self.0.push(param.shape().to_vec());
        }
    }
    let mut visitor = Shapes(Vec::new());
    model.visit(&mut visitor);
    visitor.0
}

/// An error about the weights or checkpoint named `source`.
pub(crate) fn weights_error(source: &str, message: impl ToString) -> MobaError {
    MobaError::Checkpoint {
        path: source.to_string(),
        message: message.to_string(),
    }
}
