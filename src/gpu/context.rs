//! The GPU context: one adapter, its device and queue, the pipeline cache, and error capture.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::caps::DeviceCaps;
use super::kernels::{Kernel, KernelConstants};
use crate::error::{MobaError, Result};

/// Which adapter to open.
#[derive(Debug, Clone, Default)]
pub struct AdapterRequest {
    /// Case-insensitive substring of the adapter name (`None`: the high-performance default).
    pub name: Option<String>,
    /// Graphics APIs to consider (`None`: Vulkan, Metal, DX12 or WebGPU, then GL if none).
    pub backends: Option<wgpu::Backends>,
}

/// Parses `vulkan|metal|dx12|gl|webgpu` into wgpu backends.
pub fn parse_api(api: &str) -> Result<wgpu::Backends> {
    match api.to_ascii_lowercase().as_str() {
        "vulkan" => Ok(wgpu::Backends::VULKAN),
        "metal" => Ok(wgpu::Backends::METAL),
        "dx12" => Ok(wgpu::Backends::DX12),
        "gl" => Ok(wgpu::Backends::GL),
        "webgpu" => Ok(wgpu::Backends::BROWSER_WEBGPU),
        other => Err(MobaError::Config(format!(
            "unknown api '{other}': expected vulkan, metal, dx12, gl or webgpu"
        ))),
    }
}

/// Every adapter of the given backends (native; a browser offers one through `new`).
pub async fn adapters(backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
    new_instance(backends).enumerate_adapters(backends).await
}

fn new_instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut descriptor = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    descriptor.backends = backends;
    wgpu::Instance::new(descriptor)
}

/// Features the cooperative-matrix kernels need (the forward and dq synchronize a subgroup
/// alone between their products: `subgroupBarrier`).
pub(crate) const COOPERATIVE_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::SUBGROUP_BARRIER)
    .union(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX);

/// Whether the adapter has the features and the 16x16x16 f16 -> f32 matrix shape.
pub fn offers_cooperative_matrices(adapter: &wgpu::Adapter) -> bool {
    use wgpu::CooperativeScalarType::{F16, F32};
    adapter.features().contains(COOPERATIVE_FEATURES)
        && adapter.cooperative_matrix_properties().iter().any(|p| {
            (p.m_size, p.n_size, p.k_size) == (16, 16, 16) && p.ab_type == F16 && p.cr_type == F32
        })
}

/// The instance and adapter a request names: the adapter whose name contains
/// `request.name`, else the high-performance default of `request.backends`, else (no
/// backends named) of Vulkan, Metal, DX12 or WebGPU, and of GL only where none of those has
/// one. burn's wgpu device opens the same adapter (`moba::backend::burn_wgpu_device`).
pub async fn select_adapter(request: &AdapterRequest) -> Result<(wgpu::Instance, wgpu::Adapter)> {
    match request.backends {
        Some(backends) => select_among(request, backends).await,
        // GL last: it is the fallback API, and probing it prints EGL noise on headless Linux.
        None => match select_among(request, wgpu::Backends::PRIMARY).await {
            Err(MobaError::NoAdapter(_)) => select_among(request, wgpu::Backends::GL).await,
            selected => selected,
        },
    }
    .map_err(|error| with_install_hint(error, request))
}

/// `error` with what to install added where no adapter at all answered a request that
/// Mesa's CPU drivers (Vulkan and GL) could serve.
fn with_install_hint(error: MobaError, request: &AdapterRequest) -> MobaError {
    let mesa = wgpu::Backends::VULKAN | wgpu::Backends::GL;
    match error {
        MobaError::NoAdapter(found)
            if request.name.is_none() && request.backends.is_none_or(|b| b.intersects(mesa)) =>
        {
            MobaError::NoAdapter(format!("{found}{NO_ADAPTER_HINT}"))
        }
        other => other,
    }
}

/// What a machine with no adapter at all lacks.
const NO_ADAPTER_HINT: &str = ". On Linux without a GPU driver, Mesa gives a CPU adapter: \
     `apt-get install mesa-vulkan-drivers libvulkan1` (Vulkan, lavapipe) or \
     `apt-get install libegl1 libegl-mesa0` (OpenGL, llvmpipe)";

