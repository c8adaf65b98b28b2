//! Progress as plain lines, for logs and pipes (burn-train's dashboard needs a terminal).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use burn::train::metric::{MetricDefinition, MetricId};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};

/// Prints the training metrics at most every `interval` and at the end of every epoch,
/// and the validation means after every validation, to stderr.
pub struct LineRenderer {
    names: Vec<(MetricId, String)>,
    train: HashMap<MetricId, f64>,
    valid: HashMap<MetricId, (f64, usize)>,
    interval: Duration,
    printed: Option<Instant>,
}

impl LineRenderer {
    pub fn new(interval: Duration) -> Self {
        Self {
            names: Vec::new(),
            train: HashMap::new(),
            valid: HashMap::new(),
            interval,
            printed: None,
        }
    }

    /// `name value, ...` of the metrics `value_of` knows, in registration order.
    fn line(&self, value_of: impl Fn(&MetricId) -> Option<f64>) -> String {
        let parts: Vec<String> = self
            .names
            .iter()
            .filter_map(|(id, name)| value_of(id).map(|value| format!("{name} {}", compact(value))))
            .collect();
        parts.join(", ")
    }
}

/// 4 significant digits, scientific below 1e-2.
fn compact(value: f64) -> String {
    match value.abs() {
        v if v != 0.0 && v < 1e-2 => format!("{value:.2e}"),
        v if v >= 1000.0 => format!("{value:.0}"),
        _ => format!("{value:.4}"),
    }
}

fn numeric(state: MetricState) -> Option<(MetricId, f64)> {
    match state {
        MetricState::Numeric(entry, value) => Some((entry.metric_id, value.current())),
        MetricState::Generic(_) => None,
    }
}

fn epoch_done(item: &TrainingProgress) -> bool {
    item.progress
        .as_ref()
        .is_some_and(|p| p.items_processed >= p.items_total)
}

impl MetricsRendererTraining for LineRenderer {
    fn update_train(&mut self, state: MetricState) {
        if let Some((id, value)) = numeric(state) {
            self.train.insert(id, value);
        }
    }

    fn update_valid(&mut self, state: MetricState) {
        if let Some((id, value)) = numeric(state) {
            let sum = self.valid.entry(id).or_insert((0.0, 0));
            *sum = (sum.0 + value, sum.1 + 1);
        }
    }

    fn render_train(&mut self, item: TrainingProgress, _: Vec<ProgressType>) {
        let due = self.printed.is_none_or(|at| at.elapsed() >= self.interval);
        if !due && !epoch_done(&item) {
            return;
        }
        self.printed = Some(Instant::now());
        let step = item.progress.as_ref().map_or(0, |p| p.items_processed);
        let total = item.progress.as_ref().map_or(0, |p| p.items_total);
        eprintln!(
            "epoch {}/{} sequences {step}/{total}: {}",
            item.global_progress.items_processed,
            item.global_progress.items_total,
            self.line(|id| self.train.get(id).copied())
        );
    }

    fn render_valid(&mut self, item: TrainingProgress, _: Vec<ProgressType>) {
        if !epoch_done(&item) {
            return;
        }
        eprintln!(
            "epoch {}/{} validation: {}",
            item.global_progress.items_processed,
            item.global_progress.items_total,
            self.line(|id| self.valid.get(id).map(|(sum, n)| sum / *n as f64))
        );
        self.valid.clear();
    }
}

impl MetricsRendererEvaluation for LineRenderer {
    fn update_test(&mut self, _: EvaluationName, _: MetricState) {}

    fn render_test(&mut self, _: EvaluationProgress, _: Vec<ProgressType>) {}
}

impl MetricsRenderer for LineRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        if !self.names.iter().any(|(id, _)| *id == definition.metric_id) {
            self.names.push((definition.metric_id, definition.name));
        }
    }
}
