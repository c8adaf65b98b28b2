// MoBA attention in f32, one pass per selection slot: dense tiles of gathered query rows x the
// keys of one block (DESIGN §3: the inverted selection keeps the sparsity). Two kernels of one
// source: the portable one (any adapter, the browser included; one thread per row,
// lanes_single.wgsl) and the subgroup one (four lanes of a subgroup per row,
// lanes_subgroup.wgsl).
//
// Grid: per pass, tile_capacity workgroups per group (an upper bound on one slot's tiles:
//       group_size * q_len / QUERY_TILE + num_blocks), linear; block_tiles.wgsl gives each its
//       block and rows; surplus workgroups exit. LANES threads per row (block_tile_pass.wgsl,
//       row_lanes.wgsl): QUERY_TILE = WORKGROUP_SIZE / LANES.
// Tiles: the block's keys and values stream through workgroup memory KEY_TILE at a time
//       (key_tiles.wgsl), only those some row sees (block_tiles.wgsl: tile_key_range).
// State: the running output and (max, sum) carry over between passes in `out` and `stats`;
//        attention_finalize normalises after the last pass. Slot 0 is valid for every row
//        (selections are ascending, -1 padded), so it starts the state.

// The kernel's work on one tile (block_tile_pass.wgsl's entry calls it).
fn run_tile(tile: BlockTile, row: ThreadRow, keys: vec2<u32>, lid: u32) {
    var query: LaneVector;
    var acc: LaneVector;
    var state = vec2<f32>(NEG_BIG, 0.0);
    if row.present {
        query = load_query_share(row.flat, row.lane);
        if params.slot > 0u {
            // unroll
            for (var i = 0u; i < LANE_VECS; i++) {
                acc[i] = out[row.flat * HEAD_VECS + lane_vec(i, row.lane)];
            }
            state = stats[row.flat];
        }
    }
    for (var first = keys.x; first < keys.y; first += KEY_TILE) {
        let count = min(KEY_TILE, keys.y - first);
        stage_key_tile(tile.group, first, count, lid);
        attend_key_tile(&query, &acc, &state, row.lane, row.position, first, count);
        workgroupBarrier();
    }
    if row.present {
        // unroll
        for (var i = 0u; i < LANE_VECS; i++) {
            out[row.flat * HEAD_VECS + lane_vec(i, row.lane)] = acc[i];
        }
        if row.lane == 0u {
            stats[row.flat] = state;
        }
    }
}
