// Shared by every MoBA kernel: the problem parameters and index helpers.
//
// The host prepends `const` lines before this file: HEAD_DIM, TOP_K, WORKGROUP_SIZE,
// KEY_TILE and QUERY_TILE, chosen from the problem and the adapter's limits.
//
// The kernels see a problem as `groups()` independent (batch, kv head) pairs: kv tensors
// are [groups, kv_len, HEAD_DIM] and query tensors [groups, group_size, q_len, HEAD_DIM],
// which is exactly the row-major layout of [B, Hkv, Sk, D] and [B, Hq, S, D]. A forward over
// a KV cache reads keys and values at the cache's stride (params.kv_stride, its capacity).

// `struct Params` (the problem, DESIGN §1) is generated from src/kernel_params.rs and
// stands before this file, with the shared constants.


// A read-only storage buffer rather than a uniform, so that burn's template kernels (which
// bind every argument as storage) run the same source.
@group(0) @binding(0) var<storage, read> params: Params;

const HEAD_VECS: u32 = HEAD_DIM / 4u;
// One head-dim vector (a query, key, value or gradient row) in registers.
alias HeadVector = array<vec4<f32>, HEAD_VECS>;
const LN_2: f32 = 0.6931471805599453;
// "Minus infinity" that stays finite, so that exp2(NEG_BIG - m) is exactly 0 without NaN.
const NEG_BIG: f32 = -3.0e38;

// (batch, kv head) pairs.
fn groups() -> u32 {
    return params.batch * params.kv_heads;
}

// Query heads per kv head.
fn group_size() -> u32 {
    return params.q_heads / params.kv_heads;
}

// Query rows of the whole problem: groups * group_size * q_len.
fn q_rows() -> u32 {
    return groups() * group_size() * params.q_len;
}

// Group (batch, kv head) of a flat query row.
fn row_group(row: u32) -> u32 {
    return row / (group_size() * params.q_len);
}

// Absolute position of query t: the queries are the last q_len positions.
fn query_position(t: u32) -> u32 {
    return params.kv_len - params.q_len + t;
}

// Whether the query at `position` sees key `key` of a block it attends (DESIGN §1): not a
// key after it when causal, nor one before its window under the key-window gate
// (`MobaConfig::sees` on the host).
fn key_visible(key: u32, position: u32) -> bool {
    return (params.causal == 0u || key <= position)
        && (params.gate != GATE_KEY_WINDOW || key + params.block_size > position);
}

// Where a workgroup sits in the grid: every kernel's entry point takes it, beside its
// `local_invocation_index` (kept apart: the position is uniform, the index is not, and
// WGSL's uniformity analysis judges an argument whole).
struct GridPosition {
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
}

// Flat workgroup index of a grid folded into x and y by the host.
fn workgroup_index(grid: GridPosition) -> u32 {
    return grid.workgroup.x + grid.workgroup.y * grid.workgroups.x;
}

// Flat index of this thread in a linear grid of WORKGROUP_SIZE-thread workgroups.
fn thread_index(grid: GridPosition, lid: u32) -> u32 {
    return workgroup_index(grid) * WORKGROUP_SIZE + lid;
}

// Natural-log softmax normaliser from a running (max, sum) in the log2 domain.
fn log_sum_exp(state: vec2<f32>) -> f32 {
    return (state.x + log2(state.y)) * LN_2;
}
