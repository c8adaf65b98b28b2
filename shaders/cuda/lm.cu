// A language model's decode step on CUDA, around MoBA's split decode (decode.cu): the
// kernels of the decode plan (src/decode_plan.rs) that lm_embed.wgsl, lm_matvec.wgsl and
// lm_rope_cache.wgsl are on wgpu, f32 throughout, summed in the same orders. Sizes are
// arguments (one module per model); a submission's `rows` are `positions` consecutive
// positions (one while generating, a chunk or a tile of a prompt) of each of rows /
// positions sequences, all at the same positions: row s * positions + p is position p of
// sequence s.
//
// step: [first position, the byte of each row] u32, written by the host before a submission.
//
// lm_embed — grid cover(rows * d_model, LM_THREADS): one thread per element of x.
//   embedding [vocab, d_model]; x [rows, d_model].
// lm_matvec — grid (ceil(d_out / LM_COLUMNS), ceil(rows / DECODE_MAX_ROWS)) blocks of
//   LM_THREADS = LM_COLUMNS x slices: out = epilogue(x W + bias) for every row, x
//   RMS-normalised first where `norm` (the gain folded into W's rows). A block takes up to
//   DECODE_MAX_ROWS rows of the submission (across its sequences) and reads each weight
//   once for them. Thread (slice, column) sums rows slice, slice +
//   slices, ... of its column for each of them (neighbouring threads read neighbouring
//   columns of a weight row); the first slice adds the slices' partial sums in order.
//   Input: head-major per sequence [sequences, d_in / input_head_dim, positions,
//   input_head_dim] (the attention's output), or row-major [rows, d_in] where
//   input_head_dim = d_in; weight [d_in, row_stride] row-major
//   (row_stride = d_out, or 2 d_out for SwiGLU's two matrices side by side); bias
//   [row_stride]; out [rows, d_out]. Shared: each row's 1 / rms, the partial sums.
// lm_rope_cache — grid cover(sequences * threads, LM_THREADS), threads = (q_heads +
//   kv_heads) * half + kv_heads * head_dim per sequence: one rotated pair of a query head,
//   one of a key head (with its two columns of the block sums), or one element of a value,
//   for the sequence's positions in order (so one thread pools a column's keys in key
//   order). qkv [rows, q | k | v]; rope [positions, half] float2 (cos, sin); queries
//   [sequences, q_heads, positions, head_dim]; keys, values [sequences, kv_heads, capacity,
//   head_dim]; key_sums, means [sequences, kv_heads, ceil(capacity / block_size), head_dim].

#define LM_STORE 0
#define LM_RESIDUAL 1
#define LM_SWIGLU 2
#define LM_SLICES (LM_THREADS / LM_COLUMNS)

extern "C" __global__ void __launch_bounds__(LM_THREADS)
lm_embed(const u32* step, u32 rows, u32 d_model, const float* embedding, float* x) {
    u32 i = blockIdx.x * LM_THREADS + threadIdx.x;
    if (i < rows * d_model) x[i] = embedding[(size_t)step[1 + i / d_model] * d_model + i % d_model];
}

extern "C" __global__ void __launch_bounds__(LM_THREADS)
lm_matvec(u32 rows, u32 positions, u32 d_in, u32 d_out, u32 row_stride, u32 norm, float epsilon,
          u32 epilogue, u32 input_head_dim, const float* input, const float* weight,
          const float* bias, float* out) {
    __shared__ float inverse_rms[DECODE_MAX_ROWS];
    __shared__ float2 partial[LM_THREADS];
    u32 tid = threadIdx.x;
    u32 first_row = blockIdx.y * DECODE_MAX_ROWS;
    u32 tile_rows = min((u32)DECODE_MAX_ROWS, rows - first_row);
    // Element i of row r of the tile (position row % positions of sequence row / positions)
    // lies at row_start(r) + column_at(i): a head's columns are positions * input_head_dim
    // apart in the head-major input, so the column's part is the same for every row.
    auto row_start = [&](u32 r) {
        u32 row = first_row + r;
        return (size_t)(row / positions) * positions * d_in + (size_t)(row % positions) * input_head_dim;
    };
    auto column_at = [&](u32 i) {
        return (size_t)(i / input_head_dim) * positions * input_head_dim + i % input_head_dim;
    };
    if (norm) {
        for (u32 r = 0; r < tile_rows; r++) {
            // The row's sum of squares over the block, as a tree (the same in every block).
            float squares = 0.0f;
            for (u32 i = tid; i < d_in; i += LM_THREADS) {
                float value = input[row_start(r) + column_at(i)];
                squares += value * value;
            }
            partial[tid].x = squares;
            __syncthreads();
            for (u32 half = LM_THREADS / 2; half > 0; half /= 2) {
                if (tid < half) partial[tid].x += partial[tid + half].x;
                __syncthreads();
            }
            if (tid == 0) inverse_rms[r] = 1.0f / sqrtf(partial[0].x / (float)d_in + epsilon);
            __syncthreads();
        }
    }

    u32 lane = tid % LM_COLUMNS, slice = tid / LM_COLUMNS;
    u32 column = blockIdx.x * LM_COLUMNS + lane;
    float2 sums[DECODE_MAX_ROWS];
    size_t starts[DECODE_MAX_ROWS];
#pragma unroll
    for (u32 r = 0; r < DECODE_MAX_ROWS; r++) {
        sums[r] = make_float2(0.0f, 0.0f);
        starts[r] = row_start(r);
    }
    if (column < d_out) {
        for (u32 i = slice; i < d_in; i += LM_SLICES) {
            size_t at = (size_t)i * row_stride + column;
            float2 w = make_float2(weight[at], epilogue == LM_SWIGLU ? weight[at + d_out] : 0.0f);
            size_t column_offset = column_at(i);
#pragma unroll
            for (u32 r = 0; r < DECODE_MAX_ROWS; r++) {
                if (r < tile_rows) {
                    float x = input[starts[r] + column_offset];
                    sums[r].x += x * w.x;
                    sums[r].y += x * w.y;
                }
            }
        }
    }
#pragma unroll
    for (u32 r = 0; r < DECODE_MAX_ROWS; r++) {
        if (r >= tile_rows) break;
        partial[tid] = sums[r];
        __syncthreads();
        if (slice == 0 && column < d_out) {
            float2 total = make_float2(0.0f, 0.0f);
            for (u32 s = 0; s < LM_SLICES; s++) {
                total.x += partial[s * LM_COLUMNS + lane].x;
                total.y += partial[s * LM_COLUMNS + lane].y;
            }
            if (norm) {
                // (x / rms) W = (x W) / rms: the row's factor once per column.
                total.x *= inverse_rms[r];
                total.y *= inverse_rms[r];
            }
            size_t at = (size_t)(first_row + r) * d_out + column;
            float a = total.x + bias[column];
            if (epilogue == LM_STORE) {
                out[at] = a;
            } else if (epilogue == LM_RESIDUAL) {
                out[at] += a;
            } else {
                float b = total.y + bias[d_out + column];
                out[at] = a / (1.0f + expf(-a)) * b;
            }
        }
        __syncthreads();
    }
}

