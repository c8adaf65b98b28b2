//! A MoBA run as data on wgpu: the steps of [`crate::launch_plan`] lowered to WGSL kernels,
//! buffers and grid sizes.
//!
//! The wgpu runtime records a schedule into a command encoder
//! ([`super::runner::ScheduleRunner`]); the burn backend launches the same schedule through
//! burn's template kernels.

use super::kernels::{Kernel, KernelConstants};
use crate::config::{MobaConfig, Shape};
use crate::kernel_params::KernelParams;
use crate::launch_plan::{self, Stage, Step};
use crate::shared_constants;

/// Buffers the caller owns. Callers pass them as a slice in this order: a forward takes
/// `[q, k, v, o, lse, selection]`, a backward all ten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Io {
    Q,
    K,
    V,
    O,
    Lse,
    Selection,
    Dout,
    Dq,
    Dk,
    Dv,
    /// The keys' block means, where the caller gives them (a KV cache keeps them).
    Means,
    /// i32 `[num_blocks]`: the first block of each block's sequence, where the caller packs
    /// several sequences into one (varlen, [`crate::varlen::Packing`]).
    SequenceStarts,
}

impl Io {
    pub fn name(self) -> &'static str {
        [
            "q",
            "k",
            "v",
            "o",
            "lse",
            "selection",
            "dout",
            "dq",
            "dk",
            "dv",
            "block means",
            "sequence starts",
        ][self as usize]
    }

    /// Bytes the buffer needs for a shape (every element is 4 bytes).
    pub fn bytes(self, shape: &Shape, config: &MobaConfig) -> u64 {
        let elems = match self {
            Io::Q | Io::O | Io::Dout | Io::Dq => shape.q_elems(),
            Io::K | Io::V | Io::Dk | Io::Dv => shape.kv_elems(),
            Io::Lse => shape.q_rows(),
            Io::Selection => shape.q_rows() * config.top_k,
            Io::Means => shape.groups() * shape.num_blocks(config.block_size) * shape.head_dim,
            Io::SequenceStarts => shape.num_blocks(config.block_size),
        };
        elems as u64 * 4
    }
}

/// The caller's buffers of a forward, in [`Io`] order.
pub(crate) const FORWARD_IO: [Io; 6] = [Io::Q, Io::K, Io::V, Io::O, Io::Lse, Io::Selection];

/// What a forward's caller gives beyond q, k and v: each is one more buffer after the
/// forward's six, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Given {
    /// The keys' block means (`Io::Means`): no step pools them.
    pub means: bool,
    /// The first block of each block's sequence (`Io::SequenceStarts`); without it every
    /// block's sequence starts at block 0.
    pub sequence_starts: bool,
    /// The selection (in `Io::Selection`, which the gate writes otherwise): no gate runs.
    pub selection: bool,
}

impl Given {
    /// The caller's buffers of a forward, in order.
    fn forward_io(self) -> Vec<Io> {
        let mut io = FORWARD_IO.to_vec();
        io.extend(self.means.then_some(Io::Means));
        io.extend(self.sequence_starts.then_some(Io::SequenceStarts));
        io
    }
}
/// The caller's buffers of a backward, in [`Io`] order.
pub(crate) const BACKWARD_IO: [Io; 10] = [
    Io::Q,
    Io::K,
    Io::V,
    Io::O,
    Io::Lse,
    Io::Selection,
    Io::Dout,
    Io::Dq,
    Io::Dk,
    Io::Dv,
];

/// One buffer a launch binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Binding {
    /// The `n`-th parameter block of the schedule.
    Params(usize),
    Io(Io),
    /// The `n`-th scratch buffer of the schedule.
    Scratch(usize),
}

/// A buffer the schedule owns for the length of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scratch {
    pub label: &'static str,
    pub bytes: u64,
    /// Zeroed before every run (counters); otherwise every element is written before read.
    pub zeroed: bool,
}

