//! Launch planning: tile sizes from the adapter's limits, kernel parameters, and the buffer
//! sizes a problem needs against the adapter's binding limits.

use super::caps::DeviceCaps;
use super::kernels::KernelConstants;
use super::schedule::{KernelSet, LanesKernels};
use crate::config::{MobaConfig, Shape};
use crate::error::{MobaError, Result};
use crate::launch_plan;
use crate::reference::Precision;
use crate::shared_constants;

/// Threads per workgroup we aim for: one query row per thread in the attention tiles.
const PREFERRED_WORKGROUP: u32 = 64;
/// Largest key tile staged in workgroup memory.
const MAX_KEY_TILE: u32 = 32;
/// Workgroup bytes the kernels use beside their two tiles of KEY_TILE head-dim rows (the
/// dk/dv kernel's row compaction: 2 * 4 bytes per thread plus 12 per staged row).
const WORKGROUP_EXTRA_BYTES: u32 = 1024;

/// Which kernels run the MoBA attention passes, forward (the attention passes) and backward
/// (the dq passes and dk/dv); the gate and the selection inversion are the same for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKernel {
    /// f32 WGSL on any adapter, the browser included.
    Portable,
    /// f32 WGSL whose attention, dq and dk/dv passes split each query row (in dk/dv each
    /// key) over 4 lanes of a subgroup (a quarter of the row's vectors in each thread's
    /// registers, the dot products summed by subgroup shuffles): adapters with `SUBGROUP`
    /// (subgroups of at least 4), head dims that are multiples of 16. The gate and the
    /// inversion are the portable kernels'.
    Subgroup,
    /// The subgroup kernels staging f16 tiles (`staged_f16.wgsl`): the attention and dq
    /// passes stage f16 copies of k and v made once, dk/dv rounds the q and dout rows it
    /// stages; products and sums stay f32. Half the workgroup memory a staged key, so tiles
    /// of twice the keys fit where workgroup memory limits them (32 KiB in browsers, on
    /// Metal and lavapipe). Adapters with `SUBGROUP` and `SHADER_F16`. Outputs and gradients
    /// carry the error of f16 inputs.
    SubgroupF16,
    /// f16 cooperative matrices (tensor cores) with f32 accumulation: native adapters with
    /// `EXPERIMENTAL_COOPERATIVE_MATRIX` at 16x16x16 f16 -> f32 and a fixed subgroup size.
    /// q, k, v, dout, the probabilities and their gradients are rounded to f16, so outputs
    /// and gradients carry f16-level error (about 1e-3 against the f64 reference at
    /// D = 128, measured on an H100).
    Cooperative,
}

/// Tile of the cooperative attention and dq passes: 128 gathered rows x 32 keys, 256 threads
/// (two per row in the softmax, one 16-row strip per subgroup of 32).
const COOP_WORKGROUP: u32 = 256;
const COOP_QUERY_TILE: u32 = 128;
const COOP_KEY_TILE: u32 = 32;
/// Tile of the cooperative dk/dv kernel (`dkdv_coop.wgsl`): 64 keys (16 per pair of
/// subgroups) x 32 rows.
const COOP_DKDV_KEYS: u32 = 64;
const COOP_DKDV_ROWS: u32 = 32;

impl AttentionKernel {
    /// The fastest kernel the device runs at this head dim: cooperative, else subgroup, else
    /// portable. (The subgroup kernels' f16 variant rounds f32 inputs: it runs where they
    /// are f16 already, [`AttentionKernel::best_for_f16_inputs`], or by name.)
    pub fn best(caps: &DeviceCaps, head_dim: usize) -> Self {
        match cooperative_constants(caps, head_dim, 1) {
            Ok(_) => AttentionKernel::Cooperative,
            Err(_) => Self::best_f32(caps, head_dim),
        }
    }

