//! Buffers: creation from host data, poisoned outputs, bind groups, dispatch, and readback.

use bytemuck::Pod;
use wgpu::util::DeviceExt;

use super::context::GpuContext;
use crate::error::{MobaError, Result};

/// Bit pattern written into output buffers before a run: NaN as f32 and an impossible
/// block id as i32, so an element the kernels forget to write can never pass a check.
pub const POISON: u32 = 0x7FC0_0000;

pub(crate) const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl GpuContext {
    /// A storage buffer holding `data`.
    pub fn upload<T: Pod>(&self, label: &str, data: &[T]) -> wgpu::Buffer {
        self.device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(data),
                usage: STORAGE,
            })
    }

    /// A storage buffer of `elems` 4-byte elements filled with [`POISON`].
    pub fn poisoned(&self, label: &str, elems: usize) -> wgpu::Buffer {
        self.upload(label, &vec![POISON; elems.max(1)])
    }

    /// A zeroed storage buffer of `bytes` bytes (at least 4).
    pub(crate) fn scratch(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4).next_multiple_of(4),
            usage: STORAGE,
            mapped_at_creation: false,
        })
    }

    /// A storage buffer holding one value (the kernels' parameter block), which
    /// `queue.write_buffer` may rewrite between submissions.
    pub(crate) fn constant<T: Pod>(&self, label: &str, value: &T) -> wgpu::Buffer {
        self.device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::bytes_of(value),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            })
    }

    /// A bind group binding `buffers` whole, at bindings 0, 1, 2, ... of the pipeline's group 0.
    pub fn bind(
        &self,
        pipeline: &wgpu::ComputePipeline,
        buffers: &[&wgpu::Buffer],
    ) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(binding, buffer)| wgpu::BindGroupEntry {
                binding: binding as u32,
                resource: buffer.as_entire_binding(),
            })
            .collect();
        self.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        })
    }

    /// Dispatches `workgroups` workgroups, folded into x and y under the per-dimension limit
    /// (kernels read them back with `workgroup_index`).
    pub(crate) fn dispatch(
        &self,
        pass: &mut wgpu::ComputePass,
        pipeline: &wgpu::ComputePipeline,
        bind_group: &wgpu::BindGroup,
        workgroups: u64,
    ) -> Result<()> {
        let (x, y) = fold_grid(
            workgroups,
            self.limits().max_compute_workgroups_per_dimension,
        )?;
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, bind_group, &[]);
        pass.dispatch_workgroups(x, y, 1);
        Ok(())
    }

    /// Resolves once the GPU has finished everything submitted so far (native: waits for
    /// it; in the browser the event loop delivers the report).
    pub async fn work_done(&self) -> Result<()> {
        let (sender, receiver) = futures_channel::oneshot::channel();
        self.queue().on_submitted_work_done(move || {
            let _ = sender.send(());
        });
        if !cfg!(target_arch = "wasm32") {
            self.wait_idle()?;
        }
        receiver
            .await
            .map_err(|_| MobaError::DeviceLost("the queue dropped its work-done report".into()))?;
        self.check()
    }

    /// Copies a buffer back to the host.
    pub async fn download<T: Pod>(&self, buffer: &wgpu::Buffer) -> Result<Vec<T>> {
        let staging = self.readback_buffer("readback", buffer.size());
        let mut encoder = self.device().create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, buffer.size());
        self.queue().submit([encoder.finish()]);
        self.read_mapped(&staging).await
    }

    /// A buffer the host maps to read what a copy wrote into it.
    pub(crate) fn readback_buffer(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// The contents of a [`Self::readback_buffer`] once the work submitted so far is done
    /// (mapped, copied out, unmapped: it can take the next copy).
    pub(crate) async fn read_mapped<T: Pod>(&self, staging: &wgpu::Buffer) -> Result<Vec<T>> {
        let slice = staging.slice(..);
        let (sender, receiver) = futures_channel::oneshot::channel();
        slice.map_async(wgpu::MapMode::Read, move |result| {
            let _ = sender.send(result);
        });
        if !cfg!(target_arch = "wasm32") {
            self.wait_idle()?;
        }
        receiver
            .await
            .map_err(|_| MobaError::DeviceLost("readback was cancelled".into()))?
            .map_err(|e| MobaError::Gpu(format!("reading back: {e}")))?;
        let data = bytemuck::cast_slice(&slice.get_mapped_range()).to_vec();
        staging.unmap();
        self.check()?;
        Ok(data)
    }
}

/// Splits `n` workgroups into an (x, y) grid with both under `max_dim`.
pub(crate) fn fold_grid(n: u64, max_dim: u32) -> Result<(u32, u32)> {
    let max = max_dim as u64;
    let x = n.clamp(1, max);
    let y = n.div_ceil(x).max(1);
    if y > max {
        return Err(MobaError::limit(
            "a dispatch's workgroups",
            "max_compute_workgroups_per_dimension (squared)",
            n,
            max * max,
        ));
    }
    Ok((x as u32, y as u32))
}

/// Fails unless a buffer is at least `bytes` long.
pub(crate) fn check_buffer(what: &str, buffer: &wgpu::Buffer, bytes: u64) -> Result<()> {
    if buffer.size() < bytes {
        return Err(MobaError::ShapeMismatch {
            what: format!("{what} buffer bytes"),
            expected: bytes as usize,
            actual: buffer.size() as usize,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::fold_grid;

    #[test]
    fn grids_fold_into_two_dimensions_within_the_limit() {
        assert_eq!(fold_grid(10, 65535).unwrap(), (10, 1));
        assert_eq!(fold_grid(0, 65535).unwrap(), (1, 1));
        assert_eq!(fold_grid(65536, 65535).unwrap(), (65535, 2));
        assert!(fold_grid(65535u64 * 65535 + 1, 65535).is_err());
    }
}
