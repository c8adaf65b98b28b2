// MoBA backward, dq: one pass per selection slot over the forward's schedule (block_tiles.wgsl):
// dense tiles of gathered query rows x the keys of one block. Two kernels of one source, as
// attention_pass.wgsl: one thread per row (lanes_single.wgsl) or four lanes of a subgroup per
// row (lanes_subgroup.wgsl).
//
// Grid: as attention_pass: per pass, tile_capacity workgroups per group, linear; LANES threads
//       per row (QUERY_TILE = WORKGROUP_SIZE / LANES); surplus workgroups exit.
// Tiles: the block's keys and values stream through workgroup memory KEY_TILE at a time
//       (key_tiles.wgsl), only those some row sees (block_tiles.wgsl: tile_key_range).
// Per row: dq += scale * sum_j p_j (dout . v_j - delta) k_j over the pass's block, with p from
//       the saved lse, so no softmax is recomputed; both dot products are the lanes' partial
//       sums (`lane_sum`), and each lane adds its share of dq. Slot 0 starts dq; later slots
//       add to it. Each row sits in exactly one tile per slot and the slots run in order, so
//       dq is the same bits on every run.
// Registers: the lane's shares of the query, dout and dq (row_lanes.wgsl). Every lane runs
//       every sum (uniform control flow): rows past the tile's compute on zeros and write
//       nothing.
// Memory: dq [rows, HEAD_DIM] vec4 f32.

@group(0) @binding(8) var<storage, read_write> dq: array<vec4<f32>>;

// The kernel's work on one tile (block_tile_pass.wgsl's entry calls it).
fn run_tile(tile: BlockTile, row: ThreadRow, keys: vec2<u32>, lid: u32) {
    var query: LaneVector;
    var grad_out: LaneVector;
    var grad_query: LaneVector;
    var terms = vec2<f32>(0.0, 0.0);
    if row.present {
        query = load_query_share(row.flat, row.lane);
        // unroll
        for (var i = 0u; i < LANE_VECS; i++) {
            grad_out[i] = dout[row.flat * HEAD_VECS + lane_vec(i, row.lane)];
        }
        terms = row_terms[row.flat];
    }
    for (var first = keys.x; first < keys.y; first += KEY_TILE) {
        let count = min(KEY_TILE, keys.y - first);
        stage_key_tile(tile.group, first, count, lid);
        for (var j = 0u; j < count; j++) {
            var score = 0.0;
            var dp = 0.0;
            // unroll
            for (var i = 0u; i < LANE_VECS; i++) {
                let at = j * HEAD_VECS + lane_vec(i, row.lane);
                score += dot(query[i], tile_key(at));
                dp += dot(grad_out[i], tile_value(at));
            }
            score = lane_sum(score);
            dp = lane_sum(dp);
            if key_visible(first + j, row.position) {
                let ds = score_gradient(score, dp, terms).y;
                // unroll
                for (var i = 0u; i < LANE_VECS; i++) {
                    grad_query[i] += ds * tile_key(j * HEAD_VECS + lane_vec(i, row.lane));
                }
            }
        }
        workgroupBarrier();
    }
    if row.present {
        let scale = params.scale_log2 * LN_2;
        // unroll
        for (var i = 0u; i < LANE_VECS; i++) {
            let at = row.flat * HEAD_VECS + lane_vec(i, row.lane);
            var total = scale * grad_query[i];
            if params.slot > 0u {
                total += dq[at];
            }
            dq[at] = total;
        }
    }
}
