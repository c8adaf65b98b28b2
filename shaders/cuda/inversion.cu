// Selection inversion: for every list, its entries grouped by the block they chose, in
// entry order (DESIGN §3: invert, then run dense tiles of gathered rows).
// A stable counting sort in three deterministic steps. A list is `list_slots` slots of one
// query head (LIST_ENTRIES), entries in row order:
//   list_slots 1 (the passes per slot): list = bh * TOP_K + slot, entry = row;
//   list_slots TOP_K (attention_blocks): list = bh, entry = row * TOP_K + slot.
//
// selection_count — grid (chunks, lists), INVERT_THREADS threads: a shared-memory histogram of
//   the blocks chosen by the entries of CHUNK_ROWS consecutive rows (CHUNK_ROWS * list_slots
//   entries: a list of every slot has as many chunks as one of one slot, so the scan of its
//   counts is no longer) -> counts [lists, num_blocks, chunks].
// selection_scan — grid (lists), INVERT_THREADS threads: exclusive prefix over (block, chunk)
//   -> offsets (same layout), starts [lists, num_blocks + 1] (first entry of each block) and
//   tiles [lists, num_blocks + 1] (first ROW_TILE-entry tile of each block).
// selection_scatter — grid (chunks, lists), one warp: the chunk's entries 32 at a time; lanes
//   that chose the same block rank themselves by lane order (match_any), so the order is the
//   entry order whatever the timing -> lists [lists, entries].
// Entries whose slot holds -1 (fewer than TOP_K eligible blocks) appear in no list.
// Shared memory: num_blocks u32 (dynamic).


// The block entry `e` of list `list` chose, or -1.
__device__ __forceinline__ int chosen_block(const int* selection, const Params& p, u32 list,
                                            u32 list_slots, u32 e) {
    u32 lists_per_head = TOP_K / list_slots;
    u32 bh = list / lists_per_head, slot = list % lists_per_head * list_slots + e % list_slots;
    return selection[((size_t)bh * p.q_len + e / list_slots) * TOP_K + slot];
}

extern "C" __global__ void selection_count(Params p, u32 list_slots, const int* selection, u32* counts) {
    extern __shared__ u32 histogram[];
    u32 chunk = blockIdx.x, list = blockIdx.y, chunks = gridDim.x;
    for (u32 j = threadIdx.x; j < p.num_blocks; j += blockDim.x) histogram[j] = 0;
    __syncthreads();
    u32 chunk_entries = CHUNK_ROWS * list_slots;
    u32 end = min((chunk + 1) * chunk_entries, list_entries(p, list_slots));
    for (u32 e = chunk * chunk_entries + threadIdx.x; e < end; e += blockDim.x) {
        int j = chosen_block(selection, p, list, list_slots, e);
        if (j >= 0) atomicAdd(&histogram[j], 1u);
    }
    __syncthreads();
    for (u32 j = threadIdx.x; j < p.num_blocks; j += blockDim.x) {
        counts[((size_t)list * p.num_blocks + j) * chunks + chunk] = histogram[j];
    }
}

// Exclusive scan of `n` values in place by one thread block, in INVERT_THREADS-wide steps;
// returns the total. `carry` is shared scratch of INVERT_THREADS u32.
__device__ u32 block_exclusive_scan(u32* values, u32 n, u32* carry) {
    u32 total = 0;
    for (u32 base = 0; base < n; base += INVERT_THREADS) {
        u32 i = base + threadIdx.x;
        u32 x = i < n ? values[i] : 0;
        carry[threadIdx.x] = x;
        __syncthreads();
        // Hillis-Steele inclusive scan of the step.
        for (u32 offset = 1; offset < INVERT_THREADS; offset *= 2) {
            u32 add = threadIdx.x >= offset ? carry[threadIdx.x - offset] : 0;
            __syncthreads();
            carry[threadIdx.x] += add;
            __syncthreads();
        }
        if (i < n) values[i] = total + carry[threadIdx.x] - x;
        total += carry[INVERT_THREADS - 1];
        __syncthreads();
    }
    return total;
}

extern "C" __global__ void __launch_bounds__(INVERT_THREADS)
selection_scan(Params p, u32 chunks, u32* counts, u32* starts, u32* tiles) {
    __shared__ u32 carry[INVERT_THREADS];
    u32 list = blockIdx.x;
    u32* list_counts = counts + (size_t)list * p.num_blocks * chunks;
    u32* list_starts = starts + (size_t)list * (p.num_blocks + 1);
    u32* list_tiles = tiles + (size_t)list * (p.num_blocks + 1);
    // Rows per block, and its tiles, before the scan turns counts into offsets.
    for (u32 j = threadIdx.x; j < p.num_blocks; j += INVERT_THREADS) {
        u32 rows = 0;
        for (u32 c = 0; c < chunks; c++) rows += list_counts[j * chunks + c];
        list_starts[j] = rows;
        list_tiles[j] = (rows + ROW_TILE - 1) / ROW_TILE;
    }
    __syncthreads();
    block_exclusive_scan(list_counts, p.num_blocks * chunks, carry);
    u32 total_rows = block_exclusive_scan(list_starts, p.num_blocks, carry);
    u32 total_tiles = block_exclusive_scan(list_tiles, p.num_blocks, carry);
    if (threadIdx.x == 0) {
        list_starts[p.num_blocks] = total_rows;
        list_tiles[p.num_blocks] = total_tiles;
    }
}

extern "C" __global__ void selection_scatter(Params p, u32 list_slots, const int* selection,
                                              const u32* offsets, u32* lists) {
    extern __shared__ u32 cursor[];
    u32 chunk = blockIdx.x, list = blockIdx.y, chunks = gridDim.x, lane = threadIdx.x;
    for (u32 j = lane; j < p.num_blocks; j += WARP) {
        cursor[j] = offsets[((size_t)list * p.num_blocks + j) * chunks + chunk];
    }
    __syncwarp();
    u32 entries = list_entries(p, list_slots);
    u32* out = lists + (size_t)list * entries;
    u32 chunk_entries = CHUNK_ROWS * list_slots;
    u32 end = min((chunk + 1) * chunk_entries, entries);
    for (u32 base = chunk * chunk_entries; base < end; base += WARP) {
        u32 e = base + lane;
        int j = e < end ? chosen_block(selection, p, list, list_slots, e) : -1;
        u32 peers = __match_any_sync(0xffffffff, j);
        u32 rank = __popc(peers & ((1u << lane) - 1));
        if (j >= 0) out[cursor[j] + rank] = e;
        __syncwarp();
        // The lowest lane of each group advances its block's cursor.
        if (j >= 0 && rank == 0) cursor[j] += __popc(peers);
        __syncwarp();
    }
}
