//! # moba-web — MoBA in the browser
//!
//! The root crate's wgpu layer and WGSL kernels, built for wasm32 and run on the browser's
//! WebGPU adapter; nothing here holds a kernel. [`Demo`] is what the page (`web/main.js`)
//! calls through wasm-bindgen; [`TextModel`] generates text with the root crate's language
//! model (on WebGPU through the GPU decoder, else burn's CPU backend in wasm):
//!
//! ```js
//! import init, { Demo } from './pkg/moba_web.js';
//! await init();
//! const demo = await Demo.open();            // throws where WebGPU is missing
//! const adapter = demo.adapter();            // limits the kernels plan against
//! const report = await demo.run({ seqLen: 1024, heads: 4, headDim: 64, blockSize: 64,
//!                                 topK: 3, runs: 5, dense: true });
//!
//! const model = new TextModel(trainJsonText, new Uint8Array(modelMpkBytes));
//! model.useGpu(demo);                        // decode on WebGPU (leave out: on the CPU)
//! model.start('def ', 0.8, 0.95, 1);          // prompt, temperature, top-p, seed
//! const byte = await model.nextByte();       // a number, or undefined once the context is full
//! ```

mod adapter;
mod check;
mod heatmap;
mod measure;
mod settings;
mod text;

pub use adapter::{AdapterReport, Limit};
pub use check::Check;
pub use heatmap::Heatmap;
pub use measure::{Report, StageTime, measure};
pub use settings::Settings;
pub use text::{ModelInfo, Routing, TextModel};

use moba::gpu::{AdapterRequest, GpuContext};
use serde::Serialize;
use wasm_bindgen::prelude::*;

/// The browser's WebGPU device, opened once per page.
#[wasm_bindgen]
pub struct Demo {
    gpu: GpuContext,
}

#[wasm_bindgen]
impl Demo {
    /// Opens the browser's WebGPU adapter and a device with all of its limits.
    pub async fn open() -> Result<Demo, JsError> {
        let request = AdapterRequest {
            name: None,
            backends: Some(wgpu::Backends::BROWSER_WEBGPU),
        };
        Ok(Demo {
            gpu: GpuContext::new(&request).await?,
        })
    }

    /// The adapter's limits and the kernel they give, as an [`AdapterReport`] object.
    pub fn adapter(&self) -> Result<JsValue, JsError> {
        to_js(&AdapterReport::new(&self.gpu))
    }

    /// Runs MoBA (and the dense kernel) at the [`Settings`] object's size and returns a
    /// [`Report`] object; a size over the adapter's limits is an error naming the limit.
    pub async fn run(&self, settings: JsValue) -> Result<JsValue, JsError> {
        let settings: Settings = serde_wasm_bindgen::from_value(settings)?;
        to_js(&measure(&self.gpu, &settings).await?)
    }
}

/// A Rust value as a plain JS object (maps as objects, not `Map`s).
fn to_js(value: &impl Serialize) -> Result<JsValue, JsError> {
    Ok(value.serialize(&serde_wasm_bindgen::Serializer::json_compatible())?)
}
