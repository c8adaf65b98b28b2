// NSA's selection (../shared/NSA.md, step 2) on the CUDA path: each (batch, kv head) group's
// top-n selection blocks at each query, from the compressed branch's probabilities summed
// over the group's query heads. The rule is nsa_select.wgsl's (its header explains the
// importance and the chunks); the host's twin is `reference::nsa`
// (selection_from_importance). Here the scores are tensor-core products, a tile of queries
// against a chunk of pooled keys, and the top-n streams over the chunks.
//
// nsa_select — grid (ceil(q_len / queries), batch * kv_heads), SELECT_THREADS threads
//   (SELECT_WARPS warps): one thread block per `queries` consecutive queries of one group.
//   Params: MoBA's, with block_size = l' (keys per selection block), num_blocks = ns,
//   scale_log2 the softmax's scale times log2(e); TOP_K = top_n. compress_block,
//   compress_stride, compressed_blocks: l, d and nc. rows_per_query, queries: the q tile's
//   layout (SelectRows; the host's `select_layout`): each query's heads are R consecutive
//   rows, so that one pass of the tensor cores scores all of a query's heads.
//   The q tile (every head of the block's queries, SELECT_ROWS rows) is read once. Per chunk
//   of NSA_SELECT_CHUNK pooled keys (the selection blocks they cover, with the `reach`
//   earlier keys that overlap the first; the next chunk's keys copied meanwhile): each warp
//   takes its m-tiles (whole queries), s = q.k^T (mma.sync), p = 2^(s scale_log2 - lse /
//   ln 2) for the eligible keys, summed over each query's rows by shuffles into
//   probs[query]; then a thread per (query, selection block) weighs the query's sums by
//   the block's overlap (SELECT_PAIRS pairs each) and marks the block where it reaches the
//   query's floor (the least importance its ranking still takes), and thread r (r <
//   queries) offers its query's marked blocks only, keeping its best TOP_K - forced blocks
//   in registers, then publishes its new floor. No [rows, ns] importance matrix ever
//   exists, and q is not read again per chunk.
//   Shared memory (dynamic): the q tile [SELECT_ROWS] and two key tiles (Padded rows), the
//   chunk's summed probabilities [queries][NSA_SELECT_CHUNK + 1] f32 (a padded row:
//   thread r reads row r, conflict-free), each row's lse (base 2) and eligible count, each
//   query's floor and its survivor mask (SURVIVOR_WORDS words: a bit per block of a chunk).
//   Memory: queries [groups, group_size, q_len, HEAD_DIM]; pooled_keys [groups, nc,
//   HEAD_DIM]; compressed_lse [groups, group_size, q_len] f32 (natural log); selection
//   [groups, q_len, TOP_K] i32, ascending, padded with -1.
//
// nsa_selected — grid (ceil(items / SELECTED_WARPS), batch * kv_heads), SELECTED_THREADS
//   threads: NSA's selected branch (step 2: o_slc), group-centric, the rule of
//   nsa_selected.wgsl on the tensor cores. Each warp holds 16 query rows of its group
//   (SelectedRows: 16 heads of one query, or a small group's heads at several queries; at
//   least 4 heads, so that a thread block has at most SELECTED_QUERIES queries). The thread
//   block walks the union of its queries' selected blocks in ascending order, KEY_TILE keys
//   at a time up to its last query, and copies each key and value tile into shared memory
//   once for all the queries that chose the block; a warp none of whose queries chose it
//   skips the tile, a row whose query did not choose it masks it. Per tile, as
//   attention_pass: s = q.k^T, the masks, online softmax in base 2, o += p.v. The state
//   stays in registers: no per-slot merges. Params: MoBA's, with block_size = l' and
//   TOP_K = top_n; causal, no other mask (the host launches it for no other config).
//   Shared memory (dynamic): the q tile [SELECTED_WARPS * 16 rows], two k and two v tiles
//   [KEY_TILE] (Padded), then the walk: each tile's first key, stop and queries (a bit per
//   slot), SELECTED_QUERIES * TOP_K * ceil(block_size / KEY_TILE) of each.
//   Memory: queries [groups, group_size, q_len, HEAD_DIM]; keys, values [groups, kv_len,
//   HEAD_DIM]; selection [groups, q_len, TOP_K] i32, ascending, -1 padded (NSA forces the
//   query's own block and lists none after it); out [groups, group_size, q_len, HEAD_DIM];
//   lse [groups, group_size, q_len] f32, natural log; head_selection [groups, group_size,
//   q_len, TOP_K] i32: the group's selection for each of its heads (what MoBA's backward
//   reads).

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

