// MoBA decode split over keys (flash-decoding), the plan of decode_split.wgsl and
// decode_combine.wgsl: a single query cannot fill a GPU with row tiles, chunks of the selected
// blocks can, and each key and value is read once for the whole GQA group.
//
// Rows: a (batch, kv head) group's rows are its query heads x q_len queries, the flat rows
//   group * decode_rows .. (group + 1) * decode_rows of [B, Hq, q_len] (at most
//   DECODE_MAX_ROWS: the host runs this plan only then). Keys and values: [groups, kv_stride,
//   HEAD_DIM], the first kv_len rows of each group read (kv_stride: kv_len, or a KV cache's
//   capacity).
// Partials: every (row, slot, chunk) of a block the row selected has an unnormalised output
//   partial_out [rows, slots, chunks, HEAD_DIM] f32 and partial_stats [rows, slots, chunks]
//   float2 (max, sum) in the log2 domain, sum 0 where the row sees no key of the chunk.
//
// decode_split — grid (chunks per block, blocks, kv groups), DECODE_KEYS threads: one key each
//   for the scores of every row, one warp per row for its max and sum, then (row, 8 columns)
//   pairs for the weighted sum of the chunk's values. Blocks that no row of the group
//   selected, and chunks past a partial block's keys, exit at once.
//   Shared: the group's queries (DECODE_MAX_ROWS x HEAD_DIM f32), the chunk's scores then
//   probabilities (DECODE_MAX_ROWS x DECODE_KEYS f32), each row's slot.
// decode_combine — DECODE_COMBINE_LANES threads per (row, 8 columns), ELEMENT_THREADS per
//   block, the lanes of one item ELEMENT_THREADS / DECODE_COMBINE_LANES apart: each lane
//   merges every DECODE_COMBINE_LANES-th partial of the row (counted over its slots and their
//   chunks), then lane 0 merges the lanes in lane order (the same bits on every run); o as
//   elem_t and lse in the natural log. Shared: each thread's (max, sum) and 8 columns.

#define NO_SLOT 0xffffffffu

// Rows of one kv group.
__device__ __forceinline__ u32 decode_rows(const Params& p) { return group_size(p) * p.q_len; }

// Chunks of the longest block.
__device__ __forceinline__ u32 chunks_per_block(const Params& p) {
    return (p.block_size + DECODE_KEYS - 1) / DECODE_KEYS;
}

// Chunks of `block` (the last block may be partial).
__device__ __forceinline__ u32 chunks_in_block(const Params& p, u32 block) {
    return (block_end(p, block) - block * p.block_size + DECODE_KEYS - 1) / DECODE_KEYS;
}

// Index of the partial of (flat row, slot, chunk); a row fills no more slots than there are
// blocks.
__device__ __forceinline__ size_t partial_index(const Params& p, u32 row, u32 slot, u32 chunk) {
    u32 slots = min((u32)TOP_K, p.num_blocks);
    return ((size_t)row * slots + slot) * chunks_per_block(p) + chunk;
}

__device__ __forceinline__ float warp_max(float x) {
    for (u32 offset = WARP / 2; offset > 0; offset /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, offset));
    return x;
}
__device__ __forceinline__ float warp_sum(float x) {
    for (u32 offset = WARP / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffff, x, offset);
    return x;
}

