//! The MoBA launch sequence, written once for every backend: which steps a forward and a
//! backward run, in which order and in which timed stage.
//!
//! A backend lowers each [`Step`] to its own launch (kernel, buffers, grid): the wgpu
//! schedule in `gpu/schedule.rs` (which burn's template kernels also execute) and the CUDA
//! schedule in `cuda/schedule.rs`. Both match on `Step` without a catch-all, so a new step
//! added here does not build until every backend lowers it.

use crate::config::{Gate, MobaConfig, Shape};

/// Most query rows per (batch, kv head) group that decode split over keys
/// ([`decode_forward`]): a few queries cannot fill a GPU with row tiles, chunks of their
/// blocks' keys can, and a group's rows share each key and value the split kernels read.
pub const DECODE_MAX_ROWS: usize = 16;

/// Whether `shape` decodes split over keys: at most [`DECODE_MAX_ROWS`] rows per kv group
/// (its query heads times its queries).
pub fn decodes(shape: &Shape) -> bool {
    shape.group_size() * shape.q_len <= DECODE_MAX_ROWS
}

/// A timed part of a run: one compute pass on wgpu, the kernels between two events on CUDA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Gate,
    Inversion,
    Attention,
    Finalize,
    RowTerms,
    Dq,
    DkDv,
}

impl Stage {
    /// The stages of a forward, in order.
    pub const FORWARD: [Stage; 4] = [
        Stage::Gate,
        Stage::Inversion,
        Stage::Attention,
        Stage::Finalize,
    ];
    /// The stages of a backward, in order.
    pub const BACKWARD: [Stage; 4] = [Stage::RowTerms, Stage::Inversion, Stage::Dq, Stage::DkDv];

    /// `stages` with their times, as reports print them: `gate 0.120 ms, ...`.
    pub fn describe(stages: &[Stage], seconds: &[f64]) -> String {
        let parts: Vec<String> = stages
            .iter()
            .zip(seconds)
            .map(|(stage, seconds)| format!("{} {:.3} ms", stage.name(), seconds * 1e3))
            .collect();
        parts.join(", ")
    }

    /// The stage's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Gate => "gate",
            Stage::Inversion => "selection inversion",
            Stage::Attention => "attention",
            Stage::Finalize => "finalize",
            Stage::RowTerms => "row terms",
            Stage::Dq => "dq",
            Stage::DkDv => "dk dv",
        }
    }
}

/// One step of a run. Its name is the name of the kernel that runs it (a backend may run a
/// variant, such as `attention_pass_coop`, or need no kernel for it: the f32 WGSL dq pass
/// has no `dq_finalize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Mean key of every block (the mean-key gate only).
    BlockMeans,
    /// Every query row's top-k blocks, ascending: the selection.
    GateTopk,
    /// Selection inversion, 1 of 3: entries per (list, block); a list is one slot of a query
    /// head (its entries rows), or all of its slots where the attention runs by block.
    SelectionCount,
    /// Selection inversion, 2 of 3: list starts from the counts.
    SelectionScan,
    /// Selection inversion, 3 of 3: every row into its lists, in row order.
    SelectionScatter,
    /// k and v rounded to f16 once, for passes that stage f16 key tiles (the WGSL
    /// cooperative kernels and the subgroup kernels' f16 variant); timed with the inversion, which forward and backward both have
    /// just before their passes. A backend whose kernels stage the tensors themselves (CUDA)
    /// runs nothing for it.
    HalfKeys,
    /// Attention of the rows that chose a block in `slot`, into the running row state.
    AttentionPass { slot: usize },
    /// o from the running state, and lse.
    AttentionFinalize,
    /// Attention of every (row, block) pair in one pass over the blocks (the inversion's
    /// lists hold all of a query head's slots), each pair's normalised output and lse kept
    /// apart: the forward for small blocks, whose per-slot passes would spend their time
    /// reading and writing the running state ([`forward_by_block`]).
    AttentionBlocks,
    /// o and lse from every row's [`Step::AttentionBlocks`] outputs.
    AttentionCombine,
    /// Row terms of the backward: lse in log2 and delta = rowsum(dO * o).
    BackwardPrepare,
    /// dq of the rows that chose a block in `slot` (slot 0 writes, later slots add).
    DqPass { slot: usize },
    /// dq from its f32 accumulator in the gradient's element type.
    DqFinalize,
    /// dk and dv of every key over the rows that chose its block.
    DkDv,
    /// dk and dv from the partial sums of a dk/dv walk split over the group's query heads
    /// (where a backend splits it to fill the GPU); nothing where the walk is whole.
    DkDvCombine,
    /// Decode: a group's few rows against one chunk of keys of a block they selected, into
    /// partial outputs (flash-decoding; no inversion).
    DecodeSplit,
    /// Decode: every row's partials merged into o and lse.
    DecodeCombine,
}

