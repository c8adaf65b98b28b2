//! What planning reads of a device, however it was opened: by a [`GpuContext`], or by
//! burn's wgpu backend (`moba::backend::burn_wgpu_device`). Every planning function takes
//! these, so the host API and burn's path choose kernels and tiles the same way.

use super::context::{COOPERATIVE_FEATURES, offers_cooperative_matrices};

/// A device's limits, the smallest subgroup where the device has subgroup operations, whether
/// it has f16 in shaders, and the subgroup size at which the cooperative (tensor-core) kernel
/// runs there, where it can.
///
/// ```no_run
/// let gpu = moba::gpu::GpuContext::new_blocking(&Default::default())?;
/// let caps = gpu.caps();
/// let kernel = moba::gpu::AttentionKernel::best(caps, 128);
/// println!("{kernel:?} kernel, {} MiB bindings", caps.limits.max_storage_buffer_binding_size >> 20);
/// # Ok::<(), moba::MobaError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceCaps {
    pub limits: wgpu::Limits,
    /// The adapter's smallest subgroup, where the device was opened with `SUBGROUP` (the
    /// lanes kernel splits a row over 4 threads of one subgroup).
    pub subgroup_min_size: Option<u32>,
    /// Whether the device was opened with `SHADER_F16` (the subgroup kernels' f16 variant
    /// stages f16 tiles).
    pub shader_f16: bool,
    /// The subgroup size of the cooperative kernel: `Some` where the adapter offers 16x16x16
    /// f16 -> f32 matrices with a fixed subgroup size and the device was opened with them.
    pub cooperative_subgroup_size: Option<u32>,
}

impl DeviceCaps {
    /// The capabilities of `device`, opened on `adapter`.
    pub fn new(adapter: &wgpu::Adapter, device: &wgpu::Device) -> Self {
        let info = adapter.get_info();
        let fixed_subgroups = info.subgroup_min_size == info.subgroup_max_size;
        let cooperative = device.features().contains(COOPERATIVE_FEATURES)
            && offers_cooperative_matrices(adapter)
            && fixed_subgroups;
        let subgroups = device.features().contains(wgpu::Features::SUBGROUP);
        Self {
            limits: device.limits(),
            subgroup_min_size: subgroups.then_some(info.subgroup_min_size),
            shader_f16: device.features().contains(wgpu::Features::SHADER_F16),
            cooperative_subgroup_size: cooperative.then_some(info.subgroup_min_size),
        }
    }

    /// Limits alone, with neither subgroups, f16 nor cooperative matrices (a device whose
    /// adapter is not known).
    pub fn portable(limits: wgpu::Limits) -> Self {
        Self {
            limits,
            subgroup_min_size: None,
            shader_f16: false,
            cooperative_subgroup_size: None,
        }
    }
}