/// One kernel launch: bindings 0, 1, 2, ... in order, over a linear grid of workgroups.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Launch {
    /// Launches of one stage share a timed compute pass.
    pub stage: Stage,
    /// Index into [`Schedule::kernels`].
    pub kernel: usize,
    pub bindings: Vec<Binding>,
    pub workgroups: u64,
}

/// Every launch of one run, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Schedule {
    pub stages: &'static [Stage],
    pub io: Vec<Io>,
    pub kernels: Vec<(Kernel, KernelConstants)>,
    pub params: Vec<KernelParams>,
    pub scratch: Vec<Scratch>,
    pub launches: Vec<Launch>,
}

// Scratch buffers shared by both schedules, in this order.
const COUNTS: usize = 0;
const CURSORS: usize = 1;
const STARTS: usize = 2;
const LISTS: usize = 3;
/// Forward: the running (max, sum) of every row; backward: (lse in log2, delta).
const ROW_STATE: usize = 4;
/// k and v in f16 (`half_keys.wgsl`), where cooperative passes stage them.
const F16_KEYS: usize = 5;
const F16_VALUES: usize = 6;
/// Forward only.
const BLOCK_MEANS: usize = 7;
/// Backward only: the largest |dout| (f32 bits), for the cooperative kernels' scaling.
const DOUT_MAX: usize = 7;
/// Forward only: every block's sequence starting at block 0, where the caller gives none.
const SEQUENCE_STARTS: usize = 8;
/// Split decode only: every (row, slot, chunk)'s partial output, and its (max, sum).
const PARTIAL_OUT: usize = 9;
const PARTIAL_STATS: usize = 10;

/// The kernels a schedule runs: the portable ones' constants, and the subgroup or
/// cooperative ones' where the attention passes, the dq passes and dk/dv run on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KernelSet {
    pub portable: KernelConstants,
    /// The subgroup kernels', where the attention, dq and dk/dv passes run on them.
    pub lanes: Option<LanesKernels>,
    pub cooperative: Option<KernelConstants>,
    /// The split-decode kernels' constants, where the forward decodes split over the keys
    /// (a few rows per group; `plan::decode_constants`).
    pub decode: Option<KernelConstants>,
    /// The constants of the gate with one workgroup per row, its lanes splitting the blocks
    /// (`gate_row_workgroup.wgsl`), where it runs: a decode's few rows, where the lanes'
    /// best pairs fit workgroup memory (`plan::split_gate_constants`).
    pub split_gate: Option<KernelConstants>,
}

/// The subgroup kernels of a [`KernelSet`]: their constants, and which of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LanesKernels {
    pub constants: KernelConstants,
    /// The f16 variant (`staged_f16.wgsl`): the attention and dq passes stage the f16
    /// copies of k and v, dk/dv rounds the rows it stages.
    pub half: bool,
}

impl KernelSet {
    /// Portable kernels only.
    pub fn portable(constants: KernelConstants) -> Self {
        Self {
            portable: constants,
            lanes: None,
            cooperative: None,
            decode: None,
            split_gate: None,
        }
    }

    /// The kernel of a step that has subgroup (f32 and f16) and cooperative variants, with
    /// its constants.
    fn pick(
        &self,
        portable: Kernel,
        lanes: Kernel,
        half: Kernel,
        cooperative: Kernel,
    ) -> (Kernel, KernelConstants) {
        match self.cooperative {
            Some(constants) => (cooperative, constants),
            None => self.pick_lanes(portable, lanes, half),
        }
    }

    /// The kernel of a step that has subgroup (f32 and f16) variants, with its constants.
    fn pick_lanes(
        &self,
        portable: Kernel,
        lanes: Kernel,
        half: Kernel,
    ) -> (Kernel, KernelConstants) {
        match self.lanes {
            Some(LanesKernels {
                constants,
                half: true,
            }) => (half, constants),
            Some(LanesKernels { constants, .. }) => (lanes, constants),
            None => (portable, self.portable),
        }
    }

