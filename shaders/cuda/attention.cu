// MoBA forward on the tensor cores: dense tiles of gathered queries x one selected block,
// one launch per selection slot, merged into a per-row online-softmax state; or, for small
// blocks, one launch over every slot, each (row, block) pair's output kept apart and
// combined per row after.
//
// attention_pass — grid (tile capacity of a slot, batch * q_heads), TILE_THREADS threads.
//   A thread block takes one tile of the inverted selection (inversion.cu): up to ROW_TILE
//   rows that chose block j in slot `slot`. Each warp owns 16 rows of the shared q tile
//   while the block's keys stream through shared memory KEY_TILE at a time:
//   s = q.k^T (mma), causal mask, online softmax in base 2, o += p.v (mma, p straight from
//   the score accumulators). Slots run in order and a row appears once per slot, so each
//   row's state is updated by one thread block at a time: deterministic, no atomics.
//   Shared memory (dynamic): q [ROW_TILE], then two k and two v [KEY_TILE] tiles
//   (KeyValueTiles: the next key tile is copied while this one is used). mma.sync build:
//   Padded rows of HEAD_DIM + 8 16-bit values, ldmatrix fragments. WGMMA build: Swizzled
//   tiles, each of the two warpgroups multiplies its 64 rows with m64n64k16 warpgroup MMAs
//   (q and k from shared memory; p from registers times v from shared memory).
//   Keys and values: [groups, kv_stride, HEAD_DIM] (kv_stride: kv_len, or a KV cache's
//   capacity). State: state_o [rows, HEAD_DIM] f32 (unnormalised), state_ml [rows, 2] f32 (max in
//   base 2, sum); slot 0 writes it, later slots merge.
// attention_finalize — one thread per 8 columns of a row (16-byte loads and stores): o =
//   acc / sum as elem_t, and lse = (max + log2 sum) * ln 2.
// attention_blocks — the forward by block (small blocks): grid (tile capacity of a list,
//   batch * q_heads), the same tiles over lists of all TOP_K slots (inversion.cu), so one
//   launch walks every (row, block) pair and each block's rows fill whole tiles. No state is
//   read: each pair writes its own output, normalised, partial_o [rows, TOP_K, HEAD_DIM]
//   elem_t, and lse in base 2, partial_lse [rows, TOP_K] f32 (-inf where the row sees none
//   of the block's keys).
// attention_combine — one thread per 8 columns of a row: the row's pairs (its slots that
//   hold a block) weighted by exp2(lse - max), o as elem_t and lse in the natural log.

