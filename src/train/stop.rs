//! Stopping a training run early without losing work or hiding it. A run stops on SIGINT or
//! SIGTERM (Ctrl-C with `--lines` or without a terminal, `kill`), on a loss that is not
//! finite, on a failed checkpoint save (burn-train stops itself), or from burn's dashboard
//! (its `q`: the dashboard holds the terminal in raw mode, where Ctrl-C is a key, not a
//! signal). The first signal stops the run at its next checkpoint (the end of the current
//! epoch); a second one stops it after the current step, keeping the newest complete
//! checkpoint; a third ends the process at once. A loss that is not finite stops it after
//! the current step and keeps every later checkpoint from being saved (its weights are
//! lost). Either way `train` then returns an error that says where `--resume` continues.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use burn::train::Interrupter;
use burn::train::checkpoint::{CheckpointingAction, CheckpointingStrategy};
use burn::train::metric::store::EventStoreClient;
use burn::train::metric::{Metric, MetricAttributes, MetricMetadata, MetricName, SerializedEntry};

use super::step::LmStats;

/// How a run is asked to stop: shared by the signal handler, the checkpointing strategy and
/// the loss guard.
#[derive(Clone)]
pub struct StopRequest {
    interrupter: Interrupter,
    /// Stop when the next checkpoint is saved.
    at_checkpoint: Arc<AtomicBool>,
    /// The weights are no longer worth a checkpoint (a loss that is not finite).
    poisoned: Arc<AtomicBool>,
    /// Why, the first reason given (burn's dashboard may reset the interrupter's own).
    reason: Arc<Mutex<Option<String>>>,
}

impl StopRequest {
    pub fn new(interrupter: Interrupter) -> Self {
        Self {
            interrupter,
            at_checkpoint: Arc::default(),
            poisoned: Arc::default(),
            reason: Arc::default(),
        }
    }

    /// Stops the run once the checkpoint of the current epoch is saved.
    pub fn at_next_checkpoint(&self, reason: &str) {
        self.note(reason);
        self.at_checkpoint.store(true, Ordering::SeqCst);
    }

    /// Stops the run after the current step; the steps since the last checkpoint are lost.
    pub fn now(&self, reason: &str) {
        self.note(reason);
        self.interrupter.stop(Some(reason));
    }

    /// Stops the run after the current step and saves no checkpoint from now on.
    pub fn poisoned(&self, reason: &str) {
        self.poisoned.store(true, Ordering::SeqCst);
        self.now(reason);
    }

    /// Why the run stopped early, where it did: a reason given here, else burn-train's own
    /// (a failed checkpoint save, the dashboard).
    pub fn reason(&self) -> Option<String> {
        let ours = self
            .reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        ours.or_else(|| self.interrupter.get_message())
    }

    fn note(&self, reason: &str) {
        let mut slot = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert_with(|| reason.to_string());
    }
}

/// burn-train's checkpointing strategy, with a stop once a checkpoint is saved when one was
/// asked for (the first Ctrl-C), and no checkpoint of weights a non-finite loss has spoilt
/// (burn-train checkpoints after validation whether or not it was asked to stop).
pub struct CheckpointThenStop<S> {
    inner: S,
    stop: StopRequest,
}

impl<S> CheckpointThenStop<S> {
    pub fn new(inner: S, stop: StopRequest) -> Self {
        Self { inner, stop }
    }
}

impl<S: CheckpointingStrategy> CheckpointingStrategy for CheckpointThenStop<S> {
    fn checkpointing(
        &mut self,
        epoch: usize,
        store: &EventStoreClient,
    ) -> Vec<CheckpointingAction> {
        let actions = self.inner.checkpointing(epoch, store);
        if self.stop.at_checkpoint.load(Ordering::SeqCst) {
            // burn-train saves this epoch's checkpoint, runs one more step, then stops.
            let reason = self.stop.reason().unwrap_or_default();
            self.stop.interrupter.stop(Some(&reason));
        }
        actions
    }
}