// The rows of nsa_select's q tile: `rows_per_query` (R) rows per query, the group's heads
// then unused rows (R is the group size rounded up to a power of two below 16, or to a
// multiple of 16), `queries` (at most the host's SELECT_QUERIES) queries from t0. An m-tile
// (16 rows) holds 16 / R whole queries, or one of a query's R / 16 head tiles.
struct SelectRows {
    u32 t0, heads, q_len, rows_per_query;
    __device__ u32 slot(u32 r) const { return r / rows_per_query; }
    __device__ u32 head(u32 r) const { return r % rows_per_query; }
    __device__ bool used(u32 r) const { return head(r) < heads && t0 + slot(r) < q_len; }
    // The row's index in its group's queries [group_size, q_len] (a used row's own, else a
    // valid one, never read).
    __device__ u32 operator()(u32 r) const {
        return min(head(r), heads - 1) * q_len + min(t0 + slot(r), q_len - 1);
    }
};

// Sums each column of an m-tile's probabilities over the rows of one query: R rows of
// consecutive g within each half (rows g and g + 8), or all 16 rows where R >= 16 (the two
// halves added first). The sums land in every lane of the rows' g-range.
__device__ __forceinline__ void sum_query_rows(float (*s)[4], u32 rows_per_query) {
    u32 span = min(rows_per_query, 8u);
    if (rows_per_query >= 16) {
#pragma unroll
        for (u32 n = 0; n < NSA_SELECT_CHUNK / 8; n++) {
            s[n][0] += s[n][2];
            s[n][1] += s[n][3];
        }
    }
    // Lanes 4 apart hold consecutive rows (g) of the same columns.
    for (u32 offset = 4; offset < 4 * span; offset *= 2) {
#pragma unroll
        for (u32 n = 0; n < NSA_SELECT_CHUNK / 8; n++) {
#pragma unroll
            for (u32 e = 0; e < 4; e++) s[n][e] += __shfl_xor_sync(0xffffffffu, s[n][e], offset);
        }
    }
}

