// Shared by the f32 kernels that split each query row (or key) over LANES threads, LANES set
// by lanes_single.wgsl (1: the portable kernels) or lanes_subgroup.wgsl (4: the subgroup
// kernels, whose lanes add their dot products by subgroup shuffles, `lane_sum`).
//
// Lane l holds head-dim vectors l, l + LANES, ... of each of the row's vectors (LANE_VECS of
// them), so the lanes of a row read adjacent 16-byte vectors of a staged row, and a
// 1 / LANES share of a row sits in each thread's registers (a whole row's query and output
// spill at HEAD_DIM 128 on an H100). Loops over a share are marked `// unroll`
// (src/gpu/unroll.rs): an array indexed by a rolled loop's variable lives in local memory.

const LANE_VECS: u32 = HEAD_VECS / LANES;
const_assert LANE_VECS * LANES == HEAD_VECS;
// A lane's share of a head-dim vector.
alias LaneVector = array<vec4<f32>, LANE_VECS>;

// Where vector i of a lane's share sits in a row of HEAD_VECS vectors.
fn lane_vec(i: u32, lane: u32) -> u32 {
    return i * LANES + lane;
}