/// Stops the run after the first batch whose loss is NaN or infinite, in training or in
/// validation (weights that an update made NaN show there first): the weights are lost from
/// there on, and no later checkpoint may hold them.
#[derive(Clone)]
pub struct LossGuard {
    name: MetricName,
    stop: StopRequest,
    steps: usize,
}

impl LossGuard {
    pub fn new(stop: StopRequest) -> Self {
        Self {
            name: Arc::new("Loss is finite".into()),
            stop,
            steps: 0,
        }
    }
}

impl Metric for LossGuard {
    type Input = LmStats;

    fn update(&mut self, stats: &LmStats, _: &MetricMetadata) -> SerializedEntry {
        self.steps += 1;
        if !stats.loss.is_finite() {
            self.stop.poisoned(&format!(
                "the loss became {} at batch {} of this epoch's training or validation (too \
                 high a learning rate, or a bad setting); no checkpoint of these weights was kept",
                stats.loss, self.steps
            ));
        }
        let finite = stats.loss.is_finite();
        SerializedEntry::new(if finite { "yes" } else { "no" }.into(), finite.to_string())
    }

    fn clear(&mut self) {
        self.steps = 0;
    }

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        MetricAttributes::None
    }
}

/// The run SIGINT and SIGTERM stop, while one trains.
static ACTIVE: Mutex<Option<(StopRequest, u32)>> = Mutex::new(None);

/// Routes SIGINT and SIGTERM to `stop` while it lives (Unix; elsewhere Ctrl-C ends the
/// process as usual, and `--resume` continues from the newest complete checkpoint).
pub struct SignalGuard;

impl SignalGuard {
    pub fn install(stop: StopRequest) -> Self {
        #[cfg(unix)]
        listen();
        *ACTIVE.lock().unwrap_or_else(|p| p.into_inner()) = Some((stop, 0));
        SignalGuard
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        *ACTIVE.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// One thread for the process that hears SIGINT and SIGTERM: with a run training, the
/// first asks it to stop at its next checkpoint, the second after its current step, the
/// third exits; with none, the process exits as it would by default (status 130 or 143).
#[cfg(unix)]
fn listen() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    static LISTENING: std::sync::Once = std::sync::Once::new();
    LISTENING.call_once(|| {
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
            return;
        };
        std::thread::spawn(move || {
            for signal in signals.forever() {
                let name = if signal == SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                let mut active = ACTIVE.lock().unwrap_or_else(|p| p.into_inner());
                let Some((stop, count)) = active.as_mut() else {
                    std::process::exit(128 + signal);
                };
                *count += 1;
                match count {
                    1 => {
                        eprintln!(
                            "\nmoba: {name}: stopping at the next checkpoint (the end of this \
                             epoch); interrupt again to stop after the current step, losing \
                             the steps since the last checkpoint"
                        );
                        stop.at_next_checkpoint(&format!("{name} received"));
                    }
                    2 => {
                        eprintln!("\nmoba: {name} again: stopping after the current step");
                        stop.now(&format!("{name} received twice"));
                    }
                    _ => std::process::exit(128 + signal),
                }
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::data::dataloader::Progress;

    #[test]
    fn a_non_finite_loss_stops_the_run_and_keeps_no_later_checkpoint() {
        let stop = StopRequest::new(Interrupter::new());
        let mut guard = LossGuard::new(stop.clone());
        let progress = Progress {
            items_processed: 1,
            items_total: 4,
        };
        let meta = MetricMetadata {
            progress: progress.clone(),
            global_progress: progress,
            iteration: Some(1),
            lr: None,
        };
        let stats = |loss| LmStats {
            loss,
            counted: 8,
            tokens: 8,
        };
        guard.update(&stats(2.5), &meta);
        assert!(!stop.interrupter.should_stop() && stop.reason().is_none());
        guard.update(&stats(f64::NAN), &meta);
        assert!(stop.interrupter.should_stop());
        assert!(stop.poisoned.load(Ordering::SeqCst));
        let reason = stop.reason().unwrap();
        assert!(
            reason.contains("the loss became NaN at batch 2"),
            "{reason}"
        );
        // A later request keeps the first reason.
        stop.now("SIGINT received");
        assert_eq!(stop.reason().unwrap(), reason);
    }
}
