// One thread per query row (or key) in the f32 kernels that split rows over lanes
// (row_lanes.wgsl): the portable kernels, which need no subgroup operations.

const LANES: u32 = 1u;

// The sum over a row's lanes: the one lane's own.
fn lane_sum(partial: f32) -> f32 {
    return partial;
}
