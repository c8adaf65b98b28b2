// NSA's selected branch (../shared/NSA.md, step 2: o_slc), group-centric: the query heads of
// a (batch, kv head) group at one query against the blocks the group selected, each key and
// value read once for all of them (as NSA's own kernel does; MoBA's kernels, given the
// selection per head, read every block once per head).
//
// Params: MoBA's, with block_size = l' (keys per selection block) and scale_log2 the
//       softmax's scale times log2(e); keys and values are read at params.kv_stride.
//       TOP_K = top_n; QUERY_TILE = query heads per workgroup (a divisor of the group size);
//       WORKGROUP_SIZE a multiple of HEAD_VECS. Causal, with no other mask: the host
//       launches it for no other config.
// Grid: groups * q_len * (group_size / QUERY_TILE) workgroups (folded): (group, query, head
//       tile), linear.
// Threads: for the scores, one key of a tile of WORKGROUP_SIZE keys each, against every row
//       (the loops over rows are marked `// unroll`); for the weighted sum of the values,
//       lid = row_set * HEAD_VECS + column holds that column vector of the rows row_set,
//       row_set + ROW_SETS, ...
// Memory: workgroup: the rows' queries times scale_log2 (QUERY_TILE x HEAD_DIM f32), a key
//       tile's scores then probabilities (QUERY_TILE x WORKGROUP_SIZE f32), each row's
//       running (max, sum) in the log2 domain and its last rescale.
//       queries [groups, group_size, q_len, HEAD_DIM] vec4 f32; keys, values [groups,
//       kv_stride, HEAD_DIM] vec4 f32; selection [groups, q_len, TOP_K] i32, the group's,
//       ascending and -1 padded (NSA forces the row's own block and lists none after it, so
//       every listed block has a key the row sees); out [rows, HEAD_DIM] vec4 f32; lse
//       [rows] f32, natural log; head_selection [rows, TOP_K] i32: the group's selection
//       for each of its heads, what MoBA's backward reads. Rows: [groups, group_size, q_len].

@group(0) @binding(1) var<storage, read> queries: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> keys: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> values: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> selection: array<i32>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> lse: array<f32>;
@group(0) @binding(7) var<storage, read_write> head_selection: array<i32>;

// Rows whose column vector i one thread holds in the weighted sum.
const ROW_SETS: u32 = WORKGROUP_SIZE / HEAD_VECS;
const ROWS_PER_SET: u32 = (QUERY_TILE + ROW_SETS - 1u) / ROW_SETS;

