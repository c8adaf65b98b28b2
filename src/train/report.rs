//! The comparison report of several runs (MoBA, full attention, hybrids) trained with the
//! same seed, data and steps: loss curves, recall by distance, and a markdown table with
//! the targets (MoBA's validation loss within 1% of full's; recall at the longest distance
//! at least 90% of full's).

use std::fmt::Write;
use std::path::{Path, PathBuf};

use super::checkpoint::load_config;
use super::config::TrainConfig;
use super::curve::{Curves, metrics_path};
use super::eval::EvalReport;
use super::run::TrainSummary;
use crate::error::{MobaError, Result};
use crate::module::AttentionKind;
use crate::plot::{PlotError, Scale, Series, line_plot_xy};

/// Training curves are averaged into at most this many points.
const CURVE_POINTS: usize = 200;

/// One run of a comparison, read from its directory.
pub struct Arm {
    pub name: String,
    pub config: TrainConfig,
    pub summary: TrainSummary,
    pub eval: EvalReport,
    pub curves: Curves,
}

impl Arm {
    /// Reads `train.json`, `summary.json`, `eval.json` and `metrics.jsonl` of `dir`.
    pub fn read(name: &str, dir: &Path) -> Result<Self> {
        let path = dir.join("eval.json");
        let text = std::fs::read_to_string(&path).map_err(|e| MobaError::io(&path, e))?;
        Ok(Self {
            name: name.to_string(),
            config: load_config(dir)?,
            summary: TrainSummary::read(dir)?,
            eval: serde_json::from_str(&text).map_err(|e| MobaError::io(&path, e))?,
            curves: Curves::read(&metrics_path(dir))?,
        })
    }

    /// `moba (block 512, top-3), last 1 full` and the like.
    pub fn attention(&self) -> String {
        let model = &self.config.model;
        let kind = match model.attention {
            AttentionKind::Moba { block_size, top_k } => {
                format!("MoBA block {block_size} top-{top_k}")
            }
            AttentionKind::Full => "full".into(),
            AttentionKind::SlidingWindow { block_size, blocks } => {
                format!("window {blocks} x {block_size}")
            }
            AttentionKind::Sink {
                block_size,
                first,
                recent,
            } => format!("sink {first}+{recent} x {block_size}"),
            AttentionKind::KeyWindow { keys } => format!("window of {keys} keys"),
            AttentionKind::Nsa {
                compress_block,
                stride,
                select_block,
                top_n,
                window,
            } => format!(
                "NSA cmp {compress_block}/{stride}, top-{top_n} of {select_block}, window {window}"
            ),
        };
        match model.full_layers {
            0 => kind,
            n if n == model.n_layers => "full".into(),
            n => format!("{kind}, last {n} of {} layers full", model.n_layers),
        }
    }

    /// Recall accuracy in the farthest distance bucket.
    pub fn longest_recall(&self) -> Option<f64> {
        self.eval.recall.last().map(|bucket| bucket.accuracy())
    }
}

/// Writes `loss.svg`, `recall_by_distance.svg` (recall runs) and `table.md` into `out`;
/// returns the table. `reference` names the arm the others are compared with.
pub fn write_report(arms: &[Arm], reference: &str, out: &Path) -> Result<String> {
    std::fs::create_dir_all(out).map_err(|e| MobaError::io(out, e))?;
    let write = |name: &str, text: &str| -> Result<PathBuf> {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|e| MobaError::io(&path, e))?;
        Ok(path)
    };
    let plot = |name: &str, svg: std::result::Result<String, PlotError>| -> Result<PathBuf> {
        let svg = svg.map_err(|e| MobaError::io(&out.join(name), e))?;
        write(name, &svg)
    };
    let title = |what: &str| match arms.first() {
        Some(arm) => format!(
            "{what}, {} bytes, {} steps",
            arm.config.seq_len, arm.summary.steps
        ),
        None => what.to_string(),
    };
    plot(
        "loss.svg",
        line_plot_xy(
            &title("Loss"),
            "optimizer step",
            "loss (nats per counted byte)",
            Scale::Linear,
            Scale::Fit,
            &loss_series(arms),
        ),
    )?;
    if arms.iter().any(|arm| !arm.eval.recall.is_empty()) {
        let series: Vec<Series> = arms
            .iter()
            .map(|arm| Series {
                name: arm.name.clone(),
                points: arm
                    .eval
                    .recall
                    .iter()
                    .map(|b| {
                        (
                            (b.distance.start + b.distance.end) as f64 / 2.0,
                            b.accuracy(),
                        )
                    })
                    .collect(),
            })
            .collect();
        plot(
            "recall_by_distance.svg",
            line_plot_xy(
                &title("Recall accuracy"),
                "bytes from record to query (bucket middle)",
                "answers right",
                Scale::Linear,
                Scale::Linear,
                &series,
            ),
        )?;
    }
    let table = table(arms, reference);
    write("table.md", &table)?;
    Ok(table)
}

