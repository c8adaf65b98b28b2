// Gate and top-k: the blocks every query row attends.
//
// Grid: GATE_LANES threads per query row (groups * group_size * q_len rows), linear, from
//       gate_row_thread.wgsl (one thread a row, WORKGROUP_SIZE rows per workgroup: prefills)
//       or gate_row_workgroup.wgsl (one workgroup a row: decodes, whose few rows would leave
//       the GPU idle); lane l of a row ranks its blocks l, l + GATE_LANES, ... and
//       `merge_lanes` gives lane 0 the best of all of them.
// Registers: each thread keeps its query (HEAD_VECS vec4) and its best TOP_K (score, block)
//       pairs while it streams over the block means, so no [rows, num_blocks] score matrix
//       ever exists. The loops over the query are marked `// unroll` (src/gpu/unroll.rs).
// Scores: q . mean key (MoBA), or a fixed score for the static gates (block id within the
//       row's sequence; sinks, its first blocks, above every other block), the same rule as
//       `Gate::static_score` on the host.
// Rule (DESIGN §1): causal rows force their own block and rank only earlier blocks of their
//       own sequence; ties go to the larger block id. Non-causal rows rank every block.
//       (score, block) pairs are totally ordered, so how the lanes split the blocks does
//       not change the choice.
// Memory: queries [rows, HEAD_DIM] vec4 f32; block_means [groups, means_stride (num_blocks, or a
//         KV cache's capacity in blocks), HEAD_DIM] vec4 f32;
//         selection [rows, TOP_K] i32, ascending, padded with -1; sequence_starts [num_blocks]
//         u32, the first block of each block's sequence (all 0 but where sequences of a varlen
//         batch are packed, each from a block boundary).

// No block: above every block id.
const NO_BLOCK: u32 = 0xffffffffu;

@group(0) @binding(1) var<storage, read> queries: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> block_means: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> selection: array<i32>;
@group(0) @binding(4) var<storage, read> sequence_starts: array<u32>;

// Whether (score, block) ranks above (other_score, other_block): a higher score, or an
// equal score and a more recent block.
fn outranks(score: f32, block: u32, other_score: f32, other_block: u32) -> bool {
    return score > other_score || (score == other_score && block > other_block);
}

// Keeps (score, block) among the best `places` pairs so far (`best_score`/`best_block`, best
// first, `*kept` of them valid).
fn keep_best(
    score: f32,
    block: u32,
    best_score: ptr<function, array<f32, TOP_K>>,
    best_block: ptr<function, array<u32, TOP_K>>,
    kept: ptr<function, u32>,
    places: u32,
) {
    if *kept < places {
        *kept += 1u;
    } else if places == 0u
        || !outranks(score, block, (*best_score)[places - 1u], (*best_block)[places - 1u]) {
        return;
    }
    var at = *kept - 1u;
    while at > 0u && outranks(score, block, (*best_score)[at - 1u], (*best_block)[at - 1u]) {
        (*best_score)[at] = (*best_score)[at - 1u];
        (*best_block)[at] = (*best_block)[at - 1u];
        at -= 1u;
    }
    (*best_score)[at] = score;
    (*best_block)[at] = block;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(grid: GridPosition, @builtin(local_invocation_index) lid: u32) {
    let row = gate_row(grid, lid);
    if row >= q_rows() {
        return;
    }
    let lane = lid % GATE_LANES;
    var query: array<vec4<f32>, HEAD_VECS>;
    // unroll
    for (var i = 0u; i < HEAD_VECS; i++) {
        query[i] = queries[row * HEAD_VECS + i];
    }
    let current = query_position(row % params.q_len) / params.block_size;
    let means = row_group(row) * params.means_stride * HEAD_VECS;

    // Causal rows rank the blocks of their sequence before their own for TOP_K - 1 places.
    var places = TOP_K;
    var first = 0u;
    var eligible = params.num_blocks;
    if params.causal != 0u {
        places = TOP_K - 1u;
        first = sequence_starts[current];
        // Causal top-1 ranks no block (and its block means are never pooled).
        eligible = select(current, 0u, places == 0u);
    }
    // The best blocks so far, best first; `kept` of them are valid.
    var best_score: array<f32, TOP_K>;
    var best_block: array<u32, TOP_K>;
    var kept = 0u;
    for (var block = first + lane; block < eligible; block += GATE_LANES) {
        let local = block - first; // the block's id within the row's sequence
        var score = f32(local); // the static gates: recent blocks first
        if params.gate == GATE_MEAN_KEY {
            score = 0.0;
            // unroll
            for (var i = 0u; i < HEAD_VECS; i++) {
                score += dot(query[i], block_means[means + block * HEAD_VECS + i]);
            }
        } else if params.gate == GATE_SINK_AND_RECENT && local < params.sink_blocks {
            score = f32(params.num_blocks + local);
        }
        keep_best(score, block, &best_score, &best_block, &kept, places);
    }
    kept = merge_lanes(&best_score, &best_block, kept, places, lane);
    if lane != 0u {
        return;
    }
    if params.causal != 0u {
        best_block[kept] = current;
        kept += 1u;
    }
    // Ascending block ids, then -1 padding: each output is the smallest kept id above the
    // previous one. Reads only: an in-place insertion sort here (shifting best_block[at - 1]
    // into best_block[at]) is miscompiled by Mesa's GLSL compiler (llvmpipe GL, Mesa 22.3),
    // which shifts a stale value and duplicates a block.
    var floor = 0u;
    for (var i = 0u; i < TOP_K; i++) {
        var next = NO_BLOCK;
        for (var j = 0u; j < kept; j++) {
            if best_block[j] >= floor && best_block[j] < next {
                next = best_block[j];
            }
        }
        var chosen = -1;
        if next != NO_BLOCK {
            chosen = i32(next);
            floor = next + 1u;
        }
        selection[row * TOP_K + i] = chosen;
    }
}
