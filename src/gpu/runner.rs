//! Records a [`Schedule`] into a wgpu command encoder: pipelines, parameter blocks and
//! scratch buffers are made once per plan, bind groups per run (or once, for a plan that
//! runs over the same buffers every time: a decode over a KV cache).

use std::sync::Mutex;

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
    /// Where [`Self::keep_bindings`] asked for it: the last run's io buffers and every
    /// launch's bind group over them, reused while a run binds the same buffers.
    kept: Option<Mutex<Option<KeptBindings>>>,
}

/// A run's io buffers and the bind group of each launch of the schedule over them.
struct KeptBindings {
    io: Vec<wgpu::Buffer>,
    groups: Vec<wgpu::BindGroup>,
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
            kept: None,
        })
    }

    /// Keeps the bind groups of the last run for the next one over the same buffers (a
    /// decode over a KV cache binds the same buffers every step). They hold those buffers
    /// alive until a run over others or the end of the plan.
    pub fn keep_bindings(&mut self) {
        self.kept = Some(Mutex::default());
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
        let groups = self.bind_groups(io);
        for (index, &stage) in self.schedule.stages.iter().enumerate() {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(stage.name()),
                timestamp_writes: timer.map(|t| t.writes(index)),
            });
            let launches = self.schedule.launches.iter().zip(&groups);
            for (launch, bind_group) in launches.filter(|(l, _)| l.stage == stage) {
                let pipeline = &self.pipelines[launch.kernel];
                self.gpu
                    .dispatch(&mut pass, pipeline, bind_group, launch.workgroups)?;
            }
        }
        if let Some(timer) = timer {
            timer.resolve(encoder);
        }
        Ok(())
    }

    /// Every launch's bind group over the caller's `io` (in the schedule's io order): the
    /// kept ones where the last run bound the same buffers, else made now.
    fn bind_groups(&self, io: &[&wgpu::Buffer]) -> Vec<wgpu::BindGroup> {
        let make = || -> Vec<wgpu::BindGroup> {
            let buffer = |binding: &Binding| match *binding {
                Binding::Params(n) => &self.params[n],
                Binding::Io(kind) => {
                    let at = self.schedule.io.iter().position(|&i| i == kind);
                    io[at.expect("a schedule binds only its own io")]
                }
                Binding::Scratch(n) => &self.scratch[n],
            };
            (self.schedule.launches.iter())
                .map(|launch| {
                    let buffers: Vec<&wgpu::Buffer> = launch.bindings.iter().map(buffer).collect();
                    self.gpu.bind(&self.pipelines[launch.kernel], &buffers)
                })
                .collect()
        };
        let Some(kept) = &self.kept else {
            return make();
        };
        let mut kept = kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match &*kept {
            Some(last) if last.io.iter().eq(io.iter().copied()) => last.groups.clone(),
            _ => {
                let groups = make();
                *kept = Some(KeptBindings {
                    io: io.iter().map(|&buffer| buffer.clone()).collect(),
                    groups: groups.clone(),
                });
                groups
            }
        }
    }
}
