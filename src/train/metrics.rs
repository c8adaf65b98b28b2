//! Metrics burn-train does not have: perplexity from the step's loss, tokens per second, and
//! the GPU memory the backend holds.

use std::sync::Arc;
use std::time::Instant;

use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::{
    Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry,
    SerializedEntry,
};
use nvml_wrapper::Nvml;

use super::step::LmStats;

/// Bytes of device memory in use, where the device can tell.
pub type MemoryProbe = Arc<dyn Fn() -> Option<u64> + Send + Sync>;

/// Memory in use on NVIDIA GPU `index` as NVML reports it (all processes: on a GPU of its
/// own, the training's); `None` without an NVIDIA driver. wgpu has no memory query, and
/// cubecl's counts memory per stream.
pub fn nvidia_memory_probe(index: u32) -> Option<MemoryProbe> {
    let index = nvml_index(index);
    let nvml = Nvml::init().ok()?;
    nvml.device_by_index(index).ok()?;
    let nvml = Arc::new(nvml);
    Some(Arc::new(move || {
        let device = nvml.device_by_index(index).ok()?;
        device.memory_info().ok().map(|memory| memory.used)
    }))
}

/// The NVML number of CUDA device `index`: NVML numbers every GPU, CUDA only those that
/// `CUDA_VISIBLE_DEVICES` lists (when it lists numbers).
fn nvml_index(index: u32) -> u32 {
    std::env::var("CUDA_VISIBLE_DEVICES")
        .ok()
        .and_then(|list| list.split(',').nth(index as usize)?.trim().parse().ok())
        .unwrap_or(index)
}

fn numeric(unit: Option<&str>, higher_is_better: bool) -> MetricAttributes {
    NumericAttributes {
        unit: unit.map(String::from),
        higher_is_better,
    }
    .into()
}

/// `exp` of the mean loss per counted byte: the current batch's, and the epoch's weighted
/// by counted bytes.
#[derive(Clone)]
pub struct PerplexityMetric {
    name: MetricName,
    state: NumericMetricState,
}

impl Default for PerplexityMetric {
    fn default() -> Self {
        Self {
            name: Arc::new("Perplexity".into()),
            state: NumericMetricState::new(),
        }
    }
}

impl Metric for PerplexityMetric {
    type Input = LmStats;

    fn update(&mut self, stats: &LmStats, _: &MetricMetadata) -> SerializedEntry {
        // The state averages losses weighted by counted bytes; perplexity is exp of that.
        self.state
            .update(stats.loss, stats.counted, FormatOptions::new(self.name()));
        let (current, running) = (self.value().current(), self.running_value().current());
        SerializedEntry::new(
            format!("epoch {running:.3} - batch {current:.3}"),
            self.value().serialize(),
        )
    }

    fn clear(&mut self) {
        self.state.reset();
    }

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        numeric(None, false)
    }
}

impl Numeric for PerplexityMetric {
    fn value(&self) -> NumericEntry {
        exp_entry(self.state.current_value())
    }

    fn running_value(&self) -> NumericEntry {
        exp_entry(self.state.running_value())
    }
}

fn exp_entry(entry: NumericEntry) -> NumericEntry {
    match entry {
        NumericEntry::Value(value) => NumericEntry::Value(value.exp()),
        NumericEntry::Aggregated {
            aggregated_value,
            count,
        } => NumericEntry::Aggregated {
            aggregated_value: aggregated_value.exp(),
            count,
        },
    }
}

/// Bytes read per second since the first step of the epoch (that step, which waits for
/// kernel compilation and autotuning, only starts the clock).
#[derive(Clone)]
pub struct TokensPerSecondMetric {
    name: MetricName,
    state: NumericMetricState,
    start: Option<Instant>,
    tokens: usize,
}

impl Default for TokensPerSecondMetric {
    fn default() -> Self {
        Self {
            name: Arc::new("Tokens/s".into()),
            state: NumericMetricState::new(),
            start: None,
            tokens: 0,
        }
    }
}

impl Metric for TokensPerSecondMetric {
    type Input = LmStats;

    fn update(&mut self, stats: &LmStats, _: &MetricMetadata) -> SerializedEntry {
        let rate = match self.start {
            Some(start) => {
                self.tokens += stats.tokens;
                self.tokens as f64 / start.elapsed().as_secs_f64()
            }
            None => {
                self.start = Some(Instant::now());
                0.0
            }
        };
        self.state.update(
            rate,
            1,
            FormatOptions::new(self.name()).unit("B/s").precision(0),
        )
    }

    fn clear(&mut self) {
        *self = Self::default();
    }

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        numeric(Some("bytes/s"), true)
    }
}

impl Numeric for TokensPerSecondMetric {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.current_value()
    }
}

/// Device memory in use (MiB) and its peak over the run.
#[derive(Clone)]
pub struct GpuMemoryMetric {
    name: MetricName,
    probe: MemoryProbe,
    state: NumericMetricState,
    peak: u64,
}

impl GpuMemoryMetric {
    pub fn new(probe: MemoryProbe) -> Self {
        Self {
            name: Arc::new("GPU memory".into()),
            probe,
            state: NumericMetricState::new(),
            peak: 0,
        }
    }
}

impl Metric for GpuMemoryMetric {
    type Input = ();

    fn update(&mut self, _: &(), _: &MetricMetadata) -> SerializedEntry {
        let bytes = (self.probe)().unwrap_or(0);
        self.peak = self.peak.max(bytes);
        let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
        let entry = self
            .state
            .update(mib(bytes), 1, FormatOptions::new(self.name()));
        SerializedEntry::new(
            format!("{:.0} MiB (peak {:.0} MiB)", mib(bytes), mib(self.peak)),
            entry.serialized,
        )
    }

    fn clear(&mut self) {
        self.state.reset();
    }

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        numeric(Some("MiB"), false)
    }
}

impl Numeric for GpuMemoryMetric {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.current_value()
    }
}
