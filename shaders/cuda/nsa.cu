// NSA's selection (../shared/NSA.md, step 2) on the CUDA path: each (batch, kv head) group's
// top-n selection blocks at each query, from the compressed branch's probabilities summed
// over the group's query heads. The same walk and rule as nsa_select.wgsl (its header
// explains the importance and the chunks); the host's twin is `reference::nsa`
// (selection_from_importance).
//
// nsa_select — grid (ceil(q_len / ELEMENT_THREADS), batch * kv_heads), one thread per
//   (group, query) row. Params: MoBA's, with block_size = l' (keys per selection block),
//   num_blocks = ns, scale_log2 the softmax's scale times log2(e); TOP_K = top_n.
//   compress_block, compress_stride, compressed_blocks: l, d and nc.
//   Registers: the best TOP_K - forced (importance, block) pairs; the chunk's probabilities
//   (NSA_SELECT_CHUNK compressed blocks at most), summed over the group's heads, one head's
//   query at a time. No [rows, ns] importance matrix ever exists.
//   Memory: queries [groups, group_size, q_len, HEAD_DIM] f32; pooled_keys [groups, nc,
//   HEAD_DIM] f32; compressed_lse [groups, group_size, q_len] f32 (natural log); selection
//   [groups, q_len, TOP_K] i32, ascending, padded with -1.

// Strides of compressed block `i`'s keys (l of them from i d) inside selection block `j`.
__device__ __forceinline__ float overlap_strides(const Params& p, u32 block, u32 stride, u32 i,
                                                 u32 j) {
    u32 first = max(i * stride, j * p.block_size);
    u32 end = min(i * stride + block, (j + 1) * p.block_size);
    return (float)((end > first ? end - first : 0) / stride);
}

// Whether selection block `j` is forced for a row whose current block is `current`.
__device__ __forceinline__ bool forced_block(u32 j, u32 current) {
    return j == 0 || j == current || j + 1 == current;
}

extern "C" __global__ void __launch_bounds__(ELEMENT_THREADS)
nsa_select(Params p, u32 compress_block, u32 compress_stride, u32 compressed_blocks,
           const float* queries, const float* pooled_keys, const float* compressed_lse,
           int* selection) {
    u32 t = blockIdx.x * ELEMENT_THREADS + threadIdx.x;
    u32 group = blockIdx.y;
    if (t >= p.q_len) return;
    u32 heads = group_size(p);
    u32 position = query_position(p, t);
    u32 current = position / p.block_size;
    // Compressed blocks i with i d + l - 1 <= p.
    u32 eligible = 0;
    if (position + 1 >= compress_block)
        eligible = min((position + 1 - compress_block) / compress_stride + 1, compressed_blocks);
    // A chunk of selection blocks starts `reach` compressed blocks before its first key (the
    // earlier blocks that still overlap it).
    u32 per_block = p.block_size / compress_stride;
    u32 reach = compress_block / compress_stride - 1;
    u32 chunk_blocks = (NSA_SELECT_CHUNK - reach) / per_block;

    u32 forced_count = 1 + (current >= 1) + (current >= 2);
    u32 places = TOP_K - forced_count;
    // The best unforced blocks so far, best first; `kept` of them are valid.
    float best_score[TOP_K];
    u32 best_block[TOP_K];
    u32 kept = 0;
    const float* keys = pooled_keys + (size_t)group * compressed_blocks * HEAD_DIM;
    float probs[NSA_SELECT_CHUNK];
    for (u32 chunk_first = 0; chunk_first <= current; chunk_first += chunk_blocks) {
        u32 chunk_end = min(chunk_first + chunk_blocks, current + 1);
        // Compressed blocks [first_i, end_i) overlap the chunk's selection blocks.
        u32 first_i = chunk_first * per_block - min(reach, chunk_first * per_block);
        u32 end_i = min(chunk_end * per_block, eligible);
        for (u32 i = 0; i < NSA_SELECT_CHUNK; i++) probs[i] = 0.0f;
        for (u32 head = 0; head < heads; head++) {
            size_t query_row = ((size_t)group * heads + head) * p.q_len + t;
            float4 query[HEAD_DIM / 4];
            const float4* q4 = reinterpret_cast<const float4*>(queries + query_row * HEAD_DIM);
#pragma unroll
            for (u32 c = 0; c < HEAD_DIM / 4; c++) query[c] = __ldg(q4 + c);
            float lse2 = compressed_lse[query_row] / LN2;
            for (u32 i = first_i; i < end_i; i++) {
                const float4* key = reinterpret_cast<const float4*>(keys + (size_t)i * HEAD_DIM);
                float score = 0.0f;
#pragma unroll
                for (u32 c = 0; c < HEAD_DIM / 4; c++) {
                    float4 k = __ldg(key + c);
                    score += query[c].x * k.x + query[c].y * k.y + query[c].z * k.z
                        + query[c].w * k.w;
                }
                probs[i - first_i] += exp2f(score * p.scale_log2 - lse2);
            }
        }
        for (u32 j = chunk_first; j < chunk_end; j++) {
            if (forced_block(j, current)) continue;
            float score = 0.0f;
            u32 from = j * per_block - min(reach, j * per_block);
            for (u32 i = max(first_i, from); i < min(end_i, (j + 1) * per_block); i++)
                score += probs[i - first_i]
                    * overlap_strides(p, compress_block, compress_stride, i, j);
            if (kept < places) {
                kept++;
            } else if (places == 0 || score < best_score[places - 1]) {
                continue;
            }
            // Blocks arrive in ascending order, so the new block outranks kept blocks of
            // equal importance: ties go to the more recent block.
            u32 at = kept - 1;
            while (at > 0 && best_score[at - 1] <= score) {
                best_score[at] = best_score[at - 1];
                best_block[at] = best_block[at - 1];
                at--;
            }
            best_score[at] = score;
            best_block[at] = j;
        }
    }
    // The forced blocks join the kept ones: c, then c - 1 and 0 where they are others.
    best_block[kept++] = current;
    if (current >= 1) best_block[kept++] = current - 1;
    if (current >= 2) best_block[kept++] = 0;
    // Ascending block ids, then -1 padding: each output is the smallest kept id above the
    // previous one.
    int* row = selection + ((size_t)group * p.q_len + t) * TOP_K;
    u32 floor_block = 0;
    for (u32 i = 0; i < TOP_K; i++) {
        u32 next = 0xffffffffu;
        for (u32 k = 0; k < kept; k++)
            if (best_block[k] >= floor_block && best_block[k] < next) next = best_block[k];
        int chosen = -1;
        if (next != 0xffffffffu) {
            chosen = (int)next;
            floor_block = next + 1;
        }
        row[i] = chosen;
    }
}
