// MoBA decode split over keys (flash-decoding): the few query rows of a (batch, kv head) group
// against one chunk of WORKGROUP_SIZE keys of one block, for the rows that selected that
// block. A single query cannot fill a GPU with row tiles; chunks of the selected blocks can,
// and each key and value is read once for the whole GQA group.
//
// Grid: groups * num_blocks * chunks_per_block() workgroups, linear: (group, block, chunk).
//       Workgroups whose chunk lies past the keys, or whose block no row of the group
//       selected, exit at once.
// Threads: one key each for the scores of every row (the loops over rows are marked
//       `// unroll`); then (row, column vector) pairs for the weighted sum of the values.
// Memory: workgroup: the group's queries (QUERY_TILE x HEAD_DIM f32), the chunk's scores then
//       probabilities (QUERY_TILE x WORKGROUP_SIZE f32), each row's slot.
//       keys, values [groups, kv_stride, HEAD_DIM] vec4 f32 (kv_stride: kv_len, or a KV
//       cache's capacity, of which the first kv_len rows hold keys);
//       selection [rows, TOP_K] i32; partial_out [rows, TOP_K, chunks, HEAD_DIM] vec4 f32,
//       unnormalised; partial_stats [rows, TOP_K, chunks] vec2 f32 (max, sum) in the log2
//       domain, sum 0 for a chunk whose keys the row cannot see. Every (row, slot, chunk) of
//       a selected block is written.

@group(0) @binding(4) var<storage, read> selection: array<i32>;
@group(0) @binding(5) var<storage, read_write> partial_out: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> partial_stats: array<vec2<f32>>;

// The row did not select this block.
const NO_SLOT: u32 = 0xffffffffu;

var<workgroup> group_queries: array<vec4<f32>, QUERY_TILE * HEAD_VECS>;
var<workgroup> chunk_scores: array<f32, QUERY_TILE * WORKGROUP_SIZE>;
var<workgroup> row_slot: array<u32, QUERY_TILE>;
var<workgroup> block_selected: u32;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(grid: GridPosition, @builtin(local_invocation_index) lid: u32) {
    let chunks = chunks_per_block();
    let index = workgroup_index(grid);
    let chunk = index % chunks;
    let block = (index / chunks) % params.num_blocks;
    let group = index / (chunks * params.num_blocks);
    if group >= groups() || chunk >= chunks_in_block(block) {
        return;
    }
    let first = block * params.block_size + chunk * WORKGROUP_SIZE;
    let count = min(WORKGROUP_SIZE, min((block + 1u) * params.block_size, params.kv_len) - first);
    let rows = group * QUERY_TILE;

    if lid < QUERY_TILE {
        var slot = NO_SLOT;
        for (var s = 0u; s < TOP_K; s++) {
            if selection[(rows + lid) * TOP_K + s] == i32(block) {
                slot = s;
            }
        }
        row_slot[lid] = slot;
    }
    workgroupBarrier();
    if lid == 0u {
        var selected = 0u;
        for (var r = 0u; r < QUERY_TILE; r++) {
            selected |= u32(row_slot[r] != NO_SLOT);
        }
        block_selected = selected;
    }
    if workgroupUniformLoad(&block_selected) == 0u {
        return;
    }
    for (var e = lid; e < QUERY_TILE * HEAD_VECS; e += WORKGROUP_SIZE) {
        group_queries[e] = queries[rows * HEAD_VECS + e];
    }
    workgroupBarrier();

    // Scores of this thread's key against every row, in the log2 domain; masked: NEG_BIG.
    let key = first + lid;
    var scores: array<f32, QUERY_TILE>;
    // unroll
    for (var r = 0u; r < QUERY_TILE; r++) {
        scores[r] = 0.0;
    }
    if lid < count {
        let key_row = (group * params.kv_stride + key) * HEAD_VECS;
        for (var i = 0u; i < HEAD_VECS; i++) {
            let k = keys[key_row + i];
            // unroll
            for (var r = 0u; r < QUERY_TILE; r++) {
                scores[r] += dot(group_queries[r * HEAD_VECS + i], k);
            }
        }
    }
    // unroll
    for (var r = 0u; r < QUERY_TILE; r++) {
        let visible = lid < count && row_slot[r] != NO_SLOT
            && key_visible(key, query_position(r % params.q_len));
        chunk_scores[r * WORKGROUP_SIZE + lid] = select(NEG_BIG, scores[r] * params.scale_log2, visible);
    }
    workgroupBarrier();

    // Each row's max and sum over the chunk; its scores become probabilities.
    if lid < QUERY_TILE && row_slot[lid] != NO_SLOT {
        let scores_at = lid * WORKGROUP_SIZE;
        var row_max = NEG_BIG;
        for (var t = 0u; t < count; t++) {
            row_max = max(row_max, chunk_scores[scores_at + t]);
        }
        var sum = 0.0;
        for (var t = 0u; t < count; t++) {
            let score = chunk_scores[scores_at + t];
            // A masked key weighs 0, also in a chunk the row cannot see at all (max NEG_BIG).
            let p = select(exp2(score - row_max), 0.0, score == NEG_BIG);
            chunk_scores[scores_at + t] = p;
            sum += p;
        }
        partial_stats[partial_index(rows + lid, row_slot[lid], chunk)] = vec2<f32>(row_max, sum);
    }
    workgroupBarrier();

    // The weighted sum of the chunk's values, one (row, column vector) at a time.
    for (var e = lid; e < QUERY_TILE * HEAD_VECS; e += WORKGROUP_SIZE) {
        let r = e / HEAD_VECS;
        let i = e % HEAD_VECS;
        let slot = row_slot[r];
        if slot != NO_SLOT {
            var acc = vec4<f32>(0.0);
            for (var t = 0u; t < count; t++) {
                let value = values[(group * params.kv_stride + first + t) * HEAD_VECS + i];
                acc += chunk_scores[r * WORKGROUP_SIZE + t] * value;
            }
            partial_out[partial_index(rows + r, slot, chunk) * HEAD_VECS + i] = acc;
        }
    }
}