extern "C" __global__ void __launch_bounds__(LM_THREADS)
lm_rope_cache(const u32* step, u32 rows, u32 positions, u32 q_heads, u32 kv_heads, u32 head_dim,
              u32 capacity, u32 rope_on, u32 block_size, const float* qkv, const float2* rope,
              float* queries, float* keys, float* values, float* key_sums, float* means) {
    u32 half = head_dim / 2;
    u32 query_pairs = q_heads * half, key_pairs = kv_heads * half;
    u32 threads = query_pairs + key_pairs + kv_heads * head_dim;
    u32 qkv_width = (q_heads + 2 * kv_heads) * head_dim;
    u32 mean_blocks = (capacity + block_size - 1) / block_size;
    u32 global = blockIdx.x * LM_THREADS + threadIdx.x;
    u32 sequence = global / threads, t = global % threads;
    if (sequence >= rows / positions) return;
    // The pair (a, b) at columns 2i, 2i + 1 rotated by angle i at `position`, as burn's
    // RotaryEncoding::apply computes it: (a cos - b sin, b cos + a sin).
    auto rotated = [&](float a, float b, u32 pair, u32 position) {
        if (!rope_on) return make_float2(a, b);
        float2 angle = rope[(size_t)position * half + pair];
        return make_float2(a * angle.x - b * angle.y, b * angle.x + a * angle.y);
    };
    // Adds key element `k` at `position` of `column` of cached head `cached` (a kv head of a
    // sequence) to its block's sum and mean.
    auto pool_key = [&](u32 cached, u32 column, float k, u32 position) {
        size_t at = ((size_t)cached * mean_blocks + position / block_size) * head_dim + column;
        u32 in_block = position % block_size;
        float sum = (in_block == 0 ? 0.0f : key_sums[at]) + k;
        key_sums[at] = sum;
        means[at] = sum / (float)(in_block + 1);
    };
    for (u32 p = 0; p < positions; p++) {
        u32 r = sequence * positions + p, position = step[0] + p;
        size_t row = (size_t)r * qkv_width;
        if (t < query_pairs) {
            u32 head = t / half, pair = t % half;
            size_t at = row + head * head_dim + 2 * pair;
            float2 q = rotated(qkv[at], qkv[at + 1], pair, position);
            size_t to = (((size_t)sequence * q_heads + head) * positions + p) * head_dim + 2 * pair;
            queries[to] = q.x;
            queries[to + 1] = q.y;
        } else if (t < query_pairs + key_pairs) {
            u32 head = (t - query_pairs) / half, pair = (t - query_pairs) % half;
            u32 column = 2 * pair, cached = sequence * kv_heads + head;
            size_t at = row + (size_t)q_heads * head_dim + head * head_dim + column;
            float2 k = rotated(qkv[at], qkv[at + 1], pair, position);
            size_t to = ((size_t)cached * capacity + position) * head_dim + column;
            keys[to] = k.x;
            keys[to + 1] = k.y;
            pool_key(cached, column, k.x, position);
            pool_key(cached, column + 1, k.y, position);
        } else {
            u32 element = t - query_pairs - key_pairs;
            u32 cached = sequence * kv_heads + element / head_dim, column = element % head_dim;
            size_t at = row + (size_t)(q_heads + kv_heads) * head_dim + element;
            values[((size_t)cached * capacity + position) * head_dim + column] = qkv[at];
        }
    }
}
