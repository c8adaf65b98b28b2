//! The WGSL kernels: their sources, the constants the host prepends, and their parameters.

use crate::kernel_params::KernelParams;
use crate::shared_constants;

const COMMON: &str = include_str!("../../shaders/wgsl/common.wgsl");
const ATTENTION_INPUTS: &str = include_str!("../../shaders/wgsl/attention_inputs.wgsl");
const ATTENTION_TILE: &str = include_str!("../../shaders/wgsl/attention_tile.wgsl");
const BLOCK_TILES: &str = include_str!("../../shaders/wgsl/block_tiles.wgsl");
const ATTENTION_STATE: &str = include_str!("../../shaders/wgsl/attention_state.wgsl");
const BACKWARD_ROWS: &str = include_str!("../../shaders/wgsl/backward_rows.wgsl");
const TILE_KEY_END: &str = include_str!("../../shaders/wgsl/tile_key_end.wgsl");
const SELECTION_ENTRIES: &str = include_str!("../../shaders/wgsl/selection_entries.wgsl");
const COOP_BLOCK_TILE: &str = include_str!("../../shaders/wgsl/coop_block_tile.wgsl");

/// Every compute kernel of the wgpu path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kernel {
    BlockMeans,
    GateTopk,
    SelectionCount,
    SelectionScan,
    SelectionScatter,
    AttentionPass,
    /// The attention pass with its tile products on cooperative matrices (f16).
    AttentionPassCoop,
    AttentionFinalize,
    DenseAttention,
    BackwardPrepare,
    DqPass,
    /// The dq pass on cooperative matrices (f16).
    DqPassCoop,
    DkDv,
    /// dk and dv on cooperative matrices (f16), from the inverted lists.
    DkDvCoop,
}

impl Kernel {
    /// Every kernel, for checks that must not forget one.
    #[cfg(test)]
    pub const ALL: [Kernel; 14] = [
        Kernel::BlockMeans,
        Kernel::GateTopk,
        Kernel::SelectionCount,
        Kernel::SelectionScan,
        Kernel::SelectionScatter,
        Kernel::AttentionPass,
        Kernel::AttentionPassCoop,
        Kernel::AttentionFinalize,
        Kernel::DenseAttention,
        Kernel::BackwardPrepare,
        Kernel::DqPass,
        Kernel::DqPassCoop,
        Kernel::DkDv,
        Kernel::DkDvCoop,
    ];

    /// The kernel's name (its main file under `shaders/wgsl/`).
    pub fn name(self) -> &'static str {
        match self {
            Kernel::BlockMeans => "block_means",
            Kernel::GateTopk => "gate_topk",
            Kernel::SelectionCount => "selection_count",
            Kernel::SelectionScan => "selection_scan",
            Kernel::SelectionScatter => "selection_scatter",
            Kernel::AttentionPass => "attention_pass",
            Kernel::AttentionPassCoop => "attention_pass_coop",
            Kernel::AttentionFinalize => "attention_finalize",
            Kernel::DenseAttention => "dense_attention",
            Kernel::BackwardPrepare => "backward_prepare",
            Kernel::DqPass => "dq_pass",
            Kernel::DqPassCoop => "dq_pass_coop",
            Kernel::DkDv => "dkdv",
            Kernel::DkDvCoop => "dkdv_coop",
        }
    }

    /// The files after `common.wgsl` that make up this kernel's module.
    fn parts(self) -> &'static [&'static str] {
        match self {
            Kernel::BlockMeans => &[include_str!("../../shaders/wgsl/block_means.wgsl")],
            Kernel::GateTopk => &[include_str!("../../shaders/wgsl/gate_topk.wgsl")],
            Kernel::SelectionCount => &[
                SELECTION_ENTRIES,
                include_str!("../../shaders/wgsl/selection_count.wgsl"),
            ],
            Kernel::SelectionScan => &[include_str!("../../shaders/wgsl/selection_scan.wgsl")],
            Kernel::SelectionScatter => &[
                SELECTION_ENTRIES,
                include_str!("../../shaders/wgsl/selection_scatter.wgsl"),
            ],
            Kernel::AttentionPass => &[
                ATTENTION_INPUTS,
                ATTENTION_TILE,
                BLOCK_TILES,
                TILE_KEY_END,
                ATTENTION_STATE,
                include_str!("../../shaders/wgsl/attention_pass.wgsl"),
            ],
            Kernel::AttentionPassCoop => &[
                ATTENTION_INPUTS,
                BLOCK_TILES,
                COOP_BLOCK_TILE,
                ATTENTION_STATE,
                include_str!("../../shaders/wgsl/attention_pass_coop.wgsl"),
            ],
            Kernel::AttentionFinalize => {
                &[include_str!("../../shaders/wgsl/attention_finalize.wgsl")]
            }
            Kernel::DenseAttention => &[
                ATTENTION_INPUTS,
                ATTENTION_TILE,
                include_str!("../../shaders/wgsl/dense_attention.wgsl"),
            ],
            Kernel::BackwardPrepare => &[include_str!("../../shaders/wgsl/backward_prepare.wgsl")],
            Kernel::DqPass => &[
                ATTENTION_INPUTS,
                ATTENTION_TILE,
                BLOCK_TILES,
                TILE_KEY_END,
                BACKWARD_ROWS,
                include_str!("../../shaders/wgsl/dq_pass.wgsl"),
            ],
            Kernel::DqPassCoop => &[
                ATTENTION_INPUTS,
                BLOCK_TILES,
                COOP_BLOCK_TILE,
                BACKWARD_ROWS,
                include_str!("../../shaders/wgsl/dq_pass_coop.wgsl"),
            ],
            Kernel::DkDv => &[
                ATTENTION_INPUTS,
                BACKWARD_ROWS,
                include_str!("../../shaders/wgsl/dkdv.wgsl"),
            ],
            Kernel::DkDvCoop => &[
                ATTENTION_INPUTS,
                BLOCK_TILES,
                BACKWARD_ROWS,
                include_str!("../../shaders/wgsl/dkdv_coop.wgsl"),
            ],
        }
    }

    /// Whether the kernel runs on cooperative matrices (and so needs their constants).
    pub fn is_cooperative(self) -> bool {
        matches!(
            self,
            Kernel::AttentionPassCoop | Kernel::DqPassCoop | Kernel::DkDvCoop
        )
    }

    /// WGSL extensions the kernel enables (they must open the module).
    fn enables(self) -> &'static str {
        match self.is_cooperative() {
            true => "enable f16;\nenable wgpu_cooperative_matrix;\n",
            false => "",
        }
    }

    /// The full WGSL module: extensions, constants, `struct Params`, `common.wgsl`, then the
    /// kernel's own files.
    pub fn source(self, constants: &KernelConstants) -> String {
        let mut source = self.enables().to_string();
        source.push_str(&constants.prelude());
        source.push_str(KernelParams::WGSL);
        source.push_str(COMMON);
        for part in self.parts() {
            source.push('\n');
            source.push_str(part);
        }
        source
    }
}

