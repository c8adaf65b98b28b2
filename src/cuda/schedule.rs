//! The CUDA path's launches: the steps of [`crate::launch_plan`] lowered to CUDA kernels,
//! grids, shared memory and arguments. Data only (no driver), so CI checks them; `runtime`
//! executes them.

use super::launch::{
    CudaPlan, DECODE_KEYS, DecodeSplit, ELEMENT_THREADS, GATE_THREADS, INVERT_THREADS, KEY_THREADS,
    ListLayout, MEAN_THREADS, TILE_THREADS, WARP,
};
use super::source::CudaProgram;
use crate::config::MobaConfig;
use crate::kernel_params::KernelParams;
use crate::launch_plan::{self, Step};
use crate::shared_constants::DECODE_COMBINE_LANES;

/// One argument of a kernel launch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arg {
    Params(KernelParams),
    U32(u32),
    F32(f32),
    /// A device address (of a burn-cuda tensor or a scratch buffer).
    Ptr(u64),
}

/// A launch: the step (its kernel's name and stage), grid, threads per block, dynamic
/// shared memory, arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub program: CudaProgram,
    pub step: Step,
    pub grid: (u32, u32, u32),
    pub threads: u32,
    pub shared_bytes: u32,
    pub args: Vec<Arg>,
}

/// Device addresses of the scratch buffers (sizes: [`CudaPlan::scratch_words`]).
#[derive(Debug, Clone, Copy)]
pub struct Scratch {
    pub means: u64,
    pub counts: u64,
    pub starts: u64,
    pub tiles: u64,
    pub lists: u64,
    pub row_state: u64,
    pub row_accumulator: u64,
    pub partial_out: u64,
    pub partial_stats: u64,
}

/// Alignment of each scratch region in one scratch allocation, in 4-byte words: 256 bytes,
/// what a separate allocation would get and the kernels' vector accesses assume.
const SCRATCH_ALIGN_WORDS: usize = 64;

impl Scratch {
    /// The scratch buffers of a forward (`forward`) or backward of `plan` as regions of one
    /// f32 allocation of [`Scratch::words`] words at `base` (one allocation instead of one
    /// per buffer: a decode step's fixed cost); the block means at `means` where the caller
    /// gives them.
    pub fn in_one_buffer(plan: &CudaPlan, base: u64, means: Option<u64>, forward: bool) -> Scratch {
        let (offsets, _) = Self::layout(plan, means.is_some(), forward);
        let at = offsets.map(|offset| base + 4 * offset as u64);
        Scratch {
            means: means.unwrap_or(at[0]),
            counts: at[1],
            starts: at[2],
            tiles: at[3],
            lists: at[4],
            row_state: at[5],
            row_accumulator: at[6],
            partial_out: at[7],
            partial_stats: at[8],
        }
    }

    /// Words of the allocation [`Scratch::in_one_buffer`] takes (at least 1).
    pub fn words(plan: &CudaPlan, means_given: bool, forward: bool) -> usize {
        Self::layout(plan, means_given, forward).1.max(1)
    }

    /// Each region's first word, in the fields' order, and the end.
    fn layout(plan: &CudaPlan, means_given: bool, forward: bool) -> ([usize; 9], usize) {
        let words = plan.scratch_words(forward);
        let sizes = [
            if means_given { 0 } else { words.means },
            words.counts,
            words.starts,
            words.starts,
            words.lists,
            words.row_state,
            words.row_accumulator,
            words.partial_out,
            words.partial_stats,
        ];
        let mut offsets = [0; 9];
        let mut end = 0;
        for (offset, size) in offsets.iter_mut().zip(sizes) {
            *offset = end;
            end += size.next_multiple_of(SCRATCH_ALIGN_WORDS);
        }
        (offsets, end)
    }
}

/// What a forward's caller gives, that its steps need not compute.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Given {
    pub means: bool,
    pub selection: bool,
}

/// Device addresses of the forward's tensors.
#[derive(Debug, Clone, Copy)]
pub struct ForwardTensors {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub o: u64,
    /// f32 `[B, Hq, S]`.
    pub lse: u64,
    /// i32 `[B, Hq, S, top_k]`.
    pub selection: u64,
    /// i32 `[num_blocks]`, the first block of each block's sequence (a packed batch); 0
    /// where not given (every sequence starts at block 0).
    pub sequence_starts: u64,
}

