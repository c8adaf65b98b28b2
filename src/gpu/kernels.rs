//! The WGSL kernels: their sources, the constants the host prepends, and their parameters.

use std::borrow::Cow;

use crate::error::{MobaError, Result};
use crate::kernel_params::KernelParams;
use crate::shared_constants;

/// One entry of [`FILES`]: the stem, and the file's text.
macro_rules! wgsl_file {
    ($stem:literal) => {
        (
            $stem,
            include_str!(concat!("../../shaders/wgsl/", $stem, ".wgsl")),
        )
    };
}

/// Every file under `shaders/wgsl/`, embedded at build time.
const FILES: [(&str, &str); 42] = [
    wgsl_file!("common"),
    wgsl_file!("attention_inputs"),
    wgsl_file!("half_inputs"),
    wgsl_file!("half_keys"),
    wgsl_file!("lanes_single"),
    wgsl_file!("lanes_subgroup"),
    wgsl_file!("row_lanes"),
    wgsl_file!("staged_f32"),
    wgsl_file!("staged_f16"),
    wgsl_file!("key_tiles"),
    wgsl_file!("attention_tile"),
    wgsl_file!("block_tiles"),
    wgsl_file!("attention_state"),
    wgsl_file!("backward_rows"),
    wgsl_file!("block_tile_pass"),
    wgsl_file!("selection_entries"),
    wgsl_file!("coop_block_tile"),
    wgsl_file!("block_means"),
    wgsl_file!("gate_row_thread"),
    wgsl_file!("gate_row_workgroup"),
    wgsl_file!("gate_topk"),
    wgsl_file!("selection_count"),
    wgsl_file!("selection_scan"),
    wgsl_file!("selection_scatter"),
    wgsl_file!("attention_pass"),
    wgsl_file!("attention_pass_coop"),
    wgsl_file!("attention_finalize"),
    wgsl_file!("dense_attention"),
    wgsl_file!("backward_prepare"),
    wgsl_file!("dq_pass"),
    wgsl_file!("dq_pass_coop"),
    wgsl_file!("dkdv"),
    wgsl_file!("dkdv_coop"),
    wgsl_file!("decode_chunks"),
    wgsl_file!("decode_split"),
    wgsl_file!("decode_combine"),
    wgsl_file!("lm_step"),
    wgsl_file!("lm_embed"),
    wgsl_file!("lm_matvec"),
    wgsl_file!("lm_rope_cache"),
    wgsl_file!("nsa_select"),
    wgsl_file!("nsa_selected"),
];

/// Development switch: a folder whose `.wgsl` files replace the embedded ones of the same
/// name when a kernel is compiled, so that a kernel can be edited and rerun without a
/// rebuild (native only; files it lacks stay embedded).
pub const WGSL_DIR_VARIABLE: &str = "MOBA_WGSL_DIR";

/// The text of `shaders/wgsl/{stem}.wgsl`: the embedded copy, or the file of that name in
/// [`WGSL_DIR_VARIABLE`]'s folder where it is set and has one.
pub(crate) fn file(stem: &str) -> Cow<'static, str> {
    let embedded = FILES
        .iter()
        .find(|(name, _)| *name == stem)
        .map(|(_, text)| *text)
        .unwrap_or_else(|| panic!("no shaders/wgsl/{stem}.wgsl"));
    crate::kernel_override::source(WGSL_DIR_VARIABLE, &format!("{stem}.wgsl"), embedded)
}

