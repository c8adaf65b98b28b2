// Shared by the f32 attention kernels whose thread owns a whole query row: its query and one
// online-softmax step against the staged keys (key_tiles.wgsl).
//
// One thread owns one query row: its query (pre-scaled by scale * log2(e), so exp2 replaces
// exp) and its output accumulator stay in registers, HEAD_VECS vec4 each: the loops over them
// are marked `// unroll` (the host writes them out, src/gpu/unroll.rs), since an array indexed
// by a rolled loop's variable lives in local memory (2.4x slower on an H200).

// The query of a flat row, scaled into the log2 domain.
fn load_query(row: u32) -> HeadVector {
    var query: HeadVector;
    // unroll
    for (var i = 0u; i < HEAD_VECS; i++) {
        query[i] = queries[row * HEAD_VECS + i] * params.scale_log2;
    }
    return query;
}

// One online-softmax step: the row at `position` against the `count` staged keys, whose
// first sits at `first`. `state` is the running (max, sum) in the log2 domain and `acc` the
// unnormalised output. Keys after the query are masked when causal.
fn attend_key_tile(
    query: ptr<function, HeadVector>,
    acc: ptr<function, HeadVector>,
    state: ptr<function, vec2<f32>>,
    first: u32,
    count: u32,
    position: u32,
) {
    var scores: array<f32, KEY_TILE>;
    var tile_max = NEG_BIG;
    for (var j = 0u; j < count; j++) {
        var score = NEG_BIG;
        if params.causal == 0u || first + j <= position {
            score = 0.0;
            // unroll
            for (var i = 0u; i < HEAD_VECS; i++) {
                score += dot((*query)[i], key_tile[j * HEAD_VECS + i]);
            }
        }
        scores[j] = score;
        tile_max = max(tile_max, score);
    }
    if tile_max == NEG_BIG {
        return; // every key of the tile is masked for this row
    }
    let new_max = max((*state).x, tile_max);
    let correction = exp2((*state).x - new_max);
    var sum = (*state).y * correction;
    // unroll
    for (var i = 0u; i < HEAD_VECS; i++) {
        (*acc)[i] *= correction;
    }
    for (var j = 0u; j < count; j++) {
        let p = exp2(scores[j] - new_max);
        sum += p;
        // unroll
        for (var i = 0u; i < HEAD_VECS; i++) {
            (*acc)[i] += p * value_tile[j * HEAD_VECS + i];
        }
    }
    *state = vec2<f32>(new_max, sum);
}
