// MoBA attention, one pass per selection slot: dense tiles of gathered query rows x the keys
// of one block (DESIGN §3: the inverted selection keeps the sparsity).
//
// Grid: per pass, tiles_per_group workgroups per group (an upper bound on one slot's tiles:
//       group_size * q_len / QUERY_TILE + num_blocks), linear; surplus workgroups exit.
//       Workgroup w of a group takes the w-th tile of slot `params.slot`; a binary search over
//       `starts` finds its block. A tile holds up to QUERY_TILE (= WORKGROUP_SIZE) rows of that
//       block's list, one row per thread.
// Tiles: the block's keys and values stream through workgroup memory KEY_TILE at a time; a
//       causal tile stops at the last position among its rows.
// State: between passes the running output (unnormalised) stays in `out` and the running
//        (max, sum) in `stats`; attention_finalize normalises after the last pass. Slot 0 is
//        valid for every row (selections are ascending, -1 padded), so it starts the state.
// Memory: queries [groups, group_size, q_len, HEAD_DIM], keys/values [groups, kv_len, HEAD_DIM]
//         (attention_tile.wgsl); lists and starts from selection_scatter / selection_scan;
//         out [rows, HEAD_DIM] vec4 f32; stats [rows] vec2 f32.

@group(0) @binding(4) var<storage, read> lists: array<u32>;
@group(0) @binding(5) var<storage, read> starts: array<vec2<u32>>;
@group(0) @binding(6) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> stats: array<vec2<f32>>;

var<workgroup> tile_last_position: atomic<u32>;
var<workgroup> tile_key_end: u32;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) num: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let index = workgroup_index(wid, num);
    let group = index / params.tiles_per_group;
    if group >= params.groups {
        return;
    }
    let lists_per_group = TOP_K * params.num_blocks;
    let slot_starts = group * (lists_per_group + 1u) + params.slot * params.num_blocks;
    let tile = starts[slot_starts].y + index % params.tiles_per_group;
    if tile >= starts[slot_starts + params.num_blocks].y {
        return;
    }
    // The block whose tiles contain `tile`: the last one starting at or before it.
    var block = 0u;
    var high = params.num_blocks - 1u;
    while block < high {
        let middle = (block + high + 1u) / 2u;
        if starts[slot_starts + middle].y <= tile {
            block = middle;
        } else {
            high = middle - 1u;
        }
    }
    let list = starts[slot_starts + block];
    let first_entry = list.x + (tile - list.y) * QUERY_TILE;
    let list_end = starts[slot_starts + block + 1u].x;
    let rows_per_group = params.group_size * params.q_len;

    let is_row = lid < min(QUERY_TILE, list_end - first_entry);
    var row = 0u;
    var position = 0u;
    var query: HeadVector;
    var acc: HeadVector;
    var state = vec2<f32>(NEG_BIG, 0.0);
    if lid == 0u {
        atomicStore(&tile_last_position, 0u);
    }
    workgroupBarrier();
    if is_row {
        let local_row = lists[group * rows_per_group * TOP_K + first_entry + lid];
        row = group * rows_per_group + local_row;
        position = query_position(local_row % params.q_len);
        query = load_query(row);
        if params.slot > 0u {
            for (var i = 0u; i < HEAD_VECS; i++) {
                acc[i] = out[row * HEAD_VECS + i];
            }
            state = stats[row];
        }
        atomicMax(&tile_last_position, position);
    }
    workgroupBarrier();

    let block_first = block * params.block_size;
    if lid == 0u {
        var key_end = min(block_first + params.block_size, params.kv_len);
        if params.causal != 0u {
            key_end = min(key_end, atomicLoad(&tile_last_position) + 1u);
        }
        tile_key_end = key_end;
    }
    let key_end = workgroupUniformLoad(&tile_key_end);
    for (var first = block_first; first < key_end; first += KEY_TILE) {
        let count = min(KEY_TILE, key_end - first);
        stage_key_tile(group, first, count, lid);
        if is_row {
            attend_key_tile(&query, &acc, &state, first, count, position);
        }
        workgroupBarrier();
    }
    if is_row {
        for (var i = 0u; i < HEAD_VECS; i++) {
            out[row * HEAD_VECS + i] = acc[i];
        }
        stats[row] = state;
    }
}