    /// The constants of the step that rounds k and v to f16 once, where the passes stage
    /// those copies (the cooperative ones and the subgroup kernels' f16 variant).
    fn half_keys(&self) -> Option<KernelConstants> {
        let half_lanes = self.lanes.filter(|lanes| lanes.half);
        self.cooperative.or(half_lanes.map(|lanes| lanes.constants))
    }

    /// Rows per tile of the passes over the inverted lists (what the inversion counts in).
    fn query_tile(&self) -> u32 {
        self.cooperative.unwrap_or(self.portable).query_tile
    }
}

impl Schedule {
    /// The forward lowered to WGSL kernels: [`launch_plan::decode_forward`] where the
    /// kernels decode split, [`launch_plan::forward`] otherwise; with what the caller gives
    /// (the block means instead of a step that pools them, the sequence starts of a packed
    /// batch) in more of its buffers.
    pub fn forward(shape: &Shape, config: &MobaConfig, kernels: KernelSet, given: Given) -> Self {
        let mut schedule = Self::new(&Stage::FORWARD, given.forward_io(), shape, config, kernels);
        let nb = shape.num_blocks(config.block_size) as u64;
        let head_dim = shape.head_dim as u64;
        schedule.scratch.extend([
            Scratch {
                label: "block means",
                bytes: match given.means || given.selection {
                    true => 0, // the caller's buffer holds them, or no gate reads them
                    false => shape.groups() as u64 * nb * head_dim * 4,
                },
                zeroed: false,
            },
            Scratch {
                label: "sequence starts",
                bytes: match given.sequence_starts {
                    true => 0,
                    false => nb * 4,
                },
                zeroed: !given.sequence_starts,
            },
        ]);
        let steps = match kernels.decode {
            Some(decode) => {
                let partials = shape.q_rows() as u64
                    * decode_slots(config, nb)
                    * decode_chunks(config, decode);
                // One parameter block: no per-slot passes. No inversion and no passes: their
                // buffers (the first seven) are bound by no launch.
                schedule.params.truncate(1);
                for unused in &mut schedule.scratch[..BLOCK_MEANS] {
                    unused.bytes = 0;
                    unused.zeroed = false;
                }
                schedule.scratch.extend([
                    Scratch {
                        label: "decode partial outputs",
                        bytes: partials * head_dim * 4,
                        zeroed: false,
                    },
                    Scratch {
                        label: "decode partial stats",
                        bytes: partials * 8,
                        zeroed: false,
                    },
                ]);
                launch_plan::decode_forward(config)
            }
            None => launch_plan::forward(config),
        };
        let steps = launch_plan::with_given(steps, given.means, given.selection);
        for step in steps {
            schedule.lower(step, shape, config, kernels);
        }
        schedule
    }

    /// The backward ([`launch_plan::backward`]) lowered to WGSL kernels.
    pub fn backward(shape: &Shape, config: &MobaConfig, kernels: KernelSet) -> Self {
        let mut schedule = Self::new(
            &Stage::BACKWARD,
            BACKWARD_IO.to_vec(),
            shape,
            config,
            kernels,
        );
        schedule.scratch.push(Scratch {
            label: "dout max",
            bytes: 4,
            zeroed: true,
        });
        for step in launch_plan::backward(config) {
            schedule.lower(step, shape, config, kernels);
        }
        schedule
    }