/// Per arm: the training loss (averaged into at most [`CURVE_POINTS`] points) and the
/// validation loss of every epoch, both against the optimizer step.
fn loss_series(arms: &[Arm]) -> Vec<Series> {
    let mut series = Vec::new();
    for arm in arms {
        let accumulation = arm.config.grad_accumulation as f64;
        let losses = arm.curves.train_values("Loss");
        let width = losses.len().div_ceil(CURVE_POINTS).max(1);
        let train = losses
            .chunks(width)
            .enumerate()
            .map(|(i, chunk)| {
                let middle = (i * width) as f64 + chunk.len() as f64 / 2.0;
                (
                    middle / accumulation,
                    chunk.iter().sum::<f64>() / chunk.len() as f64,
                )
            })
            .collect();
        let valid = arm
            .curves
            .valid_means("Loss")
            .into_iter()
            .enumerate()
            .map(|(epoch, loss)| (((epoch + 1) * arm.config.valid_every) as f64, loss))
            .collect();
        series.push(Series {
            name: format!("{} train", arm.name),
            points: train,
        });
        series.push(Series {
            name: format!("{} validation", arm.name),
            points: valid,
        });
    }
    series
}

/// The markdown table and the target lines.
fn table(arms: &[Arm], reference: &str) -> String {
    let base = arms.iter().find(|arm| arm.name == reference);
    let relative = |value: f64, base: Option<f64>| match base {
        Some(base) if base != 0.0 => format!(" ({:+.2}%)", (value / base - 1.0) * 100.0),
        _ => String::new(),
    };
    let mut text = String::from(
        "| arm | attention | params | steps | bytes seen | validation loss | trailing loss | \
         recall, longest distance | bytes/s | peak GPU memory |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for arm in arms {
        let base_eval = base.map(|b| &b.eval);
        let recall = match arm.longest_recall() {
            Some(r) => format!("{r:.3}{}", relative(r, base.and_then(Arm::longest_recall))),
            None => "-".into(),
        };
        let _ = writeln!(
            text,
            "| {} | {} | {:.2}M | {} | {:.1}M | {:.4}{} | {:.4}{} | {recall} | {:.0}{} | {} |",
            arm.name,
            arm.attention(),
            arm.summary.params as f64 / 1e6,
            arm.summary.steps,
            arm.summary.tokens as f64 / 1e6,
            arm.eval.valid_loss,
            relative(arm.eval.valid_loss, base_eval.map(|e| e.valid_loss)),
            arm.eval.trailing_loss,
            relative(arm.eval.trailing_loss, base_eval.map(|e| e.trailing_loss)),
            arm.summary.tokens_per_second,
            relative(
                arm.summary.tokens_per_second,
                base.map(|b| b.summary.tokens_per_second)
            ),
            arm.summary
                .peak_memory_mib
                .map_or("-".into(), |m| format!("{m:.0} MiB")),
        );
    }
    if let Some(base) = base {
        text.push('\n');
        for arm in arms.iter().filter(|arm| arm.name != reference) {
            let ratio = arm.eval.valid_loss / base.eval.valid_loss;
            // The spread of the per-sequence differences says how far the evaluation's
            // few sequences can be trusted near the 1% line.
            let (spread, note) = arm.eval.loss_difference(&base.eval).map_or_else(
                || (String::new(), String::new()),
                |d| {
                    (
                        format!(" ± {:.2}%", d.standard_error * 100.0),
                        format!("standard error over {} paired sequences; ", d.sequences),
                    )
                },
            );
            let _ = writeln!(
                text,
                "- {} validation loss {:.4} vs {reference} {:.4}: {:+.2}%{spread} \
                 ({note}target within 1%: {})",
                arm.name,
                arm.eval.valid_loss,
                base.eval.valid_loss,
                (ratio - 1.0) * 100.0,
                met(ratio <= 1.01),
            );
            if let (Some(recall), Some(base_recall)) = (arm.longest_recall(), base.longest_recall())
            {
                let _ = writeln!(
                    text,
                    "- {} recall at the longest distance {recall:.3} vs {reference} {base_recall:.3} \
                     (target at least 90% of {reference}'s: {})",
                    arm.name,
                    if base_recall > 0.0 {
                        met(recall >= 0.9 * base_recall)
                    } else {
                        "not measurable: the reference recalls nothing"
                    },
                );
            }
        }
    }
    text
}

fn met(yes: bool) -> &'static str {
    if yes { "met" } else { "not met" }
}
