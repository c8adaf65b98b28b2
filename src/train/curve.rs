//! The metric log of a run, `metrics.jsonl`: every step's metrics and every epoch's end, in
//! order, as JSON lines. Plots and tables read it back ([`Curves`]).
//!
//! burn-train's own file logger names its folders by an epoch counter that restarts at 1
//! when a run resumes; this log has no epoch numbers on its steps (their order is the step
//! number), and a resumed run cuts it back to the end of the checkpoint's epoch.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::train::logger::MetricLogger;
use burn::train::metric::store::{EpochSummary, MetricsUpdate, Split};
use burn::train::metric::{MetricDefinition, MetricId, NumericEntry};
use serde_json::{Map, Value, json};

use crate::error::{MobaError, Result};

/// A [`MetricLogger`] appending to `metrics.jsonl`.
pub struct CurveLogger {
    file: File,
    names: HashMap<MetricId, String>,
}

impl CurveLogger {
    /// A log for a new run (an existing file is replaced).
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).map_err(|e| MobaError::io(path, e))?;
        Ok(Self {
            file,
            names: HashMap::new(),
        })
    }

    /// The log of a run resuming after `epoch`: lines after that epoch's validation go.
    pub fn resume(path: &Path, epoch: usize) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| MobaError::io(path, e))?;
        let is_end = |line: &str| {
            serde_json::from_str::<Value>(line).is_ok_and(|v| {
                v["split"] == "valid" && v["end_epoch"].as_u64() == Some(epoch as u64)
            })
        };
        let kept: Vec<&str> = match text.lines().position(is_end) {
            Some(last) => text.lines().take(last + 1).collect(),
            None => Vec::new(),
        };
        std::fs::write(
            path,
            kept.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .map_err(|e| MobaError::io(path, e))?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| MobaError::io(path, e))?;
        Ok(Self {
            file,
            names: HashMap::new(),
        })
    }

    fn write(&mut self, line: Value) {
        // A full disk must not stop training: the log is a report, the checkpoints are the state.
        if let Err(error) = writeln!(self.file, "{line}") {
            eprintln!("warning: metrics.jsonl: {error}");
        }
    }
}

fn split_name(split: &Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Valid => "valid",
        Split::Test(_) => "test",
    }
}

impl MetricLogger for CurveLogger {
    fn log(&mut self, update: MetricsUpdate, _epoch: usize, split: &Split) {
        let mut line = Map::new();
        line.insert("split".into(), split_name(split).into());
        for numeric in &update.entries_numeric {
            if let Some(name) = self.names.get(&numeric.entry.metric_id) {
                line.insert(name.clone(), json!(numeric.numeric_entry.current()));
            }
        }
        self.write(Value::Object(line));
    }

    fn read_numeric(&mut self, _: &str, _: usize, _: &Split) -> Result<Vec<NumericEntry>, String> {
        Ok(Vec::new())
    }

    fn log_metric_definition(&mut self, definition: MetricDefinition) {
        self.names.insert(definition.metric_id, definition.name);
    }

    fn log_epoch_summary(&mut self, summary: EpochSummary) {
        self.write(json!({"split": split_name(&summary.split), "end_epoch": summary.epoch_number}));
    }
}

/// A run's metrics read back from `metrics.jsonl`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Curves {
    /// Metrics of every training step (forward), in order.
    pub train: Vec<HashMap<String, f64>>,
    /// Metrics of every validation batch, grouped by epoch.
    pub valid: Vec<Vec<HashMap<String, f64>>>,
    /// The last training metrics of every epoch.
    pub train_epoch_ends: Vec<HashMap<String, f64>>,
}

impl Curves {
    /// Reads `metrics.jsonl`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| MobaError::io(path, e))?;
        let mut curves = Curves::default();
        let mut valid_epoch = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let value: Value = serde_json::from_str(line).map_err(|e| MobaError::Io {
                path: format!("{}:{}", path.display(), number + 1),
                error: e.into(),
            })?;
            let split = value["split"].as_str().unwrap_or_default();
            let metrics: HashMap<String, f64> = value
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| v.as_f64().map(|v| (k.clone(), v)))
                .collect();
            match (split, value.get("end_epoch").is_some()) {
                ("train", false) => curves.train.push(metrics),
                ("train", true) => {
                    let last = curves.train.last().cloned().unwrap_or_default();
                    curves.train_epoch_ends.push(last);
                }
                ("valid", false) => valid_epoch.push(metrics),
                ("valid", true) => curves.valid.push(std::mem::take(&mut valid_epoch)),
                _ => {}
            }
        }
        Ok(curves)
    }

    /// `name` at every training step.
    pub fn train_values(&self, name: &str) -> Vec<f64> {
        self.train
            .iter()
            .filter_map(|m| m.get(name).copied())
            .collect()
    }

    /// The mean of `name` over each epoch's validation batches.
    pub fn valid_means(&self, name: &str) -> Vec<f64> {
        self.valid
            .iter()
            .map(|epoch| {
                let values: Vec<f64> = epoch.iter().filter_map(|m| m.get(name).copied()).collect();
                values.iter().sum::<f64>() / values.len().max(1) as f64
            })
            .collect()
    }
}

/// Where a run keeps its metric log.
pub fn metrics_path(run: &Path) -> PathBuf {
    run.join("metrics.jsonl")
}