    /// Adds the launch of one step: its kernel, bindings (0, 1, 2, ... in order) and grid.
    fn lower(&mut self, step: Step, shape: &Shape, config: &MobaConfig, kernels: KernelSet) {
        use Binding::{Io as I, Params as P, Scratch as S};
        // The inversion counts in the passes' tiles: the portable kernels compile with their
        // query tile.
        let constants = KernelConstants {
            query_tile: kernels.query_tile(),
            ..kernels.portable
        };
        let rows = shape.q_rows() as u64;
        let per_thread_rows = rows.div_ceil(constants.workgroup_size as u64);
        let entries = (rows * config.top_k as u64).div_ceil(constants.workgroup_size as u64);
        let groups = shape.groups() as u64;
        let nb = shape.num_blocks(config.block_size) as u64;
        let portable = |kernel| (kernel, constants);
        // One pass per slot over the inverted lists (block_tiles.wgsl): bindings
        // `params[slot], q, k, v, lists, starts`, then the kernel's own. The cooperative
        // passes and the subgroup kernels' f16 variant read the f16 copies of k and v.
        let (k, v) = match kernels.half_keys() {
            Some(_) => (S(F16_KEYS), S(F16_VALUES)),
            None => (I(Io::K), I(Io::V)),
        };
        let slot_pass = |slot: usize, own: &[Binding]| {
            let mut bindings = vec![P(slot), I(Io::Q), k, v, S(LISTS), S(STARTS)];
            bindings.extend_from_slice(own);
            (bindings, groups * self.params[slot].tile_capacity as u64)
        };
        let (kernel, bindings, workgroups) = match step {
            Step::BlockMeans => (
                portable(Kernel::BlockMeans),
                vec![P(0), I(Io::K), S(BLOCK_MEANS)],
                groups * nb,
            ),
            Step::GateTopk => {
                let given = |io, scratch| match self.io.contains(&io) {
                    true => I(io),
                    false => S(scratch),
                };
                let means = given(Io::Means, BLOCK_MEANS);
                let starts = given(Io::SequenceStarts, SEQUENCE_STARTS);
                let bindings = vec![P(0), I(Io::Q), means, I(Io::Selection), starts];
                match kernels.split_gate {
                    Some(split) => ((Kernel::GateTopkSplit, split), bindings, rows),
                    None => (portable(Kernel::GateTopk), bindings, per_thread_rows),
                }
            }
            Step::SelectionCount => (
                portable(Kernel::SelectionCount),
                vec![P(0), I(Io::Selection), S(COUNTS)],
                entries,
            ),
            Step::SelectionScan => (
                portable(Kernel::SelectionScan),
                vec![P(0), S(COUNTS), S(STARTS)],
                groups,
            ),
            Step::SelectionScatter => (
                portable(Kernel::SelectionScatter),
                vec![P(0), I(Io::Selection), S(STARTS), S(CURSORS), S(LISTS)],
                groups * config.top_k as u64,
            ),
            Step::HalfKeys => match kernels.half_keys() {
                // One thread per vector of the copies.
                Some(half) => (
                    (Kernel::HalfKeys, half),
                    vec![P(0), I(Io::K), I(Io::V), S(F16_KEYS), S(F16_VALUES)],
                    (shape.kv_elems() as u64 / 4).div_ceil(half.workgroup_size as u64),
                ),
                None => return,
            },
            Step::AttentionPass { slot } => {
                let (bindings, workgroups) = slot_pass(slot, &[I(Io::O), S(ROW_STATE)]);
                let kernel = kernels.pick(
                    Kernel::AttentionPass,
                    Kernel::AttentionPassLanes,
                    Kernel::AttentionPassHalf,
                    Kernel::AttentionPassCoop,
                );
                (kernel, bindings, workgroups)
            }
            Step::DqPass { slot } => {
                let kernel = kernels.pick(
                    Kernel::DqPass,
                    Kernel::DqPassLanes,
                    Kernel::DqPassHalf,
                    Kernel::DqPassCoop,
                );
                // The cooperative pass also reads the largest |dout| (its scaling).
                let own: &[Binding] = match kernel.0 {
                    Kernel::DqPassCoop => &[I(Io::Dout), S(ROW_STATE), I(Io::Dq), S(DOUT_MAX)],
                    _ => &[I(Io::Dout), S(ROW_STATE), I(Io::Dq)],
                };
                let (bindings, workgroups) = slot_pass(slot, own);
                (kernel, bindings, workgroups)
            }
            Step::AttentionFinalize => (
                portable(Kernel::AttentionFinalize),
                vec![P(0), I(Io::O), S(ROW_STATE), I(Io::Lse)],
                per_thread_rows,
            ),
            // The wgpu forward runs per slot (`launch_plan::forward`): storage buffers of
            // every slot's outputs would pass the binding limits of most adapters.
            Step::AttentionBlocks | Step::AttentionCombine => {
                unreachable!("the wgpu schedule never runs the forward by block")
            }
            Step::BackwardPrepare => (
                portable(Kernel::BackwardPrepare),
                vec![
                    P(0),
                    I(Io::O),
                    I(Io::Dout),
                    I(Io::Lse),
                    S(ROW_STATE),
                    S(DOUT_MAX),
                ],
                per_thread_rows,
            ),
            // Both dq passes accumulate into dq itself: nothing to convert.
            Step::DqFinalize => return,
            // The dk/dv kernels walk a group's heads whole.
            Step::DkDvCombine => return,
            Step::DkDv => {
                let chunks = |keys: u32| (config.block_size as u64).div_ceil(keys as u64);
                match kernels.cooperative {
                    // Reads the inverted lists; CHUNK_KEYS = 16 keys per pair of subgroups.
                    Some(coop) => (
                        (Kernel::DkDvCoop, coop),
                        vec![
                            P(0),
                            I(Io::Q),
                            I(Io::K),
                            I(Io::V),
                            S(LISTS),
                            S(STARTS),
                            I(Io::Dout),
                            S(ROW_STATE),
                            I(Io::Dk),
                            I(Io::Dv),
                            S(DOUT_MAX),
                        ],
                        groups * nb * chunks(coop.subgroups / 2 * 16),
                    ),
                    // Scans the selection, LANES threads per key: a workgroup's keys are
                    // its query tile's worth (TILE_KEYS = WORKGROUP_SIZE / LANES).
                    None => (
                        kernels.pick_lanes(Kernel::DkDv, Kernel::DkDvLanes, Kernel::DkDvHalf),
                        vec![
                            P(0),
                            I(Io::Q),
                            I(Io::K),
                            I(Io::V),
                            I(Io::Selection),
                            I(Io::Dk),
                            I(Io::Dout),
                            S(ROW_STATE),
                            I(Io::Dv),
                        ],
                        groups * nb * chunks(constants.query_tile),
                    ),
                }
            }
            Step::DecodeSplit => {
                let decode = kernels
                    .decode
                    .expect("a decode schedule has decode kernels");
                let chunks = decode_chunks(config, decode);
                (
                    (Kernel::DecodeSplit, decode),
                    vec![
                        P(0),
                        I(Io::Q),
                        I(Io::K),
                        I(Io::V),
                        I(Io::Selection),
                        S(PARTIAL_OUT),
                        S(PARTIAL_STATS),
                    ],
                    groups * nb * chunks,
                )
            }
            Step::DecodeCombine => {
                let decode = kernels
                    .decode
                    .expect("a decode schedule has decode kernels");
                // DECODE_COMBINE_LANES threads per (row, column vector).
                let lanes = u64::from(shared_constants::DECODE_COMBINE_LANES);
                let elements = rows * (shape.head_dim / 4) as u64 * lanes;
                (
                    (Kernel::DecodeCombine, decode),
                    vec![
                        P(0),
                        I(Io::Selection),
                        S(PARTIAL_OUT),
                        S(PARTIAL_STATS),
                        I(Io::O),
                        I(Io::Lse),
                    ],
                    elements.div_ceil(decode.workgroup_size as u64),
                )
            }
        };
        let kernel = self.kernel(kernel.0, kernel.1);
        self.launch(step.stage(), kernel, bindings, workgroups);
    }