    /// The fastest kernel for inputs that f16 holds exactly (burn's f16 tensors): [`best`],
    /// but the subgroup kernels' f16 variant for the f32 subgroup kernels where the device
    /// has shader-f16. Its only rounding is its tiles', exact on such inputs, so it computes
    /// what the f32 kernels do, faster (H100: 32K training step 130 -> 114 ms).
    ///
    /// [`best`]: AttentionKernel::best
    pub fn best_for_f16_inputs(caps: &DeviceCaps, head_dim: usize) -> Self {
        match Self::best(caps, head_dim) {
            AttentionKernel::Subgroup if runs_lanes(caps, head_dim, true) => {
                AttentionKernel::SubgroupF16
            }
            best => best,
        }
    }

    /// The fastest kernel at f32 precision (subgroup, else portable): what the host API's
    /// backward runs, whose gradients keep f32 precision.
    pub fn best_f32(caps: &DeviceCaps, head_dim: usize) -> Self {
        match runs_lanes(caps, head_dim, false) {
            true => AttentionKernel::Subgroup,
            false => AttentionKernel::Portable,
        }
    }

    /// The arithmetic the kernel multiplies in (what its check's tolerance is measured by).
    pub fn precision(self) -> Precision {
        match self {
            AttentionKernel::Portable | AttentionKernel::Subgroup => Precision::F32,
            AttentionKernel::SubgroupF16 | AttentionKernel::Cooperative => Precision::F16,
        }
    }
}

/// Whether the device runs the lanes kernels (`half`: their f16 variant) at `head_dim`.
fn runs_lanes(caps: &DeviceCaps, head_dim: usize, half: bool) -> bool {
    TilePlan::new(&caps.limits, head_dim)
        .and_then(|plan| lanes_constants(caps, plan.constants(head_dim, 1), half))
        .is_ok()
}

/// The kernels of a problem on a device with `kernel` running the attention passes, the dq
/// passes and dk/dv (an error where the device lacks it), and the portable kernels' tiles:
/// what the wgpu runner and burn's template runner both launch.
pub(crate) fn kernel_set(
    caps: &DeviceCaps,
    shape: &Shape,
    config: &MobaConfig,
    kernel: AttentionKernel,
) -> Result<(KernelSet, TilePlan)> {
    let plan = TilePlan::new(&caps.limits, shape.head_dim)?;
    let portable = plan.constants(shape.head_dim, config.top_k);
    let cooperative = match kernel {
        AttentionKernel::Cooperative => {
            Some(cooperative_constants(caps, shape.head_dim, config.top_k)?)
        }
        _ => None,
    };
    let lanes = match kernel {
        AttentionKernel::Subgroup | AttentionKernel::SubgroupF16 => {
            let half = kernel == AttentionKernel::SubgroupF16;
            Some(LanesKernels {
                constants: lanes_constants(caps, portable, half)?,
                half,
            })
        }
        _ => None,
    };
    let workgroup_bytes = caps.limits.max_compute_workgroup_storage_size;
    let decode = decode_constants(shape, portable, workgroup_bytes);
    Ok((
        KernelSet {
            portable,
            lanes,
            cooperative,
            decode,
            split_gate: decode.and_then(|_| split_gate_constants(&caps.limits, portable)),
        },
        plan,
    ))
}

/// Constants of the split-decode kernels (`decode_split.wgsl`: the group's rows are its query
/// tile), where `shape` decodes ([`launch_plan::decodes`]) and the group's queries and
/// scores fit `workgroup_bytes`; `None` otherwise (the forward runs over inverted lists).
pub(crate) fn decode_constants(
    shape: &Shape,
    portable: KernelConstants,
    workgroup_bytes: u32,
) -> Option<KernelConstants> {
    let rows = shape.group_size() * shape.q_len;
    let threads = portable.workgroup_size as usize;
    // The group's queries, the chunk's scores, each row's slot and a flag.
    let bytes = rows * (shape.head_dim + threads + 1) * 4 + 4;
    // The combine's lanes split its workgroups evenly.
    let lanes = shared_constants::DECODE_COMBINE_LANES as usize;
    let fits =
        rows <= threads && bytes <= workgroup_bytes as usize && threads.is_multiple_of(lanes);
    (launch_plan::decodes(shape) && fits).then_some(KernelConstants {
        query_tile: rows as u32,
        ..portable
    })
}