/// Compile-time values of a kernel: they size arrays, so they are WGSL `const`s that the
/// host prepends rather than uniforms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct KernelConstants {
    pub head_dim: u32,
    pub top_k: u32,
    pub workgroup_size: u32,
    pub key_tile: u32,
    /// Query rows per attention tile.
    pub query_tile: u32,
    /// Subgroups per workgroup (the cooperative-matrix kernel splits its tiles by them).
    pub subgroups: u32,
}

impl KernelConstants {
    fn prelude(&self) -> String {
        let shared = shared_constants::wgsl_lines(&shared_constants::EVERY_KERNEL);
        format!(
            "// Set by the host (src/gpu/kernels.rs, src/shared_constants.rs).\n{shared}\
             const HEAD_DIM: u32 = {}u;\nconst TOP_K: u32 = {}u;\nconst WORKGROUP_SIZE: u32 = {}u;\n\
             const KEY_TILE: u32 = {}u;\nconst QUERY_TILE: u32 = {}u;\nconst SUBGROUPS: u32 = {}u;\n\n",
            self.head_dim,
            self.top_k,
            self.workgroup_size,
            self.key_tile,
            self.query_tile,
            self.subgroups
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_source_starts_with_the_host_constants() {
        let constants = KernelConstants {
            head_dim: 64,
            top_k: 3,
            workgroup_size: 64,
            key_tile: 16,
            query_tile: 64,
            subgroups: 1,
        };
        let source = Kernel::AttentionPass.source(&constants);
        assert!(source.starts_with("// Set by the host"));
        assert!(source.contains("const HEAD_DIM: u32 = 64u;"));
        assert!(source.contains("const GATE_SINK_AND_RECENT: u32 = 2u;"));
        // The shaders themselves define none of the shared constants.
        for kernel in Kernel::ALL {
            for (name, _) in shared_constants::EVERY_KERNEL {
                let own = kernel.parts().iter().chain([&COMMON]);
                assert!(
                    own.into_iter()
                        .all(|part| !part.contains(&format!("const {name}")))
                );
            }
        }
        assert!(source.contains("fn attend_key_tile"));
        assert!(source.contains("struct Params {"));
    }

    #[test]
    fn every_kernel_parses_and_validates_in_naga() {
        let constants = KernelConstants {
            head_dim: 16,
            top_k: 2,
            workgroup_size: 64,
            key_tile: 32,
            query_tile: 64,
            subgroups: 1,
        };
        let coop = KernelConstants {
            head_dim: 128,
            workgroup_size: 256,
            query_tile: 128,
            subgroups: 8,
            ..constants
        };
        for kernel in Kernel::ALL {
            let constants = match kernel.is_cooperative() {
                true => coop,
                false => constants,
            };
            let module = wgpu::naga::front::wgsl::parse_str(&kernel.source(&constants))
                .unwrap_or_else(|e| panic!("{}: {e}", kernel.name()));
            wgpu::naga::valid::Validator::new(
                wgpu::naga::valid::ValidationFlags::all(),
                wgpu::naga::valid::Capabilities::all(),
            )
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}: {e:?}", kernel.name()));
        }
    }
}
