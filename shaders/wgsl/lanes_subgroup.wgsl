// Four consecutive threads of a subgroup per query row (or key) in the f32 kernels that split
// rows over lanes (row_lanes.wgsl): the subgroup kernels, on adapters with subgroup
// operations. Subgroups are runs of consecutive invocations of a power-of-two size, so a
// subgroup of at least LANES threads holds whole rows (the host asks for subgroups of 4 or
// more).

const LANES: u32 = 4u;

// The sum of `partial` over the row's four lanes, the same bits in each (both shuffle steps
// add the same two values in every lane, in either order). Call from uniform control flow:
// every lane of the subgroup must take part.
fn lane_sum(partial: f32) -> f32 {
    let pair = partial + subgroupShuffleXor(partial, 1u);
    return pair + subgroupShuffleXor(pair, 2u);
}
