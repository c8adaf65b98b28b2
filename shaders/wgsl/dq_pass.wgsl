// MoBA backward, dq: one pass per selection slot over the forward's schedule (block_tiles.wgsl):
// dense tiles of gathered query rows x the keys of one block.
//
// Grid: as attention_pass: per pass, tile_capacity workgroups per group, linear; one row per
//       thread (QUERY_TILE = WORKGROUP_SIZE); surplus workgroups exit.
// Tiles: the block's keys and values stream through workgroup memory KEY_TILE at a time
//       (attention_tile.wgsl); a causal tile stops at the last position among its rows.
// Per row: dq += scale * sum_j p_j (dout . v_j - delta) k_j over the pass's block, with p from
//       the saved lse, so no softmax is recomputed. Slot 0 starts dq; later slots add to it.
//       Each row sits in exactly one tile per slot and the slots run in order, so dq is the
//       same bits on every run.
// Registers: the row's query, dout and dq (the loops over them are marked `// unroll`,
//       src/gpu/unroll.rs).
// Memory: dq [rows, HEAD_DIM] vec4 f32.

@group(0) @binding(8) var<storage, read_write> dq: array<vec4<f32>>;

// The kernel's work on one tile (block_tile_pass.wgsl's entry calls it).
fn run_tile(tile: BlockTile, row: ThreadRow, key_end: u32, lid: u32) {
    var query: HeadVector;
    var grad_out: HeadVector;
    var grad_query: HeadVector;
    var terms = vec2<f32>(0.0, 0.0);
    if row.present {
        query = load_query(row.flat);
        // unroll
        for (var i = 0u; i < HEAD_VECS; i++) {
            grad_out[i] = dout[row.flat * HEAD_VECS + i];
            grad_query[i] = vec4<f32>(0.0);
        }
        terms = row_terms[row.flat];
    }
    for (var first = tile.block * params.block_size; first < key_end; first += KEY_TILE) {
        let count = min(KEY_TILE, key_end - first);
        stage_key_tile(tile.group, first, count, lid);
        if row.present {
            for (var j = 0u; j < count; j++) {
                if params.causal != 0u && first + j > row.position {
                    break; // keys ascend: the rest of the tile is masked too
                }
                var score = 0.0;
                var dp = 0.0;
                // unroll
                for (var i = 0u; i < HEAD_VECS; i++) {
                    score += dot(query[i], key_tile[j * HEAD_VECS + i]);
                    dp += dot(grad_out[i], value_tile[j * HEAD_VECS + i]);
                }
                let ds = score_gradient(score, dp, terms).y;
                // unroll
                for (var i = 0u; i < HEAD_VECS; i++) {
                    grad_query[i] += ds * key_tile[j * HEAD_VECS + i];
                }
            }
        }
        workgroupBarrier();
    }
    if row.present {
        let scale = params.scale_log2 * LN_2;
        // unroll
        for (var i = 0u; i < HEAD_VECS; i++) {
            var total = scale * grad_query[i];
            if params.slot > 0u {
                total += dq[row.flat * HEAD_VECS + i];
            }
            dq[row.flat * HEAD_VECS + i] = total;
        }
    }
}
