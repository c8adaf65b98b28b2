// MoBA backward, dk and dv: for each key, the sum over the query rows that selected its block
// (every query head of the GQA group, every selection slot), in row order. Two kernels of one
// source: one thread per key (lanes_single.wgsl) or four lanes of a subgroup per key
// (lanes_subgroup.wgsl).
//
// Grid: groups * num_blocks * key_tiles workgroups, linear (key_tiles = ceil(block_size /
//       TILE_KEYS), TILE_KEYS = WORKGROUP_SIZE / LANES); workgroup (group, block, tile) owns
//       TILE_KEYS consecutive keys of the block, LANES threads per key (row_lanes.wgsl), each
//       holding its share of the key, value, dk and dv in registers.
// Rows: the workgroup walks the group's rows in order, WORKGROUP_SIZE candidates at a time
//       (a causal walk starts at the first row that can see its first key). Each thread tests
//       one candidate's selection; a prefix sum compacts the rows that chose the block, in
//       order; their q, dout and row terms are staged KEY_TILE rows at a time and every
//       key accumulates its gradients over the rows that can see it (the dot products summed
//       over its lanes, `lane_sum`: the lanes of a key take the same branches, so a shuffle
//       always finds its partners active). Summation order is the row order, so dk and dv are
//       the same bits on every run (no atomics).
// Memory: selection [rows, TOP_K] i32 (ascending, -1 padded); dk, dv [groups, kv_len,
//       HEAD_DIM] vec4 f32, every key written (zero where no row chose its block).
// Workgroup memory: staged q and dout (2 * KEY_TILE * HEAD_DIM StagedVector elements, f32 or
//       in the f16 variant f16 (staged_f16.wgsl): the forward's key/value tile budget), row
//       terms and positions, the candidate prefix sum and compacted rows.

const TILE_KEYS: u32 = WORKGROUP_SIZE / LANES;
// The host's grid counts QUERY_TILE keys per workgroup (src/gpu/schedule.rs), and sizes the
// subgroup kernels' workgroup as QUERY_TILE times its own LANES: the two must agree.
const_assert TILE_KEYS == QUERY_TILE;

@group(0) @binding(4) var<storage, read> selection: array<i32>;
@group(0) @binding(5) var<storage, read_write> dk: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> dv: array<vec4<f32>>;

var<workgroup> staged_query: array<StagedVector, KEY_TILE * HEAD_VECS>;
var<workgroup> staged_dout: array<StagedVector, KEY_TILE * HEAD_VECS>;
var<workgroup> staged_terms: array<vec2<f32>, KEY_TILE>;
var<workgroup> staged_position: array<u32, KEY_TILE>;
var<workgroup> prefix: array<u32, WORKGROUP_SIZE>;
var<workgroup> matched: array<u32, WORKGROUP_SIZE>;
var<workgroup> matched_count: u32;

// Whether flat row `row` chose `block` in any slot.
fn chose_block(row: u32, block: u32) -> bool {
    for (var slot = 0u; slot < TOP_K; slot++) {
        if selection[row * TOP_K + slot] == i32(block) {
            return true;
        }
    }
    return false;
}

