//! The decode-step kernels of a language model (`shaders/wgsl/lm_*.wgsl`): their sources with
//! the constants the host prepends, for submissions of given rows ([`Rows`]: consecutive
//! positions of each sequence of a batch, one while generating, a chunk or a tile of a
//! prompt in prefill). The attention
//! between them is MoBA's over the cache ([`crate::gpu::MobaForward::over_cache`],
//! [`crate::gpu::MobaForward::prefill_over_cache`]). The kernels and their order are the
//! decode plan's ([`crate::decode_plan`]).

use super::super::kernels::file;
use super::WeightPrecision;
use crate::decode_plan::{LmKernel, Rows};

/// Threads per workgroup of every decode-step kernel.
pub(super) const WORKGROUP_SIZE: u32 = 256;
/// Output columns per workgroup of a matrix-vector product; the other factor of the
/// workgroup splits the weight's rows (16 slices of 16 columns: a few of them per thread,
/// and enough workgroups at model widths of a few hundred to spread over the GPU).
const MATVEC_COLUMNS: u32 = 16;
/// Rows per workgroup of a matrix-vector product at most: a submission's rows (across its
/// sequences) go in tiles of 16.
const MATVEC_TILE_ROWS: usize = 16;

/// Rows of a matrix-vector product's workgroup in a submission of `rows` rows.
fn matvec_tile_rows(rows: usize) -> usize {
    rows.min(MATVEC_TILE_ROWS)
}

/// How the WGSL decoder launches a decode-step kernel.
pub(super) trait WgslKernel {
    /// Workgroups of one launch over `rows`.
    fn workgroups(&self, rows: Rows) -> u64;
    /// Workgroup memory bytes the kernel declares over `rows`.
    fn workgroup_bytes(&self, rows: Rows) -> u64;
    /// The full WGSL module for submissions of `rows`, a product's weights kept in
    /// `weights`.
    fn source(&self, rows: Rows, weights: WeightPrecision) -> String;
    /// Whether the kernel reads the step's byte and position (`lm_step.wgsl`, binding 0,
    /// before its own buffers).
    fn reads_step(&self) -> bool;
}

impl WgslKernel for LmKernel {
    fn workgroups(&self, rows: Rows) -> u64 {
        let (sequences, rows) = (rows.sequences, rows.count());
        let threads = match *self {
            LmKernel::Embed { d_model } => rows * d_model,
            LmKernel::Matvec { d_out, .. } => {
                let column_groups = d_out.div_ceil(MATVEC_COLUMNS as usize);
                return (column_groups * rows.div_ceil(matvec_tile_rows(rows))) as u64;
            }
            LmKernel::RopeCache {
                q_heads,
                kv_heads,
                head_dim,
                ..
            } => sequences * ((q_heads + kv_heads) * head_dim / 2 + kv_heads * head_dim),
        };
        threads.div_ceil(WORKGROUP_SIZE as usize) as u64
    }

    fn workgroup_bytes(&self, rows: Rows) -> u64 {
        match *self {
            LmKernel::Matvec { .. } => {
                (matvec_tile_rows(rows.count()) as u64 + 2 * WORKGROUP_SIZE as u64) * 4
            }
            _ => 0,
        }
    }

