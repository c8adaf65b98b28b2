// Shared by the f32 kernels that split each query row over LANES (4) threads of a subgroup
// (attention_pass_lanes, dq_pass_lanes; block_tile_pass.wgsl numbers the lanes). Lane l holds
// head-dim vectors l, l + LANES, ... of each of the row's vectors (LANE_VECS of them), so the
// lanes of a row read adjacent 16-byte vectors of a staged key, and a quarter of a row's
// vectors sits in each thread's registers (a whole row spills at HEAD_DIM 128).

const LANE_VECS: u32 = HEAD_VECS / LANES;
const_assert LANES == 4u;
const_assert LANE_VECS * LANES == HEAD_VECS;
// A lane's share of a head-dim vector.
alias LaneVector = array<vec4<f32>, LANE_VECS>;

// Where vector i of a lane's share sits in a row of HEAD_VECS vectors.
fn lane_vec(i: u32, lane: u32) -> u32 {
    return i * LANES + lane;
}

// The sum of `partial` over the row's four lanes, the same bits in each (both shuffle steps
// add the same two values in every lane, in either order). Call from uniform control flow:
// every lane of the subgroup must take part.
fn lane_sum(partial: f32) -> f32 {
    let pair = partial + subgroupShuffleXor(partial, 1u);
    return pair + subgroupShuffleXor(pair, 2u);
}
