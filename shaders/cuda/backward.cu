// MoBA backward on the tensor cores (DESIGN §1.6: the selection is a constant).
// P = exp(scale q.k - lse), dS = P * (dO.v - delta), delta = rowsum(dO * o);
// dq = scale dS.k, dk = scale dS^T.q, dv = P^T.dO.
//
// backward_prepare — one warp per row: row_terms [rows, 2] f32 = (lse in base 2, delta).
// dq_pass — grid (tile capacity of a slot, batch * q_heads), TILE_THREADS threads: like
//   attention_pass, one tile of gathered rows x their block j per thread block, one launch
//   per slot; each warp owns 16 rows. Per key tile: s = q.k^T, p, dp = dO.v^T, ds,
//   dq += ds.k (all mma; warpgroup MMAs on Swizzled tiles in the WGMMA build, as in
//   attention_pass). Slot 0 writes dq_state [rows, HEAD_DIM] f32, later slots add:
//   deterministic, no atomics.
//   Shared memory (dynamic, TileLayout): q, dO [ROW_TILE], then two k and two v [KEY_TILE]
//   tiles (KeyValueTiles: the next key tile is copied while this one is used).
// dq_finalize — one thread per element: dq = scale * dq_state as elem_t.
// dkdv — grid (key tiles per block * num_blocks, batch * kv_heads, splits), KEY_THREADS
//   threads: a thread block owns KEY_TILE keys of one block (each warp 16 of them) and walks
//   every row that chose the block: the query heads of the GQA group (or, where the host
//   splits a small grid, its share of them), slot by slot, each list in row order,
//   DKDV_ROWS rows at a time (RowWalk). Per row step: s^T = k.q^T, p^T,
//   dv += p^T.dO, dp^T = v.dO^T, ds^T, dk += ds^T.q. A fixed order: deterministic. In the
//   WGMMA build the thread block is one warpgroup: its 64 keys are the MMAs' rows.
//   Shared memory (dynamic, TileLayout): k, v [KEY_TILE], then two q and two dO
//   [DKDV_ROWS] tiles (GatheredRows: the next step's rows are copied while this step's are
//   used). A split walk writes f32 partial sums (in the dq accumulator, free by then).
// dkdv_combine — one thread per element of dk: dk and dv as elem_t from a split walk's
//   partials (only where the walk is split).

// Rows per dk/dv step (DKDV_ROWS_*, set by the host): the n of the step's products.
// Warpgroup MMAs take 64 (m64n64k16, half the steps and barriers); the mma.sync build
// keeps 32, as 64 would spill registers.
#if WGMMA
#define DKDV_ROWS DKDV_ROWS_WGMMA
#else
#define DKDV_ROWS DKDV_ROWS_SYNC
#endif

extern "C" __global__ void backward_prepare(Params p, const elem_t* o, const elem_t* dout,
                                            const float* lse, float* row_terms) {
    size_t row = (size_t)blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    u32 lane = threadIdx.x % WARP;
    if (row >= (size_t)p.batch * p.q_heads * p.q_len) return;
    float delta = 0.0f;
    for (u32 c = lane; c < HEAD_DIM; c += WARP) {
        delta += to_float(o[row * HEAD_DIM + c]) * to_float(dout[row * HEAD_DIM + c]);
    }
    for (u32 offset = WARP / 2; offset > 0; offset /= 2) delta += __shfl_xor_sync(0xffffffff, delta, offset);
    if (lane == 0) {
        row_terms[row * 2] = lse[row] * LOG2E;
        row_terms[row * 2 + 1] = delta;
    }
}