    // Constants, `lm_step.wgsl` where it reads the step, the kernel's file.
    fn source(&self, rows: Rows, weights: WeightPrecision) -> String {
        let constant = |name: &str, value: usize| format!("const {name}: u32 = {value}u;\n");
        let mut source = String::from("// Set by the host (src/gpu/lm_decode/kernels.rs).\n");
        source.push_str(&constant("WORKGROUP_SIZE", WORKGROUP_SIZE as usize));
        source.push_str(&constant("SEQUENCES", rows.sequences));
        source.push_str(&constant("POSITIONS", rows.positions));
        source.push_str(&constant("ROWS", rows.count()));
        let rows = rows.count();
        match *self {
            LmKernel::Embed { d_model } => source.push_str(&constant("D_MODEL", d_model)),
            LmKernel::Matvec {
                d_in,
                d_out,
                norm,
                epilogue,
                input_head_dim,
            } => {
                source.push_str(&constant("D_IN", d_in));
                source.push_str(&constant("D_OUT", d_out));
                source.push_str(&constant("ROW_STRIDE", self.row_stride()));
                source.push_str(&constant("COLUMNS", MATVEC_COLUMNS as usize));
                let column_groups = d_out.div_ceil(MATVEC_COLUMNS as usize);
                source.push_str(&constant("COLUMN_GROUPS", column_groups));
                source.push_str(&constant("TILE_ROWS", matvec_tile_rows(rows)));
                source.push_str(&constant("NORM", norm.is_some() as usize));
                source.push_str(&constant("EPILOGUE", epilogue as usize));
                source.push_str(&constant("INPUT_HEAD_DIM", input_head_dim.unwrap_or(d_in)));
                let half = weights == WeightPrecision::F16;
                source.push_str(&constant("WEIGHT_HALF", half as usize));
                let epsilon = norm.unwrap_or(0.0);
                source.push_str(&format!("const EPSILON: f32 = {epsilon:e};\n"));
            }
            LmKernel::RopeCache {
                q_heads,
                kv_heads,
                head_dim,
                capacity,
                rope,
                block_size,
            } => {
                source.push_str(&constant("Q_HEADS", q_heads));
                source.push_str(&constant("KV_HEADS", kv_heads));
                source.push_str(&constant("HEAD_DIM", head_dim));
                source.push_str(&constant("CAPACITY", capacity));
                source.push_str(&constant("ROPE", rope as usize));
                source.push_str(&constant("BLOCK_SIZE", block_size));
                source.push_str(&constant("MEAN_BLOCKS", capacity.div_ceil(block_size)));
            }
        }
        if self.reads_step() {
            source.push('\n');
            source.push_str(&file("lm_step"));
        }
        source.push('\n');
        source.push_str(&file(self.name()));
        source
    }

    fn reads_step(&self) -> bool {
        !matches!(self, LmKernel::Matvec { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode_plan::Epilogue;

    #[test]
    fn every_decode_step_kernel_parses_and_validates_in_naga() {
        let kernels = [
            LmKernel::Embed { d_model: 64 },
            LmKernel::RopeCache {
                q_heads: 4,
                kv_heads: 2,
                head_dim: 16,
                capacity: 256,
                rope: true,
                block_size: 32,
            },
        ]
        .into_iter()
        .chain(
            [Epilogue::Store, Epilogue::Residual, Epilogue::SwiGlu].map(|epilogue| {
                LmKernel::Matvec {
                    d_in: 64,
                    d_out: 176,
                    norm: (epilogue != Epilogue::Residual).then_some(1e-5),
                    epilogue,
                    input_head_dim: (epilogue == Epilogue::Residual).then_some(16),
                }
            }),
        );
        let rows = |sequences, positions| Rows {
            sequences,
            positions,
        };
        let sizes = |kernel| {
            [
                (kernel, rows(1, 1)),
                (kernel, rows(1, 16)),
                (kernel, rows(3, 40)),
            ]
        };
        let precisions = [WeightPrecision::F32, WeightPrecision::F16];
        for ((kernel, rows), weights) in kernels
            .flat_map(sizes)
            .flat_map(|size| precisions.map(|weights| (size, weights)))
        {
            let source = kernel.source(rows, weights);
            let module = wgpu::naga::front::wgsl::parse_str(&source)
                .unwrap_or_else(|e| panic!("{}: {}", kernel.name(), e.emit_to_string(&source)));
            wgpu::naga::valid::Validator::new(
                wgpu::naga::valid::ValidationFlags::all(),
                wgpu::naga::valid::Capabilities::all(),
            )
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}: {e:?}", kernel.name()));
        }
    }
}
