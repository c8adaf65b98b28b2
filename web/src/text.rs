//! Text generation in the page: a trained byte-level MoBA model (`moba train`'s `train.json`
//! and `model.mpk`) on burn's CPU backend in wasm. The prompt goes through one MoBA prefill,
//! then each byte through one MoBA decode step (the query gated over the cached blocks),
//! one byte per call so that the page shows each as it comes.

use burn::backend::NdArray;
use burn::module::Module;
use moba::model::{Generator, LmConfig, MobaLm, Sampling, model_from_bytes};
use moba::module::AttentionKind;
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use crate::to_js;

/// burn's ndarray backend: the model's decode is a few small matrix products per byte,
/// which the CPU does without a round trip to the GPU per byte.
type Cpu = NdArray<f32>;

/// What the page shows of a loaded model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelInfo {
    pub parameters: usize,
    pub layers: usize,
    pub d_model: usize,
    pub heads: usize,
    /// Longest prompt plus generated text, in bytes.
    pub context: usize,
    /// Keys per MoBA block and blocks attended per query (own block included); `None` for a
    /// model without MoBA layers.
    pub block_size: Option<usize>,
    pub top_k: Option<usize>,
    /// The last layers that attend every position (the MoBA paper's hybrid).
    pub full_layers: usize,
}

/// A trained model and the generation in progress, if any.
#[wasm_bindgen]
pub struct TextModel {
    model: MobaLm<Cpu>,
    config: LmConfig,
    generator: Option<Generator<Cpu>>,
}

#[wasm_bindgen]
impl TextModel {
    /// The model of a training run: `train_json` is the text of its `train.json` (whose
    /// `model` field is the model's config), `weights` the bytes of its `model.mpk`.
    #[wasm_bindgen(constructor)]
    pub fn new(train_json: &str, weights: Vec<u8>) -> Result<TextModel, JsError> {
        let config = run_model_config(train_json)?;
        let model = model_from_bytes::<Cpu>(&config, weights, "model.mpk", &Default::default())?;
        Ok(TextModel {
            model,
            config,
            generator: None,
        })
    }

    /// The model's size and attention, as a [`ModelInfo`] object.
    pub fn info(&self) -> Result<JsValue, JsError> {
        to_js(&self.model_info())
    }

    /// Starts generating after `prompt` (its UTF-8 bytes): temperature 0 is greedy, `top_p`
    /// cuts the nucleus, `seed` fixes the draws.
    pub fn start(
        &mut self,
        prompt: &str,
        temperature: f32,
        top_p: f32,
        seed: u32,
    ) -> Result<(), JsError> {
        let sampling = Sampling {
            temperature,
            top_p,
            seed: seed.into(),
        };
        self.generator = Some(Generator::new(&self.model, prompt.as_bytes(), sampling)?);
        Ok(())
    }

    /// The next byte, or `undefined` once the context is full.
    #[wasm_bindgen(js_name = nextByte)]
    pub fn next_byte(&mut self) -> Result<Option<u8>, JsError> {
        let generator = self
            .generator
            .as_mut()
            .ok_or_else(|| JsError::new("call start(prompt, ...) before nextByte()"))?;
        Ok(generator.next_byte(&self.model)?)
    }

    /// Positions the model has read: the prompt and the bytes generated so far but the last.
    pub fn position(&self) -> usize {
        self.generator.as_ref().map_or(0, Generator::position)
    }
}

impl TextModel {
    /// What [`TextModel::info`] returns, for Rust callers.
    pub fn model_info(&self) -> ModelInfo {
        let config = &self.config;
        let (block_size, top_k) = match config.attention {
            AttentionKind::Moba { block_size, top_k } if config.full_layers < config.n_layers => {
                (Some(block_size), Some(top_k))
            }
            _ => (None, None),
        };
        ModelInfo {
            parameters: self.model.num_params(),
            layers: config.n_layers,
            d_model: config.d_model,
            heads: config.n_heads,
            context: config.max_seq_len,
            block_size,
            top_k,
            full_layers: config.full_layers,
        }
    }
}

/// The model config inside a run's `train.json`.
fn run_model_config(train_json: &str) -> Result<LmConfig, JsError> {
    #[derive(Deserialize)]
    struct Run {
        model: LmConfig,
    }
    serde_json::from_str::<Run>(train_json)
        .map(|run| run.model)
        .map_err(|e| JsError::new(&format!("train.json: not a run's config ({e})")))
}