/// Device addresses of the backward's tensors: the forward's, the incoming gradient, and
/// the gradients it writes.
#[derive(Debug, Clone, Copy)]
pub struct BackwardTensors {
    pub forward: ForwardTensors,
    pub dout: u64,
    pub dq: u64,
    pub dk: u64,
    pub dv: u64,
}

impl BackwardTensors {
    /// A forward's tensors, with no gradient bound (a forward's steps read none).
    pub fn forward_only(forward: ForwardTensors) -> Self {
        BackwardTensors {
            forward,
            dout: 0,
            dq: 0,
            dk: 0,
            dv: 0,
        }
    }
}

/// One problem's launches.
pub struct CudaSchedule {
    pub plan: CudaPlan,
    pub params: KernelParams,
    pub config: MobaConfig,
}

impl CudaSchedule {
    pub fn new(plan: CudaPlan, params: KernelParams, config: &MobaConfig) -> Self {
        CudaSchedule {
            plan,
            params,
            config: *config,
        }
    }

    /// The forward on these tensors: [`launch_plan::decode_forward`] where the plan
    /// decodes, [`launch_plan::forward`] otherwise; less what the caller gives
    /// ([`launch_plan::with_given`]: the block means in `s.means`, the selection in
    /// `t.selection`).
    pub fn forward(&self, t: &ForwardTensors, s: &Scratch, given: Given) -> Vec<Launch> {
        let t = BackwardTensors::forward_only(*t);
        let steps = match (self.plan.decode, self.plan.by_block) {
            (Some(_), _) => launch_plan::decode_forward(&self.config),
            (None, Some(_)) => launch_plan::forward_by_block(&self.config),
            (None, None) => launch_plan::forward(&self.config),
        };
        let steps = launch_plan::with_given(steps, given.means, given.selection);
        self.launches(steps, &t, s, &self.plan.forward_lists())
    }

    /// The backward ([`launch_plan::backward`]) on these tensors.
    pub fn backward(&self, t: &BackwardTensors, s: &Scratch) -> Vec<Launch> {
        self.launches(
            launch_plan::backward(&self.config),
            t,
            s,
            &self.plan.slot_lists,
        )
    }

    /// The launches of `steps`, in order, the inversion into `lists`.
    pub fn launches(
        &self,
        steps: Vec<Step>,
        t: &BackwardTensors,
        s: &Scratch,
        lists: &ListLayout,
    ) -> Vec<Launch> {
        steps
            .into_iter()
            .filter_map(|step| self.lower(step, t, s, lists))
            .collect()
    }

    /// The split decode's sizes; only a plan that decodes schedules its steps.
    fn decode(&self) -> DecodeSplit {
        self.plan
            .decode
            .expect("the split-decode steps run where the plan decodes")
    }

