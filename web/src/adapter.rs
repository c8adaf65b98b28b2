//! What the page shows of the adapter: the limits the kernels are planned against.

use moba::gpu::GpuContext;
use serde::{Deserialize, Serialize};

/// One limit, by wgpu's name (the name errors use).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limit {
    pub name: String,
    pub value: u64,
}

/// The opened device as the kernels see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdapterReport {
    /// wgpu's adapter name (browsers may leave it empty; the page adds `GPUAdapterInfo`).
    pub name: String,
    /// wgpu's backend (`BrowserWebGpu` in a browser).
    pub backend: String,
    /// Whether GPU timestamps split a run's time by stage.
    pub timestamps: bool,
    /// The limits the kernels are planned against.
    pub limits: Vec<Limit>,
}

impl AdapterReport {
    pub fn new(gpu: &GpuContext) -> Self {
        let l = gpu.limits();
        let limits = [
            (
                "max_compute_invocations_per_workgroup",
                l.max_compute_invocations_per_workgroup as u64,
            ),
            (
                "max_compute_workgroup_size_x",
                l.max_compute_workgroup_size_x as u64,
            ),
            (
                "max_compute_workgroup_storage_size",
                l.max_compute_workgroup_storage_size as u64,
            ),
            (
                "max_compute_workgroups_per_dimension",
                l.max_compute_workgroups_per_dimension as u64,
            ),
            (
                "max_storage_buffer_binding_size",
                l.max_storage_buffer_binding_size,
            ),
            ("max_buffer_size", l.max_buffer_size),
            (
                "max_storage_buffers_per_shader_stage",
                l.max_storage_buffers_per_shader_stage as u64,
            ),
        ];
        Self {
            name: gpu.info().name.clone(),
            backend: format!("{:?}", gpu.info().backend),
            timestamps: gpu.features().contains(wgpu::Features::TIMESTAMP_QUERY),
            limits: limits
                .into_iter()
                .map(|(name, value)| Limit {
                    name: name.into(),
                    value,
                })
                .collect(),
        }
    }
}
