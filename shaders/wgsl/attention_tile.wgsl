// Shared by the f32 attention kernels (attention_pass, dense_attention): a lane's share of a
// row's query, and one online-softmax step of a row against the staged keys (key_tiles.wgsl),
// the row split over LANES threads (row_lanes.wgsl).
//
// The query is pre-scaled by scale * log2(e), so exp2 replaces exp. Each lane keeps the row's
// softmax state itself (the same values in all of its lanes, from the same summed scores) and
// its share of the output.

// Lane `lane`'s share of the query of flat row `row`, scaled into the log2 domain.
fn load_query_share(row: u32, lane: u32) -> LaneVector {
    var query: LaneVector;
    // unroll
    for (var i = 0u; i < LANE_VECS; i++) {
        query[i] = queries[row * HEAD_VECS + lane_vec(i, lane)] * params.scale_log2;
    }
    return query;
}

// One online-softmax step: the row at `position` against the `count` staged keys, whose
// first sits at `first`. `state` is the running (max, sum) in the log2 domain and `acc` the
// lane's share of the unnormalised output. Keys the row does not see are masked (key_visible).
// `count` is the same in every thread, so the lanes' sums run in uniform control flow: call
// it from uniform control flow (rows past a tile's compute on zeros and write nothing).
fn attend_key_tile(
    query: ptr<function, LaneVector>,
    acc: ptr<function, LaneVector>,
    state: ptr<function, vec2<f32>>,
    lane: u32,
    position: u32,
    first: u32,
    count: u32,
) {
    var scores: array<f32, KEY_TILE>;
    var tile_max = NEG_BIG;
    for (var j = 0u; j < count; j++) {
        var partial = 0.0;
        // unroll
        for (var i = 0u; i < LANE_VECS; i++) {
            partial += dot((*query)[i], tile_key(j * HEAD_VECS + lane_vec(i, lane)));
        }
        let score = lane_sum(partial);
        scores[j] = NEG_BIG;
        if key_visible(first + j, position) {
            scores[j] = score;
            tile_max = max(tile_max, score);
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
    for (var j = 0u; j < count; j++) {
        let p = exp2(scores[j] - new_max);
        sum += p;
        // unroll
        for (var i = 0u; i < LANE_VECS; i++) {
            (*acc)[i] += p * tile_value(j * HEAD_VECS + lane_vec(i, lane));
        }
    }
    *state = vec2<f32>(new_max, sum);
}
