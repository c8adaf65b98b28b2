//! The CUDA path's launch sequences: which kernels run, in which order, on which buffers.
//! Data only (no driver), so CI checks them; `runtime` executes them.

use super::launch::{
    CudaParams, CudaPlan, ELEMENT_THREADS, GATE_THREADS, INVERT_THREADS, KEY_THREADS, MEAN_THREADS,
    TILE_THREADS,
};
use super::source::CudaProgram;
use crate::config::{Gate, MobaConfig};

/// One argument of a kernel launch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arg {
    Params(CudaParams),
    U32(u32),
    /// A device address (of a burn-cuda tensor or a scratch buffer).
    Ptr(u64),
}

/// A launch: kernel, grid, threads per block, dynamic shared memory, arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub program: CudaProgram,
    pub kernel: &'static str,
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

/// One problem's launches.
pub struct CudaSchedule {
    pub plan: CudaPlan,
    pub params: CudaParams,
    pub top_k: usize,
    pub gate: Gate,
}

impl CudaSchedule {
    pub fn new(plan: CudaPlan, params: CudaParams, config: &MobaConfig) -> Self {
        CudaSchedule {
            plan,
            params,
            top_k: config.top_k,
            gate: config.gate,
        }
    }

    fn launch(
        &self,
        program: CudaProgram,
        kernel: &'static str,
        grid: (u32, u32, u32),
        threads: u32,
        shared_bytes: u32,
        args: &[Arg],
    ) -> Launch {
        let args = [Arg::Params(self.params)]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        Launch {
            program,
            kernel,
            grid,
            threads,
            shared_bytes,
            args,
        }
    }

    /// Block means (the mean-key gate only), then every row's top-k blocks.
    fn gate(&self, t: &ForwardTensors, s: &Scratch) -> Vec<Launch> {
        let plan = &self.plan;
        let means = (self.gate == Gate::MeanKey).then(|| {
            let grid = (plan.num_blocks as u32, plan.kv_groups as u32, 1);
            let args = [Arg::Ptr(t.k), Arg::Ptr(s.means)];
            self.launch(
                CudaProgram::Gate,
                "block_means",
                grid,
                MEAN_THREADS,
                0,
                &args,
            )
        });
        // A thread block's rows are one query head's (they share the staged block means).
        let q_len = plan.rows / plan.query_heads;
        let (row_blocks, _, _) = CudaPlan::cover(q_len, GATE_THREADS);
        let grid = (row_blocks, plan.query_heads as u32, 1);
        let args = [Arg::Ptr(t.q), Arg::Ptr(s.means), Arg::Ptr(t.selection)];
        let topk = self.launch(CudaProgram::Gate, "gate_topk", grid, GATE_THREADS, 0, &args);
        means.into_iter().chain([topk]).collect()
    }

    /// The selection inverted into per-(query head, slot) row lists.
    fn inversion(&self, selection: u64, s: &Scratch) -> Vec<Launch> {
        let plan = &self.plan;
        let shared = plan.inversion_shared_bytes();
        let program = CudaProgram::Inversion;
        vec![
            self.launch(
                program,
                "count_chunks",
                plan.chunk_grid(),
                INVERT_THREADS,
                shared,
                &[Arg::Ptr(selection), Arg::Ptr(s.counts)],
            ),
            self.launch(
                program,
                "scan_counts",
                (plan.lists as u32, 1, 1),
                INVERT_THREADS,
                0,
                &[
                    Arg::U32(plan.chunks as u32),
                    Arg::Ptr(s.counts),
                    Arg::Ptr(s.starts),
                    Arg::Ptr(s.tiles),
                ],
            ),
            self.launch(
                program,
                "scatter_rows",
                plan.chunk_grid(),
                32,
                shared,
                &[Arg::Ptr(selection), Arg::Ptr(s.counts), Arg::Ptr(s.lists)],
            ),
        ]
    }

    /// Gate, inversion, one attention pass per slot, then o and lse.
    pub fn forward(&self, t: &ForwardTensors, s: &Scratch) -> Vec<Launch> {
        let plan = &self.plan;
        let mut launches = self.gate(t, s);
        launches.extend(self.inversion(t.selection, s));
        for slot in 0..self.top_k {
            launches.push(self.launch(
                CudaProgram::Attention,
                "attention_pass",
                plan.pass_grid(),
                TILE_THREADS,
                plan.attention_shared_bytes(),
                &[
                    Arg::U32(slot as u32),
                    Arg::Ptr(t.q),
                    Arg::Ptr(t.k),
                    Arg::Ptr(t.v),
                    Arg::Ptr(s.lists),
                    Arg::Ptr(s.starts),
                    Arg::Ptr(s.tiles),
                    Arg::Ptr(s.row_accumulator),
                    Arg::Ptr(s.row_state),
                ],
            ));
        }
        launches.push(self.launch(
            CudaProgram::Attention,
            "attention_finalize",
            // One thread per 8 columns (head dims are multiples of 16).
            CudaPlan::cover(plan.rows * plan.head_dim / 8, ELEMENT_THREADS),
            ELEMENT_THREADS,
            0,
            &[
                Arg::Ptr(s.row_accumulator),
                Arg::Ptr(s.row_state),
                Arg::Ptr(t.o),
                Arg::Ptr(t.lse),
            ],
        ));
        launches
    }

