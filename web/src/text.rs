//! Text generation in the page: a trained byte-level MoBA model (`moba train`'s `train.json`
//! and `model.mpk`), one byte per call so that the page shows each as it comes. On the
//! page's WebGPU device ([`TextModel::use_gpu`]) the GPU decoder runs it
//! (`moba::gpu::LmDecoder`: each position a few WGSL kernels per layer around MoBA's split
//! decode, the KV cache on the GPU, the weights in f16); without WebGPU, burn's CPU backend
//! in wasm (the prompt through one MoBA prefill, then each byte through one MoBA decode
//! step).

use std::cell::RefCell;
use std::rc::Rc;

use burn::backend::NdArray;
use burn::module::Module;
use moba::decode_plan::Decoder;
use moba::gpu::{DecoderOptions, GpuContext, WeightPrecision};
use moba::model::{Generator, GpuGenerator, LmConfig, MobaLm, Sampling, model_from_bytes};
use moba::module::AttentionKind;
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use crate::{Demo, to_js};

/// burn's ndarray backend, where the page has no WebGPU.
type Cpu = NdArray<f32>;

/// A generation in progress, on the GPU decoder or on the CPU.
enum Generation {
    Gpu(Box<GpuGenerator>),
    Cpu(Box<Generator<Cpu>>),
}

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
    model: Rc<MobaLm<Cpu>>,
    config: LmConfig,
    /// The page's WebGPU device, where [`TextModel::use_gpu`] gave it.
    gpu: Option<GpuContext>,
    /// Why the last start decodes on the CPU although a device was given.
    why_cpu: Option<String>,
    /// Shared with the promise of [`TextModel::next_byte`], which outlives the call.
    generation: Rc<RefCell<Option<Generation>>>,
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
            model: Rc::new(model),
            config,
            gpu: None,
            why_cpu: None,
            generation: Rc::default(),
        })
    }

    /// The model's size and attention, as a [`ModelInfo`] object.
    pub fn info(&self) -> Result<JsValue, JsError> {
        to_js(&self.model_info())
    }

    /// Generations from the next [`TextModel::start`] on run on `demo`'s WebGPU device.
    #[wasm_bindgen(js_name = useGpu)]
    pub fn use_gpu(&mut self, demo: &Demo) {
        self.gpu = Some(demo.gpu.clone());
    }

    /// Starts generating after `prompt` (its UTF-8 bytes): temperature 0 is greedy, `top_p`
    /// cuts the nucleus, `seed` fixes the draws. On WebGPU where [`TextModel::use_gpu`]
    /// gave a device, else on the CPU ([`TextModel::runs_on`] says which).
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
        let prompt = prompt.as_bytes();
        // The GPU decoder of the last generation keeps its uploaded weights.
        if let Some(Generation::Gpu(generator)) = &mut *self.generation.borrow_mut() {
            return Ok(generator.restart(prompt, sampling)?);
        }
        // f16 weights on the GPU: the model ships in f16, so only its matrices with a norm's
        // gain folded in are rounded once more, and the decoder reads half the bytes.
        let options = DecoderOptions {
            weights: WeightPrecision::F16,
            ..Default::default()
        };
        let on_gpu = (self.gpu.as_ref())
            .map(|gpu| GpuGenerator::with_options(gpu, &self.model, prompt, sampling, options));
        self.why_cpu = None;
        let generation = match on_gpu {
            Some(Ok(generator)) => Generation::Gpu(Box::new(generator)),
            // A model the GPU decoder does not run (on this adapter) decodes on the CPU.
            Some(Err(why)) if GpuGenerator::declines(&why) => {
                self.why_cpu = Some(why.to_string());
                Generation::Cpu(Box::new(Generator::new(&self.model, prompt, sampling)?))
            }
            Some(Err(error)) => return Err(error.into()),
            None => Generation::Cpu(Box::new(Generator::new(&self.model, prompt, sampling)?)),
        };
        *self.generation.borrow_mut() = Some(generation);
        Ok(())
    }

    /// Where the generation runs: `"WebGPU"` (the GPU decoder) or `"CPU"` (burn in wasm).
    #[wasm_bindgen(js_name = runsOn)]
    pub fn runs_on(&self) -> String {
        match &*self.generation.borrow() {
            Some(Generation::Gpu(_)) => "WebGPU",
            Some(Generation::Cpu(_)) => "CPU",
            None if self.gpu.is_some() => "WebGPU",
            None => "CPU",
        }
        .into()
    }

    /// Why the generation runs on the CPU although [`TextModel::use_gpu`] gave a device (a
    /// model the GPU decoder does not run there), or `undefined`.
    #[wasm_bindgen(js_name = whyCpu)]
    pub fn why_cpu(&self) -> Option<String> {
        self.why_cpu.clone()
    }

    /// A promise of the next byte, or of `undefined` once the context is full.
    #[wasm_bindgen(js_name = nextByte)]
    pub fn next_byte(&self) -> js_sys::Promise {
        let (model, generation) = (self.model.clone(), self.generation.clone());
        wasm_bindgen_futures::future_to_promise(async move {
            // Taken out while the GPU works, so that no borrow lives across the wait.
            let mut taken = generation.borrow_mut().take().ok_or_else(|| {
                JsError::new("call start(prompt, ...) before nextByte(), one call at a time")
            })?;
            let byte = match &mut taken {
                Generation::Gpu(generator) => generator.next_byte().await,
                Generation::Cpu(generator) => generator.next_byte(&model),
            };
            // A start() during the wait has made a new generation: that one stays.
            generation.borrow_mut().get_or_insert(taken);
            Ok(byte
                .map_err(JsError::from)?
                .map_or(JsValue::UNDEFINED, JsValue::from))
        })
    }

    /// A promise of the routing at the last position read, a [`Routing`] object: for each
    /// layer the blocks each query head attended (`null` for a layer that attends every
    /// position). On the GPU decoder this reads each layer's selection back.
    pub fn routing(&self) -> js_sys::Promise {
        let (model, generation) = (self.model.clone(), self.generation.clone());
        wasm_bindgen_futures::future_to_promise(async move {
            let taken = generation.borrow_mut().take().ok_or_else(|| {
                JsError::new("call start(prompt, ...) and nextByte() before routing()")
            })?;
            let routing = routing_of(&model, &taken).await;
            // A start() during the wait has made a new generation: that one stays.
            generation.borrow_mut().get_or_insert(taken);
            Ok(to_js(&routing.map_err(JsError::from)?)?)
        })
    }

    /// Positions the model has read: the prompt and the bytes generated so far but the last.
    pub fn position(&self) -> usize {
        match &*self.generation.borrow() {
            Some(Generation::Gpu(generator)) => generator.decoder().position(),
            Some(Generation::Cpu(generator)) => generator.position(),
            None => 0,
        }
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

/// What [`TextModel::routing`] returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Routing {
    /// The position whose routing this is (the last one read).
    pub position: usize,
    /// Per layer, `[n_heads][top_k]`: the blocks each query head attended, ascending, -1
    /// for none; `None` for a layer that attends every position (full attention) or routes
    /// otherwise (NSA).
    pub layers: Vec<Option<Vec<Vec<i32>>>>,
}

/// The routing of `generation` at its last position; layers of `model` without a block
/// selection are `None`.
async fn routing_of(model: &MobaLm<Cpu>, generation: &Generation) -> moba::Result<Routing> {
    let position = match generation {
        Generation::Gpu(generator) => generator.decoder().position(),
        Generation::Cpu(generator) => generator.position(),
    };
    if position == 0 {
        return Err(moba::MobaError::Config(
            "no byte has been read yet: call nextByte() first".into(),
        ));
    }
    let mut layers = Vec::new();
    for (index, block) in model.blocks.iter().enumerate() {
        let selection = match block.attention.kind() {
            AttentionKind::Full | AttentionKind::Nsa { .. } => None,
            _ => match generation {
                Generation::Gpu(generator) => Some(generator.decoder().selection(index).await?),
                Generation::Cpu(generator) => generator.selection(index)?,
            },
        };
        let heads = block.attention.heads().0;
        layers.push(selection.map(|blocks| {
            let top_k = blocks.len() / heads;
            blocks.chunks(top_k).map(<[i32]>::to_vec).collect()
        }));
    }
    Ok(Routing {
        position: position - 1,
        layers,
    })
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