extern "C" __global__ void __launch_bounds__(TILE_THREADS)
dq_pass(Params p, u32 slot, const elem_t* q, const elem_t* k, const elem_t* v, const elem_t* dout,
        const float* row_terms, const u32* lists, const u32* starts, const u32* tiles,
        float* dq_state) {
    extern __shared__ __align__(16) u16 shared[];
    u16* q_tile = TileLayout::base(shared);
    u16* do_tile = q_tile + TileLayout::elems(ROW_TILE);
    u16* kv_buffers = do_tile + TileLayout::elems(ROW_TILE);
    __shared__ u32 rows[ROW_TILE];

    GatheredTile tile = slot_tile(rows, p, lists, starts, tiles, slot);
    if (tile.count == 0) return;
    u32 bh = blockIdx.y;
    size_t q_base = (size_t)bh * p.q_len * HEAD_DIM;
    // Copied with the first key tile (KeyValueTiles commits them, arrive(0) waits for them).
    stage_async<ROW_TILE, TILE_THREADS, TileLayout>(q_tile, q + q_base, Listed{rows}, tile.count);
    stage_async<ROW_TILE, TILE_THREADS, TileLayout>(do_tile, dout + q_base, Listed{rows}, tile.count);

    size_t kv_base = (size_t)kv_group(p, bh) * p.kv_len * HEAD_DIM;
    u32 key_stop = block_end(p, tile.block);
    if (p.causal) key_stop = min(key_stop, query_position(p, rows[tile.count - 1]) + 1);
    u32 first_pos = query_position(p, rows[0]);
    u32 key_first = tile_key_first(p, tile.block, first_pos, key_stop);

    u32 warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    u32 g = lane / 4, t = lane % 4;
    u32 r0 = warp * 16 + g, r1 = r0 + 8;
    u32 pos0 = query_position(p, rows[r0]), pos1 = query_position(p, rows[r1]);
    size_t row0 = (size_t)bh * p.q_len + rows[r0], row1 = (size_t)bh * p.q_len + rows[r1];
    float lse0 = row_terms[row0 * 2], delta0 = row_terms[row0 * 2 + 1];
    float lse1 = row_terms[row1 * 2], delta1 = row_terms[row1 * 2 + 1];

    float acc[HEAD_DIM / 8][4];
#pragma unroll
    for (u32 n = 0; n < HEAD_DIM / 8; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;

    KeyValueTiles<TILE_THREADS, TileLayout> kv(kv_buffers, k + kv_base, v + kv_base,
                                              KeySpan{key_first, key_stop});
    for (u32 i = 0; i < kv.count; i++) {
        kv.arrive(i);
        u32 kb = kv.key(i);
        const u16* k_tile = kv.k_tile(i);
        const u16* v_tile = kv.v_tile(i);

        float s[KEY_TILE / 8][4], dp[KEY_TILE / 8][4];
        TileLayout::scores<ROW_TILE, KEY_TILE>(s, q_tile, warp * 16, k_tile);
        TileLayout::scores<ROW_TILE, KEY_TILE>(dp, do_tile, warp * 16, v_tile);
        bool masked = tile_masked(p, kb, key_stop, first_pos);
#pragma unroll
        for (u32 n = 0; n < KEY_TILE / 8; n++) {
#pragma unroll
            for (u32 e = 0; e < 4; e++) {
                bool upper = e < 2;
                float prob = exp2_approx(fmaf(s[n][e], p.scale_log2, -(upper ? lse0 : lse1)));
                if (masked) {
                    u32 key = kb + n * 8 + 2 * t + (e & 1);
                    if (key_hidden(p, key, key_stop, upper ? pos0 : pos1)) prob = 0.0f;
                }
                s[n][e] = prob * (dp[n][e] - (upper ? delta0 : delta1)); // ds
            }
        }
        TileLayout::accumulate<KEY_TILE>(acc, s, k_tile);
    }

#pragma unroll
    for (u32 half = 0; half < 2; half++) {
        u32 r = half ? r1 : r0;
        if (r >= tile.count) continue;
        float* out = dq_state + (half ? row1 : row0) * HEAD_DIM + 2 * t;
#pragma unroll
        for (u32 n = 0; n < HEAD_DIM / 8; n++) {
            float2 x = make_float2(acc[n][2 * half], acc[n][2 * half + 1]);
            if (slot > 0) {
                float2 old = *(float2*)(out + n * 8);
                x.x += old.x;
                x.y += old.y;
            }
            *(float2*)(out + n * 8) = x;
        }
    }
}

extern "C" __global__ void dq_finalize(Params p, const float* dq_state, elem_t* dq) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)p.batch * p.q_heads * p.q_len * HEAD_DIM) return;
    store_elem(dq, i, dq_state[i] * p.scale);
}

