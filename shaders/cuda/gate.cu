// Gate: mean key of every block, then each query's top-k blocks (DESIGN §1 steps 1-4).
//
// block_means — grid (num_blocks, batch * kv_heads), MEAN_THREADS threads: thread
//   (lane r, columns 8c..8c+7) sums those columns of the block's rows r, r + lanes, ...
//   in f32 with 16-byte loads (lanes = MEAN_THREADS / (HEAD_DIM / 8)), then thread c adds
//   the lanes' partial sums of column c from shared memory.
//   Memory: k [groups, kv_len, HEAD_DIM] elem_t, means [groups, num_blocks, HEAD_DIM] f32.
// gate_topk — grid (ceil(q_len / GATE_THREADS), batch * q_heads), one thread per query row:
//   a thread block's rows are one query head's, so they share one kv head's block means.
//   The means pass through shared memory MEAN_STAGE blocks at a time; each stage's scores
//   go to shared memory (GateQuery::score), then every thread ranks its row's scores into
//   its best TOP_K (score, block) pairs, kept in registers (a block below the last kept
//   score skips the insertion: most blocks, once the places are full): no [rows,
//   num_blocks] score matrix exists. Scores, each warp its 32 rows x MEAN_STAGE blocks on
//   the tensor cores: bf16 queries in bf16 (`mma.m16n8k16`), each f32 mean staged as three
//   bf16 terms (each the bf16 nearest to what the terms before it left), which carry its 24
//   bits; f16 queries in tf32 (`mma.m16n8k8`: f16 is exact in tf32), each mean staged as a
//   tf32 head plus its remainder, about 21 bits of it. f32 inputs: each thread its row in
//   f32 FMAs. Same rule as the reference and the WGSL gate: causal rows force their own
//   block and rank the earlier ones of their sequence; ties go to the larger block id; the
//   static gates score by block id (sinks above every other block).
//   Memory: q [rows, HEAD_DIM] elem_t; selection [rows, TOP_K] i32, ascending, padded with
//   -1; sequence_starts [num_blocks] i32 or null, the first block of each block's sequence
//   (a packed varlen batch; null: all 0). Shared: the stage's means (GateQuery::Staged:
//   tf32 pairs in rows of STAGE_STRIDE, bf16 terms in rows of TERM_STRIDE, laid out so a
//   fragment read falls in 32 distinct banks), and its scores [GATE_THREADS][SCORE_STRIDE].

#define MEAN_STAGE 16
#define STAGE_STRIDE (HEAD_DIM + 4)
#define SCORE_STRIDE (MEAN_STAGE + 4)

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

// Calls split(j, c, mean) for every column c of the MEAN_STAGE block means from
// `first_block` (j: the block within the stage), the threads sharing them out with 16-byte
// loads; blocks past the last are zero.
template <typename Split>
__device__ __forceinline__ void for_stage_means(const float4* block_mean, u32 first_block,
                                                u32 num_blocks, Split split) {
    constexpr u32 chunks = HEAD_DIM / 4;
    for (u32 i = threadIdx.x; i < MEAN_STAGE * chunks; i += GATE_THREADS) {
        u32 j = i / chunks, c = (i % chunks) * 4;
        float4 m = first_block + j < num_blocks ? block_mean[first_block * chunks + i]
                                                : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        float values[4] = {m.x, m.y, m.z, m.w};
#pragma unroll
        for (u32 e = 0; e < 4; e++) split(j, c + e, values[e]);
    }
}

// One stage of block means as (tf32 head, f32 remainder) pairs: head + remainder is the
// mean exactly.
typedef float2 StagedPairs[MEAN_STAGE][STAGE_STRIDE];

__device__ __forceinline__ void stage_pairs(StagedPairs& staged, const float4* block_mean,
                                            u32 first_block, u32 num_blocks) {
    for_stage_means(block_mean, first_block, num_blocks, [&](u32 j, u32 c, float mean) {
        u32 head;
        asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(head) : "f"(mean));
        staged[j][c] = make_float2(__uint_as_float(head), mean - __uint_as_float(head));
    });
}