/// Every compute kernel of the wgpu path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kernel {
    BlockMeans,
    GateTopk,
    /// The gate with one workgroup per row, its lanes splitting the blocks (decodes).
    GateTopkSplit,
    SelectionCount,
    SelectionScan,
    SelectionScatter,
    /// k and v rounded to f16 for the cooperative passes.
    HalfKeys,
    AttentionPass,
    /// The attention pass with each row split over 4 lanes of a subgroup (f32).
    AttentionPassLanes,
    /// [`Kernel::AttentionPassLanes`] staging f16 copies of k and v (f32 arithmetic).
    AttentionPassHalf,
    /// The attention pass with its tile products on cooperative matrices (f16).
    AttentionPassCoop,
    AttentionFinalize,
    DenseAttention,
    BackwardPrepare,
    DqPass,
    /// The dq pass with each row split over 4 lanes of a subgroup (f32).
    DqPassLanes,
    /// [`Kernel::DqPassLanes`] staging f16 copies of k and v (f32 arithmetic).
    DqPassHalf,
    /// The dq pass on cooperative matrices (f16).
    DqPassCoop,
    DkDv,
    /// dk and dv with each key split over 4 lanes of a subgroup (f32).
    DkDvLanes,
    /// [`Kernel::DkDvLanes`] staging q and dout rounded to f16 (f32 arithmetic).
    DkDvHalf,
    /// dk and dv on cooperative matrices (f16), from the inverted lists.
    DkDvCoop,
    /// Decode: a group's few rows against one chunk of a selected block's keys.
    DecodeSplit,
    /// Decode: the partials of every row merged into o and lse.
    DecodeCombine,
    /// NSA's group-shared top-n from the compressed branch's probabilities (NSA runs through
    /// the burn op only: the wgpu layer alone, as the web page builds it, never launches it).
    #[cfg_attr(not(feature = "burn"), allow(dead_code))]
    NsaSelect,
    /// NSA's selected branch: a group's heads at one query against its selected blocks.
    #[cfg_attr(not(feature = "burn"), allow(dead_code))]
    NsaSelected,
}

impl Kernel {
    /// Every kernel, for checks that must not forget one.
    #[cfg(test)]
    pub const ALL: [Kernel; 26] = [
        Kernel::BlockMeans,
        Kernel::GateTopk,
        Kernel::GateTopkSplit,
        Kernel::SelectionCount,
        Kernel::SelectionScan,
        Kernel::SelectionScatter,
        Kernel::HalfKeys,
        Kernel::AttentionPass,
        Kernel::AttentionPassLanes,
        Kernel::AttentionPassHalf,
        Kernel::AttentionPassCoop,
        Kernel::AttentionFinalize,
        Kernel::DenseAttention,
        Kernel::BackwardPrepare,
        Kernel::DqPass,
        Kernel::DqPassLanes,
        Kernel::DqPassHalf,
        Kernel::DqPassCoop,
        Kernel::DkDv,
        Kernel::DkDvLanes,
        Kernel::DkDvHalf,
        Kernel::DkDvCoop,
        Kernel::DecodeSplit,
        Kernel::DecodeCombine,
        Kernel::NsaSelect,
        Kernel::NsaSelected,
    ];

