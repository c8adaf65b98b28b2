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

// The kernel's work on one tile (block_tile_pass.wgsl's entry calls it).
fn run_tile(tile: BlockTile, row: ThreadRow, key_end: u32, lid: u32) {
    var query: HeadVector;
    var acc: HeadVector;
    var state = vec2<f32>(NEG_BIG, 0.0);
    if row.present {
        query = load_query(row.flat);
        if params.slot > 0u {
            // unroll
            for (var i = 0u; i < HEAD_VECS; i++) {
                acc[i] = out[row.flat * HEAD_VECS + i];
            }
            state = stats[row.flat];
        }
    }
    for (var first = tile.block * params.block_size; first < key_end; first += KEY_TILE) {
        let count = min(KEY_TILE, key_end - first);
        stage_key_tile(tile.group, first, count, lid);
        if row.present {
            attend_key_tile(&query, &acc, &state, first, count, row.position);
        }
        workgroupBarrier();
    }
    if row.present {
        // unroll
        for (var i = 0u; i < HEAD_VECS; i++) {
            out[row.flat * HEAD_VECS + i] = acc[i];
        }
        stats[row.flat] = state;
    }
}
