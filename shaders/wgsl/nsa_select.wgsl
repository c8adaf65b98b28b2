// NSA's selection (../shared/NSA.md, step 2): each (batch, kv head) group's top-n selection
// blocks at each query, from the compressed branch's probabilities summed over the group's
// query heads. The host's twin is `reference::nsa` (selection_from_importance).
//
// Params: `struct Params` as MoBA's kernels read it, with block_size = l' (keys per selection
//       block), num_blocks = ns, kv_len = Sk, q_len = S, scale_log2 the softmax's scale times
//       log2(e); TOP_K = top_n. `compression` holds l, d and nc.
// Grid: one thread per (group, query) row: groups * q_len threads, WORKGROUP_SIZE rows per
//       workgroup, linear.
// Registers: the best TOP_K - forced (importance, block) pairs while the thread walks its
//       eligible selection blocks in order, a chunk of them at a time; the probabilities of
//       the chunk's compressed blocks (NSA_SELECT_CHUNK of them at most), summed over the
//       group's heads, one head's query at a time. No [rows, ns] importance matrix ever
//       exists.
// Importance: imp(j) = sum over eligible compressed blocks i of p(i) * (overlap of i's keys
//       [i d, i d + l) with j's [j l', (j + 1) l')) / d, where p(i) = sum over the group's
//       heads of exp(scale q . kc_i - lse) and lse is the compressed branch's (natural log).
// Rule: block 0, the current block c = p / l' and c - 1 are forced; then the eligible blocks
//       (j <= c) with the highest importance, ties to the larger j.
// Memory: queries [groups, group_size, q_len, HEAD_DIM] vec4 f32; pooled_keys [groups, nc,
//       HEAD_DIM] vec4 f32; compressed_lse [groups, group_size, q_len] f32; selection
//       [groups, q_len, TOP_K] i32, ascending, padded with -1.

// No block: above every block id.
const NO_BLOCK: u32 = 0xffffffffu;

// NSA's compression: keys per compressed block (l), their stride (d), and how many there
// are (nc). Padded to 16 bytes.
struct Compression {
    block: u32,
    stride: u32,
    blocks: u32,
    padding: u32,
}

@group(0) @binding(1) var<storage, read> queries: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> pooled_keys: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> compressed_lse: array<f32>;
@group(0) @binding(4) var<storage, read> compression: Compression;
@group(0) @binding(5) var<storage, read_write> selection: array<i32>;

// Strides of compressed block `i`'s keys inside selection block `j`.
fn overlap_strides(i: u32, j: u32) -> f32 {
    let first = max(i * compression.stride, j * params.block_size);
    let end = min(i * compression.stride + compression.block, (j + 1u) * params.block_size);
    return f32(select(0u, end - first, end > first) / compression.stride);
}

// Whether selection block `j` is forced for a row whose current block is `current`.
fn forced(j: u32, current: u32) -> bool {
    return j == 0u || j == current || j + 1u == current;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(grid: GridPosition, @builtin(local_invocation_index) lid: u32) {
    let row = thread_index(grid, lid);
    if row >= groups() * params.q_len {
        return;
    }
    let group = row / params.q_len;
    let t = row % params.q_len;
    let position = query_position(t);
    let current = position / params.block_size;
    // Compressed blocks i with i d + l - 1 <= p.
    var eligible = 0u;
    if position + 1u >= compression.block {
        eligible = min((position + 1u - compression.block) / compression.stride + 1u, compression.blocks);
    }
    // A chunk of selection blocks starts `reach` compressed blocks before its first key (the
    // earlier blocks that still overlap it).
    let per_block = params.block_size / compression.stride;
    let reach = compression.block / compression.stride - 1u;
    let chunk_blocks = (NSA_SELECT_CHUNK - reach) / per_block;

    var forced_count = 1u;
    if current >= 1u {
        forced_count += 1u;
    }
    if current >= 2u {
        forced_count += 1u;
    }
    let places = TOP_K - forced_count;
    // The best unforced blocks so far, best first; `kept` of them are valid.
    var best_score: array<f32, TOP_K>;
    var best_block: array<u32, TOP_K>;
    var kept = 0u;
    // The chunk's probabilities, cleared by assignment for each chunk (a `var` declared in
    // the loop body is not cleared each iteration by every compiler: lavapipe kept the
    // last chunk's sums).
    var probs: array<f32, NSA_SELECT_CHUNK>;
    for (var chunk_first = 0u; chunk_first <= current; chunk_first += chunk_blocks) {
        let chunk_end = min(chunk_first + chunk_blocks, current + 1u);
        // Compressed blocks [first_i, end_i) overlap the chunk's selection blocks.
        let first_i = chunk_first * per_block - min(reach, chunk_first * per_block);
        let end_i = min(chunk_end * per_block, eligible);
        probs = array<f32, NSA_SELECT_CHUNK>();
        for (var head = 0u; head < group_size(); head++) {
            let query_row = (group * group_size() + head) * params.q_len + t;
            var query: HeadVector;
            // unroll
            for (var c = 0u; c < HEAD_VECS; c++) {
                query[c] = queries[query_row * HEAD_VECS + c];
            }
            let lse2 = compressed_lse[query_row] / LN_2;
            for (var i = first_i; i < end_i; i++) {
                let key = (group * compression.blocks + i) * HEAD_VECS;
                var score = 0.0;
                // unroll
                for (var c = 0u; c < HEAD_VECS; c++) {
                    score += dot(query[c], pooled_keys[key + c]);
                }
                probs[i - first_i] += exp2(score * params.scale_log2 - lse2);
            }
        }
        for (var j = chunk_first; j < chunk_end; j++) {
            if forced(j, current) {
                continue;
            }
            var score = 0.0;
            for (var i = max(first_i, (j * per_block) - min(reach, j * per_block)); i < min(end_i, (j + 1u) * per_block); i++) {
                score += probs[i - first_i] * overlap_strides(i, j);
            }
            if kept < places {
                kept += 1u;
            } else if places == 0u || score < best_score[places - 1u] {
                continue;
            }
            // Blocks arrive in ascending order, so the new block outranks kept blocks of
            // equal importance: ties go to the more recent block.
            var at = kept - 1u;
            while at > 0u && best_score[at - 1u] <= score {
                best_score[at] = best_score[at - 1u];
                best_block[at] = best_block[at - 1u];
                at -= 1u;
            }
            best_score[at] = score;
            best_block[at] = j;
        }
    }
    // The forced blocks join the kept ones: c, then c - 1 and 0 where they are others.
    best_block[kept] = current;
    kept += 1u;
    if current >= 1u {
        best_block[kept] = current - 1u;
        kept += 1u;
    }
    if current >= 2u {
        best_block[kept] = 0u;
        kept += 1u;
    }
    // Ascending block ids, then -1 padding: each output is the smallest kept id above the
    // previous one (reads only, as gate_topk.wgsl writes its selection). The two kernels
    // keep their top-k inline: shared as WGSL functions (in private or function storage),
    // it made NSA's forward 20% slower on an H100 (bench-results/h100-nsa/shared-top-k/).
    var floor = 0u;
    for (var i = 0u; i < TOP_K; i++) {
        var next = NO_BLOCK;
        for (var k = 0u; k < kept; k++) {
            if best_block[k] >= floor && best_block[k] < next {
                next = best_block[k];
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
