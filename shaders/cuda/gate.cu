// Gate: mean key of every block, then each query's top-k blocks (DESIGN §1 steps 1-4).
//
// block_means — grid (num_blocks, batch * kv_heads), MEAN_THREADS threads: thread
//   (lane r, columns 8c..8c+7) sums those columns of the block's rows r, r + lanes, ...
//   in f32 with 16-byte loads (lanes = MEAN_THREADS / (HEAD_DIM / 8)), then thread c adds
//   the lanes' partial sums of column c from shared memory.
//   Memory: k [groups, kv_len, HEAD_DIM] elem_t, means [groups, num_blocks, HEAD_DIM] f32.
// gate_topk — grid ceil(rows / GATE_THREADS), one thread per query row (rows = batch *
//   q_heads * q_len). Each thread keeps its query and its best TOP_K (score, block) pairs in
//   registers while it streams over the block means, so no [rows, num_blocks] score matrix
//   exists. Same rule as the reference and the WGSL gate: causal rows force their own block
//   and rank the earlier ones; ties go to the larger block id; the static gates score by
//   block id (sinks above every other block). When all rows of a thread block read one kv
//   head's means (every block unless its rows straddle two kv heads), the means pass through
//   shared memory MEAN_STAGE blocks at a time: the loads of one mean by every thread were
//   the gate's bottleneck. Memory: q [rows, HEAD_DIM] elem_t; selection [rows, TOP_K] i32,
//   ascending, padded with -1.

#define GATE_THREADS 128
#define MEAN_STAGE 16
#define MEAN_THREADS 256
#define GATE_MEAN_KEY 0
#define GATE_SINK_AND_RECENT 2