extern "C" __global__ void __launch_bounds__(SELECT_THREADS, 2)
nsa_select(Params p, u32 compress_block, u32 compress_stride, u32 compressed_blocks,
           u32 rows_per_query, u32 queries, const elem_t* queries_in, const elem_t* pooled_keys,
           const float* compressed_lse, int* selection) {
    extern __shared__ __align__(16) u16 shared[];
    u16* q_tile = shared;
    u16* key_tiles = q_tile + Padded::elems(SELECT_ROWS);
    float* probs = (float*)(key_tiles + 2 * Padded::elems(NSA_SELECT_CHUNK));
    float* row_lse2 = probs + queries * PROBS_STRIDE;
    u32* row_eligible = (u32*)(row_lse2 + SELECT_ROWS);
    float* floor_score = (float*)(row_eligible + SELECT_ROWS);
    u32* survivors = (u32*)(floor_score + queries);

    u32 group = blockIdx.y;
    u32 t0 = blockIdx.x * queries;
    u32 count = min(queries, p.q_len - t0);
    u32 heads = group_size(p);
    SelectRows rows = {t0, heads, p.q_len, rows_per_query};
    u32 m_tiles = queries * rows_per_query / 16;
    // Each warp takes whole queries: an equal share of the m-tiles (a small group's few
    // m-tiles spread over the warps), or every head tile of one query.
    u32 warp_tiles = max((m_tiles + SELECT_WARPS - 1) / SELECT_WARPS, rows_per_query / 16);
    u32 warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    u32 g = lane / 4, quad = lane % 4;
    // The tile's last query sees the most blocks.
    u32 last_position = query_position(p, t0 + count - 1);
    u32 last_current = last_position / p.block_size;
    u32 last_eligible = eligible_blocks(last_position, compress_block, compress_stride,
                                        compressed_blocks);
    // This thread's query as the ranking sees it (threads past the tile rank nothing).
    bool ranks = threadIdx.x < count;
    u32 current = query_position(p, t0 + min(threadIdx.x, count - 1)) / p.block_size;

    const elem_t* keys = pooled_keys + (size_t)group * compressed_blocks * HEAD_DIM;
    const elem_t* group_queries = queries_in + (size_t)group * heads * p.q_len * HEAD_DIM;
    const float* group_lse = compressed_lse + (size_t)group * heads * p.q_len;
    // Each row's lse in base 2 and its eligible compressed blocks (none for an unused row:
    // its probabilities are all masked).
    for (u32 r = threadIdx.x; r < SELECT_ROWS; r += SELECT_THREADS) {
        bool used = r < m_tiles * 16 && rows.used(r);
        row_lse2[r] = used ? group_lse[rows(r)] / LN2 : 0.0f;
        row_eligible[r] = used ? eligible_blocks(query_position(p, t0 + rows.slot(r)), compress_block,
                                                 compress_stride, compressed_blocks)
                               : 0;
    }
    // The q tile, every head of the block's queries, read once.
    stage_async<SELECT_ROWS, SELECT_THREADS>(q_tile, group_queries, rows, m_tiles * 16);

    // A chunk of selection blocks starts `reach` compressed blocks before its first key (the
    // earlier blocks that still overlap it).
    u32 per_block = p.block_size / compress_stride;
    u32 reach = compress_block / compress_stride - 1;
    u32 chunk_blocks = (NSA_SELECT_CHUNK - reach) / per_block;
    u32 chunks = last_current / chunk_blocks + 1;
    // Compressed blocks [first, end) overlap chunk c's selection blocks.
    auto chunk_first_key = [&](u32 c) {
        u32 first_block = c * chunk_blocks * per_block;
        return first_block - min(reach, first_block);
    };
    auto chunk_end_key = [&](u32 c) {
        return min(min(c * chunk_blocks + chunk_blocks, last_current + 1) * per_block, last_eligible);
    };
    // Copies chunk c's pooled keys into its buffer (its copy group may be empty).
    auto fetch = [&](u32 c) {
        u32 first = chunk_first_key(c), end = chunk_end_key(c);
        if (end > first)
            stage_async<NSA_SELECT_CHUNK, SELECT_THREADS>(key_tiles + (c % 2) * Padded::elems(NSA_SELECT_CHUNK),
                                                          keys, Span{first}, end - first);
        cp_async_commit();
    };
    fetch(0);

    u32 forced_count = 1 + (current >= 1) + (current >= 2);
    u32 places = TOP_K - forced_count;
    TopBlocks best;
    best.kept = 0;
    // Each query's floor (the least importance its ranking would still take; none for a
    // query past the tile) and the chunk's blocks at or above it (a bit each).
    if (threadIdx.x < queries) {
        floor_score[threadIdx.x] = ranks && places > 0 ? 0.0f : -NEG_INF;
        for (u32 w = 0; w < SURVIVOR_WORDS; w++) survivors[SURVIVOR_WORDS * threadIdx.x + w] = 0;
    }
    for (u32 c = 0; c < chunks; c++) {
        u32 chunk_first = c * chunk_blocks;
        u32 chunk_end = min(chunk_first + chunk_blocks, last_current + 1);
        u32 first_i = chunk_first_key(c), end_i = chunk_end_key(c);
        if (c + 1 < chunks) {
            fetch(c + 1);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        // Each m-tile's probabilities p = 2^(s scale_log2 - lse / ln 2) over the eligible
        // keys, summed over each query's heads into probs[slot].
        const u16* key_tile = key_tiles + (c % 2) * Padded::elems(NSA_SELECT_CHUNK);
        for (u32 m = warp * warp_tiles; m < min((warp + 1) * warp_tiles, m_tiles) && end_i > first_i; m++) {
            u32 r0 = m * 16 + g, r1 = r0 + 8;
            float lse0 = row_lse2[r0], lse1 = row_lse2[r1];
            u32 eligible0 = min(row_eligible[r0], end_i), eligible1 = min(row_eligible[r1], end_i);
            float s[NSA_SELECT_CHUNK / 8][4];
            Padded::scores<SELECT_ROWS, NSA_SELECT_CHUNK>(s, q_tile, m * 16, key_tile);
#pragma unroll
            for (u32 n = 0; n < NSA_SELECT_CHUNK / 8; n++) {
#pragma unroll
                for (u32 e = 0; e < 4; e++) {
                    u32 i = first_i + n * 8 + 2 * quad + (e & 1);
                    bool low = e < 2;
                    s[n][e] = i < (low ? eligible0 : eligible1)
                        ? exp2_approx(fmaf(s[n][e], p.scale_log2, -(low ? lse0 : lse1)))
                        : 0.0f;
                }
            }
            sum_query_rows(s, rows_per_query);
            // The lanes of each query's first row store (its first head tile) or add (the
            // others, after it in this warp) the sums: columns 2 quad and 2 quad + 1.
            bool first_tile = m * 16 % rows_per_query == 0;
#pragma unroll
            for (u32 half = 0; half < 2; half++) {
                u32 r = half ? r1 : r0;
                // (Where R >= 16, row g + 8 is never a query's first row.)
                if (r % min(rows_per_query, 16u) != 0) continue;
                float* row = probs + rows.slot(r) * PROBS_STRIDE;
#pragma unroll
                for (u32 n = 0; n < NSA_SELECT_CHUNK / 8; n++) {
#pragma unroll
                    for (u32 e = 0; e < 2; e++) {
                        u32 col = n * 8 + 2 * quad + e;
                        float sum = s[n][2 * half + e];
                        row[col] = first_tile ? sum : row[col] + sum;
                    }
                }
            }
        }
        __syncthreads();
        // Each (query, selection block) pair's importance, a thread per pair: the query's
        // sums weighed by the block's overlaps (-1: not offered, being forced, later than the
        // query's own block, or past the chunk).
        // (The host holds queries * chunk_blocks to SELECT_PAIRS per thread.)
        float importance[SELECT_PAIRS];
#pragma unroll
        for (u32 k = 0; k < SELECT_PAIRS; k++) {
            u32 at = k * SELECT_THREADS + threadIdx.x;
            u32 slot = at / chunk_blocks, j = chunk_first + at % chunk_blocks;
            importance[k] = -1.0f;
            if (slot >= count) continue;
            u32 own = query_position(p, t0 + slot) / p.block_size;
            if (j >= chunk_end || j > own || forced_block(j, own)) continue;
            const float* row = probs + slot * PROBS_STRIDE;
            float sum = 0.0f;
            u32 from = j * per_block - min(reach, j * per_block);
            for (u32 i = max(first_i, from); i < min(end_i, (j + 1) * per_block); i++)
                sum += row[i - first_i] * overlap_strides(p, compress_block, compress_stride, i, j);
            importance[k] = sum;
        }
        // Every sum is read: the importances take the rows' first columns.
        __syncthreads();
#pragma unroll
        for (u32 k = 0; k < SELECT_PAIRS; k++) {
            u32 at = k * SELECT_THREADS + threadIdx.x;
            u32 slot = at / chunk_blocks, b = at % chunk_blocks;
            if (slot >= count) continue;
            probs[slot * PROBS_STRIDE + b] = importance[k];
            if (importance[k] >= floor_score[slot])
                atomicOr(&survivors[SURVIVOR_WORDS * slot + b / 32], 1u << (b % 32));
        }
        __syncthreads();
        // Thread r offers its query's surviving blocks in ascending order (the floor only
        // rises within the chunk, so the others would be turned away), then clears them and
        // publishes its new floor for the next chunk's pairs.
        if (ranks) {
            const float* row = probs + threadIdx.x * PROBS_STRIDE;
            for (u32 w = 0; w < SURVIVOR_WORDS; w++) {
                u32 mask = survivors[SURVIVOR_WORDS * threadIdx.x + w];
                survivors[SURVIVOR_WORDS * threadIdx.x + w] = 0;
                for (; mask != 0; mask &= mask - 1) {
                    u32 b = w * 32 + __ffs(mask) - 1;
                    best.offer(chunk_first + b, row[b], places);
                }
            }
            floor_score[threadIdx.x] = places == 0        ? -NEG_INF
                                     : best.kept < places ? 0.0f
                                                          : best.score[places - 1];
        }
        // The next chunk's sums overwrite what was read here; its keys land in the buffer
        // read in this chunk only after the next barrier.
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

#define SELECTED_ROWS (SELECTED_WARPS * 16)

// The rows of nsa_selected's q tile, 16 per warp: for a group of 16 query heads or more,
// 16 heads of one query (warp item i: query i / head_tiles, head tile i % head_tiles); for a
// smaller group, its heads at 16 / group_size consecutive queries. Rows past those, or past
// the group's heads, repeat a valid row and are never stored. Slot: a query's place among
// the thread block's (at most SELECTED_QUERIES).
struct SelectedRows {
    u32 first_item, heads, q_len;

    __device__ u32 rows_per_query() const { return min(heads, 16u); }
    __device__ u32 queries_per_warp() const { return 16 / rows_per_query(); }
    __device__ u32 head_tiles() const { return (heads + 15) / 16; }
    __device__ u32 item(u32 r) const { return first_item + r / 16; }
    __device__ u32 query(u32 r) const {
        u32 unit = min(r % 16 / rows_per_query(), queries_per_warp() - 1);
        return item(r) / head_tiles() * queries_per_warp() + unit;
    }
    __device__ u32 head(u32 r) const {
        return item(r) % head_tiles() * 16 + r % 16 % rows_per_query();
    }
    __device__ u32 slot(u32 r) const { return query(r) - query(0); }
    __device__ bool stored(u32 r) const {
        return r % 16 < queries_per_warp() * rows_per_query() && head(r) < heads && query(r) < q_len;
    }
    // The row's index in its group's queries [group_size, q_len].
    __device__ u32 operator()(u32 r) const {
        return min(head(r), heads - 1) * q_len + min(query(r), q_len - 1);
    }
};

extern "C" __global__ void __launch_bounds__(SELECTED_THREADS, 2)
nsa_selected(Params p, const elem_t* queries, const elem_t* keys, const elem_t* values,
             const int* selection, elem_t* out, float* lse, int* head_selection) {
    extern __shared__ __align__(16) u16 shared[];
    u16* q_tile = shared;
    u16* kv_buffers = q_tile + Padded::elems(SELECTED_ROWS);
    u32 tiles_per_block = (p.block_size + KEY_TILE - 1) / KEY_TILE;
    u32 capacity = SELECTED_QUERIES * TOP_K * tiles_per_block;
    u32* walk_first = (u32*)(kv_buffers + 4 * Padded::elems(KEY_TILE));
    u32* walk_stop = walk_first + capacity;
    u32* walk_queries = walk_stop + capacity;
    __shared__ int chosen[SELECTED_QUERIES][TOP_K];
    __shared__ u32 walk_tiles;

    u32 group = blockIdx.y;
    u32 heads = group_size(p);
    SelectedRows rows = {blockIdx.x * SELECTED_WARPS, heads, p.q_len};
    u32 warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    u32 g = lane / 4, quad = lane % 4;
    u32 first_query = rows.query(0);
    u32 slots = rows.slot(SELECTED_ROWS - 1) + 1;

    // The queries' selections, then their union (warp 0: lane i follows slot i's list; each
    // round takes the smallest block a list holds next, and the slots that hold it).
    for (u32 i = threadIdx.x; i < slots * TOP_K; i += SELECTED_THREADS) {
        u32 t = first_query + i / TOP_K;
        chosen[i / TOP_K][i % TOP_K] =
            t < p.q_len ? selection[((size_t)group * p.q_len + t) * TOP_K + i % TOP_K] : -1;
    }
    __syncthreads();
    if (warp == 0) {
        // Keys after the block's last query are hidden from all of its queries.
        u32 visible_end = query_position(p, min(first_query + slots - 1, p.q_len - 1)) + 1;
        u32 at = 0, tiles = 0;
        while (true) {
            int head = lane < slots && at < TOP_K ? chosen[lane][at] : -1;
            u32 candidate = head >= 0 ? (u32)head : 0xffffffffu;
            u32 next = __reduce_min_sync(0xffffffffu, candidate);
            if (next == 0xffffffffu) break;
            u32 holders = __ballot_sync(0xffffffffu, candidate == next);
            if (candidate == next) at++;
            u32 first = next * p.block_size, stop = min(block_end(p, next), visible_end);
            u32 count = stop > first ? (stop - first + KEY_TILE - 1) / KEY_TILE : 0;
            for (u32 i = lane; i < count; i += WARP) {
                walk_first[tiles + i] = first + i * KEY_TILE;
                walk_stop[tiles + i] = stop;
                walk_queries[tiles + i] = holders;
            }
            tiles += count;
        }
        if (lane == 0) walk_tiles = tiles;
    }
    __syncthreads();

    size_t kv_base = (size_t)group * p.kv_len * HEAD_DIM;
    const elem_t* group_queries = queries + (size_t)group * heads * p.q_len * HEAD_DIM;
    // Its own copy group (arrive(0) waits for it with the first key tile; a walk with no
    // tile still leaves nothing in flight).
    stage_async<SELECTED_ROWS, SELECTED_THREADS>(q_tile, group_queries, rows, SELECTED_ROWS);
    cp_async_commit();
    KeyValueTiles<SELECTED_THREADS, Padded, ListedKeyTiles> kv(
        kv_buffers, keys + kv_base, values + kv_base, ListedKeyTiles{walk_first, walk_stop, walk_tiles});

    // This thread's two accumulator rows (g and g + 8 of the warp's 16), their queries'
    // slots and positions, and the slots of the whole warp.
    u32 r0 = warp * 16 + g, r1 = r0 + 8;
    u32 slot0 = rows.slot(r0), slot1 = rows.slot(r1);
    u32 pos0 = query_position(p, min(rows.query(r0), p.q_len - 1));
    u32 pos1 = query_position(p, min(rows.query(r1), p.q_len - 1));
    u32 warp_slots = __reduce_or_sync(0xffffffffu, (1u << slot0) | (1u << slot1));
    float acc[HEAD_DIM / 8][4];
#pragma unroll
    for (u32 n = 0; n < HEAD_DIM / 8; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    RowPairSoftmax softmax;
    for (u32 i = 0; i < kv.count; i++) {
        kv.arrive(i);
        u32 holders = walk_queries[i];
        if (!(holders & warp_slots)) continue;
        u32 kb = kv.key(i), key_stop = walk_stop[i];
        float s[KEY_TILE / 8][4];
        Padded::scores<SELECTED_ROWS, KEY_TILE>(s, q_tile, warp * 16, kv.k_tile(i));
        // A row sees the tile's keys if its query chose the block, up to the tile's stop
        // and (causal) its position.
        bool sees0 = (holders >> slot0) & 1, sees1 = (holders >> slot1) & 1;
        if (!sees0 || !sees1 || key_hidden(p, kb + KEY_TILE - 1, key_stop, min(pos0, pos1))) {
#pragma unroll
            for (u32 n = 0; n < KEY_TILE / 8; n++) {
#pragma unroll
                for (u32 e = 0; e < 4; e++) {
                    u32 key = kb + n * 8 + 2 * quad + (e & 1);
                    bool low = e < 2;
                    if (!(low ? sees0 : sees1) || key_hidden(p, key, key_stop, low ? pos0 : pos1))
                        s[n][e] = NEG_INF;
                }
            }
        }
        softmax.step<KEY_TILE>(s, acc, p.scale_log2);
        Padded::accumulate<KEY_TILE>(acc, s, kv.v_tile(i));
    }
    softmax.finish();

#pragma unroll
    for (u32 half = 0; half < 2; half++) {
        u32 r = half ? r1 : r0;
        if (!rows.stored(r)) continue;
        float m = half ? softmax.m1 : softmax.m0, l = half ? softmax.l1 : softmax.l0;
        size_t row = ((size_t)group * heads + rows.head(r)) * p.q_len + rows.query(r);
#pragma unroll
        for (u32 n = 0; n < HEAD_DIM / 8; n++) {
            store_elem(out, row * HEAD_DIM + n * 8 + 2 * quad, acc[n][2 * half] / l);
            store_elem(out, row * HEAD_DIM + n * 8 + 2 * quad + 1, acc[n][2 * half + 1] / l);
        }
        if (quad != 0) continue;
        lse[row] = (m + log2f(l)) * LN2;
        for (u32 i = 0; i < TOP_K; i++) head_selection[row * TOP_K + i] = chosen[half ? slot1 : slot0][i];
    }
}