typedef float StageScores[GATE_THREADS][SCORE_STRIDE];

#if ELEM_KIND == ELEM_F32
// f32 inputs (not exact in tf32): each thread scores its own row in f32 FMAs.
struct GateQuery {
    typedef StagedPairs Staged;
    float query[HEAD_DIM];

    __device__ static void stage(Staged& staged, const float4* block_mean, u32 first_block,
                                 u32 num_blocks) {
        stage_pairs(staged, block_mean, first_block, num_blocks);
    }

    // Rows `first + threadIdx.x` of this query head, the ones past `last` repeating it.
    __device__ void load(const elem_t* q_head, u32 first, u32 last) {
        const elem_t* row = q_head + (size_t)min(first + threadIdx.x, last) * HEAD_DIM;
#pragma unroll
        for (u32 c = 0; c < HEAD_DIM; c += 8) load8_float(query + c, row + c);
    }

    __device__ void score(const Staged& staged, StageScores& scores) const {
        for (u32 j = 0; j < MEAN_STAGE; j++) {
            float score = 0.0f;
#pragma unroll
            for (u32 c = 0; c < HEAD_DIM; c++) {
                float2 mean = staged[j][c];
                score = fmaf(query[c], mean.x + mean.y, score);
            }
            scores[threadIdx.x][j] = score;
        }
    }
};
#elif ELEM_KIND == ELEM_BF16
// One stage of block means as three bf16 terms, [term][block][column]: each term is the
// bf16 nearest to what the terms before it left of the mean, so the three carry its 24 bits
// (bf16 keeps f32's exponent range: no remainder underflows). Rows of HEAD_DIM + 8 values:
// a fragment read of 8 blocks x 4 column pairs falls in 32 distinct banks.
#define TERM_STRIDE (HEAD_DIM + 8)
typedef u16 StagedTerms[3][MEAN_STAGE][TERM_STRIDE];

// bf16 inputs: each warp scores its 32 rows (two m-tiles) on the bf16 tensor cores
// (mma.m16n8k16), the rows' A fragments loaded once as they are, each mean's three terms
// multiplied into one f32 accumulator.
struct GateQuery {
    typedef StagedTerms Staged;
    // [m][kk]: the mma.m16n8k16 A fragment of m-tile m, columns kk * 16 ..
    u32 a[2][HEAD_DIM / 16][4];

    __device__ static void stage(Staged& staged, const float4* block_mean, u32 first_block,
                                 u32 num_blocks) {
        for_stage_means(block_mean, first_block, num_blocks, [&](u32 j, u32 c, float mean) {
#pragma unroll
            for (u32 term = 0; term < 3; term++) {
                u16 bits = float_to_bits(mean);
                staged[term][j][c] = bits;
                mean -= bits_to_float(bits);
            }
        });
    }

    // The fragments of this warp's 32 rows from `first`, the ones past `last` repeating it.
    __device__ void load(const elem_t* q_head, u32 first, u32 last) {
        u32 lane = threadIdx.x % WARP, g = lane / 4, t = lane % 4;
        u32 warp_row = first + threadIdx.x / WARP * WARP;
#pragma unroll
        for (u32 m = 0; m < 2; m++) {
            const u32* upper = (const u32*)(q_head + (size_t)min(warp_row + m * 16 + g, last) * HEAD_DIM);
            const u32* lower = (const u32*)(q_head + (size_t)min(warp_row + m * 16 + g + 8, last) * HEAD_DIM);
#pragma unroll
            for (u32 kk = 0; kk < HEAD_DIM / 16; kk++) {
                a[m][kk][0] = upper[kk * 8 + t];
                a[m][kk][1] = lower[kk * 8 + t];
                a[m][kk][2] = upper[kk * 8 + t + 4];
                a[m][kk][3] = lower[kk * 8 + t + 4];
            }
        }
    }

