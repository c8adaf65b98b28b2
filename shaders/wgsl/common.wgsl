// Shared by every MoBA kernel: the problem parameters and index helpers.
//
// The host prepends `const` lines before this file: HEAD_DIM, TOP_K, WORKGROUP_SIZE,
// KEY_TILE and QUERY_TILE, chosen from the problem and the adapter's limits.
//
// The kernels see a problem as `groups` independent (batch, kv head) pairs: kv tensors are
// [groups, kv_len, HEAD_DIM] and query tensors [groups, group_size, q_len, HEAD_DIM], which
// is exactly the row-major layout of [B, Hkv, Sk, D] and [B, Hq, S, D].

struct Params {
    groups: u32,
    group_size: u32,      // query heads per kv head
    q_len: u32,
    kv_len: u32,
    block_size: u32,
    num_blocks: u32,
    causal: u32,          // 1: causal MoBA, 0: all blocks eligible, no mask
    scale_log2: f32,      // softmax scale * log2(e): scores live in the log2 domain
    slot: u32,            // selection slot handled by one attention_pass pass
    tiles_per_group: u32, // attention_pass workgroups per group and pass
    gate: u32,            // 0: mean-key scores, 1: most recent first, 2: sinks then recent
    sink_blocks: u32,     // gate 2: blocks [0, sink_blocks) always win
}

// A read-only storage buffer rather than a uniform, so that burn's template kernels (which
// bind every argument as storage) run the same source.
@group(0) @binding(0) var<storage, read> params: Params;

const HEAD_VECS: u32 = HEAD_DIM / 4u;
// One head-dim vector (a query, key, value or gradient row) in registers.
alias HeadVector = array<vec4<f32>, HEAD_VECS>;
const LN_2: f32 = 0.6931471805599453;
// "Minus infinity" that stays finite, so that exp2(NEG_BIG - m) is exactly 0 without NaN.
const NEG_BIG: f32 = -3.0e38;

// Query rows of the whole problem: groups * group_size * q_len.
fn q_rows() -> u32 {
    return params.groups * params.group_size * params.q_len;
}

// Group (batch, kv head) of a flat query row.
fn row_group(row: u32) -> u32 {
    return row / (params.group_size * params.q_len);
}

// Absolute position of query t: the queries are the last q_len positions.
fn query_position(t: u32) -> u32 {
    return params.kv_len - params.q_len + t;
}

// Flat workgroup index of a grid folded into x and y by the host.
fn workgroup_index(wid: vec3<u32>, num: vec3<u32>) -> u32 {
    return wid.x + wid.y * num.x;
}

// Flat index of this thread in a linear grid of WORKGROUP_SIZE-thread workgroups.
fn thread_index(wid: vec3<u32>, num: vec3<u32>, lid: u32) -> u32 {
    return workgroup_index(wid, num) * WORKGROUP_SIZE + lid;
}

// Natural-log softmax normaliser from a running (max, sum) in the log2 domain.
fn log_sum_exp(state: vec2<f32>) -> f32 {
    return (state.x + log2(state.y)) * LN_2;
}