    /// A schedule with one parameter block per selection slot and the inversion's scratch.
    fn new(
        stages: &'static [Stage],
        io: Vec<Io>,
        shape: &Shape,
        config: &MobaConfig,
        kernels: KernelSet,
    ) -> Self {
        let nb = shape.num_blocks(config.block_size);
        // An upper bound on one slot's query tiles in a group: every list may end in a
        // partial tile.
        let tile_capacity = ((shape.group_size() * shape.q_len)
            .div_ceil(kernels.query_tile() as usize)
            + nb) as u32;
        let (groups, k, rows) = (
            shape.groups() as u64,
            config.top_k as u64,
            shape.q_rows() as u64,
        );
        let scratch = |label, bytes, zeroed| Scratch {
            label,
            bytes,
            zeroed,
        };
        let half_bytes = match kernels.half_keys() {
            Some(_) => shape.kv_elems() as u64 * 2,
            None => 0,
        };
        Self {
            stages,
            io,
            kernels: Vec::new(),
            params: (0..config.top_k)
                .map(|slot| KernelParams::new(shape, config).for_slot(slot, tile_capacity))
                .collect(),
            scratch: vec![
                scratch("list counts", groups * k * nb as u64 * 4, true),
                scratch("list cursors", groups * k * nb as u64 * 4, true),
                scratch("list starts", groups * (k * nb as u64 + 1) * 8, false),
                scratch("lists", rows * k * 4, false),
                scratch("row state", rows * 8, false),
                scratch("f16 keys", half_bytes, false),
                scratch("f16 values", half_bytes, false),
            ],
            launches: Vec::new(),
        }
    }