    __device__ void score(const Staged& staged, StageScores& scores) const {
        u32 lane = threadIdx.x % WARP, g = lane / 4, t = lane % 4;
        float d[2][MEAN_STAGE / 8][4] = {};
#pragma unroll
        for (u32 kk = 0; kk < HEAD_DIM / 16; kk++) {
#pragma unroll
            for (u32 term = 0; term < 3; term++) {
#pragma unroll
                for (u32 n = 0; n < MEAN_STAGE / 8; n++) {
                    const u16* row = staged[term][n * 8 + g] + kk * 16 + 2 * t;
                    u32 b0 = *(const u32*)row, b1 = *(const u32*)(row + 8);
#pragma unroll
                    for (u32 m = 0; m < 2; m++) mma(d[m][n], a[m][kk], b0, b1);
                }
            }
        }
        u32 warp_row = threadIdx.x / WARP * WARP;
#pragma unroll
        for (u32 m = 0; m < 2; m++) {
#pragma unroll
            for (u32 n = 0; n < MEAN_STAGE / 8; n++) {
                *(float2*)&scores[warp_row + m * 16 + g][n * 8 + 2 * t] = make_float2(d[m][n][0], d[m][n][1]);
                *(float2*)&scores[warp_row + m * 16 + g + 8][n * 8 + 2 * t] = make_float2(d[m][n][2], d[m][n][3]);
            }
        }
    }
};
#else
// d += a . b on the tensor cores in tf32, f32 accumulation. Fragments (lane = 4 * g + t):
//   A 16x8: a0 (g, t)  a1 (g+8, t)  a2 (g, t+4)  a3 (g+8, t+4);  B 8x8: b0 (k t, n g)
//   b1 (k t+4, n g);  C 16x8: c0 c1 (g, 2t..2t+1)  c2 c3 (g+8, 2t..2t+1).
__device__ __forceinline__ void mma_tf32(float d[4], const u32 a[4], float b0, float b1) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(__float_as_uint(b0)),
                   "r"(__float_as_uint(b1)));
}

// f16 inputs: each warp scores its 32 rows (two m-tiles) on the tensor cores; the
// rows' A fragments stay in registers for every stage, as 16-bit pairs (half the registers
// of tf32 values), widened to tf32 where a stage uses them.
struct GateQuery {
    typedef StagedPairs Staged;

    __device__ static void stage(Staged& staged, const float4* block_mean, u32 first_block,
                                 u32 num_blocks) {
        stage_pairs(staged, block_mean, first_block, num_blocks);
    }

    // [m][kk]: {a0 | a2 << 16, a1 | a3 << 16} (each row's columns t and t + 4).
    u32 packed[2][HEAD_DIM / 8][2];

    // The fragments of this warp's 32 rows from `first`, the ones past `last` repeating it.
    __device__ void load(const elem_t* q_head, u32 first, u32 last) {
        u32 lane = threadIdx.x % WARP, g = lane / 4, t = lane % 4;
        u32 warp_row = first + threadIdx.x / WARP * WARP;
#pragma unroll
        for (u32 m = 0; m < 2; m++) {
            const elem_t* upper = q_head + (size_t)min(warp_row + m * 16 + g, last) * HEAD_DIM;
            const elem_t* lower = q_head + (size_t)min(warp_row + m * 16 + g + 8, last) * HEAD_DIM;
#pragma unroll
            for (u32 kk = 0; kk < HEAD_DIM / 8; kk++) {
                packed[m][kk][0] = (u32)upper[kk * 8 + t] | (u32)upper[kk * 8 + t + 4] << 16;
                packed[m][kk][1] = (u32)lower[kk * 8 + t] | (u32)lower[kk * 8 + t + 4] << 16;
            }
        }
    }

    // The tf32 A fragment of m-tile m, k-step kk.
    __device__ void fragment(u32 a[4], u32 m, u32 kk) const {
        u32 upper = packed[m][kk][0], lower = packed[m][kk][1];
        a[0] = __float_as_uint(bits_to_float((u16)(upper & 0xffff)));
        a[1] = __float_as_uint(bits_to_float((u16)(lower & 0xffff)));
        a[2] = __float_as_uint(bits_to_float((u16)(upper >> 16)));
        a[3] = __float_as_uint(bits_to_float((u16)(lower >> 16)));
    }