// The rows that chose key block `j`, DKDV_ROWS at a time: the query heads of the kv group
// (split `split` of `splits` equal shares of them), slot by slot, each list in row order (a
// fixed order: deterministic sums). Causal rows
// before the first key of the thread block's tile see none of it and are skipped: a list
// is in row order, so they are its front (a binary search finds where they end). For a
// block of many tiles (NSA's compressed branch is one block of every pooled key) that is
// most of the early tiles' walk.
struct RowWalk {
    const u32* lists;
    const u32* starts;
    u32 q_len, num_blocks, j;
    u32 first_row; // the first row (query index t) that sees a key of the tile
    u32 end_bh; // one past the split's last query head
    u32 bh, slot;
    u32 first, end; // the step's first row and the end of its list (indices into the list)

    __device__ RowWalk(const Params& p, const u32* lists, const u32* starts, u32 j, u32 group,
                       u32 split, u32 splits, u32 key_first)
        : lists(lists), starts(starts), q_len(p.q_len), num_blocks(p.num_blocks), j(j), slot(0),
          first(0), end(0) {
        // Query t sits at position kv_len - q_len + t and sees keys up to it.
        u32 offset = p.kv_len - p.q_len;
        first_row = p.causal && key_first > offset ? key_first - offset : 0;
        u32 heads = group_size(p), share = (heads + splits - 1) / splits;
        u32 group_bh = (group / p.kv_heads) * p.q_heads + (group % p.kv_heads) * heads;
        bh = group_bh + min(split * share, heads);
        end_bh = group_bh + min((split + 1) * share, heads);
        if (done()) return;
        open();
        settle();
    }
    __device__ bool done() const { return bh == end_bh; }
    __device__ u32 count() const { return min((u32)DKDV_ROWS, end - first); }
    // The step's rows (query indices t of head bh).
    __device__ const u32* rows() const { return lists + (size_t)(bh * TOP_K + slot) * q_len + first; }
    __device__ void advance() {
        first += DKDV_ROWS;
        settle();
    }
    // Block j's part of list (bh, slot), from its first row that sees the tile.
    __device__ void open() {
        const u32* list_starts = starts + (size_t)(bh * TOP_K + slot) * (num_blocks + 1);
        first = list_starts[j];
        end = list_starts[j + 1];
        const u32* list = lists + (size_t)(bh * TOP_K + slot) * q_len;
        // Most lists have nothing to skip: one load settles that.
        if (first == end || list[first] >= first_row) return;
        u32 low = first, high = end;
        while (low < high) {
            u32 mid = (low + high) / 2;
            if (list[mid] < first_row) low = mid + 1; else high = mid;
        }
        first = low;
    }
    // Moves past finished (or empty) lists.
    __device__ void settle() {
        while (first >= end) {
            if (++slot == TOP_K) {
                slot = 0;
                bh++;
            }
            if (done()) return;
            open();
        }
    }
};

// The walk's q and dO rows, double-buffered in `buffers` (q0, dO0, q1, dO1): step i sits in
// buffer i % 2 while step i + 1 is copied into the other, with each row's lse (base 2),
// delta and position.
struct GatheredRows {
    u16* buffers;
    float (*lse)[DKDV_ROWS];
    float (*delta)[DKDV_ROWS];
    u32 (*pos)[DKDV_ROWS];

