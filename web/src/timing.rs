//! Wall-clock timing in the browser: `performance.now()` from the submit until the queue
//! reports the work done (the browser's event loop delivers that; nothing blocks).

use futures_channel::oneshot;
use moba::gpu::GpuContext;
use moba::{MobaError, Result};
use wasm_bindgen::JsCast;

/// Median milliseconds of `runs` runs of what `encode` records, after one untimed warm-up
/// (pipeline creation and first use of the buffers).
pub async fn median_ms(
    gpu: &GpuContext,
    runs: usize,
    encode: impl Fn(&mut wgpu::CommandEncoder) -> Result<()>,
) -> Result<f64> {
    let clock = performance()?;
    let mut times = Vec::with_capacity(runs);
    for run in 0..=runs {
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        encode(&mut encoder)?;
        let start = clock.now();
        gpu.queue().submit([encoder.finish()]);
        work_done(gpu).await?;
        if run > 0 {
            times.push(clock.now() - start);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Resolves once the GPU has finished everything submitted so far.
async fn work_done(gpu: &GpuContext) -> Result<()> {
    let (sender, receiver) = oneshot::channel();
    gpu.queue().on_submitted_work_done(move || {
        let _ = sender.send(());
    });
    receiver
        .await
        .map_err(|_| MobaError::DeviceLost("the queue dropped its work-done callback".into()))
}

/// The page's (or worker's) high-resolution clock.
fn performance() -> Result<web_sys::Performance> {
    js_sys::Reflect::get(&js_sys::global(), &"performance".into())
        .ok()
        .and_then(|value| value.dyn_into().ok())
        .ok_or_else(|| MobaError::Unsupported("performance.now() in this JS context".into()))
}
