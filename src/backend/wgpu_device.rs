//! burn's wgpu device on the adapter a request names (`--adapter`, `--api`), so that burn's
//! wgpu backend runs wherever the host API runs: on a second GPU, or on the OpenGL adapter of
//! a machine without a Vulkan driver (burn's own default asks for Vulkan only on Linux).

use std::sync::Mutex;

use burn::backend::wgpu::{RuntimeOptions, WgpuDevice, WgpuSetup, init_device};

use crate::error::{MobaError, Result};
use crate::gpu::{AdapterRequest, select_adapter};

/// burn's wgpu device on the adapter `request` names (see [`select_adapter`]), with what
/// that adapter is beside it. Opened once per request: burn keeps a device for the life of
/// the process, so later calls with the same request return the same device.
///
/// ```no_run
/// use burn::backend::Wgpu;
/// use burn::tensor::Tensor;
/// let (device, adapter) = moba::backend::burn_wgpu_device(&Default::default())?;
/// let ones = Tensor::<Wgpu, 1>::ones([4], &device);
/// println!("{} on {}", ones, adapter.name);
/// # Ok::<(), moba::MobaError>(())
/// ```
pub fn burn_wgpu_device(request: &AdapterRequest) -> Result<(WgpuDevice, wgpu::AdapterInfo)> {
    type Opened = (
        Option<String>,
        Option<wgpu::Backends>,
        WgpuDevice,
        wgpu::AdapterInfo,
    );
    static OPENED: Mutex<Vec<Opened>> = Mutex::new(Vec::new());
    let mut opened = OPENED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let same =
        |(name, backends, ..): &&Opened| *name == request.name && *backends == request.backends;
    if let Some((.., device, info)) = opened.iter().find(same) {
        return Ok((device.clone(), info.clone()));
    }
    let (instance, adapter) = pollster::block_on(select_adapter(request))?;
    let info = adapter.get_info();
    // What burn asks of an adapter it opens itself (cubecl-wgpu's WGSL device request).
    let (device, queue) = pollster::block_on(
        adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("moba burn"),
            required_features: adapter
                .features()
                .difference(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS),
            required_limits: adapter.limits(),
            memory_hints: wgpu::MemoryHints::MemoryUsage,
            // SAFETY: as burn itself opens its devices (for its passthrough shaders).
            experimental_features: unsafe { wgpu::ExperimentalFeatures::enabled() },
            ..Default::default()
        }),
    )
    .map_err(|e| MobaError::NoAdapter(format!(": {}: device request failed: {e}", info.name)))?;
    let setup = WgpuSetup {
        instance,
        adapter,
        device,
        queue,
        backend: info.backend,
    };
    let device = init_device(setup, RuntimeOptions::default());
    opened.push((
        request.name.clone(),
        request.backends,
        device.clone(),
        info.clone(),
    ));
    Ok((device, info))
}
