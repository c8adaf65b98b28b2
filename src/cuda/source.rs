//! The CUDA C++ sources of `shaders/cuda/`, made into one NVRTC program per kernel file and
//! problem: the compile-time constants go in as `#define`s before the shared header.

use super::launch::source_constants;
use crate::kernel_override;
use crate::kernel_params::KernelParams;
use crate::shared_constants;

/// Element type of the tensors a kernel reads and writes (accumulation is always f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElemKind {
    /// f32 inputs, multiplied in bf16 on the tensor cores.
    F32,
    /// f16 inputs, multiplied in f16.
    F16,
    /// bf16 inputs, multiplied in bf16.
    Bf16,
}

impl ElemKind {
    /// The kind of a tensor's dtype; `None` for dtypes the kernels do not read.
    pub fn from_dtype(dtype: burn::tensor::DType) -> Option<ElemKind> {
        use burn::tensor::DType;
        match dtype {
            DType::F32 => Some(ElemKind::F32),
            DType::F16 => Some(ElemKind::F16),
            DType::BF16 => Some(ElemKind::Bf16),
            _ => None,
        }
    }

    /// Bytes of one element.
    pub fn bytes(self) -> usize {
        match self {
            ElemKind::F32 => 4,
            ElemKind::F16 | ElemKind::Bf16 => 2,
        }
    }

    /// The burn dtype of this kind.
    pub fn dtype(self) -> burn::tensor::DType {
        use burn::tensor::DType;
        match self {
            ElemKind::F32 => DType::F32,
            ElemKind::F16 => DType::F16,
            ElemKind::Bf16 => DType::BF16,
        }
    }

    /// The value of the sources' `ELEM_KIND`.
    fn define(self) -> u32 {
        match self {
            ElemKind::F32 => 0,
            ElemKind::F16 => 1,
            ElemKind::Bf16 => 2,
        }
    }

    /// The type's name (`f32`, `f16`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            ElemKind::F32 => "f32",
            ElemKind::F16 => "f16",
            ElemKind::Bf16 => "bf16",
        }
    }
}

/// The tensor-core instructions of the forward's tile products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MmaKind {
    /// `mma.sync` per warp on padded tiles (sm_80+).
    Sync,
    /// `wgmma.mma_async` per warpgroup on 128-byte-swizzled tiles (sm_90a, head dim a
    /// multiple of 64).
    Warpgroup,
}

impl MmaKind {
    /// The instructions for a GPU of compute capability `major`.x at head dim `head_dim`:
    /// warpgroup MMAs exist on sm_90 alone (Blackwell has other instructions).
    pub fn for_device(major: u32, head_dim: usize) -> MmaKind {
        if major == 9 && head_dim.is_multiple_of(64) {
            MmaKind::Warpgroup
        } else {
            MmaKind::Sync
        }
    }

    /// The NVRTC target for a GPU whose own target is `arch` (`sm_90a` for warpgroup MMAs).
    pub fn target(self, arch: &'static str) -> &'static str {
        match self {
            MmaKind::Sync => arch,
            MmaKind::Warpgroup => "sm_90a",
        }
    }
}

/// One `.cu` file of `shaders/cuda/`: a module of kernels compiled together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CudaProgram {
    /// `block_means`, `gate_topk`.
    Gate,
    /// `selection_count`, `selection_scan`, `selection_scatter`.
    Inversion,
    /// `attention_pass`, `attention_finalize`.
    Attention,
    /// `backward_prepare`, `dq_pass`, `dq_finalize`, `dkdv`.
    Backward,
    /// `decode_split`, `decode_combine`.
    Decode,
    /// `lm_embed`, `lm_matvec`, `lm_rope_cache`: a language model's decode step around
    /// MoBA's (`cuda::CudaLmDecoder`).
    Lm,
    /// `nsa_select`: NSA's group-shared top-n (`crate::backend::nsa_attention`).
    Nsa,
}

