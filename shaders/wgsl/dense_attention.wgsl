// Dense flash attention (causal or full): the baseline MoBA is timed against on the same
// adapter, built from the same tile step as attention_pass.
//
// Grid: one workgroup per (group, query head in group, tile of QUERY_TILE consecutive
//       queries), linear. One thread per query row.
// Tiles: all keys stream through workgroup memory KEY_TILE at a time (key_tiles.wgsl);
//        a causal tile stops at its last query's position.
// Memory: queries [groups, group_size, q_len, HEAD_DIM], keys/values [groups, kv_len, HEAD_DIM]
//         vec4 f32; out [rows, HEAD_DIM] vec4 f32; lse [rows] f32 (natural log).

@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(grid: GridPosition, @builtin(local_invocation_index) lid: u32) {
    let tiles_per_head = (params.q_len + QUERY_TILE - 1u) / QUERY_TILE;
    let index = workgroup_index(grid);
    let head = index / tiles_per_head; // flat (group, head in group)
    if head >= groups() * group_size() {
        return;
    }
    let group = head / group_size();
    let first_query = (index % tiles_per_head) * QUERY_TILE;
    let t = first_query + lid;
    let is_row = t < params.q_len;
    let row = head * params.q_len + t;
    let position = query_position(t);

    var key_end = params.kv_len;
    if params.causal != 0u {
        let last_query = min(first_query + QUERY_TILE, params.q_len) - 1u;
        key_end = query_position(last_query) + 1u;
    }
    // One thread per row (lanes_single.wgsl): a lane's share is the whole row.
    var query: LaneVector;
    var acc: LaneVector;
    var state = vec2<f32>(NEG_BIG, 0.0);
    if is_row {
        query = load_query_share(row, 0u);
    }
    for (var first = 0u; first < key_end; first += KEY_TILE) {
        let count = min(KEY_TILE, key_end - first);
        stage_key_tile(group, first, count, lid);
        attend_key_tile(&query, &acc, &state, 0u, position, first, count);
        workgroupBarrier();
    }
    if is_row {
        let inverse_sum = 1.0 / state.y;
        for (var i = 0u; i < HEAD_VECS; i++) {
            out[row * HEAD_VECS + i] = acc[i] * inverse_sum;
        }
        lse[row] = log_sum_exp(state);
    }
}
