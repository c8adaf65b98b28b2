// MoBA attention in f32, one pass per selection slot: dense tiles of gathered query rows x the
// keys of one block (DESIGN §3: the inverted selection keeps the sparsity). The portable kernel:
// any adapter, the browser included.
//
// Grid: per pass, tile_capacity workgroups per group (an upper bound on one slot's tiles:
//       group_size * q_len / QUERY_TILE + num_blocks), linear; block_tiles.wgsl gives each its
//       block and rows; surplus workgroups exit. One row per thread (QUERY_TILE = WORKGROUP_SIZE).
// Tiles: the block's keys and values stream through workgroup memory KEY_TILE at a time
//       (attention_tile.wgsl); a causal tile stops at the last position among its rows.
// State: the running output and (max, sum) carry over between passes in `out` and `stats`;
//        attention_finalize normalises after the last pass. Slot 0 is valid for every row
//        (selections are ascending, -1 padded), so it starts the state.

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(grid: GridPosition, @builtin(local_invocation_index) lid: u32) {
    let tile = block_tile(workgroup_index(grid));
    if tile.rows == 0u {
        return;
    }
    let is_row = lid < tile.rows;
    var row = vec2<u32>(0u, 0u); // (flat row, position)
    var query: HeadVector;
    var acc: HeadVector;
    var state = vec2<f32>(NEG_BIG, 0.0);
    if is_row {
        row = tile_row(tile, lid);
        query = load_query(row.x);
        if params.slot > 0u {
            for (var i = 0u; i < HEAD_VECS; i++) {
                acc[i] = out[row.x * HEAD_VECS + i];
            }
            state = stats[row.x];
        }
    }
    let key_end = shared_key_end(tile, is_row, row.y, lid);
    for (var first = tile.block * params.block_size; first < key_end; first += KEY_TILE) {
        let count = min(KEY_TILE, key_end - first);
        stage_key_tile(tile.group, first, count, lid);
        if is_row {
            attend_key_tile(&query, &acc, &state, first, count, row.y);
        }
        workgroupBarrier();
    }
    if is_row {
        for (var i = 0u; i < HEAD_VECS; i++) {
            out[row.x * HEAD_VECS + i] = acc[i];
        }
        stats[row.x] = state;
    }
}