const COMMON: &str = include_str!("../../shaders/cuda/common.cuh");

/// Development switch: a folder whose `.cu` files and `common.cuh` replace the embedded
/// ones of the same name when a program is compiled (the NVRTC cache keys on the source,
/// so an edited kernel is compiled afresh).
pub const CUDA_DIR_VARIABLE: &str = "MOBA_CUDA_DIR";

impl CudaProgram {
    /// MoBA's programs, built before a problem's first run.
    pub const MOBA: [CudaProgram; 5] = [
        CudaProgram::Gate,
        CudaProgram::Inversion,
        CudaProgram::Attention,
        CudaProgram::Backward,
        CudaProgram::Decode,
    ];
    /// Every program.
    pub const ALL: [CudaProgram; 7] = [
        CudaProgram::Gate,
        CudaProgram::Inversion,
        CudaProgram::Attention,
        CudaProgram::Backward,
        CudaProgram::Decode,
        CudaProgram::Lm,
        CudaProgram::Nsa,
    ];

    /// The file's own source.
    fn body(self) -> &'static str {
        match self {
            CudaProgram::Gate => include_str!("../../shaders/cuda/gate.cu"),
            CudaProgram::Inversion => include_str!("../../shaders/cuda/inversion.cu"),
            CudaProgram::Attention => include_str!("../../shaders/cuda/attention.cu"),
            CudaProgram::Backward => include_str!("../../shaders/cuda/backward.cu"),
            CudaProgram::Decode => include_str!("../../shaders/cuda/decode.cu"),
            CudaProgram::Lm => include_str!("../../shaders/cuda/lm.cu"),
            CudaProgram::Nsa => include_str!("../../shaders/cuda/nsa.cu"),
        }
    }

    /// The program's name for NVRTC's messages.
    pub fn name(self) -> &'static str {
        match self {
            CudaProgram::Gate => "gate.cu",
            CudaProgram::Inversion => "inversion.cu",
            CudaProgram::Attention => "attention.cu",
            CudaProgram::Backward => "backward.cu",
            CudaProgram::Decode => "decode.cu",
            CudaProgram::Lm => "lm.cu",
            CudaProgram::Nsa => "nsa.cu",
        }
    }

    /// Whether the program defines kernel `name` (an `extern "C" __global__` entry point).
    #[cfg(test)]
    pub(crate) fn defines_kernel(self, name: &str) -> bool {
        let body = self.body();
        body.match_indices(&format!("{name}("))
            .map(|(at, _)| &body[..at])
            .filter(|before| before.ends_with(char::is_whitespace))
            .any(|before| {
                let declaration = before.rfind("extern \"C\"").map(|at| &before[at..]);
                declaration.is_some_and(|d| d.contains("__global__") && !d.contains(';'))
            })
    }
}

/// The compile-time constants of one build of a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CudaConstants {
    /// Head dim, a multiple of 16 (the tensor-core k step).
    pub head_dim: usize,
    pub elem: ElemKind,
    pub top_k: usize,
    pub mma: MmaKind,
}