extern "C" __global__ void __launch_bounds__(DECODE_KEYS)
decode_split(Params p, const elem_t* q, const elem_t* k, const elem_t* v, const int* selection,
             float* partial_out, float2* partial_stats) {
    __shared__ __align__(16) float queries[DECODE_MAX_ROWS * HEAD_DIM];
    __shared__ float scores[DECODE_MAX_ROWS][DECODE_KEYS];
    __shared__ u32 row_slot[DECODE_MAX_ROWS];
    u32 chunk = blockIdx.x, block = blockIdx.y, group = blockIdx.z;
    if (chunk >= chunks_in_block(p, block)) return;
    u32 rows = decode_rows(p);
    u32 first_row = group * rows;
    u32 tid = threadIdx.x;

    if (tid < DECODE_MAX_ROWS) {
        u32 slot = NO_SLOT;
        for (u32 s = 0; tid < rows && s < TOP_K; s++) {
            if (selection[(size_t)(first_row + tid) * TOP_K + s] == (int)block) slot = s;
        }
        row_slot[tid] = slot;
    }
    __syncthreads();
    // The same answer in every thread: the whole block leaves or none does.
    bool selected = false;
    for (u32 r = 0; r < rows; r++) selected |= row_slot[r] != NO_SLOT;
    if (!selected) return;
    for (u32 e = tid; e < rows * HEAD_DIM / 8; e += DECODE_KEYS) {
        load8_float(&queries[e * 8], q + (size_t)first_row * HEAD_DIM + e * 8);
    }
    __syncthreads();

    // This thread's key against every row, in the log2 domain; hidden keys: NEG_INF.
    u32 first = block * p.block_size + chunk * DECODE_KEYS;
    u32 count = min((u32)DECODE_KEYS, block_end(p, block) - first);
    u32 key = first + tid;
    float dots[DECODE_MAX_ROWS];
#pragma unroll
    for (u32 r = 0; r < DECODE_MAX_ROWS; r++) dots[r] = 0.0f;
    if (tid < count) {
        const elem_t* key_row = k + ((size_t)group * p.kv_stride + key) * HEAD_DIM;
        for (u32 i = 0; i < HEAD_DIM; i += 8) {
            float x[8];
            load8_float(x, key_row + i);
#pragma unroll
            for (u32 r = 0; r < DECODE_MAX_ROWS; r++) {
                const float* query = &queries[r * HEAD_DIM + i];
#pragma unroll
                for (u32 j = 0; j < 8; j++) dots[r] += query[j] * x[j];
            }
        }
    }
#pragma unroll
    for (u32 r = 0; r < DECODE_MAX_ROWS; r++) {
        bool seen = tid < count && r < rows && row_slot[r] != NO_SLOT;
        bool visible = seen && !key_hidden(p, key, first + count, query_position(p, (first_row + r) % p.q_len));
        scores[r][tid] = visible ? dots[r] * p.scale_log2 : NEG_INF;
    }
    __syncthreads();

    // Each row's max and sum over the chunk, one warp per row; its scores become weights.
    u32 warp = tid / WARP, lane = tid % WARP;
    for (u32 r = warp; r < rows; r += DECODE_KEYS / WARP) {
        u32 slot = row_slot[r];
        if (slot == NO_SLOT) continue;
        float row_max = NEG_INF;
        for (u32 t = lane; t < DECODE_KEYS; t += WARP) row_max = fmaxf(row_max, scores[r][t]);
        row_max = warp_max(row_max);
        float sum = 0.0f;
        for (u32 t = lane; t < DECODE_KEYS; t += WARP) {
            float score = scores[r][t];
            // A hidden key weighs 0, also in a chunk the row cannot see at all (max -inf).
            float weight = score == NEG_INF ? 0.0f : exp2f(score - row_max);
            scores[r][t] = weight;
            sum += weight;
        }
        sum = warp_sum(sum);
        if (lane == 0) partial_stats[partial_index(p, first_row + r, slot, chunk)] = make_float2(row_max, sum);
    }
    __syncthreads();

    // The weighted sum of the chunk's values, one (row, 8 columns) at a time.
    constexpr u32 column_groups = HEAD_DIM / 8;
    for (u32 e = tid; e < rows * column_groups; e += DECODE_KEYS) {
        u32 r = e / column_groups, c = e % column_groups;
        u32 slot = row_slot[r];
        if (slot == NO_SLOT) continue;
        const elem_t* values = v + ((size_t)group * p.kv_stride + first) * HEAD_DIM + c * 8;
        float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        for (u32 t = 0; t < count; t++) {
            float x[8];
            load8_float(x, values + (size_t)t * HEAD_DIM);
            float weight = scores[r][t];
#pragma unroll
            for (u32 j = 0; j < 8; j++) acc[j] += weight * x[j];
        }
        float4* out = (float4*)(partial_out + partial_index(p, first_row + r, slot, chunk) * HEAD_DIM + c * 8);
        out[0] = make_float4(acc[0], acc[1], acc[2], acc[3]);
        out[1] = make_float4(acc[4], acc[5], acc[6], acc[7]);
    }
}