    /// Row terms, the inversion of the saved selection, one dq pass per slot, dq, then
    /// dk and dv.
    pub fn backward(&self, t: &BackwardTensors, s: &Scratch) -> Vec<Launch> {
        let plan = &self.plan;
        let f = &t.forward;
        let rows_per_block = ELEMENT_THREADS / 32;
        let mut launches = vec![self.launch(
            CudaProgram::Backward,
            "backward_prepare",
            CudaPlan::cover(plan.rows, rows_per_block),
            ELEMENT_THREADS,
            0,
            &[
                Arg::Ptr(f.o),
                Arg::Ptr(t.dout),
                Arg::Ptr(f.lse),
                Arg::Ptr(s.row_state),
            ],
        )];
        launches.extend(self.inversion(f.selection, s));
        for slot in 0..self.top_k {
            launches.push(self.launch(
                CudaProgram::Backward,
                "dq_pass",
                plan.pass_grid(),
                TILE_THREADS,
                plan.dq_shared_bytes(),
                &[
                    Arg::U32(slot as u32),
                    Arg::Ptr(f.q),
                    Arg::Ptr(f.k),
                    Arg::Ptr(f.v),
                    Arg::Ptr(t.dout),
                    Arg::Ptr(s.row_state),
                    Arg::Ptr(s.lists),
                    Arg::Ptr(s.starts),
                    Arg::Ptr(s.tiles),
                    Arg::Ptr(s.row_accumulator),
                ],
            ));
        }
        launches.push(self.launch(
            CudaProgram::Backward,
            "dq_finalize",
            CudaPlan::cover(plan.rows * plan.head_dim, ELEMENT_THREADS),
            ELEMENT_THREADS,
            0,
            &[Arg::Ptr(s.row_accumulator), Arg::Ptr(t.dq)],
        ));
        launches.push(self.launch(
            CudaProgram::Backward,
            "dkdv",
            plan.dkdv_grid(),
            KEY_THREADS,
            plan.dkdv_shared_bytes(),
            &[
                Arg::Ptr(f.q),
                Arg::Ptr(f.k),
                Arg::Ptr(f.v),
                Arg::Ptr(t.dout),
                Arg::Ptr(s.row_state),
                Arg::Ptr(s.lists),
                Arg::Ptr(s.starts),
                Arg::Ptr(t.dk),
                Arg::Ptr(t.dv),
            ],
        ));
        launches
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Shape;
    use crate::cuda::source::{CudaConstants, ElemKind, MmaKind};

    fn schedule(config: &MobaConfig) -> CudaSchedule {
        let shape = Shape::prefill(1, 4, 3000, 64);
        let plan = CudaPlan::new(&shape, config, MmaKind::Sync);
        CudaSchedule::new(plan, CudaParams::new(&shape, config), config)
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
        };
        let scratch = Scratch {
            means: 11,
            counts: 12,
            starts: 13,
            tiles: 14,
            lists: 15,
            row_state: 16,
            row_accumulator: 17,
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

    fn kernels(launches: &[Launch]) -> Vec<&str> {
        launches.iter().map(|l| l.kernel).collect()
    }

    #[test]
    fn the_forward_runs_one_attention_pass_per_slot_in_order() {
        let config = MobaConfig::new(256, 3);
        let (t, s) = tensors();
        let launches = schedule(&config).forward(&t.forward, &s);
        assert_eq!(
            kernels(&launches),
            [
                "block_means",
                "gate_topk",
                "count_chunks",
                "scan_counts",
                "scatter_rows",
                "attention_pass",
                "attention_pass",
                "attention_pass",
                "attention_finalize"
            ]
        );
        let slots: Vec<Arg> = launches[5..8].iter().map(|l| l.args[1]).collect();
        assert_eq!(slots, [Arg::U32(0), Arg::U32(1), Arg::U32(2)]);
        // The gate writes the selection the inversion reads.
        assert_eq!(launches[1].args[3], Arg::Ptr(6));
        assert_eq!(launches[2].args[1], Arg::Ptr(6));
    }

    #[test]
    fn static_gates_skip_the_block_means() {
        let config = MobaConfig::sliding_window(256, 2);
        let (t, s) = tensors();
        let launches = schedule(&config).forward(&t.forward, &s);
        assert_eq!(launches[0].kernel, "gate_topk");
    }

    #[test]
    fn the_gate_gives_each_query_head_its_own_thread_blocks() {
        let config = MobaConfig::new(256, 2);
        let (t, s) = tensors();
        let launches = schedule(&config).forward(&t.forward, &s);
        let gate = launches.iter().find(|l| l.kernel == "gate_topk").unwrap();
        // 3000 rows per head: 23 full blocks of 128 and one of 56, for each of 4 heads.
        assert_eq!(gate.grid, (24, 4, 1));
    }

    #[test]
    fn the_finalize_gives_each_thread_eight_columns() {
        let config = MobaConfig::new(256, 2);
        let (t, s) = tensors();
        let launches = schedule(&config).forward(&t.forward, &s);
        let finalize = launches.last().unwrap();
        assert_eq!(finalize.kernel, "attention_finalize");
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
                "count_chunks",
                "scan_counts",
                "scatter_rows",
                "dq_pass",
                "dq_pass",
                "dq_finalize",
                "dkdv"
            ]
        );
        assert_eq!(launches[1].args[1], Arg::Ptr(6));
        assert_eq!(launches[6].args.last(), Some(&Arg::Ptr(8)));
        assert_eq!(&launches[7].args[8..], [Arg::Ptr(9), Arg::Ptr(10)]);
    }

    #[test]
    fn every_launched_kernel_exists_in_its_program() {
        let config = MobaConfig::new(256, 2);
        let (t, s) = tensors();
        let schedule = schedule(&config);
        let launches = [schedule.forward(&t.forward, &s), schedule.backward(&t, &s)].concat();
        for launch in &launches {
            assert!(
                launch.program.kernels().contains(&launch.kernel),
                "{}",
                launch.kernel
            );
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