/// Lanes of the gate with one workgroup per row (`gate_row_workgroup.wgsl`) where the device
/// allows. At 256, Mesa's GL compiler took about a minute per gate kernel (long enough for a
/// parallel test to hit wgpu's GL context-lock timeout); at 64 a few seconds.
const SPLIT_GATE_LANES: u32 = 64;

/// Constants of the gate with one workgroup per row: the most lanes, a power of two up to
/// [`SPLIT_GATE_LANES`], whose best TOP_K (score, block) pairs and counts fit the device's
/// workgroup memory and invocations; `None` where not even 32 do.
fn split_gate_constants(
    limits: &wgpu::Limits,
    portable: KernelConstants,
) -> Option<KernelConstants> {
    let invocations = limits
        .max_compute_invocations_per_workgroup
        .min(limits.max_compute_workgroup_size_x);
    let bytes = |lanes: u32| lanes as u64 * (portable.top_k as u64 * 8 + 4);
    let mut lanes = SPLIT_GATE_LANES;
    while lanes > 32
        && (lanes > invocations || bytes(lanes) > limits.max_compute_workgroup_storage_size as u64)
    {
        lanes /= 2;
    }
    let fits =
        lanes <= invocations && bytes(lanes) <= limits.max_compute_workgroup_storage_size as u64;
    fits.then_some(KernelConstants {
        workgroup_size: lanes,
        ..portable
    })
}

/// Workgroup bytes of the cooperative kernels at a head dim, as laid out in their sources:
/// `coop_block_tile.wgsl` (padded f16 key/value rows or strip columns, the padded score and
/// probability tiles, two per-row arrays and three 16-byte scalars) plus the forward's own,
/// and `dkdv_coop.wgsl` (f16 row tiles, f32 score tiles, f16 probability tiles,
/// three per-row arrays, three 16-byte scalars).
fn cooperative_workgroup_bytes(head_dim: u64) -> u64 {
    let (rows, keys) = (COOP_QUERY_TILE as u64, COOP_KEY_TILE as u64);
    let block_tile = (2 * keys * (head_dim + 8) * 2).max(rows * 40 * 2)
        + keys * (rows + 4) * 4
        + keys * (rows + 8) * 2
        + rows * 8
        + 48;
    // The forward's row maxima.
    let attention = block_tile + rows * 4;
    let (chunk, row_tile) = (COOP_DKDV_KEYS as u64, COOP_DKDV_ROWS as u64);
    let dkdv = (2 * row_tile * (head_dim + 8) * 2).max(2 * chunk * 40 * 2)
        + 2 * chunk * (row_tile + 4) * 4
        + 2 * chunk * (row_tile + 8) * 2
        + row_tile * 16
        + 48;
    attention.max(dkdv)
}

/// Threads per query row in the lanes kernels: `LANES` of `lanes_subgroup.wgsl`
/// (`block_tile_pass.wgsl` asserts it against the workgroup the host sizes here).
const LANES: u32 = 4;