async fn select_among(
    request: &AdapterRequest,
    backends: wgpu::Backends,
) -> Result<(wgpu::Instance, wgpu::Adapter)> {
    let instance = new_instance(backends);
    let adapter = match &request.name {
        None => instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| MobaError::NoAdapter(format!(": {e}")))?,
        Some(name) => {
            let adapters = instance.enumerate_adapters(backends).await;
            let wanted = name.to_lowercase();
            let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
            adapters
                .into_iter()
                .find(|a| a.get_info().name.to_lowercase().contains(&wanted))
                .ok_or_else(|| {
                    MobaError::NoAdapter(format!(
                        " whose name contains '{name}' (found: {names:?})"
                    ))
                })?
        }
    };
    Ok((instance, adapter))
}

/// What wgpu reported, kept until the next call checks it.
enum DeviceFailure {
    Error(String),
    Lost(String),
}

/// An open GPU: device, queue, what the adapter offers, and the compiled pipelines.
/// Cheap to clone; clones share the device and the pipeline cache.
#[derive(Clone)]
pub struct GpuContext {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    caps: DeviceCaps,
    features: wgpu::Features,
    /// Compiled pipelines by their module's full source.
    pipelines: Arc<Mutex<HashMap<String, wgpu::ComputePipeline>>>,
    /// The MoBA kernels' pipelines by kernel and constants (found without making the source).
    kernels: Arc<Mutex<HashMap<(Kernel, KernelConstants), wgpu::ComputePipeline>>>,
    /// First error wgpu reported or the reason the device was lost.
    failure: Arc<Mutex<Option<DeviceFailure>>>,
    /// Held by each blocking call on OpenGL (see [`GpuContext::exclusive`]).
    serial: Arc<Mutex<()>>,
}