    /// The index of a kernel in this schedule, added on first use.
    fn kernel(&mut self, kernel: Kernel, constants: KernelConstants) -> usize {
        let entry = (kernel, constants);
        match self.kernels.iter().position(|k| *k == entry) {
            Some(index) => index,
            None => {
                self.kernels.push(entry);
                self.kernels.len() - 1
            }
        }
    }

    fn launch(&mut self, stage: Stage, kernel: usize, bindings: Vec<Binding>, workgroups: u64) {
        self.launches.push(Launch {
            stage,
            kernel,
            bindings,
            workgroups,
        });
    }

    /// Bytes of every buffer a run binds, the caller's and the schedule's.
    pub fn buffer_sizes(&self, shape: &Shape, config: &MobaConfig) -> Vec<(&'static str, u64)> {
        self.io
            .iter()
            .map(|io| (io.name(), io.bytes(shape, config)))
            .chain(self.scratch.iter().map(|s| (s.label, s.bytes)))
            .collect()
    }
}

/// Chunks of a block in the split decode: one workgroup's keys each (`decode_chunks.wgsl`).
fn decode_chunks(config: &MobaConfig, decode: KernelConstants) -> u64 {
    (config.block_size as u64).div_ceil(decode.workgroup_size as u64)
}

/// Selection slots a row of the split decode can use: no more than the blocks there are
/// (`decode_chunks.wgsl` strides its partials by this).
fn decode_slots(config: &MobaConfig, num_blocks: u64) -> u64 {
    (config.top_k as u64).min(num_blocks)
}

#[cfg(test)]
mod tests {
    use super::super::plan::{cooperative_tiles, decode_constants};
    use super::*;

    fn constants() -> KernelConstants {
        KernelConstants {
            head_dim: 16,
            top_k: 3,
            workgroup_size: 64,
            key_tile: 16,
            query_tile: 64,
            subgroups: 1,
        }
    }

    #[test]
    fn every_binding_of_a_schedule_exists() {
        let shape = Shape::prefill(2, 4, 100, 16);
        let config = MobaConfig::new(16, 3);
        let portable = KernelSet::portable(constants());
        let cooperative = KernelSet {
            cooperative: Some(KernelConstants {
                workgroup_size: 256,
                query_tile: 128,
                subgroups: 8,
                ..constants()
            }),
            ..portable
        };
        let schedules = [portable, cooperative].into_iter().flat_map(|kernels| {
            [
                Schedule::forward(&shape, &config, kernels, Given::default()),
                Schedule::backward(&shape, &config, kernels),
            ]
        });
        for schedule in schedules {
            for launch in &schedule.launches {
                assert!(schedule.stages.contains(&launch.stage));
                assert!(launch.kernel < schedule.kernels.len());
                for binding in &launch.bindings {
                    match *binding {
                        Binding::Params(n) => assert!(n < schedule.params.len()),
                        Binding::Io(io) => assert!(schedule.io.contains(&io)),
                        Binding::Scratch(n) => assert!(n < schedule.scratch.len()),
                    }
                }
            }
        }
    }