/// Constants of the lanes kernels (`half`: their f16 variant): the portable kernels' query
/// tiles (so the passes tile the lists alike) with LANES threads per row, and their key
/// tiles (in the f16 variant up to twice the keys, in the same workgroup memory); or why the
/// device cannot run them.
pub(crate) fn lanes_constants(
    caps: &DeviceCaps,
    portable: KernelConstants,
    half: bool,
) -> Result<KernelConstants> {
    let subgroups = caps.subgroup_min_size.unwrap_or(0);
    if subgroups < LANES {
        return Err(MobaError::Unsupported(format!(
            "the subgroup kernel (subgroup operations with subgroups of at least {LANES} threads)"
        )));
    }
    if half && !caps.shader_f16 {
        return Err(MobaError::Unsupported(
            "the subgroup kernels' f16 variant (SHADER_F16)".into(),
        ));
    }
    if !portable.head_dim.is_multiple_of(4 * LANES) {
        return Err(MobaError::Unsupported(format!(
            "head_dim {} in the subgroup kernel (a multiple of {} is needed)",
            portable.head_dim,
            4 * LANES
        )));
    }
    let workgroup_size = portable.query_tile * LANES;
    let limits = &caps.limits;
    // The key and value tiles, and dk/dv's row compaction (two words per thread, three per
    // staged row), which grows with the workgroup.
    let element_bytes = if half { 2 } else { 4 };
    let bytes = |key_tile: u32| {
        (key_tile * (2 * portable.head_dim * element_bytes + 12) + workgroup_size * 8) as u64
    };
    let available = limits.max_compute_workgroup_storage_size as u64;
    let mut key_tile = match half {
        true => (2 * portable.key_tile).min(MAX_KEY_TILE),
        false => portable.key_tile,
    };
    while key_tile > portable.key_tile && bytes(key_tile) > available {
        key_tile /= 2;
    }
    if bytes(key_tile) > available {
        return Err(MobaError::limit(
            "the subgroup kernels' tiles".to_string(),
            "max_compute_workgroup_storage_size",
            bytes(key_tile),
            available,
        ));
    }
    if workgroup_size
        > limits
            .max_compute_invocations_per_workgroup
            .min(limits.max_compute_workgroup_size_x)
    {
        return Err(MobaError::limit(
            "the subgroup kernel's workgroup".to_string(),
            "max_compute_invocations_per_workgroup",
            workgroup_size as u64,
            limits.max_compute_invocations_per_workgroup as u64,
        ));
    }
    Ok(KernelConstants {
        workgroup_size,
        key_tile,
        ..portable
    })
}

/// Constants of the cooperative kernels, or why the adapter cannot run them.
pub(crate) fn cooperative_constants(
    caps: &DeviceCaps,
    head_dim: usize,
    top_k: usize,
) -> Result<KernelConstants> {
    let Some(subgroup_size) = caps.cooperative_subgroup_size else {
        return Err(MobaError::Unsupported(
            "cooperative matrices (16x16x16 f16 -> f32 with SHADER_F16 and a fixed subgroup size)"
                .into(),
        ));
    };
    if !head_dim.is_multiple_of(COOP_KEY_TILE as usize) {
        return Err(MobaError::Unsupported(format!(
            "head_dim {head_dim} in the cooperative kernel (a multiple of {COOP_KEY_TILE} is needed)"
        )));
    }
    let bytes = cooperative_workgroup_bytes(head_dim as u64);
    let available = caps.limits.max_compute_workgroup_storage_size as u64;
    if bytes > available {
        return Err(MobaError::limit(
            format!("the cooperative kernels' tiles at head_dim {head_dim}"),
            "max_compute_workgroup_storage_size",
            bytes,
            available,
        ));
    }
    let tiles = cooperative_tiles(head_dim, top_k);
    // Each subgroup owns one 16-row strip (and in dk/dv, a pair of them 16 keys).
    if COOP_WORKGROUP / subgroup_size != tiles.subgroups || tiles.subgroups * 8 != COOP_DKDV_KEYS {
        return Err(MobaError::Unsupported(format!(
            "subgroups of {subgroup_size} in the cooperative kernel"
        )));
    }
    Ok(tiles)
}

/// The cooperative kernels' constants (what [`cooperative_constants`] gives where the
/// adapter runs them; buffers are sized by them): one subgroup per 16-row strip.
pub(crate) fn cooperative_tiles(head_dim: usize, top_k: usize) -> KernelConstants {
    KernelConstants {
        head_dim: head_dim as u32,
        top_k: top_k as u32,
        workgroup_size: COOP_WORKGROUP,
        key_tile: COOP_KEY_TILE,
        query_tile: COOP_QUERY_TILE,
        subgroups: COOP_QUERY_TILE / 16,
    }
}

