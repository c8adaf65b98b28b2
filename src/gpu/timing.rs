//! GPU timestamps around the stages of a MoBA forward or backward: where the time goes.

use super::context::GpuContext;
use crate::error::{MobaError, Result};
use crate::launch_plan::Stage;

/// Stages of one run: a forward's or a backward's.
const STAGE_COUNT: usize = Stage::FORWARD.len();
const _: () = assert!(Stage::BACKWARD.len() == STAGE_COUNT);

/// Timestamp queries for the stages of one forward or backward (the adapter needs
/// `TIMESTAMP_QUERY`).
pub struct StageTimer {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
}

/// Seconds spent in each of [`Stage::FORWARD`] (or [`Stage::BACKWARD`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StageTimes(pub [f64; STAGE_COUNT]);

impl StageTimer {
    pub fn new(gpu: &GpuContext) -> Result<Self> {
        if !gpu.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return Err(MobaError::Unsupported(
                "timestamp queries (TIMESTAMP_QUERY)".into(),
            ));
        }
        let count = 2 * STAGE_COUNT as u32;
        Ok(Self {
            queries: gpu.device().create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("stage timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count,
            }),
            resolved: gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("stage timestamps"),
                size: count as u64 * 8,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
        })
    }

    /// The timestamp writes of stage `stage` (begin and end of its pass).
    pub(crate) fn writes(&self, stage: usize) -> wgpu::ComputePassTimestampWrites<'_> {
        wgpu::ComputePassTimestampWrites {
            query_set: &self.queries,
            beginning_of_pass_write_index: Some(2 * stage as u32),
            end_of_pass_write_index: Some(2 * stage as u32 + 1),
        }
    }

    /// Records the copy of the timestamps into a readable buffer (after the stages).
    pub(crate) fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        encoder.resolve_query_set(&self.queries, 0..2 * STAGE_COUNT as u32, &self.resolved, 0);
    }

    /// The stage times of the last submitted forward that used this timer.
    pub async fn read(&self, gpu: &GpuContext) -> Result<StageTimes> {
        let ticks: Vec<u64> = gpu.download(&self.resolved).await?;
        let period = gpu.queue().get_timestamp_period() as f64 * 1e-9;
        let mut times = [0.0; STAGE_COUNT];
        for (stage, time) in times.iter_mut().enumerate() {
            *time = ticks[2 * stage + 1].saturating_sub(ticks[2 * stage]) as f64 * period;
        }
        Ok(StageTimes(times))
    }
}