    __device__ u16* q_tile(u32 b) const { return buffers + 2 * b * TileLayout::elems(DKDV_ROWS); }
    __device__ u16* do_tile(u32 b) const { return q_tile(b) + TileLayout::elems(DKDV_ROWS); }
    // Starts copying the rows of `step` into buffer b.
    __device__ void fetch(const Params& p, const RowWalk& step, u32 b, const elem_t* q,
                          const elem_t* dout, const float* row_terms) const {
        u32 count = step.count();
        const u32* rows = step.rows();
        size_t q_base = (size_t)step.bh * p.q_len;
        stage_async<DKDV_ROWS, KEY_THREADS, TileLayout>(q_tile(b), q + q_base * HEAD_DIM, Listed{rows}, count);
        stage_async<DKDV_ROWS, KEY_THREADS, TileLayout>(do_tile(b), dout + q_base * HEAD_DIM, Listed{rows}, count);
        cp_async_commit();
        for (u32 i = threadIdx.x; i < DKDV_ROWS; i += blockDim.x) {
            u32 row = rows[min(i, count - 1)];
            pos[b][i] = query_position(p, row);
            // Rows past the step get lse +inf: p = 0, no contribution.
            lse[b][i] = i < count ? row_terms[(q_base + row) * 2] : -NEG_INF;
            delta[b][i] = row_terms[(q_base + row) * 2 + 1];
        }
    }
};