    /// The launch of one step: program, grid, threads, shared memory and arguments (the
    /// parameters first, then the kernel's own, as its signature lists them); `None` for a
    /// step that needs no kernel here.
    fn lower(
        &self,
        step: Step,
        t: &BackwardTensors,
        s: &Scratch,
        lists: &ListLayout,
    ) -> Option<Launch> {
        use Arg::{Ptr, U32};
        let plan = &self.plan;
        let f = &t.forward;
        // What the dq pass and dk/dv both read, in their signatures' order.
        let backward_rows = [
            Ptr(f.q),
            Ptr(f.k),
            Ptr(f.v),
            Ptr(t.dout),
            Ptr(s.row_state),
            Ptr(s.lists),
            Ptr(s.starts),
        ];
        // What both attention passes read: the inputs and the inverted selection's tiles.
        let tiles = [
            Ptr(f.q),
            Ptr(f.k),
            Ptr(f.v),
            Ptr(s.lists),
            Ptr(s.starts),
            Ptr(s.tiles),
        ];
        // What both merges of partial outputs (by block, split decode) read and write.
        let combine = [
            Ptr(f.selection),
            Ptr(s.partial_out),
            Ptr(s.partial_stats),
            Ptr(f.o),
            Ptr(f.lse),
        ];
        let (program, grid, threads, shared_bytes, args) = match step {
            Step::BlockMeans => (
                CudaProgram::Gate,
                (plan.num_blocks as u32, plan.kv_groups as u32, 1),
                MEAN_THREADS,
                0,
                vec![Ptr(f.k), Ptr(s.means)],
            ),
            // A thread block's rows are one query head's (they share the staged means).
            Step::GateTopk => {
                let (row_blocks, _, _) =
                    CudaPlan::cover(plan.rows / plan.query_heads, GATE_THREADS);
                (
                    CudaProgram::Gate,
                    (row_blocks, plan.query_heads as u32, 1),
                    GATE_THREADS,
                    0,
                    vec![
                        Ptr(f.q),
                        Ptr(s.means),
                        Ptr(f.selection),
                        Ptr(f.sequence_starts),
                    ],
                )
            }
            Step::SelectionCount => (
                CudaProgram::Inversion,
                lists.chunk_grid(),
                INVERT_THREADS,
                plan.inversion_shared_bytes(),
                vec![U32(lists.slots as u32), Ptr(f.selection), Ptr(s.counts)],
            ),
            Step::SelectionScan => (
                CudaProgram::Inversion,
                (lists.lists as u32, 1, 1),
                INVERT_THREADS,
                0,
                vec![
                    U32(lists.chunks as u32),
                    Ptr(s.counts),
                    Ptr(s.starts),
                    Ptr(s.tiles),
                ],
            ),
            Step::SelectionScatter => (
                CudaProgram::Inversion,
                lists.chunk_grid(),
                WARP,
                plan.inversion_shared_bytes(),
                vec![
                    U32(lists.slots as u32),
                    Ptr(f.selection),
                    Ptr(s.counts),
                    Ptr(s.lists),
                ],
            ),
            // The CUDA kernels stage the tensors themselves.
            Step::HalfKeys => return None,
            Step::AttentionPass { slot } => (
                CudaProgram::Attention,
                plan.pass_grid(lists),
                TILE_THREADS,
                plan.attention_shared_bytes(),
                [
                    &[U32(slot as u32)][..],
                    &tiles,
                    &[Ptr(s.row_accumulator), Ptr(s.row_state)],
                ]
                .concat(),
            ),
            Step::AttentionBlocks => (
                CudaProgram::Attention,
                plan.pass_grid(lists),
                TILE_THREADS,
                plan.attention_shared_bytes(),
                [&tiles[..], &[Ptr(s.partial_out), Ptr(s.partial_stats)]].concat(),
            ),
            // One thread per 8 columns of a row.
            Step::AttentionCombine => (
                CudaProgram::Attention,
                CudaPlan::cover(plan.rows * plan.head_dim / 8, ELEMENT_THREADS),
                ELEMENT_THREADS,
                0,
                combine.to_vec(),
            ),
            // One thread per 8 columns (head dims are multiples of 16).
            Step::AttentionFinalize => (
                CudaProgram::Attention,
                CudaPlan::cover(plan.rows * plan.head_dim / 8, ELEMENT_THREADS),
                ELEMENT_THREADS,
                0,
                vec![
                    Ptr(s.row_accumulator),
                    Ptr(s.row_state),
                    Ptr(f.o),
                    Ptr(f.lse),
                ],
            ),
            // One warp per row.
            Step::BackwardPrepare => (
                CudaProgram::Backward,
                CudaPlan::cover(plan.rows, ELEMENT_THREADS / WARP),
                ELEMENT_THREADS,
                0,
                vec![Ptr(f.o), Ptr(t.dout), Ptr(f.lse), Ptr(s.row_state)],
            ),
            Step::DqPass { slot } => (
                CudaProgram::Backward,
                plan.pass_grid(lists),
                TILE_THREADS,
                plan.dq_shared_bytes(),
                [
                    vec![U32(slot as u32)],
                    backward_rows.to_vec(),
                    vec![Ptr(s.tiles), Ptr(s.row_accumulator)],
                ]
                .concat(),
            ),
            Step::DqFinalize => (
                CudaProgram::Backward,
                CudaPlan::cover(plan.rows * plan.head_dim, ELEMENT_THREADS),
                ELEMENT_THREADS,
                0,
                vec![Ptr(s.row_accumulator), Ptr(t.dq)],
            ),
            Step::DkDv => (
                CudaProgram::Backward,
                plan.dkdv_grid(),
                KEY_THREADS,
                plan.dkdv_shared_bytes(),
                [
                    backward_rows.to_vec(),
                    vec![Ptr(t.dk), Ptr(t.dv), Ptr(s.row_accumulator)],
                ]
                .concat(),
            ),
            Step::DkDvCombine if plan.dkdv_splits == 1 => return None,
            // One thread per element of dk (and of dv).
            Step::DkDvCombine => (
                CudaProgram::Backward,
                CudaPlan::cover(plan.kv_elements(), ELEMENT_THREADS),
                ELEMENT_THREADS,
                0,
                vec![
                    U32(plan.dkdv_splits as u32),
                    Ptr(s.row_accumulator),
                    Ptr(t.dk),
                    Ptr(t.dv),
                ],
            ),
            Step::DecodeSplit => (
                CudaProgram::Decode,
                plan.decode_grid(self.decode()),
                DECODE_KEYS,
                0,
                vec![
                    Ptr(f.q),
                    Ptr(f.k),
                    Ptr(f.v),
                    Ptr(f.selection),
                    Ptr(s.partial_out),
                    Ptr(s.partial_stats),
                ],
            ),
            // DECODE_COMBINE_LANES threads per 8 columns of a row.
            Step::DecodeCombine => (
                CudaProgram::Decode,
                CudaPlan::cover(
                    plan.rows * plan.head_dim / 8 * DECODE_COMBINE_LANES as usize,
                    ELEMENT_THREADS,
                ),
                ELEMENT_THREADS,
                0,
                combine.to_vec(),
            ),
        };
        Some(Launch {
            program,
            step,
            grid,
            threads,
            shared_bytes,
            args: [Arg::Params(self.params)].into_iter().chain(args).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Shape;
    use crate::cuda::source::{CudaConstants, ElemKind, MmaKind};

    fn schedule(config: &MobaConfig) -> CudaSchedule {
        let shape = Shape::prefill(1, 4, 3000, 64);
        let plan = CudaPlan::new(&shape, config, MmaKind::Sync, ElemKind::Bf16);
        CudaSchedule::new(plan, KernelParams::new(&shape, config), config)
    }

    /// Distinct fake addresses, so a swapped argument shows.
    fn tensors() -> (BackwardTensors, Scratch) {
        let forward = ForwardTensors {
            q: 1,
            k: 2,
            v: 3,
            o: 4,
            lse: 5,
            selection: 6,
            sequence_starts: 7,
        };
        let scratch = Scratch {
            means: 11,
            counts: 12,
            starts: 13,
            tiles: 14,
            lists: 15,
            row_state: 16,
            row_accumulator: 17,
            partial_out: 18,
            partial_stats: 19,
        };
        let backward = BackwardTensors {
            forward,
            dout: 7,
            dq: 8,
            dk: 9,
            dv: 10,
        };
        (backward, scratch)
    }

    /// The kernels of a forward before its attention.
    const GATE_AND_INVERSION: [&str; 5] = [
        "block_means",
        "gate_topk",
        "selection_count",
        "selection_scan",
        "selection_scatter",
    ];

    fn kernels(launches: &[Launch]) -> Vec<&str> {
        launches.iter().map(|l| l.step.name()).collect()
    }

    #[test]
    fn the_forward_runs_one_attention_pass_per_slot_in_order() {
        let config = MobaConfig::new(256, 3);
        let (t, s) = tensors();
        let launches = schedule(&config).forward(&t.forward, &s, Given::default());
        let passes = ["attention_pass"; 3];
        assert_eq!(
            kernels(&launches),
            [&GATE_AND_INVERSION[..], &passes, &["attention_finalize"]].concat()
        );
        let slots: Vec<Arg> = launches[5..8].iter().map(|l| l.args[1]).collect();
        assert_eq!(slots, [Arg::U32(0), Arg::U32(1), Arg::U32(2)]);
        // The gate writes the selection the inversion reads, into lists of one slot.
        assert_eq!(launches[1].args[3], Arg::Ptr(6));
        assert_eq!(launches[2].args[1..3], [Arg::U32(1), Arg::Ptr(6)]);
        // 4 heads x 3 slots, 3 chunks of 1024 rows; tiles of 3000 rows over 12 blocks.
        assert_eq!(launches[2].grid, (3, 12, 1));
        assert_eq!(launches[5].grid, (24 + 12, 4, 1));
    }

    #[test]
    fn small_blocks_run_the_forward_by_block() {
        let config = MobaConfig::new(64, 3);
        let (t, s) = tensors();
        let launches = schedule(&config).forward(&t.forward, &s, Given::default());
        let by_block = ["attention_blocks", "attention_combine"];
        assert_eq!(
            kernels(&launches),
            [&GATE_AND_INVERSION[..], &by_block].concat()
        );
        // One list per head of its 3 slots: 9000 entries in chunks of 1024 rows' (3), tiles
        // over 47 blocks.
        assert_eq!(launches[2].args[1..3], [Arg::U32(3), Arg::Ptr(6)]);
        assert_eq!(launches[2].grid, (3, 4, 1));
        assert_eq!(launches[3].args[1], Arg::U32(3));
        assert_eq!(launches[5].grid, (71 + 47, 4, 1));
        // Every pair's output goes to the partials the combine reads with the selection.
        assert_eq!(launches[5].args[7..], [Arg::Ptr(18), Arg::Ptr(19)]);
        assert_eq!(
            launches[6].args[1..],
            [
                Arg::Ptr(6),
                Arg::Ptr(18),
                Arg::Ptr(19),
                Arg::Ptr(4),
                Arg::Ptr(5)
            ]
        );
        // The backward inverts per slot, whatever the forward did.
        let backward = schedule(&config).backward(&t, &s);
        assert_eq!(backward[1].args[1], Arg::U32(1));
        assert_eq!(backward[1].grid, (3, 12, 1));
    }

    #[test]
    fn static_gates_skip_the_block_means() {
        let config = MobaConfig::sliding_window(256, 2);
        let (t, s) = tensors();
        let launches = schedule(&config).forward(&t.forward, &s, Given::default());
        assert_eq!(launches[0].step, Step::GateTopk);
    }

    #[test]
    fn the_gate_gives_each_query_head_its_own_thread_blocks() {
        let config = MobaConfig::new(256, 2);
        let (t, s) = tensors();
        let launches = schedule(&config).forward(&t.forward, &s, Given::default());
        let gate = launches.iter().find(|l| l.step == Step::GateTopk).unwrap();
        // 3000 rows per head: 23 full blocks of 128 and one of 56, for each of 4 heads.
        assert_eq!(gate.grid, (24, 4, 1));
    }

    #[test]
    fn the_finalize_gives_each_thread_eight_columns() {
        let config = MobaConfig::new(256, 2);
        let (t, s) = tensors();
        let launches = schedule(&config).forward(&t.forward, &s, Given::default());
        let finalize = launches.last().unwrap();
        assert_eq!(finalize.step, Step::AttentionFinalize);
        // 4 heads x 3000 rows x 64 columns, 8 per thread, 256 threads per block.
        assert_eq!(finalize.grid, (375, 1, 1));
    }

    #[test]
    fn the_backward_reads_the_saved_selection_and_writes_every_gradient() {
        let config = MobaConfig::new(256, 2);
        let (t, s) = tensors();
        let launches = schedule(&config).backward(&t, &s);
        assert_eq!(
            kernels(&launches),
            [
                "backward_prepare",
                "selection_count",
                "selection_scan",
                "selection_scatter",
                "dq_pass",
                "dq_pass",
                "dq_finalize",
                "dkdv"
            ]
        );
        assert_eq!(launches[1].args[2], Arg::Ptr(6));
        assert_eq!(launches[6].args.last(), Some(&Arg::Ptr(8)));
        // dk, dv, and where a split walk's partials go (the dq accumulator).
        assert_eq!(
            &launches[7].args[8..],
            [Arg::Ptr(9), Arg::Ptr(10), Arg::Ptr(17)]
        );
    }

    #[test]
    fn a_split_dkdv_walk_is_combined_into_dk_and_dv() {
        // 8 query heads over 1 kv head, 2 blocks of 4 key tiles: a grid of 8, split 4 ways.
        let shape = Shape {
            kv_heads: 1,
            ..Shape::prefill(1, 8, 300, 64)
        };
        let config = MobaConfig::new(256, 2);
        let plan = CudaPlan::new(&shape, &config, MmaKind::Sync, ElemKind::Bf16);
        let schedule = CudaSchedule::new(plan, KernelParams::new(&shape, &config), &config);
        let (t, s) = tensors();
        let launches = schedule.backward(&t, &s);
        let [.., dkdv, combine] = &launches[..] else {
            panic!("{:?}", kernels(&launches))
        };
        assert_eq!((dkdv.step, dkdv.grid), (Step::DkDv, (8, 1, 4)));
        assert_eq!(combine.step, Step::DkDvCombine);
        // One thread per element of dk: 300 keys x 64 columns.
        assert_eq!(combine.grid, (75, 1, 1));
        assert_eq!(
            combine.args[1..],
            [Arg::U32(4), Arg::Ptr(17), Arg::Ptr(9), Arg::Ptr(10)]
        );
    }

    const MEANS: Given = Given {
        means: true,
        selection: false,
    };

    /// One query per head over a cache of 3000 keys, 4 query heads over 2 kv heads.
    fn decode_schedule(config: &MobaConfig) -> CudaSchedule {
        let shape = Shape {
            q_len: 1,
            kv_heads: 2,
            ..Shape::prefill(1, 4, 3000, 64)
        };
        let plan = CudaPlan::new(&shape, config, MmaKind::Sync, ElemKind::Bf16);
        CudaSchedule::new(plan, KernelParams::new(&shape, config), config)
    }

    #[test]
    fn a_decode_splits_over_chunks_of_keys_without_an_inversion() {
        let config = MobaConfig::new(256, 3);
        let (t, s) = tensors();
        let schedule = decode_schedule(&config);
        let launches = schedule.forward(&t.forward, &s, Given::default());
        assert_eq!(
            kernels(&launches),
            ["block_means", "gate_topk", "decode_split", "decode_combine"]
        );
        // Chunks of 128 keys: 2 per block of 256; 12 blocks; 2 kv groups.
        assert_eq!(launches[2].grid, (2, 12, 2));
        // The split writes the partials the combine reads.
        assert_eq!(&launches[2].args[5..], [Arg::Ptr(18), Arg::Ptr(19)]);
        assert_eq!(&launches[3].args[2..4], [Arg::Ptr(18), Arg::Ptr(19)]);
        // With the cache's means given, nothing pools the keys.
        let cached = schedule.forward(&t.forward, &s, MEANS);
        assert_eq!(kernels(&cached)[0], "gate_topk");
        // Partials: 4 rows x 3 slots x 2 chunks.
        let words = schedule.plan.scratch_words(true);
        assert_eq!((words.partial_out, words.partial_stats), (24 * 64, 24 * 2));
    }

    #[test]
    fn every_launched_kernel_exists_in_its_program() {
        let config = MobaConfig::new(256, 2);
        let (t, s) = tensors();
        let (schedule, decode) = (schedule(&config), decode_schedule(&config));
        let launches = [
            (
                &schedule,
                schedule.forward(&t.forward, &s, Given::default()),
            ),
            (&schedule, schedule.backward(&t, &s)),
            (&decode, decode.forward(&t.forward, &s, Given::default())),
        ];
        for (schedule, launch) in launches
            .iter()
            .flat_map(|(s, l)| l.iter().map(move |l| (s, l)))
        {
            let kernel = launch.step.name();
            assert!(launch.program.defines_kernel(kernel), "{kernel}");
            // ... and nowhere else.
            let defining = CudaProgram::ALL.iter().filter(|p| p.defines_kernel(kernel));
            assert_eq!(defining.count(), 1, "{kernel}");
            assert!(launch.threads > 0 && launch.threads <= 1024);
            assert!(launch.grid.0 > 0 && launch.grid.1 > 0);
            assert_eq!(launch.args[0], Arg::Params(schedule.params));
        }
        // The sources build for these constants (NVRTC itself runs on the GPU machine).
        let constants = CudaConstants {
            head_dim: 64,
            elem: ElemKind::Bf16,
            top_k: 2,
            mma: MmaKind::Sync,
        };
        assert!(constants.source(CudaProgram::Backward).contains("dkdv("));
    }
}
