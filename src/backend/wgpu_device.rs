//! burn's wgpu device on the adapter a request names (`--adapter`, `--api`), so that burn's
//! wgpu backend runs wherever the host API runs: on a second GPU, or on the OpenGL adapter of
//! a machine without a Vulkan driver (burn's own default asks for Vulkan only on Linux). The
//! device's [`DeviceCaps`] are kept, so that burn's path plans as the host API does.

use std::sync::Mutex;

use burn::backend::wgpu::{RuntimeOptions, WgpuDevice, WgpuRuntime, WgpuSetup, init_device};
use burn::cubecl::Runtime;

use crate::error::{MobaError, Result};
use crate::gpu::{AdapterRequest, DeviceCaps, select_adapter};

/// A burn device this module opened, and what it was opened for.
struct Opened {
    name: Option<String>,
    backends: Option<wgpu::Backends>,
    device: WgpuDevice,
    info: wgpu::AdapterInfo,
    caps: DeviceCaps,
}

/// Every device opened, for the life of the process (as burn keeps them).
static OPENED: Mutex<Vec<Opened>> = Mutex::new(Vec::new());

/// burn's wgpu device on the adapter `request` names (see [`select_adapter`]), with what
/// that adapter is beside it. Opened once per request: burn keeps a device for the life of
/// the process, so later calls with the same request return the same device. The device
/// has every feature of its adapter, so MoBA's cooperative (tensor-core) forward runs on it
/// where the adapter offers one.
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
    let mut opened = OPENED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let same =
        |opened: &&Opened| opened.name == request.name && opened.backends == request.backends;
    if let Some(found) = opened.iter().find(same) {
        return Ok((found.device.clone(), found.info.clone()));
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
            // SAFETY: as burn itself opens its devices (for its passthrough shaders); of the
            // experimental features, MoBA's cooperative kernel uses cooperative matrices, checked
            // against the reference by tests/cooperative.rs.
            experimental_features: unsafe { wgpu::ExperimentalFeatures::enabled() },
            ..Default::default()
        }),
    )
    .map_err(|e| MobaError::NoAdapter(format!(": {}: device request failed: {e}", info.name)))?;
    let caps = DeviceCaps::new(&adapter, &device);
    let setup = WgpuSetup {
        instance,
        adapter,
        device,
        queue,
        backend: info.backend,
    };
    let device = init_device(setup, RuntimeOptions::default());
    opened.push(Opened {
        name: request.name.clone(),
        backends: request.backends,
        device: device.clone(),
        info: info.clone(),
        caps,
    });
    Ok((device, info))
}

/// What planning reads of a burn wgpu device: for one [`burn_wgpu_device`] opened, its
/// adapter's (the cooperative kernel included, where it runs); for any other (burn's own
/// `WgpuDevice::default()`), the limits burn reports, with portable kernels only.
pub(crate) fn burn_device_caps(device: &WgpuDevice) -> DeviceCaps {
    let opened = OPENED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(found) = opened.iter().find(|opened| opened.device == *device) {
        return found.caps.clone();
    }
    let properties = WgpuRuntime::client(device).properties().clone();
    let hardware = &properties.hardware;
    DeviceCaps::portable(wgpu::Limits {
        max_compute_workgroup_storage_size: hardware.max_shared_memory_size as u32,
        max_compute_invocations_per_workgroup: hardware.max_units_per_cube,
        max_compute_workgroup_size_x: hardware.max_cube_dim.0,
        max_compute_workgroups_per_dimension: hardware.max_cube_count.0,
        // burn's largest allocation is the device's largest storage binding.
        max_storage_buffer_binding_size: properties.memory.max_page_size,
        max_buffer_size: properties.memory.max_page_size,
        ..wgpu::Limits::downlevel_defaults()
    })
}