// A running (max, sum) and accumulator with one more partial merged in (log2 domain); a
// chunk the row sees no key of adds nothing.
__device__ __forceinline__ void merge_partial(float2& into, float* acc, float2 stats, const float* part) {
    if (stats.y == 0.0f) return;
    float top = fmaxf(into.x, stats.x);
    float kept = exp2f(into.x - top), added = exp2f(stats.x - top);
    into = make_float2(top, into.y * kept + stats.y * added);
#pragma unroll
    for (u32 j = 0; j < 8; j++) acc[j] = acc[j] * kept + part[j] * added;
}

extern "C" __global__ void __launch_bounds__(ELEMENT_THREADS)
decode_combine(Params p, const int* selection, const float* partial_out, const float2* partial_stats,
               elem_t* o, float* lse) {
    constexpr u32 column_groups = HEAD_DIM / 8;
    constexpr u32 items = ELEMENT_THREADS / DECODE_COMBINE_LANES;
    __shared__ float2 lane_stats[ELEMENT_THREADS];
    __shared__ float lane_acc[ELEMENT_THREADS][8];
    u32 lane = threadIdx.x / items;
    size_t i = (size_t)blockIdx.x * items + threadIdx.x % items;
    size_t rows = (size_t)p.batch * p.q_heads * p.q_len;
    bool live = i < rows * column_groups;
    u32 row = live ? i / column_groups : 0, c = i % column_groups;
    float2 merged = make_float2(NEG_INF, 0.0f);
    float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    // The row's partials, counted over its slots and their chunks, go to the lanes in turn.
    u32 before = 0;
    for (u32 s = 0; live && s < TOP_K; s++) {
        int block = selection[(size_t)row * TOP_K + s];
        if (block < 0) continue;
        u32 chunks = chunks_in_block(p, block);
        u32 first = (lane + DECODE_COMBINE_LANES - before % DECODE_COMBINE_LANES) % DECODE_COMBINE_LANES;
        for (u32 chunk = first; chunk < chunks; chunk += DECODE_COMBINE_LANES) {
            size_t at = partial_index(p, row, s, chunk);
            const float4* part = (const float4*)(partial_out + at * HEAD_DIM + c * 8);
            float4 low = part[0], high = part[1];
            float x[8] = {low.x, low.y, low.z, low.w, high.x, high.y, high.z, high.w};
            merge_partial(merged, acc, partial_stats[at], x);
        }
        before += chunks;
    }
    lane_stats[threadIdx.x] = merged;
#pragma unroll
    for (u32 j = 0; j < 8; j++) lane_acc[threadIdx.x][j] = acc[j];
    __syncthreads();
    if (!live || lane != 0) return;
    // The lanes in lane order: the same bits on every run.
    for (u32 l = 1; l < DECODE_COMBINE_LANES; l++) {
        u32 other = threadIdx.x + l * items;
        merge_partial(merged, acc, lane_stats[other], lane_acc[other]);
    }
#pragma unroll
    for (u32 j = 0; j < 8; j++) acc[j] /= merged.y;
    store8(o + (size_t)row * HEAD_DIM + c * 8, acc);
    if (c == 0) lse[row] = (merged.x + log2f(merged.y)) * LN2;
}
