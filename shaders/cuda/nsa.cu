// NSA's selection (../shared/NSA.md, step 2) on the CUDA path: each (batch, kv head) group's
// top-n selection blocks at each query, from the compressed branch's probabilities summed
// over the group's query heads. The rule is nsa_select.wgsl's (its header explains the
// importance and the chunks); the host's twin is `reference::nsa`
// (selection_from_importance). Here the scores are tensor-core products, a tile of queries
// against a chunk of pooled keys, and the top-n streams over the chunks.
//
// nsa_select — grid (ceil(q_len / SELECT_ROWS), batch * kv_heads), SELECT_THREADS threads:
//   one thread block per SELECT_ROWS consecutive queries of one group. Params: MoBA's, with
//   block_size = l' (keys per selection block), num_blocks = ns, scale_log2 the softmax's
//   scale times log2(e); TOP_K = top_n. compress_block, compress_stride, compressed_blocks:
//   l, d and nc.
//   Per chunk of NSA_SELECT_CHUNK pooled keys (the selection blocks they cover, with the
//   `reach` earlier keys that overlap the first): for each query head of the group, s =
//   q.k^T (mma.sync, each warp 16 queries), p = 2^(s scale_log2 - lse / ln 2) for the
//   eligible keys, summed over the heads in the accumulators; the sums go to shared memory,
//   and thread r (r < SELECT_ROWS) weighs them by each selection block's overlap and keeps
//   its query's best TOP_K - forced blocks in registers. No [rows, ns] importance matrix
//   ever exists.
//   Shared memory (dynamic): the chunk's key tile, two query tiles (the next head's is
//   copied while this one's is used; Padded rows), then the summed probabilities [SELECT_ROWS]
//   [NSA_SELECT_CHUNK + 1] f32 (a padded row: thread r reads row r, conflict-free).
//   Memory: queries [groups, group_size, q_len, HEAD_DIM]; pooled_keys [groups, nc,
//   HEAD_DIM]; compressed_lse [groups, group_size, q_len] f32 (natural log); selection
//   [groups, q_len, TOP_K] i32, ascending, padded with -1.

#define PROBS_STRIDE (NSA_SELECT_CHUNK + 1)

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

// Compressed blocks i with i d + l - 1 <= position (the query's eligible ones).
__device__ __forceinline__ u32 eligible_blocks(u32 position, u32 block, u32 stride, u32 count) {
    if (position + 1 < block) return 0;
    return min((position + 1 - block) / stride + 1, count);
}

// A query's best unforced blocks so far, best first; `kept` of them are valid.
struct TopBlocks {
    float score[TOP_K];
    u32 block[TOP_K];
    u32 kept;

    // Offers block `j` of importance `score` among `places`. Blocks arrive in ascending
    // order, so the new block outranks kept blocks of equal importance: ties go to the
    // more recent block.
    __device__ void offer(u32 j, float importance, u32 places) {
        if (kept < places) {
            kept++;
        } else if (places == 0 || importance < score[places - 1]) {
            return;
        }
        u32 at = kept - 1;
        while (at > 0 && score[at - 1] <= importance) {
            score[at] = score[at - 1];
            block[at] = block[at - 1];
            at--;
        }
        score[at] = importance;
        block[at] = j;
    }
};

