//! `moba info`: every adapter with the features and limits MoBA cares about.

use moba::Result;
use moba::gpu::{TilePlan, adapters};

pub fn run(backends: wgpu::Backends) -> Result<()> {
    let found = pollster::block_on(adapters(backends));
    if found.is_empty() {
        println!(
            "no adapters found (on Linux without a GPU: apt-get install mesa-vulkan-drivers libvulkan1)"
        );
    }
    for (index, adapter) in found.iter().enumerate() {
        let info = adapter.get_info();
        let limits = adapter.limits();
        println!("[{index}] {}", info.name);
        println!(
            "    api {:?}, type {:?}, driver {} {}",
            info.backend, info.device_type, info.driver, info.driver_info
        );
        println!("    features: {:?}", adapter.features());
        println!(
            "    limits: storage binding {} MiB, buffer {} MiB, workgroup memory {} B, invocations {}, workgroups per dim {}",
            limits.max_storage_buffer_binding_size >> 20,
            limits.max_buffer_size >> 20,
            limits.max_compute_workgroup_storage_size,
            limits.max_compute_invocations_per_workgroup,
            limits.max_compute_workgroups_per_dimension,
        );
        for head_dim in [64, 128] {
            match TilePlan::new(&limits, head_dim) {
                Ok(plan) => println!(
                    "    tiles at head_dim {head_dim}: {} query rows x {} keys",
                    plan.workgroup_size, plan.key_tile
                ),
                Err(e) => println!("    tiles at head_dim {head_dim}: {e}"),
            }
        }
    }
    Ok(())
}
