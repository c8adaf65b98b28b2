//! burn's own attention op as a baseline: `burn::tensor::module::attention` with causal
//! masking, the call a burn user would reach for, timed on a burn wgpu device.

use burn::backend::Wgpu;
use burn::backend::wgpu::WgpuDevice;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Distribution, Tensor};

use crate::bench::median_wall_seconds;
use crate::config::Shape;
use crate::error::{MobaError, Result};

/// Median seconds of one causal forward of burn's attention at `shape` (q, k and v with
/// `shape.q_heads` heads each: burn's op has no GQA), over `runs` synchronised runs after
/// one warm-up; the runs alternate between two sets of random inputs.
///
/// ```no_run
/// let (device, _) = moba::backend::burn_wgpu_device(&Default::default())?;
/// let shape = moba::Shape::prefill(1, 16, 8192, 128);
/// let seconds = moba::backend::baseline::burn_attention_seconds(&device, &shape, 5)?;
/// println!("burn attention: {:.2} ms", seconds * 1e3);
/// # Ok::<(), moba::MobaError>(())
/// ```
pub fn burn_attention_seconds(device: &WgpuDevice, shape: &Shape, runs: usize) -> Result<f64> {
    let dims = |len| [shape.batch, shape.q_heads, len, shape.head_dim];
    let random = |len| Tensor::<Wgpu, 4>::random(dims(len), Distribution::Normal(0.0, 1.0), device);
    let inputs: Vec<_> = (0..2)
        .map(|_| {
            (
                random(shape.q_len),
                random(shape.kv_len),
                random(shape.kv_len),
            )
        })
        .collect();
    let options = AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal: true,
    };
    median_wall_seconds(runs, 1, |index| {
        let (q, k, v) = inputs[index % inputs.len()].clone();
        let o = attention(q, k, v, None, None, options);
        <Wgpu as Backend>::sync(device)
            .map_err(|e| MobaError::Gpu(format!("burn attention: {e:?}")))?;
        drop(o);
        Ok(())
    })
}