    /// The kernel's name: its main file under `shaders/wgsl/` (`_lanes`: the subgroup kernel of
    /// that file; `_half`: its f16 variant; `_split`: one workgroup per row).
    pub fn name(self) -> &'static str {
        match self {
            Kernel::BlockMeans => "block_means",
            Kernel::GateTopk => "gate_topk",
            Kernel::GateTopkSplit => "gate_topk_split",
            Kernel::SelectionCount => "selection_count",
            Kernel::SelectionScan => "selection_scan",
            Kernel::SelectionScatter => "selection_scatter",
            Kernel::HalfKeys => "half_keys",
            Kernel::AttentionPass => "attention_pass",
            Kernel::AttentionPassLanes => "attention_pass_lanes",
            Kernel::AttentionPassHalf => "attention_pass_half",
            Kernel::AttentionPassCoop => "attention_pass_coop",
            Kernel::AttentionFinalize => "attention_finalize",
            Kernel::DenseAttention => "dense_attention",
            Kernel::BackwardPrepare => "backward_prepare",
            Kernel::DqPass => "dq_pass",
            Kernel::DqPassLanes => "dq_pass_lanes",
            Kernel::DqPassHalf => "dq_pass_half",
            Kernel::DqPassCoop => "dq_pass_coop",
            Kernel::DkDv => "dkdv",
            Kernel::DkDvLanes => "dkdv_lanes",
            Kernel::DkDvHalf => "dkdv_half",
            Kernel::DkDvCoop => "dkdv_coop",
            Kernel::DecodeSplit => "decode_split",
            Kernel::DecodeCombine => "decode_combine",
            Kernel::NsaSelect => "nsa_select",
            Kernel::NsaSelected => "nsa_selected",
        }
    }

    /// The files (stems under `shaders/wgsl/`) after `common.wgsl` that make up this kernel's
    /// module.
    fn parts(self) -> &'static [&'static str] {
        match self {
            Kernel::BlockMeans => &["block_means"],
            Kernel::GateTopk => &["gate_row_thread", "gate_topk"],
            Kernel::GateTopkSplit => &["gate_row_workgroup", "gate_topk"],
            Kernel::SelectionCount => &["selection_entries", "selection_count"],
            Kernel::SelectionScan => &["selection_scan"],
            Kernel::SelectionScatter => &["selection_entries", "selection_scatter"],
            Kernel::HalfKeys => &["half_keys"],
            Kernel::AttentionPass => &[
                "attention_inputs",
                "lanes_single",
                "row_lanes",
                "staged_f32",
                "key_tiles",
                "attention_tile",
                "block_tiles",
                "block_tile_pass",
                "attention_state",
                "attention_pass",
            ],
            Kernel::AttentionPassCoop => &[
                "half_inputs",
                "block_tiles",
                "coop_block_tile",
                "attention_state",
                "attention_pass_coop",
            ],
            Kernel::AttentionFinalize => &["attention_finalize"],
            Kernel::DenseAttention => &[
                "attention_inputs",
                "lanes_single",
                "row_lanes",
                "staged_f32",
                "key_tiles",
                "attention_tile",
                "dense_attention",
            ],
            Kernel::BackwardPrepare => &["backward_prepare"],
            Kernel::DqPass => &[
                "attention_inputs",
                "lanes_single",
                "row_lanes",
                "staged_f32",
                "key_tiles",
                "attention_tile",
                "block_tiles",
                "block_tile_pass",
                "backward_rows",
                "dq_pass",
            ],
            Kernel::DqPassCoop => &[
                "half_inputs",
                "block_tiles",
                "coop_block_tile",
                "backward_rows",
                "dq_pass_coop",
            ],
            Kernel::DkDv => &[
                "attention_inputs",
                "lanes_single",
                "row_lanes",
                "staged_f32",
                "backward_rows",
                "dkdv",
            ],
            // The subgroup kernels and their f16 variants: their one-lane twin's files
            // (`source` swaps `lanes_single` for `lanes_subgroup`, and in the f16 variants
            // `staged_f32` for `staged_f16` and the passes' f32 inputs for the f16 copies).
            Kernel::AttentionPassLanes
            | Kernel::DqPassLanes
            | Kernel::DkDvLanes
            | Kernel::AttentionPassHalf
            | Kernel::DqPassHalf
            | Kernel::DkDvHalf => self.one_lane_twin().expect("a subgroup kernel").parts(),
            Kernel::DkDvCoop => &[
                "attention_inputs",
                "block_tiles",
                "backward_rows",
                "dkdv_coop",
            ],
            Kernel::DecodeSplit => &["attention_inputs", "decode_chunks", "decode_split"],
            Kernel::DecodeCombine => &["decode_chunks", "decode_combine"],
            Kernel::NsaSelect => &["nsa_select"],
            Kernel::NsaSelected => &["nsa_selected"],
        }
    }

    /// Whether the kernel runs on cooperative matrices (and so needs their constants).
    pub fn is_cooperative(self) -> bool {
        matches!(
            self,
            Kernel::AttentionPassCoop | Kernel::DqPassCoop | Kernel::DkDvCoop
        )
    }

    /// The portable kernel whose source a subgroup kernel shares, with four lanes per row
    /// (`lanes_subgroup.wgsl`) where it has one (`lanes_single.wgsl`); `None` for the others.
    fn one_lane_twin(self) -> Option<Kernel> {
        match self {
            Kernel::AttentionPassLanes | Kernel::AttentionPassHalf => Some(Kernel::AttentionPass),
            Kernel::DqPassLanes | Kernel::DqPassHalf => Some(Kernel::DqPass),
            Kernel::DkDvLanes | Kernel::DkDvHalf => Some(Kernel::DkDv),
            _ => None,
        }
    }

    /// Whether the kernel splits rows over subgroup lanes (and so needs subgroup operations).
    pub fn is_lanes(self) -> bool {
        self.one_lane_twin().is_some()
    }

    /// Whether the kernel is a subgroup kernel's f16 variant (and so needs `SHADER_F16`).
    pub fn is_half(self) -> bool {
        matches!(
            self,
            Kernel::AttentionPassHalf | Kernel::DqPassHalf | Kernel::DkDvHalf
        )
    }

    /// The file a part of the kernel's module is read from: its one-lane twin's parts with
    /// the lanes (and in the f16 variants the staged type and the passes' f16 key copies)
    /// swapped in.
    fn part_file(self, part: &'static str) -> &'static str {
        match part {
            "lanes_single" if self.is_lanes() => "lanes_subgroup",
            "staged_f32" if self.is_half() => "staged_f16",
            // dk/dv reads its own keys in f32 and rounds the rows it stages.
            "attention_inputs" if self.is_half() && self != Kernel::DkDvHalf => "half_inputs",
            part => part,
        }
    }

    /// WGSL extensions the kernel enables (they must open the module).
    fn enables(self) -> String {
        let mut enables = String::new();
        if self.is_cooperative() || self.is_half() || self == Kernel::HalfKeys {
            enables.push_str("enable f16;\n");
        }
        if self.is_cooperative() {
            enables.push_str("enable wgpu_cooperative_matrix;\n");
        }
        // Browsers require the extension named, and their uniformity analysis would refuse
        // dk/dv's shuffles behind a branch that the lanes of a key take alike; naga takes
        // subgroup operations without the extension (and refuses the directive).
        if self.is_lanes() && cfg!(target_arch = "wasm32") {
            enables.push_str("enable subgroups;\ndiagnostic(off, subgroup_uniformity);\n");
        }
        enables
    }

    /// The full WGSL module: extensions, constants, `struct Params`, `common.wgsl`, then the
    /// kernel's own files, with the loops marked `// unroll` written out (`unroll.rs`; an
    /// error names a malformed marked loop, which a `MOBA_WGSL_DIR` file may have).
    pub fn source(self, constants: &KernelConstants) -> Result<String> {
        let mut source = self.enables();
        source.push_str(&constants.prelude());
        source.push_str(KernelParams::WGSL);
        source.push_str(&file("common"));
        for &part in self.parts() {
            source.push('\n');
            source.push_str(&file(self.part_file(part)));
        }
        super::unroll::unroll_marked_loops(&source)
            .map_err(|e| MobaError::Gpu(format!("kernel {}: {e}", self.name())))
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
        let source = Kernel::AttentionPass.source(&constants).unwrap();
        assert!(source.starts_with("// Set by the host"));
        assert!(source.contains("const HEAD_DIM: u32 = 64u;"));
        assert!(source.contains("const GATE_SINK_AND_RECENT: u32 = 2u;"));
        // The shaders themselves define none of the shared constants.
        for kernel in Kernel::ALL {
            for (name, _) in shared_constants::EVERY_KERNEL {
                let own = kernel.parts().iter().chain(&["common"]);
                assert!(
                    own.into_iter()
                        .all(|part| !file(part).contains(&format!("const {name}")))
                );
            }
        }
        assert!(source.contains("fn attend_key_tile"));
        assert!(source.contains("struct Params {"));
    }

    /// Constants a kernel of each kind compiles with: small portable tiles, the cooperative
    /// kernel's tiles at head dim 128, a group of 8 decode rows.
    fn test_constants(kernel: Kernel) -> KernelConstants {
        let portable = KernelConstants {
            head_dim: 16,
            top_k: 2,
            workgroup_size: 64,
            key_tile: 32,
            query_tile: 64,
            subgroups: 1,
        };
        match kernel {
            _ if kernel.is_cooperative() => KernelConstants {
                head_dim: 128,
                workgroup_size: 256,
                query_tile: 128,
                subgroups: 8,
                ..portable
            },
            Kernel::DecodeSplit | Kernel::DecodeCombine => KernelConstants {
                query_tile: 8,
                ..portable
            },
            Kernel::NsaSelected => KernelConstants {
                query_tile: 16,
                ..portable
            },
            _ if kernel.is_lanes() => KernelConstants {
                workgroup_size: 256,
                ..portable
            },
            _ => portable,
        }
    }

    #[test]
    fn subgroup_kernels_are_their_twins_with_four_lanes() {
        for kernel in Kernel::ALL {
            let source = kernel.source(&test_constants(kernel)).unwrap();
            let four = source.contains("const LANES: u32 = 4u;");
            assert_eq!(four, kernel.is_lanes(), "{}", kernel.name());
            // The f16 variants stage f16 and nothing else differs in their sources.
            let half = source.contains("alias StagedVector = vec4<f16>;");
            assert_eq!(half, kernel.is_half(), "{}", kernel.name());
            if half {
                let f32_twin = match kernel {
                    Kernel::AttentionPassHalf => Kernel::AttentionPassLanes,
                    Kernel::DqPassHalf => Kernel::DqPassLanes,
                    _ => Kernel::DkDvLanes,
                };
                let twin = f32_twin.source(&test_constants(f32_twin)).unwrap();
                let code = |source: &str| -> Vec<String> {
                    (source.lines().map(str::trim))
                        .filter(|line| !line.is_empty() && !line.starts_with("//"))
                        .filter(|line| !line.starts_with("enable"))
                        .map(str::to_string)
                        .collect()
                };
                let (code, twin) = (code(&source), code(&twin));
                assert_eq!(code.len(), twin.len(), "{}", kernel.name());
                let differing: Vec<_> = (code.iter().zip(&twin))
                    .filter(|(a, b)| a != b)
                    .map(|(a, _)| a.as_str())
                    .collect();
                assert!(
                    differing.iter().all(|line| line.contains("vec4<f16>")),
                    "{}: {differing:?}",
                    kernel.name()
                );
            }
            // The cooperative forward shuffles a row's maxima between the row's two lanes.
            let shuffles = four || kernel == Kernel::AttentionPassCoop;
            assert_eq!(
                source.contains("subgroupShuffleXor"),
                shuffles,
                "{}",
                kernel.name()
            );
        }
    }

    #[test]
    fn every_kernel_parses_and_validates_in_naga() {
        for kernel in Kernel::ALL {
            let source = kernel.source(&test_constants(kernel)).unwrap();
            let module = wgpu::naga::front::wgsl::parse_str(&source)
                .unwrap_or_else(|e| panic!("{}: {e}", kernel.name()));
            wgpu::naga::valid::Validator::new(
                wgpu::naga::valid::ValidationFlags::all(),
                wgpu::naga::valid::Capabilities::all(),
            )
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}: {e:?}", kernel.name()));
        }
    }

    #[test]
    fn every_marked_loop_is_written_out() {
        // No marker is left, nor a near miss (`//unroll`, `// unroll:`) that stayed a loop.
        for kernel in Kernel::ALL {
            let source = kernel.source(&test_constants(kernel)).unwrap();
            let left = source.lines().find(|line| {
                (line.trim_start().strip_prefix("//"))
                    .is_some_and(|comment| comment.trim_start().starts_with("unroll"))
            });
            assert_eq!(left, None, "{}", kernel.name());
        }
        // The cooperative forward indexes its strips with constants only.
        let forward = Kernel::AttentionPassCoop
            .source(&test_constants(Kernel::AttentionPassCoop))
            .unwrap();
        assert!(!forward.contains("< HEAD_COLUMNS;"));
        assert!(forward.contains("(*acc)[7u] = coopMultiplyAdd"));
    }
}