impl Step {
    /// The stage the step is timed in.
    pub fn stage(self) -> Stage {
        match self {
            Step::BlockMeans | Step::GateTopk => Stage::Gate,
            Step::SelectionCount
            | Step::SelectionScan
            | Step::SelectionScatter
            | Step::HalfKeys => Stage::Inversion,
            Step::AttentionPass { .. } | Step::AttentionBlocks | Step::DecodeSplit => {
                Stage::Attention
            }
            Step::AttentionFinalize | Step::AttentionCombine | Step::DecodeCombine => {
                Stage::Finalize
            }
            Step::BackwardPrepare => Stage::RowTerms,
            Step::DqPass { .. } | Step::DqFinalize => Stage::Dq,
            Step::DkDv | Step::DkDvCombine => Stage::DkDv,
        }
    }

    /// The kernel's name: its entry point on CUDA, its file under `shaders/wgsl/` (where
    /// the WGSL path has one).
    pub fn name(self) -> &'static str {
        match self {
            Step::BlockMeans => "block_means",
            Step::GateTopk => "gate_topk",
            Step::SelectionCount => "selection_count",
            Step::SelectionScan => "selection_scan",
            Step::SelectionScatter => "selection_scatter",
            Step::HalfKeys => "half_keys",
            Step::AttentionPass { .. } => "attention_pass",
            Step::AttentionFinalize => "attention_finalize",
            Step::AttentionBlocks => "attention_blocks",
            Step::AttentionCombine => "attention_combine",
            Step::BackwardPrepare => "backward_prepare",
            Step::DqPass { .. } => "dq_pass",
            Step::DqFinalize => "dq_finalize",
            Step::DkDv => "dkdv",
            Step::DkDvCombine => "dkdv_combine",
            Step::DecodeSplit => "decode_split",
            Step::DecodeCombine => "decode_combine",
        }
    }
}

/// The selection inverted into per-block lists, and the f16 keys the passes may read.
const INVERSION: [Step; 4] = [
    Step::SelectionCount,
    Step::SelectionScan,
    Step::SelectionScatter,
    Step::HalfKeys,
];

/// The block-means step where the gate scores blocks by them: the mean-key gate, unless
/// the gate ranks no block (causal top-1: every row attends its own block alone, as dense
/// attention in one block does).
fn means_step(config: &MobaConfig) -> Option<Step> {
    let ranks = config.top_k > 1 || !config.causal;
    (config.gate == Gate::MeanKey && ranks).then_some(Step::BlockMeans)
}

/// The forward: gate, selection inversion, one attention pass per slot, finalize.
pub fn forward(config: &MobaConfig) -> Vec<Step> {
    routing(config)
        .chain((0..config.top_k).map(|slot| Step::AttentionPass { slot }))
        .chain([Step::AttentionFinalize])
        .collect()
}