extern "C" __global__ void __launch_bounds__(KEY_THREADS)
dkdv(Params p, const elem_t* q, const elem_t* k, const elem_t* v, const elem_t* dout,
     const float* row_terms, const u32* lists, const u32* starts, elem_t* dk, elem_t* dv,
     float* partials) {
    extern __shared__ __align__(16) u16 shared[];
    u16* k_tile = TileLayout::base(shared);
    u16* v_tile = k_tile + TileLayout::elems(KEY_TILE);
    __shared__ float row_lse[2][DKDV_ROWS], row_delta[2][DKDV_ROWS];
    __shared__ u32 row_pos[2][DKDV_ROWS];
    GatheredRows gathered = {v_tile + TileLayout::elems(KEY_TILE), row_lse, row_delta, row_pos};

    u32 tiles_per_block = (p.block_size + KEY_TILE - 1) / KEY_TILE;
    u32 j = blockIdx.x / tiles_per_block;
    u32 group = blockIdx.y;
    u32 key_first = j * p.block_size + (blockIdx.x % tiles_per_block) * KEY_TILE;
    u32 key_stop = min(key_first + KEY_TILE, block_end(p, j));
    if (key_first >= key_stop) return;
    size_t kv_base = (size_t)group * p.kv_len * HEAD_DIM;
    // Copied with the first row step (one group; the first wait covers both).
    stage_async<KEY_TILE, KEY_THREADS, TileLayout>(k_tile, k + kv_base, Span{key_first}, key_stop - key_first);
    stage_async<KEY_TILE, KEY_THREADS, TileLayout>(v_tile, v + kv_base, Span{key_first}, key_stop - key_first);

    u32 warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    u32 g = lane / 4, t = lane % 4;
    // This thread's two keys (accumulator rows g and g + 8 of the warp's 16).
    u32 key0 = key_first + warp * 16 + g, key1 = key0 + 8;

    float dk_acc[HEAD_DIM / 8][4], dv_acc[HEAD_DIM / 8][4];
#pragma unroll
    for (u32 n = 0; n < HEAD_DIM / 8; n++) {
        dk_acc[n][0] = dk_acc[n][1] = dk_acc[n][2] = dk_acc[n][3] = 0.0f;
        dv_acc[n][0] = dv_acc[n][1] = dv_acc[n][2] = dv_acc[n][3] = 0.0f;
    }

    RowWalk step(p, lists, starts, j, group, blockIdx.z, gridDim.z, key_first);
    if (!step.done()) gathered.fetch(p, step, 0, q, dout, row_terms);
    for (u32 b = 0; !step.done(); b ^= 1) {
        // As in KeyValueTiles: wait for this step's rows, show them to the block, then copy
        // the next step's into the other buffer (every warp past the barrier is done with
        // the step it held). One barrier per step.
        cp_async_wait<0>();
        TileLayout::publish();
        __syncthreads();
        RowWalk next = step;
        next.advance();
        if (!next.done()) gathered.fetch(p, next, b ^ 1, q, dout, row_terms);
        const u16* q_tile = gathered.q_tile(b);
        const u16* do_tile = gathered.do_tile(b);

        float s[DKDV_ROWS / 8][4], dp[DKDV_ROWS / 8][4];
        TileLayout::scores<KEY_TILE, DKDV_ROWS>(s, k_tile, warp * 16, q_tile);
        TileLayout::scores<KEY_TILE, DKDV_ROWS>(dp, v_tile, warp * 16, do_tile);
        // The step's rows ascend (one list): its first has the smallest position, so most
        // steps mask nothing. Rows past the step have lse +inf, hence p = 0.
        bool masked = tile_masked(p, key_first, key_stop, row_pos[b][0]);
#pragma unroll
        for (u32 n = 0; n < DKDV_ROWS / 8; n++) {
#pragma unroll
            for (u32 e = 0; e < 4; e++) {
                u32 col = n * 8 + 2 * t + (e & 1);
                float prob = exp2_approx(fmaf(s[n][e], p.scale_log2, -row_lse[b][col]));
                if (masked && key_hidden(p, e < 2 ? key0 : key1, key_stop, row_pos[b][col])) prob = 0.0f;
                s[n][e] = prob;                                  // p^T
                dp[n][e] = prob * (dp[n][e] - row_delta[b][col]); // ds^T
            }
        }
        TileLayout::accumulate<DKDV_ROWS>(dv_acc, s, do_tile);
        TileLayout::accumulate<DKDV_ROWS>(dk_acc, dp, q_tile);
        step = next;
    }
    // A block no row chose still waits for its key copy before it exits (committed here:
    // only a row step's fetch commits it otherwise).
    cp_async_commit();
    cp_async_wait<0>();

    // A split walk's sums go to its partials (dk's, then dv's, [splits, groups, kv_len,
    // HEAD_DIM] f32 each), which dkdv_combine adds up.
    size_t elems = (size_t)gridDim.y * p.kv_len * HEAD_DIM;
    float* dk_part = partials + (size_t)blockIdx.z * elems;
    float* dv_part = partials + (size_t)(gridDim.z + blockIdx.z) * elems;
#pragma unroll
    for (u32 half = 0; half < 2; half++) {
        u32 key = half ? key1 : key0;
        if (key >= key_stop) continue;
        size_t at = kv_base + (size_t)key * HEAD_DIM + 2 * t;
#pragma unroll
        for (u32 n = 0; n < HEAD_DIM / 8; n++) {
            float2 dk_pair = make_float2(dk_acc[n][2 * half] * p.scale, dk_acc[n][2 * half + 1] * p.scale);
            float2 dv_pair = make_float2(dv_acc[n][2 * half], dv_acc[n][2 * half + 1]);
            if (gridDim.z > 1) {
                *(float2*)(dk_part + at + n * 8) = dk_pair;
                *(float2*)(dv_part + at + n * 8) = dv_pair;
            } else {
                store_elem(dk, at + n * 8, dk_pair.x);
                store_elem(dk, at + n * 8 + 1, dk_pair.y);
                store_elem(dv, at + n * 8, dv_pair.x);
                store_elem(dv, at + n * 8 + 1, dv_pair.y);
            }
        }
    }
}

// One thread per element of dk (and of dv): the sums of a split dk/dv walk's partials, in
// split order (deterministic).
extern "C" __global__ void dkdv_combine(Params p, u32 splits, const float* partials, elem_t* dk,
                                        elem_t* dv) {
    size_t elems = (size_t)p.batch * p.kv_heads * p.kv_len * HEAD_DIM;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= elems) return;
    float dk_sum = 0.0f, dv_sum = 0.0f;
    for (u32 split = 0; split < splits; split++) {
        dk_sum += partials[split * elems + i];
        dv_sum += partials[(splits + split) * elems + i];
    }
    store_elem(dk, i, dk_sum);
    store_elem(dv, i, dv_sum);
}