var<workgroup> tile_queries: array<vec4<f32>, QUERY_TILE * HEAD_VECS>;
var<workgroup> tile_scores: array<f32, QUERY_TILE * WORKGROUP_SIZE>;
var<workgroup> row_state: array<vec2<f32>, QUERY_TILE>;
var<workgroup> row_rescale: array<f32, QUERY_TILE>;
var<workgroup> slot_block: i32;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(grid: GridPosition, @builtin(local_invocation_index) lid: u32) {
    let head_tiles = group_size() / QUERY_TILE;
    let index = workgroup_index(grid);
    let head_tile = index % head_tiles;
    let t = (index / head_tiles) % params.q_len;
    let group = index / (head_tiles * params.q_len);
    if group >= groups() {
        return;
    }
    let position = query_position(t);
    // Tile row r is query row (first_head + r) * q_len + t.
    let first_head = group * group_size() + head_tile * QUERY_TILE;
    let chosen = (group * params.q_len + t) * TOP_K;

    for (var e = lid; e < QUERY_TILE * HEAD_VECS; e += WORKGROUP_SIZE) {
        let row = (first_head + e / HEAD_VECS) * params.q_len + t;
        tile_queries[e] = queries[row * HEAD_VECS + e % HEAD_VECS] * params.scale_log2;
    }
    for (var e = lid; e < QUERY_TILE * TOP_K; e += WORKGROUP_SIZE) {
        let row = (first_head + e / TOP_K) * params.q_len + t;
        head_selection[row * TOP_K + e % TOP_K] = selection[chosen + e % TOP_K];
    }
    if lid < QUERY_TILE {
        row_state[lid] = vec2<f32>(NEG_BIG, 0.0);
    }
    let column = lid % HEAD_VECS;
    let row_set = lid / HEAD_VECS;
    var acc: array<vec4<f32>, ROWS_PER_SET>;
    // unroll
    for (var u = 0u; u < ROWS_PER_SET; u++) {
        acc[u] = vec4<f32>(0.0);
    }

    for (var s = 0u; s < TOP_K; s++) {
        if lid == 0u {
            slot_block = selection[chosen + s];
        }
        let block = workgroupUniformLoad(&slot_block);
        if block < 0 {
            break;
        }
        let start = u32(block) * params.block_size;
        let end = min(min(start + params.block_size, params.kv_len), position + 1u);
        for (var first = start; first < end; first += WORKGROUP_SIZE) {
            let count = min(WORKGROUP_SIZE, end - first);

            // Scores of this thread's key against every row, in the log2 domain.
            var scores: array<f32, QUERY_TILE>;
            // unroll
            for (var r = 0u; r < QUERY_TILE; r++) {
                scores[r] = 0.0;
            }
            if lid < count {
                let key_row = (group * params.kv_stride + first + lid) * HEAD_VECS;
                for (var h = 0u; h < HEAD_VECS; h++) {
                    let key = keys[key_row + h];
                    // unroll
                    for (var r = 0u; r < QUERY_TILE; r++) {
                        scores[r] += dot(tile_queries[r * HEAD_VECS + h], key);
                    }
                }
            }
            // unroll
            for (var r = 0u; r < QUERY_TILE; r++) {
                tile_scores[r * WORKGROUP_SIZE + lid] = scores[r];
            }
            workgroupBarrier();

            // Each row's online softmax over the tile's `count` keys: probabilities in place.
            if lid < QUERY_TILE {
                let base = lid * WORKGROUP_SIZE;
                var tile_max = NEG_BIG;
                for (var j = 0u; j < count; j++) {
                    tile_max = max(tile_max, tile_scores[base + j]);
                }
                let state = row_state[lid];
                let m = max(state.x, tile_max);
                let rescale = exp2(state.x - m);
                var sum = state.y * rescale;
                for (var j = 0u; j < count; j++) {
                    let p = exp2(tile_scores[base + j] - m);
                    tile_scores[base + j] = p;
                    sum += p;
                }
                row_state[lid] = vec2<f32>(m, sum);
                row_rescale[lid] = rescale;
            }
            workgroupBarrier();

            // The weighted sum of the tile's values, column vector `column` of this
            // thread's rows.
            // unroll
            for (var u = 0u; u < ROWS_PER_SET; u++) {
                let r = row_set + u * ROW_SETS;
                if r < QUERY_TILE {
                    acc[u] *= row_rescale[r];
                }
            }
            let value_row = (group * params.kv_stride + first) * HEAD_VECS + column;
            for (var j = 0u; j < count; j++) {
                let value = values[value_row + j * HEAD_VECS];
                // unroll
                for (var u = 0u; u < ROWS_PER_SET; u++) {
                    let r = row_set + u * ROW_SETS;
                    if r < QUERY_TILE {
                        acc[u] += tile_scores[r * WORKGROUP_SIZE + j] * value;
                    }
                }
            }
            workgroupBarrier();
        }
    }

    // unroll
    for (var u = 0u; u < ROWS_PER_SET; u++) {
        let r = row_set + u * ROW_SETS;
        if r < QUERY_TILE {
            let row = (first_head + r) * params.q_len + t;
            out[row * HEAD_VECS + column] = acc[u] / row_state[r].y;
        }
    }
    if lid < QUERY_TILE {
        lse[(first_head + lid) * params.q_len + t] = log_sum_exp(row_state[lid]);
    }
}