extern "C" __global__ void __launch_bounds__(MEAN_THREADS)
block_means(Params p, const elem_t* k, float* means) {
    constexpr u32 column_groups = HEAD_DIM / 8;
    constexpr u32 lanes = MEAN_THREADS / column_groups; // rows summed side by side
    __shared__ float partial[lanes][HEAD_DIM];
    u32 j = blockIdx.x, group = blockIdx.y;
    u32 lane = threadIdx.x / column_groups, c8 = (threadIdx.x % column_groups) * 8;
    u32 first = j * p.block_size, end = block_end(p, j);
    const elem_t* keys = k + (size_t)group * p.kv_len * HEAD_DIM;
    // Head dims whose column groups do not divide MEAN_THREADS leave the last threads idle.
    u32 stop = lane < lanes ? end : first;
    float sum[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    for (u32 i = first + lane; i < stop; i += lanes) {
        float x[8];
        load8_float(x, keys + (size_t)i * HEAD_DIM + c8);
#pragma unroll
        for (u32 e = 0; e < 8; e++) sum[e] += x[e];
    }
    if (lane < lanes) {
#pragma unroll
        for (u32 e = 0; e < 8; e++) partial[lane][c8 + e] = sum[e];
    }
    __syncthreads();
    for (u32 c = threadIdx.x; c < HEAD_DIM; c += MEAN_THREADS) {
        float total = 0.0f;
        for (u32 r = 0; r < lanes; r++) total += partial[r][c];
        means[((size_t)group * p.num_blocks + j) * HEAD_DIM + c] = total / (float)(end - first);
    }
}

// The dot product of a query with one block mean (16-byte loads of the mean).
__device__ __forceinline__ float mean_score(const float query[HEAD_DIM], const float4* mean) {
    float score = 0.0f;
#pragma unroll
    for (u32 c = 0; c < HEAD_DIM / 4; c++) {
        float4 m = mean[c];
        score += query[4 * c] * m.x + query[4 * c + 1] * m.y + query[4 * c + 2] * m.z +
                 query[4 * c + 3] * m.w;
    }
    return score;
}

extern "C" __global__ void __launch_bounds__(GATE_THREADS)
gate_topk(Params p, const elem_t* q, const float* means, int* selection) {
    __shared__ float4 staged[MEAN_STAGE * HEAD_DIM / 4];
    __shared__ u32 walk;
    u32 rows = p.batch * p.q_heads * p.q_len;
    u32 first_row = blockIdx.x * GATE_THREADS;
    u32 last_row = min(first_row + GATE_THREADS, rows) - 1;
    // Threads past the last row repeat it (they take part in the staging) and write nothing.
    bool active = first_row + threadIdx.x < rows;
    u32 row = min(first_row + threadIdx.x, last_row);
    u32 bh = row / p.q_len;
    u32 current = query_position(p, row % p.q_len) / p.block_size;
    const float4* block_mean = (const float4*)(means + (size_t)kv_group(p, bh) * p.num_blocks * HEAD_DIM);
    // The same for the whole thread block, so its barriers are too.
    bool stage_means = p.gate == GATE_MEAN_KEY &&
                       kv_group(p, first_row / p.q_len) == kv_group(p, last_row / p.q_len);

    // 16-byte loads: a thread's row is contiguous (scalar loads touched a line per element).
    float query[HEAD_DIM];
#pragma unroll
    for (u32 c = 0; c < HEAD_DIM; c += 8) load8_float(query + c, q + (size_t)row * HEAD_DIM + c);

    // Causal rows rank the blocks before their own for TOP_K - 1 places.
    u32 places = p.causal ? TOP_K - 1 : TOP_K;
    u32 eligible = p.causal ? current : p.num_blocks;
    float best_score[TOP_K];
    int best_block[TOP_K];
#pragma unroll
    for (u32 i = 0; i < TOP_K; i++) { best_score[i] = NEG_INF; best_block[i] = -1; }

    // Staging walks the blocks any row of the thread block ranks; each row scores its own.
    u32 blocks = eligible;
    if (stage_means) {
        if (threadIdx.x == 0) walk = 0;
        __syncthreads();
        atomicMax(&walk, eligible);
        __syncthreads();
        blocks = walk;
    }
    for (u32 j = 0; j < blocks; j++) {
        if (stage_means && j % MEAN_STAGE == 0) {
            __syncthreads(); // every thread is done with the previous stage
            for (u32 i = threadIdx.x; i < MEAN_STAGE * HEAD_DIM / 4; i += GATE_THREADS) {
                bool inside = j + i / (HEAD_DIM / 4) < p.num_blocks;
                staged[i] = inside ? block_mean[j * (HEAD_DIM / 4) + i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            }
            __syncthreads();
        }
        if (j >= eligible) continue;
        float score = (float)j; // the static gates: recent blocks first
        if (p.gate == GATE_MEAN_KEY) {
            score = stage_means ? mean_score(query, staged + (j % MEAN_STAGE) * (HEAD_DIM / 4))
                                : mean_score(query, block_mean + j * (HEAD_DIM / 4));
        } else if (p.gate == GATE_SINK_AND_RECENT && j < p.sink_blocks) {
            score = (float)(p.num_blocks + j);
        }
        // Blocks arrive in ascending order, so a new block outranks kept blocks of equal
        // score (ties to the more recent block): insert before the first score <= it.
        // Unrolled over the fixed TOP_K places so the arrays stay in registers.
        bool carry = true;
        float carry_score = score;
        int carry_block = (int)j;
#pragma unroll
        for (u32 i = 0; i < TOP_K; i++) {
            bool take = i < places && carry &&
                        (best_block[i] < 0 || best_score[i] <= carry_score);
            if (take) {
                float s = best_score[i];
                int b = best_block[i];
                best_score[i] = carry_score;
                best_block[i] = carry_block;
                carry_score = s;
                carry_block = b;
                carry = b >= 0;
            }
        }
    }
    if (p.causal) {
        // TOP_K - 1 places were ranked; the last slot takes the forced block.
        best_block[TOP_K - 1] = (int)current;
    }
    // Ascending block ids with -1 last: sort the TOP_K entries (-1 counts as largest).
#pragma unroll
    for (u32 i = 0; i < TOP_K; i++) {
#pragma unroll
        for (u32 m = 0; m + 1 < TOP_K - i; m++) {
            u32 a = (u32)best_block[m], b = (u32)best_block[m + 1]; // -1 wraps to the top
            if (a > b) { best_block[m] = (int)b; best_block[m + 1] = (int)a; }
        }
    }
    if (!active) return;
#pragma unroll
    for (u32 i = 0; i < TOP_K; i++) selection[(size_t)row * TOP_K + i] = best_block[i];
}
