//! Records a [`Schedule`] into a wgpu command encoder: pipelines, parameter blocks and
//! scratch buffers are made once per plan, bind groups per run.

use super::buffers::check_buffer;
use super::context::GpuContext;
use super::kernels::Kernel;
use super::plan::check_buffer_sizes;
use super::schedule::{Binding, Io, Schedule};
use super::timing::StageTimer;
use crate::config::{MobaConfig, Shape};
use crate::error::{MobaError, Result};
use crate::kernel_params::KernelParams;

/// A schedule made ready on one adapter.
pub(crate) struct ScheduleRunner {
    gpu: GpuContext,
    schedule: Schedule,
    /// Expected bytes of each of the caller's buffers, in the schedule's io order.
    io_bytes: Vec<u64>,
    pipelines: Vec<wgpu::ComputePipeline>,
    params: Vec<wgpu::Buffer>,
    scratch: Vec<wgpu::Buffer>,
}

impl ScheduleRunner {
    pub fn new(
        gpu: &GpuContext,
        schedule: Schedule,
        shape: &Shape,
        config: &MobaConfig,
    ) -> Result<Self> {
        check_buffer_sizes(gpu.limits(), &schedule.buffer_sizes(shape, config))?;
        let most_bindings = schedule
            .launches
            .iter()
            .map(|launch| launch.bindings.len() as u64)
            .max()
            .unwrap_or(0);
        let available = gpu.limits().max_storage_buffers_per_shader_stage as u64;
        if most_bindings > available {
            return Err(MobaError::limit(
                "a kernel's storage buffers",
                "max_storage_buffers_per_shader_stage",
                most_bindings,
                available,
            ));
        }
        let pipelines = schedule
            .kernels
            .iter()
            .map(|(kernel, constants)| gpu.pipeline(*kernel, constants))
            .collect::<Result<_>>()?;
        Ok(Self {
            io_bytes: schedule
                .io
                .iter()
                .map(|io| io.bytes(shape, config))
                .collect(),
            params: schedule
                .params
                .iter()
                .map(|params| gpu.constant("moba params", params))
                .collect(),
            scratch: schedule
                .scratch
                .iter()
                .map(|s| gpu.scratch(s.label, s.bytes))
                .collect(),
            pipelines,
            schedule,
            gpu: gpu.clone(),
        })
    }

    /// Rewrites every parameter block as `update` makes it from the planned one; the
    /// kernels see it in work submitted after this call (a decode over a KV cache that
    /// grows: its length).
    pub fn write_params(&self, update: impl Fn(KernelParams) -> KernelParams) {
        for (buffer, params) in self.params.iter().zip(&self.schedule.params) {
            let params = update(*params);
            self.gpu
                .queue()
                .write_buffer(buffer, 0, bytemuck::bytes_of(&params));
        }
    }

    /// Whether the schedule binds the caller's buffer `io`.
    pub fn takes(&self, io: Io) -> bool {
        self.schedule.io.contains(&io)
    }

    /// Whether any launch runs `kernel`.
    pub fn runs(&self, kernel: Kernel) -> bool {
        self.schedule.kernels.iter().any(|(k, _)| *k == kernel)
    }

    /// Records every launch; `io` are the caller's buffers in the schedule's io order.
    /// Each stage is one compute pass, with timestamps when a timer is given.
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        io: &[&wgpu::Buffer],
        timer: Option<&StageTimer>,
    ) -> Result<()> {
        if io.len() != self.schedule.io.len() {
            let names: Vec<&str> = self.schedule.io.iter().map(|io| io.name()).collect();
            return Err(MobaError::Config(format!(
                "this pass takes {} buffers ({}), got {}",
                names.len(),
                names.join(", "),
                io.len()
            )));
        }
        for ((kind, buffer), bytes) in self.schedule.io.iter().zip(io).zip(&self.io_bytes) {
            check_buffer(kind.name(), buffer, *bytes)?;
        }
        for (buffer, scratch) in self.scratch.iter().zip(&self.schedule.scratch) {
            if scratch.zeroed {
                encoder.clear_buffer(buffer, 0, None);
            }
        }
        let buffer = |binding: &Binding| match *binding {
            Binding::Params(n) => &self.params[n],
            Binding::Io(kind) => {
                let at = self.schedule.io.iter().position(|&i| i == kind);
                io[at.expect("a schedule binds only its own io")]
            }
            Binding::Scratch(n) => &self.scratch[n],
        };
        for (index, &stage) in self.schedule.stages.iter().enumerate() {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(stage.name()),
                timestamp_writes: timer.map(|t| t.writes(index)),
            });
            for launch in self.schedule.launches.iter().filter(|l| l.stage == stage) {
                let pipeline = &self.pipelines[launch.kernel];
                let buffers: Vec<&wgpu::Buffer> = launch.bindings.iter().map(buffer).collect();
                let bind_group = self.gpu.bind(pipeline, &buffers);
                self.gpu
                    .dispatch(&mut pass, pipeline, &bind_group, launch.workgroups)?;
            }
        }
        if let Some(timer) = timer {
            timer.resolve(encoder);
        }
        Ok(())
    }
}