impl CudaConstants {
    /// The full NVRTC source of `program` for these constants.
    pub fn source(&self, program: CudaProgram) -> String {
        assert!(
            self.head_dim.is_multiple_of(16) && self.head_dim > 0,
            "CUDA head dims are padded to a multiple of 16 first"
        );
        let problem = [
            ("HEAD_DIM", self.head_dim as u32),
            ("ELEM_KIND", self.elem.define()),
            ("TOP_K", self.top_k as u32),
            ("WGMMA", (self.mma == MmaKind::Warpgroup) as u32),
        ];
        let defines = [
            &problem[..],
            &source_constants(),
            &shared_constants::EVERY_KERNEL,
        ]
        .map(shared_constants::cuda_lines)
        .concat();
        let common = kernel_override::source(CUDA_DIR_VARIABLE, "common.cuh", COMMON);
        let body = kernel_override::source(CUDA_DIR_VARIABLE, program.name(), program.body());
        format!("{defines}{}{common}\n{body}", KernelParams::CUDA)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_define_their_constants_before_the_header() {
        let constants = CudaConstants {
            head_dim: 64,
            elem: ElemKind::Bf16,
            top_k: 3,
            mma: MmaKind::Warpgroup,
        };
        let source = constants.source(CudaProgram::Attention);
        let header = source.find("struct Params").unwrap();
        for define in [
            "#define HEAD_DIM 64\n",
            "#define ELEM_KIND 2\n",
            "#define TOP_K 3\n",
            "#define WGMMA 1\n",
            "#define ROW_TILE 128\n",
            "#define GATE_SINK_AND_RECENT 2\n",
        ] {
            assert!(source.find(define).unwrap() < header, "{define}");
        }
    }

    #[test]
    fn the_sources_define_none_of_the_hosts_constants() {
        let host = source_constants()
            .into_iter()
            .chain(shared_constants::EVERY_KERNEL);
        for (name, _) in host {
            for program in CudaProgram::ALL {
                let define = format!("#define {name} ");
                assert!(!program.body().contains(&define), "{name}");
                assert!(!COMMON.contains(&define), "{name}");
            }
        }
    }

    #[test]
    fn the_sources_know_no_other_headers() {
        // NVRTC runs with no include path on the GPU machine.
        for program in CudaProgram::ALL {
            assert!(!program.body().contains("#include"), "{}", program.name());
        }
        assert!(!COMMON.contains("#include"));
    }

    #[test]
    fn warpgroup_mmas_only_on_sm90_at_head_dims_of_whole_panels() {
        assert_eq!(MmaKind::for_device(9, 128), MmaKind::Warpgroup);
        assert_eq!(MmaKind::for_device(9, 64), MmaKind::Warpgroup);
        // The swizzled panels are 64 columns wide.
        assert_eq!(MmaKind::for_device(9, 96), MmaKind::Sync);
        assert_eq!(MmaKind::for_device(8, 128), MmaKind::Sync);
        assert_eq!(MmaKind::for_device(10, 128), MmaKind::Sync);
        assert_eq!(MmaKind::Warpgroup.target("sm_90"), "sm_90a");
        assert_eq!(MmaKind::Sync.target("sm_86"), "sm_86");
    }

    /// Every program compiles with NVRTC for both kinds of tensor-core instructions, in each
    /// element type, at the head dims the launchers pad to: a kernel that does not build
    /// fails here, on a machine without a GPU (NVRTC alone: `scripts/setup.sh` installs it
    /// from PyPI's `nvidia-cuda-nvrtc-cu12`), not on the lent one.
    #[test]
    #[cfg(feature = "cuda")]
    fn every_program_compiles_with_nvrtc() {
        use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};
        for (mma, arch) in [(MmaKind::Sync, "sm_80"), (MmaKind::Warpgroup, "sm_90")] {
            for elem in [ElemKind::F32, ElemKind::F16, ElemKind::Bf16] {
                for head_dim in [64, 128] {
                    let constants = CudaConstants {
                        head_dim,
                        elem,
                        top_k: 16,
                        mma,
                    };
                    for program in CudaProgram::ALL {
                        let options = CompileOptions {
                            arch: Some(mma.target(arch)),
                            name: Some(program.name().into()),
                            ..Default::default()
                        };
                        let built = compile_ptx_with_opts(constants.source(program), options);
                        if let Err(e) = built {
                            panic!("{} for {constants:?}: {e:?}", program.name());
                        }
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "multiple of 16")]
    fn head_dims_off_the_tensor_core_step_are_refused() {
        let constants = CudaConstants {
            head_dim: 40,
            elem: ElemKind::F16,
            top_k: 1,
            mma: MmaKind::Sync,
        };
        constants.source(CudaProgram::Gate);
    }
}