    /// Every launch binds exactly the bindings its kernel declares, 0, 1, 2, ... in order.
    #[test]
    fn launches_bind_what_their_kernels_declare() {
        let shape = Shape::prefill(1, 2, 64, 32);
        let config = MobaConfig::new(16, 2);
        let portable = KernelSet::portable(KernelConstants {
            head_dim: 32,
            ..constants()
        });
        let cooperative = KernelSet {
            cooperative: Some(cooperative_tiles(32, 3)),
            ..portable
        };
        let lanes = |half| KernelSet {
            lanes: Some(LanesKernels {
                constants: KernelConstants {
                    workgroup_size: 4 * portable.portable.workgroup_size,
                    ..portable.portable
                },
                half,
            }),
            ..portable
        };
        let decode_shape = Shape { q_len: 1, ..shape };
        let decode = KernelSet {
            decode: decode_constants(&decode_shape, portable.portable, 1 << 15),
            split_gate: Some(portable.portable),
            ..portable
        };
        assert!(decode.decode.is_some());
        for (shape, kernels) in [
            (shape, portable),
            (shape, lanes(false)),
            (shape, lanes(true)),
            (shape, cooperative),
            (decode_shape, decode),
        ] {
            let means_and_starts = Given {
                means: true,
                sequence_starts: true,
                selection: false,
            };
            let selection = Given {
                selection: true,
                ..Given::default()
            };
            for schedule in [
                Schedule::forward(&shape, &config, kernels, Given::default()),
                Schedule::forward(&shape, &config, kernels, means_and_starts),
                Schedule::forward(&shape, &config, kernels, selection),
                Schedule::backward(&shape, &config, kernels),
            ] {
                for launch in &schedule.launches {
                    let (kernel, constants) = schedule.kernels[launch.kernel];
                    let module =
                        wgpu::naga::front::wgsl::parse_str(&kernel.source(&constants).unwrap())
                            .unwrap_or_else(|e| panic!("{}: {e}", kernel.name()));
                    let mut declared: Vec<u32> = module
                        .global_variables
                        .iter()
                        .filter_map(|(_, global)| global.binding.as_ref().map(|b| b.binding))
                        .collect();
                    declared.sort();
                    let bound: Vec<u32> = (0..launch.bindings.len() as u32).collect();
                    assert_eq!(declared, bound, "{}", kernel.name());
                }
            }
        }
    }

    #[test]
    fn a_decode_splits_over_chunks_of_keys_without_an_inversion() {
        // 2 kv heads of 4 query heads, one query over 200 keys in blocks of 100: 4 rows per
        // group, chunks of 64 keys.
        let shape = Shape {
            batch: 1,
            q_heads: 8,
            kv_heads: 2,
            q_len: 1,
            kv_len: 200,
            head_dim: 16,
        };
        let config = MobaConfig::new(100, 3);
        let portable = constants();
        let decode = decode_constants(&shape, portable, 1 << 15).unwrap();
        assert_eq!(decode.query_tile, 4);
        let kernels = KernelSet {
            decode: Some(decode),
            split_gate: Some(portable),
            ..KernelSet::portable(portable)
        };
        let schedule = Schedule::forward(&shape, &config, kernels, Given::default());
        let steps: Vec<Kernel> = schedule
            .launches
            .iter()
            .map(|l| schedule.kernels[l.kernel].0)
            .collect();
        let expected = [
            Kernel::BlockMeans,
            Kernel::GateTopkSplit,
            Kernel::DecodeSplit,
            Kernel::DecodeCombine,
        ];
        assert_eq!(steps, expected);
        // The gate: one workgroup per row (8 rows).
        assert_eq!(schedule.launches[1].workgroups, 8);
        // (group, block, chunk) = 2 * 2 * 2 workgroups; 8 rows of 4 vectors, 16 lanes each,
        // in 64-thread workgroups.
        assert_eq!(schedule.launches[2].workgroups, 8);
        assert_eq!(schedule.launches[3].workgroups, 8);
        // Partials: 8 rows x 2 slots (no more than the blocks) x 2 chunks; nothing of the
        // inversion. Only the gate's sequence starts (none given: all 0) are cleared.
        let zeroed: Vec<&str> = (schedule.scratch.iter())
            .filter(|s| s.zeroed)
            .map(|s| s.label)
            .collect();
        assert_eq!(zeroed, ["sequence starts"]);
        assert_eq!(schedule.params.len(), 1);
        let sizes = schedule.buffer_sizes(&shape, &config);
        assert!(sizes.contains(&("lists", 0)));
        assert!(sizes.contains(&("decode partial stats", 8 * 2 * 2 * 8)));
        // Too many rows per group: the inverted lists.
        let prefill = Shape::prefill(1, 8, 200, 16);
        assert_eq!(decode_constants(&prefill, portable, 1 << 15), None);
    }