extern "C" __global__ void __launch_bounds__(SELECT_THREADS)
nsa_select(Params p, u32 compress_block, u32 compress_stride, u32 compressed_blocks,
           const elem_t* queries, const elem_t* pooled_keys, const float* compressed_lse,
           int* selection) {
    extern __shared__ __align__(16) u16 shared[];
    u16* key_tile = shared;
    u16* q_tiles = key_tile + Padded::elems(NSA_SELECT_CHUNK);
    float* probs = (float*)(q_tiles + 2 * Padded::elems(SELECT_ROWS));

    u32 group = blockIdx.y;
    u32 t0 = blockIdx.x * SELECT_ROWS;
    u32 count = min((u32)SELECT_ROWS, p.q_len - t0);
    u32 heads = group_size(p);
    u32 warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    u32 g = lane / 4, quad = lane % 4;
    // This thread's two accumulator rows (g and g + 8 of the warp's 16), clamped to the tile.
    u32 r0 = min(warp * 16 + g, count - 1), r1 = min(warp * 16 + g + 8, count - 1);
    u32 eligible0 = eligible_blocks(query_position(p, t0 + r0), compress_block, compress_stride,
                                    compressed_blocks);
    u32 eligible1 = eligible_blocks(query_position(p, t0 + r1), compress_block, compress_stride,
                                    compressed_blocks);
    // The tile's last query sees the most blocks.
    u32 last_position = query_position(p, t0 + count - 1);
    u32 last_current = last_position / p.block_size;
    u32 last_eligible = eligible_blocks(last_position, compress_block, compress_stride,
                                        compressed_blocks);
    // This thread's query as the ranking sees it (threads past the tile rank nothing).
    bool ranks = threadIdx.x < count;
    u32 current = query_position(p, t0 + min(threadIdx.x, count - 1)) / p.block_size;

    // A chunk of selection blocks starts `reach` compressed blocks before its first key (the
    // earlier blocks that still overlap it).
    u32 per_block = p.block_size / compress_stride;
    u32 reach = compress_block / compress_stride - 1;
    u32 chunk_blocks = (NSA_SELECT_CHUNK - reach) / per_block;
    u32 forced_count = 1 + (current >= 1) + (current >= 2);
    u32 places = TOP_K - forced_count;
    TopBlocks best;
    best.kept = 0;

    const elem_t* keys = pooled_keys + (size_t)group * compressed_blocks * HEAD_DIM;
    const elem_t* group_queries = queries + (size_t)group * heads * p.q_len * HEAD_DIM;
    const float* group_lse = compressed_lse + (size_t)group * heads * p.q_len;
    for (u32 chunk_first = 0; chunk_first <= last_current; chunk_first += chunk_blocks) {
        u32 chunk_end = min(chunk_first + chunk_blocks, last_current + 1);
        // Compressed blocks [first_i, end_i) overlap the chunk's selection blocks.
        u32 first_i = chunk_first * per_block - min(reach, chunk_first * per_block);
        u32 end_i = min(chunk_end * per_block, last_eligible);
        float sum[NSA_SELECT_CHUNK / 8][4];
#pragma unroll
        for (u32 n = 0; n < NSA_SELECT_CHUNK / 8; n++) sum[n][0] = sum[n][1] = sum[n][2] = sum[n][3] = 0.0f;
        if (end_i > first_i) {
            stage_async<NSA_SELECT_CHUNK, SELECT_THREADS>(key_tile, keys, Span{first_i},
                                                          end_i - first_i);
            stage_async<SELECT_ROWS, SELECT_THREADS>(q_tiles, group_queries, Span{t0}, count);
            cp_async_commit();
            for (u32 head = 0; head < heads; head++) {
                if (head + 1 < heads) {
                    const elem_t* next = group_queries + (size_t)(head + 1) * p.q_len * HEAD_DIM;
                    stage_async<SELECT_ROWS, SELECT_THREADS>(
                        q_tiles + ((head + 1) % 2) * Padded::elems(SELECT_ROWS), next, Span{t0}, count);
                    cp_async_commit();
                    cp_async_wait<1>();
                } else {
                    cp_async_wait<0>();
                }
                __syncthreads();
                float lse2_0 = group_lse[(size_t)head * p.q_len + t0 + r0] / LN2;
                float lse2_1 = group_lse[(size_t)head * p.q_len + t0 + r1] / LN2;
                float s[NSA_SELECT_CHUNK / 8][4];
                Padded::scores<SELECT_ROWS, NSA_SELECT_CHUNK>(
                    s, q_tiles + (head % 2) * Padded::elems(SELECT_ROWS), warp * 16, key_tile);
#pragma unroll
                for (u32 n = 0; n < NSA_SELECT_CHUNK / 8; n++) {
#pragma unroll
                    for (u32 e = 0; e < 4; e++) {
                        u32 i = first_i + n * 8 + 2 * quad + (e & 1);
                        bool low = e < 2;
                        u32 eligible = min(low ? eligible0 : eligible1, end_i);
                        float lse2 = low ? lse2_0 : lse2_1;
                        if (i < eligible) sum[n][e] += exp2_approx(fmaf(s[n][e], p.scale_log2, -lse2));
                    }
                }
                // The buffer read here is the one the next head's copy fills.
                __syncthreads();
            }
        }
#pragma unroll
        for (u32 n = 0; n < NSA_SELECT_CHUNK / 8; n++) {
            u32 c = n * 8 + 2 * quad;
            u32 row0 = warp * 16 + g;
            probs[row0 * PROBS_STRIDE + c] = sum[n][0];
            probs[row0 * PROBS_STRIDE + c + 1] = sum[n][1];
            probs[(row0 + 8) * PROBS_STRIDE + c] = sum[n][2];
            probs[(row0 + 8) * PROBS_STRIDE + c + 1] = sum[n][3];
        }
        __syncthreads();
        if (ranks) {
            const float* row = probs + threadIdx.x * PROBS_STRIDE;
            for (u32 j = chunk_first; j < min(chunk_end, current + 1); j++) {
                if (forced_block(j, current)) continue;
                float importance = 0.0f;
                u32 from = j * per_block - min(reach, j * per_block);
                for (u32 i = max(first_i, from); i < min(end_i, (j + 1) * per_block); i++)
                    importance += row[i - first_i]
                        * overlap_strides(p, compress_block, compress_stride, i, j);
                best.offer(j, importance, places);
            }
        }
        // The next chunk's keys and sums overwrite what was read here.
        __syncthreads();
    }
    if (!ranks) return;
    // The forced blocks join the kept ones: c, then c - 1 and 0 where they are others.
    u32 kept = best.kept;
    best.block[kept++] = current;
    if (current >= 1) best.block[kept++] = current - 1;
    if (current >= 2) best.block[kept++] = 0;
    // Ascending block ids, then -1 padding: each output is the smallest kept id above the
    // previous one.
    int* out = selection + ((size_t)group * p.q_len + t0 + threadIdx.x) * TOP_K;
    u32 floor_block = 0;
    for (u32 i = 0; i < TOP_K; i++) {
        u32 next = 0xffffffffu;
        for (u32 k = 0; k < kept; k++)
            if (best.block[k] >= floor_block && best.block[k] < next) next = best.block[k];
        int chosen = -1;
        if (next != 0xffffffffu) {
            chosen = (int)next;
            floor_block = next + 1;
        }
        out[i] = chosen;
    }
}