// Compacts the candidates whose `chosen` is true into `matched`, in lid order, and returns
// how many there are (uniform). Call from uniform control flow.
fn compact_rows(chosen: bool, row: u32, lid: u32) -> u32 {
    prefix[lid] = u32(chosen);
    workgroupBarrier();
    for (var offset = 1u; offset < WORKGROUP_SIZE; offset <<= 1u) {
        var add = 0u;
        if lid >= offset {
            add = prefix[lid - offset];
        }
        workgroupBarrier();
        prefix[lid] += add;
        workgroupBarrier();
    }
    if chosen {
        matched[prefix[lid] - 1u] = row;
    }
    if lid == WORKGROUP_SIZE - 1u {
        matched_count = prefix[lid];
    }
    return workgroupUniformLoad(&matched_count);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(grid: GridPosition, @builtin(local_invocation_index) lid: u32) {
    let key_tiles = (params.block_size + TILE_KEYS - 1u) / TILE_KEYS;
    let index = workgroup_index(grid);
    let group = index / (params.num_blocks * key_tiles);
    if group >= groups() {
        return;
    }
    let block = (index / key_tiles) % params.num_blocks;
    let block_end = min((block + 1u) * params.block_size, params.kv_len);
    let first_key = block * params.block_size + (index % key_tiles) * TILE_KEYS;
    if first_key >= block_end {
        return;
    }
    let lane = lid % LANES;
    let key_index = first_key + lid / LANES;
    let is_key = key_index < block_end;
    let key_at = (group * params.kv_len + key_index) * HEAD_VECS;
    var key: LaneVector; // scaled into the log2 domain, as the scores are
    var value: LaneVector;
    var grad_key: LaneVector;
    var grad_value: LaneVector;
    if is_key {
        // unroll
        for (var i = 0u; i < LANE_VECS; i++) {
            key[i] = keys[key_at + lane_vec(i, lane)] * params.scale_log2;
            value[i] = values[key_at + lane_vec(i, lane)];
        }
    }
    // Causal: rows before the first key see none of this workgroup's keys.
    let first_position = params.kv_len - params.q_len;
    var first_query = 0u;
    if params.causal != 0u && first_key > first_position {
        first_query = first_key - first_position;
    }
    let rows_per_group = group_size() * params.q_len;
    for (var head = 0u; head < group_size(); head++) {
        let head_rows = group * rows_per_group + head * params.q_len;
        for (var chunk = first_query; chunk < params.q_len; chunk += WORKGROUP_SIZE) {
            let t = chunk + lid;
            let chosen = t < params.q_len && chose_block(head_rows + t, block);
            let count = compact_rows(chosen, head_rows + t, lid);
            for (var base = 0u; base < count; base += KEY_TILE) {
                let rows = min(KEY_TILE, count - base);
                for (var i = lid; i < rows * HEAD_VECS; i += WORKGROUP_SIZE) {
                    let row = matched[base + i / HEAD_VECS];
                    staged_query[i] = StagedVector(queries[row * HEAD_VECS + i % HEAD_VECS]);
                    staged_dout[i] = StagedVector(dout[row * HEAD_VECS + i % HEAD_VECS]);
                }
                if lid < rows {
                    let row = matched[base + lid];
                    staged_terms[lid] = row_terms[row];
                    staged_position[lid] = query_position(row % params.q_len);
                }
                workgroupBarrier();
                // Threads past the block's keys skip the rows where a key is one thread; with
                // lanes they compute on zeros: a branch around the shuffles made dk/dv 1.36x
                // slower on an H100 (bench-results/h100-vulkan-subgroup).
                if is_key || LANES > 1u {
                    for (var r = 0u; r < rows; r++) {
                        var score = 0.0;
                        var dp = 0.0;
                        // unroll
                        for (var i = 0u; i < LANE_VECS; i++) {
                            let at = r * HEAD_VECS + lane_vec(i, lane);
                            score += dot(key[i], vec4<f32>(staged_query[at]));
                            dp += dot(value[i], vec4<f32>(staged_dout[at]));
                        }
                        score = lane_sum(score);
                        dp = lane_sum(dp);
                        if key_visible(key_index, staged_position[r]) {
                            let gradient = score_gradient(score, dp, staged_terms[r]);
                            // unroll
                            for (var i = 0u; i < LANE_VECS; i++) {
                                let at = r * HEAD_VECS + lane_vec(i, lane);
                                grad_value[i] += gradient.x * vec4<f32>(staged_dout[at]);
                                grad_key[i] += gradient.y * vec4<f32>(staged_query[at]);
                            }
                        }
                    }
                }
                workgroupBarrier();
            }
        }
    }
    if is_key {
        let scale = params.scale_log2 * LN_2;
        // unroll
        for (var i = 0u; i < LANE_VECS; i++) {
            dk[key_at + lane_vec(i, lane)] = scale * grad_key[i];
            dv[key_at + lane_vec(i, lane)] = grad_value[i];
        }
    }
}
