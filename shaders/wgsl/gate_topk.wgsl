// Gate and top-k: the blocks every query row attends.
//
// Grid: one thread per query row (groups * group_size * q_len rows), WORKGROUP_SIZE rows per
//       workgroup, linear.
// Registers: each thread keeps its query (HEAD_VECS vec4) and its best TOP_K (score, block)
//       pairs while it streams over the block means, so no [rows, num_blocks] score matrix
//       ever exists. The loops over the query are marked `// unroll` (src/gpu/unroll.rs).
// Scores: q . mean key (MoBA), or a fixed score for the static gates (block id within the
//       row's sequence; sinks, its first blocks, above every other block), the same rule as
//       `Gate::static_score` on the host.
// Rule (DESIGN §1): causal rows force their own block and rank only earlier blocks of their
//       own sequence; ties go to the larger block id. Non-causal rows rank every block.
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

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(grid: GridPosition, @builtin(local_invocation_index) lid: u32) {
    let row = thread_index(grid, lid);
    if row >= q_rows() {
        return;
    }
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
    for (var block = first; block < eligible; block++) {
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
        if kept < places {
            kept += 1u;
        } else if places == 0u || score < best_score[places - 1u] {
            continue;
        }
        // Blocks arrive in ascending order, so the new block outranks kept blocks of equal
        // score: ties go to the more recent block.
        var at = kept - 1u;
        while at > 0u && best_score[at - 1u] <= score {
            best_score[at] = best_score[at - 1u];
            best_block[at] = best_block[at - 1u];
            at -= 1u;
        }
        best_score[at] = score;
        best_block[at] = block;
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