    // Heads and remainders accumulate apart (twice the independent MMA chains).
    __device__ void score(const Staged& staged, StageScores& scores) const {
        u32 lane = threadIdx.x % WARP, g = lane / 4, t = lane % 4;
        float heads[2][MEAN_STAGE / 8][4] = {}, rests[2][MEAN_STAGE / 8][4] = {};
#pragma unroll
        for (u32 kk = 0; kk < HEAD_DIM / 8; kk++) {
            float2 b0[MEAN_STAGE / 8], b1[MEAN_STAGE / 8];
#pragma unroll
            for (u32 n = 0; n < MEAN_STAGE / 8; n++) {
                b0[n] = staged[n * 8 + g][kk * 8 + t];
                b1[n] = staged[n * 8 + g][kk * 8 + t + 4];
            }
#pragma unroll
            for (u32 m = 0; m < 2; m++) {
                u32 a[4];
                fragment(a, m, kk);
#pragma unroll
                for (u32 n = 0; n < MEAN_STAGE / 8; n++) {
                    mma_tf32(heads[m][n], a, b0[n].x, b1[n].x);
                    mma_tf32(rests[m][n], a, b0[n].y, b1[n].y);
                }
            }
        }
        u32 warp_row = threadIdx.x / WARP * WARP;
#pragma unroll
        for (u32 m = 0; m < 2; m++) {
#pragma unroll
            for (u32 n = 0; n < MEAN_STAGE / 8; n++) {
                float* upper = &scores[warp_row + m * 16 + g][n * 8 + 2 * t];
                float* lower = &scores[warp_row + m * 16 + g + 8][n * 8 + 2 * t];
                *(float2*)upper = make_float2(heads[m][n][0] + rests[m][n][0], heads[m][n][1] + rests[m][n][1]);
                *(float2*)lower = make_float2(heads[m][n][2] + rests[m][n][2], heads[m][n][3] + rests[m][n][3]);
            }
        }
    }
};
#endif

// A row's best blocks so far, best first, in registers (loops unrolled over TOP_K places).
struct RankedBlocks {
    float score[TOP_K];
    int block[TOP_K];
    // The score a new block must reach to take a place: -inf while one of the first
    // `places` is free, then the last kept one's (ties go to the new block); +inf where no
    // place is ranked. Most blocks fall short of it and skip `insert`.
    float bar;

    __device__ RankedBlocks(u32 places) : bar(places == 0 ? __int_as_float(0x7f800000) : NEG_INF) {
#pragma unroll
        for (u32 i = 0; i < TOP_K; i++) { score[i] = NEG_INF; block[i] = -1; }
    }

    // Whether a block of `new_score` would be kept: for finite scores (the inputs are
    // checked), `insert` leaves the ranking as it is for any other.
    __device__ __forceinline__ bool reaches_bar(float new_score) const { return !(new_score < bar); }

    // Blocks arrive in ascending order, so a new block outranks kept blocks of equal score
    // (ties to the more recent block): it takes the place after the kept blocks that score
    // above it, within the first `places`, and the ones from there move down one. The place
    // is a count of independent comparisons, so the moves need no chain of carries.
    __device__ void insert(float new_score, int new_block, u32 places) {
        u32 place = 0;
#pragma unroll
        for (u32 i = 0; i < TOP_K; i++) place += (block[i] >= 0 && score[i] > new_score) ? 1 : 0;
#pragma unroll
        for (u32 i = TOP_K - 1; i > 0; i--) {
            bool moves = i > place && i < places;
            score[i] = moves ? score[i - 1] : (i == place && i < places ? new_score : score[i]);
            block[i] = moves ? block[i - 1] : (i == place && i < places ? new_block : block[i]);
        }
        if (place == 0 && places > 0) { score[0] = new_score; block[0] = new_block; }
        // The last ranked place is places - 1: TOP_K - 1 or TOP_K - 2 (constant indices keep
        // the arrays in registers).
        if (places > 0) {
            constexpr u32 second_last = TOP_K > 1 ? TOP_K - 2 : 0;
            bool whole = places == TOP_K;
            float last_score = whole ? score[TOP_K - 1] : score[second_last];
            int last_block = whole ? block[TOP_K - 1] : block[second_last];
            bar = last_block >= 0 ? last_score : NEG_INF;
        }
    }