/// Tile sizes chosen for one adapter and head dim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TilePlan {
    /// Threads per workgroup, and query rows per attention tile.
    pub workgroup_size: u32,
    /// Keys (and values) staged in workgroup memory at a time.
    pub key_tile: u32,
}

impl TilePlan {
    /// The largest tiles that fit the adapter's workgroup limits (32 KiB of workgroup memory
    /// and 256 invocations in browsers).
    pub fn new(limits: &wgpu::Limits, head_dim: usize) -> Result<Self> {
        if !head_dim.is_multiple_of(4) {
            return Err(MobaError::Unsupported(format!(
                "head_dim {head_dim} in the wgpu kernels (a multiple of 4 is needed; the host-slice API pads)"
            )));
        }
        let workgroup_size = PREFERRED_WORKGROUP
            .min(limits.max_compute_invocations_per_workgroup)
            .min(limits.max_compute_workgroup_size_x);
        let per_key = 2 * head_dim as u64 * 4;
        let budget = limits
            .max_compute_workgroup_storage_size
            .saturating_sub(WORKGROUP_EXTRA_BYTES) as u64;
        let mut key_tile = MAX_KEY_TILE;
        while key_tile > 1 && key_tile as u64 * per_key > budget {
            key_tile /= 2;
        }
        if key_tile as u64 * per_key > budget {
            return Err(MobaError::limit(
                format!("one key and value of head_dim {head_dim} in workgroup memory"),
                "max_compute_workgroup_storage_size",
                per_key + WORKGROUP_EXTRA_BYTES as u64,
                limits.max_compute_workgroup_storage_size as u64,
            ));
        }
        Ok(Self {
            workgroup_size,
            key_tile,
        })
    }

    /// The smallest tiles: for sizing buffers, which tiles do not change.
    pub(crate) fn smallest() -> Self {
        Self {
            workgroup_size: PREFERRED_WORKGROUP,
            key_tile: 1,
        }
    }

    pub(crate) fn constants(&self, head_dim: usize, top_k: usize) -> KernelConstants {
        KernelConstants {
            head_dim: head_dim as u32,
            top_k: top_k as u32,
            workgroup_size: self.workgroup_size,
            key_tile: self.key_tile,
            query_tile: self.workgroup_size,
            subgroups: 1,
        }
    }
}

/// The largest buffer the adapter can bind.
fn binding_limit(limits: &wgpu::Limits) -> u64 {
    // Kernels index 4-byte elements with u32: stay under 2^32 elements too.
    limits
        .max_storage_buffer_binding_size
        .min(limits.max_buffer_size)
        .min(u32::MAX as u64)
}