impl GpuContext {
    /// Opens the adapter the request names, or the high-performance default.
    ///
    /// ```no_run
    /// let gpu = moba::gpu::GpuContext::new_blocking(&Default::default())?;
    /// println!("{}", gpu.describe());
    /// # Ok::<(), moba::MobaError>(())
    /// ```
    pub async fn new(request: &AdapterRequest) -> Result<Self> {
        let (_, adapter) = select_adapter(request).await?;
        let cooperative = offers_cooperative_matrices(&adapter);
        // Timestamps where offered: the benchmark splits a forward's time by stage with them;
        // subgroups and f16 where offered: the lanes kernels (and their f16 variant) run on
        // them.
        let timestamps = adapter.features() & wgpu::Features::TIMESTAMP_QUERY;
        let lanes = adapter.features() & (wgpu::Features::SUBGROUP | wgpu::Features::SHADER_F16);
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("moba"),
                required_features: timestamps
                    | lanes
                    | if cooperative {
                        COOPERATIVE_FEATURES
                    } else {
                        wgpu::Features::empty()
                    },
                // Everything the adapter offers: long sequences need its largest buffers.
                required_limits: adapter.limits(),
                experimental_features: if cooperative {
                    // SAFETY: wgpu marks cooperative matrices experimental; only the
                    // cooperative kernels (attention, dq, dk/dv) use them, checked against
                    // the reference by tests/cooperative.rs and on every `moba demo` run.
                    unsafe { wgpu::ExperimentalFeatures::enabled() }
                } else {
                    wgpu::ExperimentalFeatures::disabled()
                },
                ..Default::default()
            })
            .await
            .map_err(|e| MobaError::NoAdapter(format!(": device request failed: {e}")))?;
        Ok(Self::from_device(&adapter, device, queue))
    }

    /// [`GpuContext::new`], blocking (native only).
    pub fn new_blocking(request: &AdapterRequest) -> Result<Self> {
        pollster::block_on(Self::new(request))
    }

    /// Wraps a device you opened yourself (it must have the adapter's limits you need).
    pub fn from_device(adapter: &wgpu::Adapter, device: wgpu::Device, queue: wgpu::Queue) -> Self {
        let failure = Arc::new(Mutex::new(None));
        let on_error = failure.clone();
        device.on_uncaptured_error(Arc::new(move |error: wgpu::Error| {
            let mut slot = on_error.lock().unwrap();
            if slot.is_none() {
                *slot = Some(DeviceFailure::Error(error.to_string()));
            }
        }));
        let on_lost = failure.clone();
        device.set_device_lost_callback(move |reason, message| {
            *on_lost.lock().unwrap() = Some(DeviceFailure::Lost(format!("{reason:?}: {message}")));
        });
        Self {
            caps: DeviceCaps::new(adapter, &device),
            features: device.features(),
            info: adapter.get_info(),
            device,
            queue,
            pipelines: Arc::default(),
            kernels: Arc::default(),
            failure,
            serial: Arc::default(),
        }
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }
    pub fn limits(&self) -> &wgpu::Limits {
        &self.caps.limits
    }
    /// What planning reads of this device (its limits, the cooperative kernel's subgroups).
    pub fn caps(&self) -> &DeviceCaps {
        &self.caps
    }
    pub fn features(&self) -> wgpu::Features {
        self.features
    }

    /// Subgroup size, when the cooperative-matrix (tensor core) kernel can run here.
    pub fn cooperative_subgroup_size(&self) -> Option<u32> {
        self.caps.cooperative_subgroup_size
    }

    /// Adapter, API, device type and driver on one line, to print beside every number.
    pub fn describe(&self) -> String {
        let i = &self.info;
        format!(
            "{} ({:?}, {:?}, driver {} {})",
            i.name, i.backend, i.device_type, i.driver, i.driver_info
        )
    }

    /// Whether the adapter is a CPU emulation (lavapipe, SwiftShader, WARP).
    pub fn is_cpu(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// A guard that runs the blocking calls of this context one at a time on OpenGL (`None`
    /// elsewhere). wgpu drives GL through one context that every call locks, and a call
    /// that waits more than 6 s for it panics inside wgpu: a long kernel on a CPU GL driver
    /// (llvmpipe) makes another thread's call wait that long.
    pub(crate) fn exclusive(&self) -> Option<std::sync::MutexGuard<'_, ()>> {
        (self.info.backend == wgpu::Backend::Gl).then(|| {
            self.serial
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        })
    }

    /// The pipeline of a kernel for a set of constants, compiled once and cached.
    pub(crate) fn pipeline(
        &self,
        kernel: Kernel,
        constants: &KernelConstants,
    ) -> Result<wgpu::ComputePipeline> {
        let key = (kernel, *constants);
        if let Some(pipeline) = self.kernels.lock().unwrap().get(&key) {
            return Ok(pipeline.clone());
        }
        let pipeline = self.compile(kernel.name(), kernel.source(constants)?)?;
        self.kernels.lock().unwrap().insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// The pipeline of a WGSL module whose entry point is `main`, compiled once per source
    /// and cached.
    pub(crate) fn compile(&self, label: &str, source: String) -> Result<wgpu::ComputePipeline> {
        if let Some(pipeline) = self.pipelines.lock().unwrap().get(&source) {
            return Ok(pipeline.clone());
        }
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(source.as_str().into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(label),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        self.check()?;
        self.pipelines
            .lock()
            .unwrap()
            .insert(source, pipeline.clone());
        Ok(pipeline)
    }

    /// The first error wgpu reported since the context opened, if any.
    pub(crate) fn check(&self) -> Result<()> {
        match &*self.failure.lock().unwrap() {
            Some(DeviceFailure::Error(message)) => Err(MobaError::Gpu(message.clone())),
            Some(DeviceFailure::Lost(message)) => Err(MobaError::DeviceLost(message.clone())),
            None => Ok(()),
        }
    }

    /// Waits until the queue is idle (native); in the browser the event loop drives it.
    pub(crate) fn wait_idle(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| MobaError::Gpu(format!("waiting for the GPU: {e}")))?;
        self.check()
    }

    /// Submits recorded work and waits for it (native): the synchronised wall clock of a run.
    pub fn submit_and_wait(&self, commands: wgpu::CommandBuffer) -> Result<()> {
        self.queue.submit([commands]);
        self.wait_idle()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_adapter_says_what_to_install_where_mesa_would_do() {
        let none = || MobaError::NoAdapter(": no adapter".into());
        let request = |backends| AdapterRequest {
            name: None,
            backends,
        };
        for backends in [None, Some(wgpu::Backends::VULKAN), Some(wgpu::Backends::GL)] {
            let error = with_install_hint(none(), &request(backends)).to_string();
            assert!(
                error.contains("apt-get install mesa-vulkan-drivers"),
                "{error}"
            );
        }
        let error = with_install_hint(none(), &request(Some(wgpu::Backends::DX12)));
        assert!(!error.to_string().contains("apt-get"), "{error}");
    }
}