    // Ascending block ids with -1 last (-1 wraps to the largest unsigned).
    __device__ void sort_by_block() {
#pragma unroll
        for (u32 i = 0; i < TOP_K; i++) {
#pragma unroll
            for (u32 m = 0; m + 1 < TOP_K - i; m++) {
                u32 a = (u32)block[m], b = (u32)block[m + 1];
                if (a > b) { block[m] = (int)b; block[m + 1] = (int)a; }
            }
        }
    }
};

extern "C" __global__ void __launch_bounds__(GATE_THREADS)
gate_topk(Params p, const elem_t* q, const float* means, int* selection,
          const int* sequence_starts) {
    __shared__ __align__(16) GateQuery::Staged staged;
    __shared__ __align__(16) StageScores scores;
    __shared__ u32 walk;
    u32 bh = blockIdx.y, first = blockIdx.x * GATE_THREADS;
    u32 t = first + threadIdx.x;
    // Threads past the last row repeat it (they take part in the staging) and write nothing.
    bool active = t < p.q_len;
    t = min(t, p.q_len - 1);
    u32 current = query_position(p, t) / p.block_size;
    bool mean_key = p.gate == GATE_MEAN_KEY;

    GateQuery query;
    if (mean_key) query.load(q + (size_t)bh * p.q_len * HEAD_DIM, first, p.q_len - 1);
    const float4* block_mean = (const float4*)(means + (size_t)kv_group(p, bh) * p.means_stride * HEAD_DIM);

    // Causal rows rank the blocks of their sequence before their own for TOP_K - 1 places
    // (a packed batch gives each block's first block of its sequence; else block 0).
    u32 places = p.causal ? TOP_K - 1 : TOP_K;
    u32 eligible = p.causal ? current : p.num_blocks;
    u32 from = p.causal && sequence_starts ? (u32)sequence_starts[current] : 0;
    RankedBlocks best(places);

    // The stages walk the blocks any row of the thread block ranks; each row ranks its own.
    u32 blocks = eligible;
    if (mean_key) {
        if (threadIdx.x == 0) walk = 0;
        __syncthreads();
        atomicMax(&walk, eligible);
        __syncthreads();
        blocks = walk;
    }
    for (u32 first_block = 0; first_block < blocks; first_block += MEAN_STAGE) {
        if (mean_key) {
            __syncthreads(); // every thread is done with the previous stage
            GateQuery::stage(staged, block_mean, first_block, p.num_blocks);
            __syncthreads();
            query.score(staged, scores);
            __syncwarp(); // a thread's row was scored by its own warp
        }
        u32 stop = min(first_block + MEAN_STAGE, eligible);
        for (u32 j = max(first_block, from); j < stop; j++) {
            u32 local = j - from; // the block's id within the row's sequence
            float score = (float)local; // the static gates: recent blocks first
            if (mean_key) {
                score = scores[threadIdx.x][j - first_block];
            } else if (p.gate == GATE_SINK_AND_RECENT && local < p.sink_blocks) {
                score = (float)(p.num_blocks + local);
            }
            if (best.reaches_bar(score)) best.insert(score, (int)j, places);
        }
    }
    if (p.causal) {
        // TOP_K - 1 places were ranked; the last slot takes the forced block.
        best.block[TOP_K - 1] = (int)current;
    }
    best.sort_by_block();
    if (!active) return;
    size_t row = (size_t)bh * p.q_len + t;
#pragma unroll
    for (u32 i = 0; i < TOP_K; i++) selection[row * TOP_K + i] = best.block[i];
}