// The attention of one tile of gathered rows `rows[0..tile.count)` of query head bh over its
// block's keys (the body of attention_pass and attention_blocks): this thread's two
// accumulator rows' unnormalised outputs `acc` and their softmax (max in base 2, whole sums).
__device__ __forceinline__ void attend_tile(const Params& p, const GatheredTile& tile, const u32* rows,
                                            u32 bh, const elem_t* q, const elem_t* k,
                                            const elem_t* v, u16* shared, float (*acc)[4],
                                            RowPairSoftmax& softmax) {
    u16* q_tile = TileLayout::base(shared);
    u16* kv_buffers = q_tile + TileLayout::elems(ROW_TILE);
    // Copied with the first key tile (KeyValueTiles commits both, arrive(0) waits for both).
    stage_async<ROW_TILE, TILE_THREADS, TileLayout>(q_tile, q + (size_t)bh * p.q_len * HEAD_DIM, Listed{rows},
                                      tile.count);

    size_t kv_base = (size_t)kv_group(p, bh) * p.kv_stride * HEAD_DIM;
    u32 key_stop = block_end(p, tile.block);
    if (p.causal) {
        // Rows are in ascending order: the last one sees the most keys.
        key_stop = min(key_stop, query_position(p, rows[tile.count - 1]) + 1);
    }
    u32 first_pos = query_position(p, rows[0]);
    u32 key_first = tile_key_first(p, tile.block, first_pos, key_stop);

    u32 warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    u32 g = lane / 4, t = lane % 4;
    // This thread's two accumulator rows (g and g + 8 of the warp's 16).
    u32 r0 = warp * 16 + g, r1 = r0 + 8;
    u32 pos0 = query_position(p, rows[r0]), pos1 = query_position(p, rows[r1]);

#pragma unroll
    for (u32 n = 0; n < HEAD_DIM / 8; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;

    KeyValueTiles<TILE_THREADS, TileLayout> kv(kv_buffers, k + kv_base, v + kv_base,
                                              KeySpan{key_first, key_stop});
    for (u32 i = 0; i < kv.count; i++) {
        kv.arrive(i);
        u32 kb = kv.key(i);

        float s[KEY_TILE / 8][4];
        TileLayout::scores<ROW_TILE, KEY_TILE>(s, q_tile, warp * 16, kv.k_tile(i));

        // Mask keys past the tile and (causal) after the query, in the tiles that have any.
        if (tile_masked(p, kb, key_stop, first_pos)) {
#pragma unroll
            for (u32 n = 0; n < KEY_TILE / 8; n++) {
#pragma unroll
                for (u32 e = 0; e < 4; e++) {
                    u32 key = kb + n * 8 + 2 * t + (e & 1);
                    u32 pos = e < 2 ? pos0 : pos1;
                    if (key_hidden(p, key, key_stop, pos)) s[n][e] = NEG_INF;
                }
            }
        }
        softmax.step<KEY_TILE>(s, acc, p.scale_log2);
        TileLayout::accumulate<KEY_TILE>(acc, s, kv.v_tile(i));
    }
    softmax.finish();
}

// Two blocks per SM: 128 registers per thread.
extern "C" __global__ void __launch_bounds__(TILE_THREADS, 2)
attention_pass(Params p, u32 slot, const elem_t* q, const elem_t* k, const elem_t* v,
               const u32* lists, const u32* starts, const u32* tiles,
               float* state_o, float* state_ml) {
    extern __shared__ __align__(16) u16 shared[];
    __shared__ u32 rows[ROW_TILE];

    GatheredTile tile = slot_tile(rows, p, lists, starts, tiles, slot);
    if (tile.count == 0) return;
    u32 bh = blockIdx.y;
    float acc[HEAD_DIM / 8][4];
    RowPairSoftmax softmax;
    attend_tile(p, tile, rows, bh, q, k, v, shared, acc, softmax);

    u32 lane = threadIdx.x % WARP, t = lane % 4;
    u32 r0 = threadIdx.x / WARP * 16 + lane / 4, r1 = r0 + 8;
    // Merge into the rows' state: slot 0 writes it, later slots combine by their maxima.
#pragma unroll
    for (u32 half = 0; half < 2; half++) {
        u32 r = half ? r1 : r0;
        float m = half ? softmax.m1 : softmax.m0, l = half ? softmax.l1 : softmax.l0;
        bool valid = r < tile.count;
        size_t row = (size_t)bh * p.q_len + rows[r];
        float keep = 0.0f, add = 1.0f, merged_m = m, merged_l = l;
        if (valid && slot > 0) {
            float old_m = state_ml[row * 2], old_l = state_ml[row * 2 + 1];
            merged_m = fmaxf(old_m, m);
            keep = exp2_approx(old_m - merged_m);
            add = exp2_approx(m - merged_m);
            merged_l = old_l * keep + l * add;
        }
        __syncwarp();
        if (valid && t == 0) {
            state_ml[row * 2] = merged_m;
            state_ml[row * 2 + 1] = merged_l;
        }
        if (valid) {
            float* out = state_o + row * HEAD_DIM + 2 * t;
            // All of the row's old state is loaded before the first store (one wait for all
            // of the loads, whether or not the compiler proves the addresses apart).
            float2 old[HEAD_DIM / 8];
#pragma unroll
            for (u32 n = 0; n < HEAD_DIM / 8; n++) {
                old[n] = slot > 0 ? *(const float2*)(out + n * 8) : make_float2(0.0f, 0.0f);
            }
#pragma unroll
            for (u32 n = 0; n < HEAD_DIM / 8; n++) {
                *(float2*)(out + n * 8) = make_float2(acc[n][2 * half] * add + old[n].x * keep,
                                                      acc[n][2 * half + 1] * add + old[n].y * keep);
            }
        }
    }
}

// Two elements as a pair of consecutive outputs (4 bytes for 16-bit types).
__device__ __forceinline__ void store2(elem_t* out, float lo, float hi) {
#if ELEM_KIND == ELEM_F32
    *(float2*)out = make_float2(lo, hi);
#else
    *(u32*)out = pack2(lo, hi);
#endif
}

// The same tiles as attention_pass over the lists of every slot: a tile's entries are
// (row, slot) pairs, and each pair's output is its own (no merge between thread blocks).
extern "C" __global__ void __launch_bounds__(TILE_THREADS, 2)
attention_blocks(Params p, const elem_t* q, const elem_t* k, const elem_t* v,
                 const u32* lists, const u32* starts, const u32* tiles,
                 elem_t* partial_o, float* partial_lse) {
    extern __shared__ __align__(16) u16 shared[];
    __shared__ u32 rows[ROW_TILE];
    __shared__ u32 slots[ROW_TILE];

    u32 bh = blockIdx.y;
    GatheredTile tile = gathered_tile(rows, p, lists, starts, tiles, bh, list_entries(p, TOP_K));
    if (tile.count == 0) return;
    // Entries t * TOP_K + slot -> rows t (ascending, as attend_tile needs) and their slots.
    for (u32 i = threadIdx.x; i < ROW_TILE; i += TILE_THREADS) {
        slots[i] = rows[i] % TOP_K;
        rows[i] /= TOP_K;
    }
    __syncthreads();
    float acc[HEAD_DIM / 8][4];
    RowPairSoftmax softmax;
    attend_tile(p, tile, rows, bh, q, k, v, shared, acc, softmax);

    u32 lane = threadIdx.x % WARP, t = lane % 4;
    u32 r0 = threadIdx.x / WARP * 16 + lane / 4;
#pragma unroll
    for (u32 half = 0; half < 2; half++) {
        u32 r = r0 + 8 * half;
        if (r >= tile.count) continue;
        float m = half ? softmax.m1 : softmax.m0, l = half ? softmax.l1 : softmax.l0;
        // A pair whose keys are all hidden from the row adds nothing: lse -inf, o 0.
        float scale = l > 0.0f ? 1.0f / l : 0.0f;
        size_t pair = ((size_t)bh * p.q_len + rows[r]) * TOP_K + slots[r];
        elem_t* out = partial_o + pair * HEAD_DIM + 2 * t;
#pragma unroll
        for (u32 n = 0; n < HEAD_DIM / 8; n++) {
            store2(out + n * 8, acc[n][2 * half] * scale, acc[n][2 * half + 1] * scale);
        }
        if (t == 0) partial_lse[pair] = l > 0.0f ? m + log2f(l) : NEG_INF;
    }
}

extern "C" __global__ void attention_combine(Params p, const int* selection, const elem_t* partial_o,
                                             const float* partial_lse, elem_t* o, float* lse) {
    constexpr u32 groups = HEAD_DIM / 8;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t rows = (size_t)p.batch * p.q_heads * p.q_len;
    if (i >= rows * groups) return;
    size_t row = i / groups;
    u32 c = (i % groups) * 8;
    // Slots holding -1 (fewer eligible blocks than TOP_K) have no output.
    float pair_lse[TOP_K];
    float top = NEG_INF;
#pragma unroll
    for (u32 s = 0; s < TOP_K; s++) {
        pair_lse[s] = selection[row * TOP_K + s] >= 0 ? partial_lse[row * TOP_K + s] : NEG_INF;
        top = fmaxf(top, pair_lse[s]);
    }
    float base = top == NEG_INF ? 0.0f : top;
    float sum = 0.0f, x[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (u32 s = 0; s < TOP_K; s++) {
        if (pair_lse[s] == NEG_INF) continue;
        float w = exp2_approx(pair_lse[s] - base);
        float y[8];
        load8_float(y, partial_o + (row * TOP_K + s) * HEAD_DIM + c);
        sum += w;
#pragma unroll
        for (u32 e = 0; e < 8; e++) x[e] = fmaf(w, y[e], x[e]);
    }
    float scale = sum > 0.0f ? 1.0f / sum : 0.0f;
#pragma unroll
    for (u32 e = 0; e < 8; e++) x[e] *= scale;
    store8(o + row * HEAD_DIM + c, x);
    if (c == 0) lse[row] = sum > 0.0f ? (base + log2f(sum)) * LN2 : NEG_INF;
}

extern "C" __global__ void attention_finalize(Params p, const float* state_o, const float* state_ml,
                                              elem_t* o, float* lse) {
    constexpr u32 groups = HEAD_DIM / 8;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t rows = (size_t)p.batch * p.q_heads * p.q_len;
    if (i >= rows * groups) return;
    size_t row = i / groups;
    float m = state_ml[row * 2], l = state_ml[row * 2 + 1];
    const float4* acc = (const float4*)(state_o + i * 8);
    float4 low = acc[0], high = acc[1];
    float x[8] = {low.x / l, low.y / l, low.z / l, low.w / l, high.x / l, high.y / l, high.z / l, high.w / l};
    store8(o + i * 8, x);
    if (i % groups == 0) lse[row] = (m + log2f(l)) * LN2;
}