/// Fails with the first buffer over the adapter's binding limit.
pub(crate) fn check_buffer_sizes(
    limits: &wgpu::Limits,
    sizes: &[(&'static str, u64)],
) -> Result<()> {
    let limit = binding_limit(limits);
    match sizes.iter().find(|(_, bytes)| *bytes > limit) {
        Some((name, bytes)) => Err(MobaError::limit(
            format!("buffer `{name}`"),
            "max_storage_buffer_binding_size",
            *bytes,
            limit,
        )),
        None => Ok(()),
    }
}

/// How many (batch, kv head) groups one call can take, given each buffer's bytes per group.
pub(crate) fn groups_per_call(
    limits: &wgpu::Limits,
    per_group: &[(&'static str, u64)],
    groups: usize,
) -> Result<usize> {
    check_buffer_sizes(limits, per_group)?;
    let limit = binding_limit(limits);
    let fit = per_group
        .iter()
        .map(|(_, bytes)| limit / bytes.max(&1))
        .min()
        .unwrap_or(u64::MAX);
    Ok((fit as usize).clamp(1, groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_tiles_fit_browser_workgroup_memory() {
        let limits = wgpu::Limits::downlevel_defaults();
        let plan = TilePlan::new(&limits, 128).unwrap();
        let bytes = plan.key_tile as u64 * 2 * 128 * 4 + WORKGROUP_EXTRA_BYTES as u64;
        assert!(bytes <= limits.max_compute_workgroup_storage_size as u64);
        assert_eq!(plan.key_tile, 8);
        // What lavapipe and Chromium offer.
        let web = wgpu::Limits {
            max_compute_workgroup_storage_size: 32768,
            ..Default::default()
        };
        assert_eq!(TilePlan::new(&web, 128).unwrap().key_tile, 16);
        assert_eq!(TilePlan::new(&web, 64).unwrap().key_tile, 32);
        assert!(TilePlan::new(&web, 10).is_err());
    }

    #[test]
    fn the_f16_variant_stages_twice_the_keys_where_workgroup_memory_limits_them() {
        // lavapipe's and Chromium's 32 KiB, at head dim 128: 16 f32 keys, 32 f16 ones.
        let caps = DeviceCaps {
            subgroup_min_size: Some(8),
            shader_f16: true,
            ..DeviceCaps::portable(wgpu::Limits {
                max_compute_workgroup_storage_size: 32768,
                ..Default::default()
            })
        };
        let portable = TilePlan::new(&caps.limits, 128).unwrap().constants(128, 3);
        let key_tile = |half| lanes_constants(&caps, portable, half).unwrap().key_tile;
        assert_eq!((key_tile(false), key_tile(true)), (16, 32));
        // Never past the largest tile, and only with shader-f16.
        let small = TilePlan::new(&caps.limits, 32).unwrap().constants(32, 3);
        assert_eq!(
            lanes_constants(&caps, small, true).unwrap().key_tile,
            MAX_KEY_TILE
        );
        let no_f16 = DeviceCaps {
            shader_f16: false,
            ..caps.clone()
        };
        assert!(lanes_constants(&no_f16, portable, true).is_err());
    }

    #[test]
    fn the_split_gate_runs_where_its_lanes_pairs_fit() {
        let limits = wgpu::Limits {
            max_compute_workgroup_storage_size: 32768,
            ..Default::default()
        };
        let plan = TilePlan::new(&limits, 128).unwrap();
        let lanes = |top_k| {
            split_gate_constants(&limits, plan.constants(128, top_k)).map(|c| c.workgroup_size)
        };
        // 64 lanes of 12 or 16 pairs: 6.4 or 8.4 KB; of 99, 51 KB, past 32 KiB: 32 lanes
        // (25.5 KB); of 200, 51 KB in 32 lanes: none.
        assert_eq!(lanes(12), Some(64));
        assert_eq!(lanes(16), Some(64));
        assert_eq!(lanes(99), Some(32));
        assert_eq!(lanes(200), None);
        let caps = DeviceCaps::portable(limits);
        let decode = Shape {
            q_len: 1,
            ..Shape::prefill(1, 8, 4096, 128)
        };
        let split = |shape: &Shape, top_k| {
            let config = MobaConfig::new(64, top_k);
            let set = kernel_set(&caps, shape, &config, AttentionKernel::Portable).unwrap();
            set.0.split_gate.map(|c| c.workgroup_size)
        };
        assert_eq!(split(&decode, 12), Some(64));
        assert_eq!(split(&decode, 200), None);
        assert_eq!(split(&Shape::prefill(1, 8, 4096, 128), 12), None);
    }

    #[test]
    fn a_group_too_large_for_one_binding_names_the_buffer() {
        let limits = wgpu::Limits::default();
        let err = groups_per_call(&limits, &[("keys", u64::MAX / 2)], 4).unwrap_err();
        assert!(err.to_string().contains("keys"), "{err}");
        assert_eq!(
            groups_per_call(&limits, &[("keys", 1 << 20)], 1000).unwrap(),
            128
        );
    }
}