    #[test]
    fn f16_passes_read_f16_copies_made_once() {
        let shape = Shape::prefill(1, 2, 100, 32);
        let config = MobaConfig::new(16, 2);
        let portable = KernelSet::portable(KernelConstants {
            head_dim: 32,
            ..constants()
        });
        let cooperative = KernelSet {
            cooperative: Some(super::super::plan::cooperative_tiles(32, 2)),
            ..portable
        };
        let half_lanes = KernelSet {
            lanes: Some(LanesKernels {
                constants: portable.portable,
                half: true,
            }),
            ..portable
        };
        for (backward, kernels) in [false, true]
            .into_iter()
            .flat_map(|backward| [(backward, cooperative), (backward, half_lanes)])
        {
            let schedule = |kernels| match backward {
                false => Schedule::forward(&shape, &config, kernels, Given::default()),
                true => Schedule::backward(&shape, &config, kernels),
            };
            let f16 = schedule(kernels);
            let copies: Vec<&Launch> = (f16.launches.iter())
                .filter(|l| f16.kernels[l.kernel].0 == Kernel::HalfKeys)
                .collect();
            assert_eq!(copies.len(), 1);
            let slot_passes: Vec<&Launch> = (f16.launches.iter())
                .filter(|l| {
                    matches!(
                        f16.kernels[l.kernel].0,
                        Kernel::AttentionPassCoop
                            | Kernel::DqPassCoop
                            | Kernel::AttentionPassHalf
                            | Kernel::DqPassHalf
                    )
                })
                .collect();
            assert_eq!(slot_passes.len(), config.top_k);
            for pass in slot_passes {
                assert_eq!(pass.bindings[2], Binding::Scratch(F16_KEYS));
                assert_eq!(pass.bindings[3], Binding::Scratch(F16_VALUES));
            }
            let sizes = f16.buffer_sizes(&shape, &config);
            assert!(sizes.contains(&("f16 keys", 2 * 100 * 32 * 2)));
            // The f32 kernels read k and v themselves.
            let plain = schedule(portable);
            assert!(
                plain
                    .launches
                    .iter()
                    .all(|l| plain.kernels[l.kernel].0 != Kernel::HalfKeys)
            );
            assert!(
                plain
                    .buffer_sizes(&shape, &config)
                    .contains(&("f16 keys", 0))
            );
        }
    }

    #[test]
    fn the_attention_runs_one_pass_per_slot() {
        let shape = Shape::prefill(1, 2, 64, 16);
        let config = MobaConfig::new(8, 3);
        let kernels = KernelSet::portable(constants());
        let schedule = Schedule::forward(&shape, &config, kernels, Given::default());
        let passes = schedule
            .launches
            .iter()
            .filter(|l| l.stage == Stage::Attention)
            .count();
        assert_eq!(passes, 3);
        // dk/dv: one workgroup per (group, block, 64 keys) = 2 * 8 * 1.
        let backward = Schedule::backward(&shape, &config, kernels);
        assert_eq!(backward.launches.last().unwrap().workgroups, 16);
    }
}