/// The forward by block: gate, the inversion into one list per query head (every slot),
/// the attention of every (row, block) pair in one pass, then each row's pairs combined.
/// A backend takes it where blocks are small (the CUDA path: `CudaPlan::by_block`); the
/// backward is the same as after [`forward`].
pub fn forward_by_block(config: &MobaConfig) -> Vec<Step> {
    routing(config)
        .chain([Step::AttentionBlocks, Step::AttentionCombine])
        .collect()
}

/// What both prefill forwards run first: the block means, the gate, and the inversion of
/// its selection into each block's rows.
fn routing(config: &MobaConfig) -> impl Iterator<Item = Step> {
    means_step(config)
        .into_iter()
        .chain([Step::GateTopk])
        .chain(INVERSION)
}

/// The forward of a decode (a few query rows per group): gate, then the attention split
/// over chunks of the selected blocks' keys and the partials merged. The backward is the
/// same as after [`forward`]: it reads only o, lse and the selection.
pub fn decode_forward(config: &MobaConfig) -> Vec<Step> {
    means_step(config)
        .into_iter()
        .chain([Step::GateTopk, Step::DecodeSplit, Step::DecodeCombine])
        .collect()
}

/// `steps` of a forward less what its caller gives: with the selection
/// ([`crate::backend::ForwardGiven::selection`]) no gate runs and nothing pools the keys
/// for one; with the keys' block means (a KV cache keeps them up to date) the gate reads
/// them and nothing pools the keys.
pub fn with_given(steps: Vec<Step>, means: bool, selection: bool) -> Vec<Step> {
    let given = |step: &Step| match step {
        Step::BlockMeans => means || selection,
        Step::GateTopk => selection,
        _ => false,
    };
    steps.into_iter().filter(|step| !given(step)).collect()
}

/// The backward from a forward's saved o, lse and selection: row terms, the inversion of
/// the saved selection, one dq pass per slot, dq, then dk and dv (combined where split).
pub fn backward(config: &MobaConfig) -> Vec<Step> {
    [Step::BackwardPrepare]
        .into_iter()
        .chain(INVERSION)
        .chain((0..config.top_k).map(|slot| Step::DqPass { slot }))
        .chain([Step::DqFinalize, Step::DkDv, Step::DkDvCombine])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_run_stage_by_stage_in_the_stages_order() {
        let config = MobaConfig::new(64, 3);
        for (steps, stages, skipped) in [
            (forward(&config), Stage::FORWARD, None),
            (forward_by_block(&config), Stage::FORWARD, None),
            (backward(&config), Stage::BACKWARD, None),
            // A decode needs no inversion.
            (
                decode_forward(&config),
                Stage::FORWARD,
                Some(Stage::Inversion),
            ),
        ] {
            let order: Vec<usize> = steps
                .iter()
                .map(|step| stages.iter().position(|&s| s == step.stage()).unwrap())
                .collect();
            assert!(order.windows(2).all(|w| w[0] <= w[1]), "{steps:?}");
            for (index, &stage) in stages.iter().enumerate() {
                assert_eq!(order.contains(&index), Some(stage) != skipped, "{steps:?}");
            }
        }
    }

    #[test]
    fn one_pass_per_slot_and_block_means_only_where_the_gate_ranks_by_them() {
        let passes = |steps: &[Step]| {
            steps
                .iter()
                .filter(|s| matches!(s, Step::AttentionPass { .. } | Step::DqPass { .. }))
                .count()
        };
        let config = MobaConfig::new(64, 3);
        assert_eq!(passes(&forward(&config)), 3);
        assert_eq!(passes(&backward(&config)), 3);
        assert_eq!(forward(&config)[0], Step::BlockMeans);
        // The static gates score blocks by position; a causal top-1 ranks none.
        for config in [MobaConfig::sliding_window(64, 2), MobaConfig::new(64, 1)] {
            assert_eq!(forward(&config)[0], Step::GateTopk);
            assert_eq!(decode_forward(&config)[0], Step::GateTopk);
        }
        assert_eq!(
            forward(&MobaConfig::new(64, 1).with_causal(false))[0],
            Step::BlockMeans
        );
    }
}
