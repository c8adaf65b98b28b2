// MoBA attention in f32 with each query row split over LANES threads of a subgroup
// (row_lanes.wgsl), one pass per selection slot: the schedule of attention_pass.wgsl
// (block_tiles.wgsl) for adapters with subgroup operations.
//
// Grid: as attention_pass.wgsl: per pass, tile_capacity workgroups per group, linear;
//       surplus workgroups exit.
// Threads: LANES consecutive threads per row (block_tile_pass.wgsl), QUERY_TILE =
//       WORKGROUP_SIZE / LANES rows per tile. A score is the lanes' partial dot products summed
//       by subgroup shuffles; each lane then keeps the row's softmax state itself (the same
//       values in all of them) and its share of the output.
// Tiles: the block's keys and values stream through workgroup memory KEY_TILE at a time
//       (key_tiles.wgsl); a causal tile stops at the last position among its rows.
// State: as attention_pass.wgsl: `out` and `stats` carry a row from pass to pass;
//       attention_finalize normalises after the last pass.
// Registers: the loops over a lane's vectors and over the staged keys are marked `// unroll`
//       (src/gpu/unroll.rs), so the query, output and scores stay in registers. Every lane of
//       a tile runs every shuffle (uniform control flow): rows past the tile's compute on
//       zeros and write nothing.

// The kernel's work on one tile (block_tile_pass.wgsl's entry calls it).
fn run_tile(tile: BlockTile, row: ThreadRow, key_end: u32, lid: u32) {
    var query: LaneVector;
    var acc: LaneVector;
    var state = vec2<f32>(NEG_BIG, 0.0);
    if row.present {
        // unroll
        for (var i = 0u; i < LANE_VECS; i++) {
            let at = row.flat * HEAD_VECS + lane_vec(i, row.lane);
            query[i] = queries[at] * params.scale_log2;
            if params.slot > 0u {
                acc[i] = out[at];
            }
        }
        if params.slot > 0u {
            state = stats[row.flat];
        }
    }
    for (var first = tile.block * params.block_size; first < key_end; first += KEY_TILE) {
        let count = min(KEY_TILE, key_end - first);
        stage_key_tile(tile.group, first, count, lid);
        attend_lane_tile(&query, &acc, &state, row, first, count);
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

// One online-softmax step of the row against the `count` staged keys (the first at
// absolute position `first`); keys after the row's position are masked when causal.
// `count` is the same in every thread, so the shuffles run in uniform control flow.
fn attend_lane_tile(
    query: ptr<function, LaneVector>,
    acc: ptr<function, LaneVector>,
    state: ptr<function, vec2<f32>>,
    row: ThreadRow,
    first: u32,
    count: u32,
) {
    var scores: array<f32, KEY_TILE>;
    var tile_max = NEG_BIG;
    // unroll
    for (var j = 0u; j < KEY_TILE; j++) {
        scores[j] = NEG_BIG;
        if j < count {
            var partial = 0.0;
            // unroll
            for (var i = 0u; i < LANE_VECS; i++) {
                partial += dot((*query)[i], key_tile[j * HEAD_VECS + lane_vec(i, row.lane)]);
            }
            let score = lane_sum(partial);
            if params.causal == 0u || first + j <= row.position {
                scores[j] = score;
                tile_max = max(tile_max, score);
            }
        }
    }
    if tile_max == NEG_BIG {
        return; // every key of the tile is masked for this row
    }
    let new_max = max((*state).x, tile_max);
    let correction = exp2((*state).x - new_max);
    var sum = (*state).y * correction;
    // unroll
    for (var i = 0u; i < LANE_VECS; i++) {
        (*acc)[i] *= correction;
    }
    // unroll
    for (var j = 0u; j < KEY_TILE; j++) {
        if j < count {
            let p = exp2(scores[j] - new_max);
            sum += p;
            // unroll
            for (var i = 0u; i < LANE_VECS; i++) {
                (*acc)[i] += p * value_tile[j * HEAD_VECS + lane_vec(i, row.lane)];
            }
        }
    }
    *state = vec2<f32>(new_max, sum);
}
