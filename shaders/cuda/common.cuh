// Shared by every MoBA CUDA kernel: element types, the problem's parameters, row and key
// addressing, and the tensor-core fragments.
//
// Compiled by NVRTC with no headers: the Rust side prepends
//   HEAD_DIM (a multiple of 16), ELEM_KIND (ELEM_F32 | ELEM_F16 | ELEM_BF16), TOP_K,
//   WGMMA (1: built for sm_90a with HEAD_DIM a multiple of 64; the forward's products then
//   run as warpgroup MMAs on swizzled tiles, see the end of this file), then the numbers
//   the launch arithmetic shares (src/cuda/launch.rs: WARP, ROW_TILE, KEY_TILE,
//   TILE_THREADS, KEY_THREADS, TILE_PAD, SWIZZLE_ALIGN, the gate's and inversion's thread
//   counts, DKDV_ROWS_*), the gate codes (src/shared_constants.rs) and `struct Params`
//   (src/kernel_params.rs).
// 16-bit values are carried as raw bits (`unsigned short`, pairs in `unsigned int`) and
// converted with PTX `cvt`, so no cuda_fp16.h / cuda_bf16.h is needed.
//
// Tensor cores: `mma.sync.m16n8k16` (sm_80+), f32 accumulation. f16 inputs multiply in f16;
// bf16 and f32 inputs multiply in bf16 (f32 inputs are rounded once when staged).
// Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k16"), lane = 4 * g + t:
//   A 16x16: a0 (g, 2t..2t+1)  a1 (g+8, 2t..)  a2 (g, 2t+8..)  a3 (g+8, 2t+8..)
//   B 16x8 : b0 (k = 2t..2t+1, n = g)  b1 (k = 2t+8.., n = g)
//   C 16x8 : c0 c1 (g, 2t..2t+1)  c2 c3 (g+8, 2t..2t+1)

#define ELEM_F32 0
#define ELEM_F16 1
#define ELEM_BF16 2

typedef unsigned int u32;
typedef unsigned short u16;

#if ELEM_KIND == ELEM_F32
typedef float elem_t;
#else
typedef u16 elem_t;
#endif

#if ELEM_KIND == ELEM_F16
#define MMA_TYPE "f16"
#else
#define MMA_TYPE "bf16"
#endif

// Tiles of the attention kernels: ROW_TILE gathered query rows (16 per warp) x KEY_TILE
// keys; the dk/dv kernel gives each warp 16 keys instead. 128 rows share each key/value
// tile load between 8 warps.
#define NEG_INF (__int_as_float(0xff800000))
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

// `struct Params`, the problem (DESIGN §1) passed by value to every kernel, is generated
// from src/kernel_params.rs and stands before this file.

// Query heads per kv head (GQA group size).
__device__ __forceinline__ u32 group_size(const Params& p) { return p.q_heads / p.kv_heads; }
// kv head row block of the query head `bh` (= b * q_heads + h).
__device__ __forceinline__ u32 kv_group(const Params& p, u32 bh) {
    return (bh / p.q_heads) * p.kv_heads + (bh % p.q_heads) / group_size(p);
}
// Absolute position of query `t`: decode rows sit at the end of the keys.
__device__ __forceinline__ u32 query_position(const Params& p, u32 t) {
    return p.kv_len - p.q_len + t;
}
// Whether key `key` is hidden from a query at position `pos` in a tile of keys ending at
// `key_stop`: past the tile, (causal) after the query, or (key-window gate) before its
// window (`MobaConfig::sees` on the host, `key_visible` in WGSL).
__device__ __forceinline__ bool key_hidden(const Params& p, u32 key, u32 key_stop, u32 pos) {
    return key >= key_stop || (p.causal && key > pos)
        || (p.gate == GATE_KEY_WINDOW && key + p.block_size <= pos);
}
// Whether any key of the KEY_TILE keys from `first_key` may be hidden from some row of a tile
// of gathered rows whose smallest position is `first_pos` (rows ascend, so the first decides
// for the causal mask; a key window can hide keys from any row, so its tiles always test).
// Most tiles hide none and skip the per-key tests.
__device__ __forceinline__ bool tile_masked(const Params& p, u32 first_key, u32 key_stop,
                                            u32 first_pos) {
    return p.gate == GATE_KEY_WINDOW || key_hidden(p, first_key + KEY_TILE - 1, key_stop, first_pos);
}

// One past the last key of block `j`.
__device__ __forceinline__ u32 block_end(const Params& p, u32 j) {
    return min((j + 1) * p.block_size, p.kv_len);
}
// The first key of block `j` that a tile of gathered rows whose smallest position is
// `first_pos` and whose keys end at `key_stop` walks: the block's first, or under the
// key-window gate the first key of that row's window rounded down to a whole KEY_TILE from
// the block's start (every row masks the key tiles before it; `tile_key_range` in WGSL).
// The tile keeps at least the key tile of its last key (all masked where no row sees this
// block): the q (and dO) staging is waited on with the first key tile.
__device__ __forceinline__ u32 tile_key_first(const Params& p, u32 j, u32 first_pos, u32 key_stop) {
    u32 first = j * p.block_size;
    if (p.gate == GATE_KEY_WINDOW && key_stop > first && first_pos + 1 > first + p.block_size) {
        u32 window_first = min(first_pos + 1 - p.block_size, key_stop - 1);
        first += (window_first - first) / KEY_TILE * KEY_TILE;
    }
    return first;
}

// ---- element conversions ----

__device__ __forceinline__ float bits_to_float(u16 x) {
#if ELEM_KIND == ELEM_F16
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x));
    return f;
#else
    return __uint_as_float(((u32)x) << 16);
#endif
}

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(u16 x) { return bits_to_float(x); }

// The 16-bit element nearest to x (bits_to_float's inverse).
__device__ __forceinline__ u16 float_to_bits(float x) {
    u16 h;
#if ELEM_KIND == ELEM_F16
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
#else
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(x));
#endif
    return h;
}

__device__ __forceinline__ void store_elem(elem_t* out, size_t i, float x) {
#if ELEM_KIND == ELEM_F32
    out[i] = x;
#else
    out[i] = float_to_bits(x);
#endif
}

// Two floats as one register of the multiply type, `lo` in the low half (lower column).
__device__ __forceinline__ u32 pack2(float lo, float hi) {
    u32 r;
#if ELEM_KIND == ELEM_F16
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
#else
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
#endif
    return r;
}

// Eight consecutive elements as floats, in one 16-byte load (two for f32).
__device__ __forceinline__ void load8_float(float out[8], const elem_t* src) {
#if ELEM_KIND == ELEM_F32
    float4 a = *(const float4*)src;
    float4 b = *(const float4*)(src + 4);
    out[0] = a.x; out[1] = a.y; out[2] = a.z; out[3] = a.w;
    out[4] = b.x; out[5] = b.y; out[6] = b.z; out[7] = b.w;
#else
    uint4 raw = *(const uint4*)src;
    u32 words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (u32 i = 0; i < 4; i++) {
        out[2 * i] = bits_to_float((u16)(words[i] & 0xffff));
        out[2 * i + 1] = bits_to_float((u16)(words[i] >> 16));
    }
#endif
}

// Eight floats as eight consecutive elements (one 16-byte store for 16-bit types).
__device__ __forceinline__ void store8(elem_t* dst, const float x[8]) {
#if ELEM_KIND == ELEM_F32
    *(float4*)dst = make_float4(x[0], x[1], x[2], x[3]);
    *(float4*)(dst + 4) = make_float4(x[4], x[5], x[6], x[7]);
#else
    *(uint4*)dst = make_uint4(pack2(x[0], x[1]), pack2(x[2], x[3]), pack2(x[4], x[5]), pack2(x[6], x[7]));
#endif
}

// Eight consecutive elements as eight multiply-type values (16 bytes).
__device__ __forceinline__ uint4 load8(const elem_t* src) {
#if ELEM_KIND == ELEM_F32
    float x[8];
    load8_float(x, src);
    return make_uint4(pack2(x[0], x[1]), pack2(x[2], x[3]), pack2(x[4], x[5]), pack2(x[6], x[7]));
#else
    return *(const uint4*)src;
#endif
}

// ---- tensor-core fragments ----

// Shared-memory tiles of 16-bit values, rows padded by 8 elements (16 bytes) so the eight
// rows one ldmatrix reads fall in different banks.
#define TILE_STRIDE (HEAD_DIM + TILE_PAD)

__device__ __forceinline__ u32 shared_address(const void* p) {
    return (u32)__cvta_generic_to_shared(p);
}

// Four 8x8 b16 matrices from shared memory, one row address per lane (p), into r: as
// stored, or transposed.
#define LDMATRIX_X4(r, p, variant)                                                            \
    asm volatile("ldmatrix.sync.aligned.m8n8.x4" variant ".shared.b16 {%0,%1,%2,%3}, [%4];"  \
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])                            \
                 : "r"(shared_address(p)))

// A fragment of rows m0..m0+15, columns k0..k0+15 of a row-major tile.
__device__ __forceinline__ void load_a(u32 a[4], const u16* tile, u32 stride, u32 m0, u32 k0) {
    u32 lane = threadIdx.x % WARP;
    LDMATRIX_X4(a, tile + (m0 + lane % 16) * stride + k0 + (lane / 16) * 8, "");
}

// B fragments of two n-tiles (n0..n0+7 and n0+8..n0+15), k0..k0+15, from a tile stored
// [n][k] (the key tile of q.k^T): b[0..1] for the first n-tile, b[2..3] for the second.
__device__ __forceinline__ void load_b_nk(u32 b[4], const u16* tile, u32 stride, u32 n0, u32 k0) {
    u32 lane = threadIdx.x % WARP;
    LDMATRIX_X4(b, tile + (n0 + lane % 8 + (lane / 16) * 8) * stride + k0 + ((lane / 8) % 2) * 8, "");
}

// The same two n-tiles from a tile stored [k][n] (the value tile of p.v), transposed by
// ldmatrix on the way.
__device__ __forceinline__ void load_b_kn(u32 b[4], const u16* tile, u32 stride, u32 k0, u32 n0) {
    u32 lane = threadIdx.x % WARP;
    LDMATRIX_X4(b, tile + (k0 + lane % 16) * stride + n0 + (lane / 16) * 8, ".trans");
}

// c += a . b on the tensor cores.
__device__ __forceinline__ void mma(float c[4], const u32 a[4], u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." MMA_TYPE "." MMA_TYPE ".f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// c[0] and c[1] (two 8-wide n-tiles) += a . b, with b as load_b_nk / load_b_kn give it.
__device__ __forceinline__ void mma_pair(float (*c)[4], const u32 a[4], const u32 b[4]) {
    mma(c[0], a, b[0], b[1]);
    mma(c[1], a, b[2], b[3]);
}

// The A fragment for k-slice `j` (16 columns) of a C tile held as 8-wide n-tiles: the
// accumulator of one product feeds the next (probabilities into p.v).
__device__ __forceinline__ void c_to_a(u32 a[4], const float (*c)[4], u32 j) {
    a[0] = pack2(c[2 * j][0], c[2 * j][1]);
    a[1] = pack2(c[2 * j][2], c[2 * j][3]);
    a[2] = pack2(c[2 * j + 1][0], c[2 * j + 1][1]);
    a[3] = pack2(c[2 * j + 1][2], c[2 * j + 1][3]);
}

// ---- shared tiles and their products ----
// A tile layout is a shared-memory arrangement of `rows` x HEAD_DIM 16-bit values with the
// tensor-core instructions that read it:
//   elems(rows)       its size in elements;
//   base(shared)      where the first tile may start in dynamic shared memory;
//   at(rows, r, c)    the place of element (r, c), c a multiple of 8;
//   publish()         what a thread does once its copies into a tile landed, before the
//                     barrier that shows them to the block;
//   scores<A_ROWS, N>(s, a_tile, row, b_tile)
//                     s = a.b^T for this thread's slice starting at `row` of `a_tile`
//                     (A_ROWS rows) against the N rows of `b_tile`: N / 8 C n-tiles;
//   accumulate<K>(acc, c, b_tile)
//                     acc += c.b for a C tile `c` of K columns and a K-row `b_tile`.

// Padded: row-major, TILE_STRIDE elements per row, read by ldmatrix; mma.sync per warp
// (16-row slices).
struct Padded {
    __device__ static constexpr u32 elems(u32 rows) { return rows * TILE_STRIDE; }
    __device__ static u16* base(u16* shared) { return shared; }
    __device__ static u32 at(u32, u32 r, u32 c) { return r * TILE_STRIDE + c; }
    __device__ static void publish() {}

    template <int A_ROWS, int N>
    __device__ static void scores(float (*s)[4], const u16* a_tile, u32 row, const u16* b_tile) {
#pragma unroll
        for (u32 n = 0; n < N / 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
        for (u32 kk = 0; kk < HEAD_DIM / 16; kk++) {
            u32 a[4];
            load_a(a, a_tile, TILE_STRIDE, row, kk * 16);
#pragma unroll
            for (u32 n = 0; n < N / 16; n++) {
                u32 b[4];
                load_b_nk(b, b_tile, TILE_STRIDE, n * 16, kk * 16);
                mma_pair(s + 2 * n, a, b);
            }
        }
    }

    template <int K>
    __device__ static void accumulate(float (*acc)[4], const float (*c)[4], const u16* b_tile) {
#pragma unroll
        for (u32 kk = 0; kk < K / 16; kk++) {
            u32 a[4];
            c_to_a(a, c, kk);
#pragma unroll
            for (u32 n = 0; n < HEAD_DIM / 16; n++) {
                u32 b[4];
                load_b_kn(b, b_tile, TILE_STRIDE, kk * 16, n * 16);
                mma_pair(acc + 2 * n, a, b);
            }
        }
    }
};

// Which source row each row of a staged tile holds:
// a gathered list (query rows of one block)...
struct Listed {
    const u32* rows;
    __device__ u32 operator()(u32 r) const { return rows[r]; }
};
// ...or a span of consecutive rows (keys).
struct Span {
    u32 first;
    __device__ u32 operator()(u32 r) const { return first + r; }
};

// Visits the 16-byte chunks (row r, column c) of a TILE-row tile that this thread of a block
// of THREADS copies, one per pass. The passes unroll with constant strides, so the address
// arithmetic is done once rather than per chunk.
template <int TILE, int THREADS, typename Visit>
__device__ __forceinline__ void for_each_chunk(Visit visit) {
    const u32 chunks = HEAD_DIM / 8;
#pragma unroll
    for (u32 pass = 0; pass < (TILE * chunks + THREADS - 1) / THREADS; pass++) {
        u32 i = pass * THREADS + threadIdx.x;
        if (i < TILE * chunks) visit(i / chunks, i % chunks * 8);
    }
}

// Rows `row_of(0..count)` of a [*, HEAD_DIM] tensor into a shared tile of `TILE` rows
// (missing rows zeroed) by a block of THREADS threads, 16 bytes per thread per pass.
template <int TILE, int THREADS, typename Layout = Padded, typename RowOf>
__device__ __forceinline__ void stage(u16* tile, const elem_t* src, RowOf row_of, u32 count) {
    for_each_chunk<TILE, THREADS>([&](u32 r, u32 c) {
        uint4 value = make_uint4(0, 0, 0, 0);
        if (r < count) value = load8(src + (size_t)row_of(r) * HEAD_DIM + c);
        *(uint4*)(tile + Layout::at(TILE, r, c)) = value;
    });
}

// `stage` without waiting: 16-bit elements are copied by `cp.async` (sm_80+; rows past
// `count` zero-filled) and land once the caller's cp_async_wait says so, while the tensor
// cores work on another buffer. f32 elements need converting on the way, so they are
// staged synchronously (the waits are then no-ops). `count` must be positive.
template <int TILE, int THREADS, typename Layout = Padded, typename RowOf>
__device__ __forceinline__ void stage_async(u16* tile, const elem_t* src, RowOf row_of, u32 count) {
#if ELEM_KIND == ELEM_F32
    stage<TILE, THREADS, Layout>(tile, src, row_of, count);
#else
    for_each_chunk<TILE, THREADS>([&](u32 r, u32 c) {
        // A row past the end reads nothing (source size 0) from a valid address.
        const elem_t* from = src + (size_t)row_of(r < count ? r : 0) * HEAD_DIM + c;
        u32 bytes = r < count ? 16 : 0;
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;"
                     :: "r"(shared_address(tile + Layout::at(TILE, r, c))), "l"(from), "r"(bytes));
    });
#endif
}

// Closes the group of cp.async copies issued so far by this thread.
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }

// Waits until at most `PENDING` of this thread's committed groups are still in flight.
template <int PENDING>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" :: "n"(PENDING));
}

// Which keys tile i of a key walk holds: keys key(i) .. min(key(i) + KEY_TILE, end(i)).
// A span of consecutive keys, KEY_TILE at a time...
struct KeySpan {
    u32 first, stop;
    __device__ u32 count() const { return (stop - first + KEY_TILE - 1) / KEY_TILE; }
    __device__ u32 key(u32 i) const { return first + i * KEY_TILE; }
    __device__ u32 end(u32) const { return stop; }
};
// ...or listed tiles (NSA's union of the selected blocks): each tile's first key and stop.
struct ListedKeyTiles {
    const u32* first;
    const u32* stop;
    u32 tiles;
    __device__ u32 count() const { return tiles; }
    __device__ u32 key(u32 i) const { return first[i]; }
    __device__ u32 end(u32 i) const { return stop[i]; }
};

// The key and value tiles of a key walk (`Walk`: KeySpan or ListedKeyTiles), double-buffered
// in `buffers` (k0, v0, k1, v1: four tiles of `Layout`): tile i sits in buffer i % 2 while
// tile i + 1 is copied into the other, by the block's THREADS threads. For each tile i:
// arrive(i), then use k_tile(i) and v_tile(i). One barrier per tile.
template <int THREADS, typename Layout = Padded, typename Walk = KeySpan>
struct KeyValueTiles {
    u16* buffers;
    const elem_t* k;
    const elem_t* v;
    Walk walk;
    u32 count;

    __device__ KeyValueTiles(u16* buffers, const elem_t* k, const elem_t* v, Walk walk)
        : buffers(buffers), k(k), v(v), walk(walk), count(walk.count()) {
        fetch(0);
    }
    // The first key of tile i.
    __device__ u32 key(u32 i) const { return walk.key(i); }
    // The buffers of tile i: its keys, then its values.
    __device__ u16* k_tile(u32 i) const { return buffers + 2 * (i % 2) * Layout::elems(KEY_TILE); }
    __device__ u16* v_tile(u32 i) const { return k_tile(i) + Layout::elems(KEY_TILE); }
    // Starts copying tile i (if there is one) into its buffers. A full tile passes its size
    // as a constant, so its copies carry no per-row bounds tests (only the last tile of a
    // block may be short).
    __device__ void fetch(u32 i) const {
        if (i >= count) return;
        u32 keys = walk.end(i) - key(i);
        if (keys >= KEY_TILE) {
            copy(i, KEY_TILE);
        } else {
            copy(i, keys);
        }
        cp_async_commit();
    }
    // Copies the first `keys` keys and values of tile i (rows past them zero-filled).
    __device__ __forceinline__ void copy(u32 i, u32 keys) const {
        stage_async<KEY_TILE, THREADS, Layout>(k_tile(i), k, Span{key(i)}, keys);
        stage_async<KEY_TILE, THREADS, Layout>(v_tile(i), v, Span{key(i)}, keys);
    }
    // Waits for tile i and shows it to the whole block, then starts copying tile i + 1 into
    // the other buffer: it held tile i - 1, which every warp past the barrier is done with.
    __device__ void arrive(u32 i) const {
        cp_async_wait<0>();
        Layout::publish();
        __syncthreads();
        fetch(i + 1);
    }
};

// 2^x in one special-function instruction (results below 2^-126 flush to zero). exp2f keeps
// such subnormals with a range test and two multiplies around it: work the probabilities of
// the softmax do not need, in its hottest loop.
__device__ __forceinline__ float exp2_approx(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// Max and sum over the four lanes that share an accumulator row.
__device__ __forceinline__ float quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffff, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffff, x, 1);
    return x + __shfl_xor_sync(0xffffffff, x, 2);
}

// The online softmax of a warp's two accumulator rows (g and g + 8 of its 16) over key
// tiles, in base 2: running maxima m (of the scores times scale_log2) and sums l.
struct RowPairSoftmax {
    float m0, m1, l0, l1;

    __device__ RowPairSoftmax() : m0(NEG_INF), m1(NEG_INF), l0(0.0f), l1(0.0f) {}

    // Turns one key tile's scores `s` (hidden keys -inf) into probabilities against the new
    // maxima, and rescales the output accumulator `acc` to them.
    template <int KEYS>
    __device__ __forceinline__ void step(float (*s)[4], float (*acc)[4], float scale_log2) {
        float max0 = NEG_INF, max1 = NEG_INF;
#pragma unroll
        for (u32 n = 0; n < KEYS / 8; n++) {
            max0 = fmaxf(max0, fmaxf(s[n][0], s[n][1]));
            max1 = fmaxf(max1, fmaxf(s[n][2], s[n][3]));
        }
        // Maxima in base 2 (the scale is positive, so it keeps the order); the scores are
        // scaled inside the exponent below, one FMA each.
        float new0 = fmaxf(m0, quad_max(max0) * scale_log2);
        float new1 = fmaxf(m1, quad_max(max1) * scale_log2);
        // A row with every key masked so far keeps max -inf: subtract 0 instead (no NaN).
        float base0 = new0 == NEG_INF ? 0.0f : new0, base1 = new1 == NEG_INF ? 0.0f : new1;
        float corr0 = exp2_approx(m0 - base0), corr1 = exp2_approx(m1 - base1);
        m0 = new0;
        m1 = new1;
        float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
        for (u32 n = 0; n < KEYS / 8; n++) {
            s[n][0] = exp2_approx(fmaf(s[n][0], scale_log2, -base0));
            s[n][1] = exp2_approx(fmaf(s[n][1], scale_log2, -base0));
            s[n][2] = exp2_approx(fmaf(s[n][2], scale_log2, -base1));
            s[n][3] = exp2_approx(fmaf(s[n][3], scale_log2, -base1));
            sum0 += s[n][0] + s[n][1];
            sum1 += s[n][2] + s[n][3];
        }
        l0 = l0 * corr0 + sum0;
        l1 = l1 * corr1 + sum1;
#pragma unroll
        for (u32 n = 0; n < HEAD_DIM / 8; n++) {
            acc[n][0] *= corr0;
            acc[n][1] *= corr0;
            acc[n][2] *= corr1;
            acc[n][3] *= corr1;
        }
    }

    // The rows' whole sums (each lane held a quarter of the columns).
    __device__ __forceinline__ void finish() {
        l0 = quad_sum(l0);
        l1 = quad_sum(l1);
    }
};

// ---- the inverted selection (see inversion.cu) ----
// A list holds `list_slots` selection slots of one query head: one slot (list = bh * TOP_K +
// slot, its entries the query rows t) or all TOP_K (list = bh, entries t * TOP_K + slot).
// `lists` holds each list's entries grouped by the block they chose, in entry order (so in
// row order): block j's are lists[starts[j] .. starts[j + 1]). `tiles[j]` counts the
// ROW_TILE-entry tiles of the blocks before j, so one grid enumerates every (block, tile)
// pair of a list.
//   lists [lists, entries] u32; starts, tiles [lists, num_blocks + 1] u32.

// The entries of a list of `list_slots` slots.
__device__ __forceinline__ u32 list_entries(const Params& p, u32 list_slots) {
    return p.q_len * list_slots;
}

// The block of tile `x`: the last j with tiles[j] <= x (binary search; tiles[0] = 0 and
// x < tiles[num_blocks]).
__device__ __forceinline__ u32 tile_block(const u32* tiles, u32 num_blocks, u32 x) {
    u32 lo = 0, hi = num_blocks;
    while (hi - lo > 1) {
        u32 mid = (lo + hi) / 2;
        if (tiles[mid] <= x) lo = mid; else hi = mid;
    }
    return lo;
}

// The entries of one tile of gathered queries: block `block`, entries `rows[0..count)`.
struct GatheredTile {
    u32 block;
    u32 first; // index of the first entry in the list
    u32 count;
};

// This thread block's tile of list `list` (of `entries` entries): tile blockIdx.x of the
// list; count is 0 past the last tile (the grid is an upper bound). Its entries go into
// shared `rows`, the last one repeated past `count` so that every row of the tile reads a
// real query; then a barrier (uniform: the tile is the block's).
__device__ __forceinline__ GatheredTile gathered_tile(u32* rows, const Params& p, const u32* lists,
                                                     const u32* starts, const u32* tiles,
                                                     u32 list, u32 entries) {
    u32 x = blockIdx.x;
    const u32* list_starts = starts + (size_t)list * (p.num_blocks + 1);
    const u32* list_tiles = tiles + (size_t)list * (p.num_blocks + 1);
    GatheredTile tile = {0, 0, 0};
    if (x >= list_tiles[p.num_blocks]) return tile;
    tile.block = tile_block(list_tiles, p.num_blocks, x);
    tile.first = list_starts[tile.block] + (x - list_tiles[tile.block]) * ROW_TILE;
    tile.count = min((u32)ROW_TILE, list_starts[tile.block + 1] - tile.first);
    const u32* list_rows = lists + (size_t)list * entries + tile.first;
    for (u32 i = threadIdx.x; i < ROW_TILE; i += TILE_THREADS) {
        rows[i] = list_rows[min(i, tile.count - 1)];
    }
    __syncthreads();
    return tile;
}

// The tile of slot `slot`'s list of query head blockIdx.y (the passes per slot): entries
// are rows.
__device__ __forceinline__ GatheredTile slot_tile(u32* rows, const Params& p, const u32* lists,
                                                 const u32* starts, const u32* tiles, u32 slot) {
    return gathered_tile(rows, p, lists, starts, tiles, blockIdx.y * TOP_K + slot,
                         list_entries(p, 1));
}

// ---- warpgroup MMA (sm_90a) ----
// A warpgroup (4 warps, 128 threads) multiplies a 64-row A by a B in shared memory with one
// `wgmma.mma_async` per 16-deep step (PTX ISA "Asynchronous Warpgroup Level Matrix
// Multiply-Accumulate"). Shapes m64nNk16, N = 32, 64 or 128: the accumulator is 64 x N f32 per
// warpgroup, N / 2 registers per thread in the mma.sync C layout (N / 8 n-tiles of 8
// columns; warp w of the group holds rows 16w..16w+15), so the code around the products is
// the same for both builds.
#if WGMMA

// The descriptor of a Swizzled operand whose 8-line groups start at `at` (PTX ISA "Matrix
// Descriptor Format"): start address, leading byte offset, stride byte offset 1024 (the
// next 8 lines), 128-byte swizzle. The leading offset is the distance to the next 64-column
// panel, for an operand read transposed across panels; K-major operands leave it at 16
// (unused: their instructions read within one panel).
__device__ __forceinline__ unsigned long long wgmma_descriptor(const u16* at, u32 panel_bytes = 16) {
    unsigned long long address = shared_address(at);
    return ((address & 0x3FFFF) >> 4) | ((unsigned long long)(panel_bytes >> 4) << 16) |
           ((1024ull >> 4) << 32) | (1ull << 62);
}

// The accumulator operands: 4, 8 or 16 n-tiles of 4 registers, and their places in the asm.
#define WGMMA_C(n) "+f"(d[n][0]), "+f"(d[n][1]), "+f"(d[n][2]), "+f"(d[n][3])
#define WGMMA_C32 WGMMA_C(0), WGMMA_C(1), WGMMA_C(2), WGMMA_C(3)
#define WGMMA_C64 WGMMA_C32, WGMMA_C(4), WGMMA_C(5), WGMMA_C(6), WGMMA_C(7)
#define WGMMA_C128 WGMMA_C64, WGMMA_C(8), WGMMA_C(9), WGMMA_C(10), WGMMA_C(11), WGMMA_C(12), \
                   WGMMA_C(13), WGMMA_C(14), WGMMA_C(15)
#define WGMMA_D16 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}"
#define WGMMA_D32 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15," \
                  "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}"
#define WGMMA_D64 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15," \
                  "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31," \
                  "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47," \
                  "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}"

// The start of a `wgmma.mma_async` of `shape` that accumulates into d (scale-d true).
#define WGMMA_ASYNC(shape) "{\n.reg .pred accumulate;\nsetp.ne.b32 accumulate, 1, 0;\n" \
    "wgmma.mma_async.sync.aligned." shape ".f32." MMA_TYPE "." MMA_TYPE " "

// d (64 x N) += a . b^T: A (64 x 16) and B (N x 16) both K-major Swizzled tiles in shared
// memory.
template <int N>
__device__ void wgmma_nt(float (*d)[4], unsigned long long a, unsigned long long b);

template <>
__device__ __forceinline__ void wgmma_nt<64>(float (*d)[4], unsigned long long a, unsigned long long b) {
    asm volatile(WGMMA_ASYNC("m64n64k16") WGMMA_D32 ", %32, %33, accumulate, 1, 1, 0, 0;\n}"
                 : WGMMA_C64 : "l"(a), "l"(b) : "memory");
}

template <>
__device__ __forceinline__ void wgmma_nt<32>(float (*d)[4], unsigned long long a, unsigned long long b) {
    asm volatile(WGMMA_ASYNC("m64n32k16") WGMMA_D16 ", %16, %17, accumulate, 1, 1, 0, 0;\n}"
                 : WGMMA_C32 : "l"(a), "l"(b) : "memory");
}

// d (64 x N) += a . b: A (64 x 16) in registers as the mma.sync A fragment of each warp,
// B (16 x N) a Swizzled tile stored [k][n] (rows are k: transposed on the way), N = 64 (one
// panel) or 128 (two: the descriptor's leading offset steps between them).
template <int N>
__device__ void wgmma_rn(float (*d)[4], const u32 a[4], unsigned long long b);

template <>
__device__ __forceinline__ void wgmma_rn<64>(float (*d)[4], const u32 a[4], unsigned long long b) {
    asm volatile(WGMMA_ASYNC("m64n64k16") WGMMA_D32 ", {%32,%33,%34,%35}, %36, accumulate, 1, 1, 1;\n}"
                 : WGMMA_C64 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b) : "memory");
}

template <>
__device__ __forceinline__ void wgmma_rn<128>(float (*d)[4], const u32 a[4], unsigned long long b) {
    asm volatile(WGMMA_ASYNC("m64n128k16") WGMMA_D64 ", {%64,%65,%66,%67}, %68, accumulate, 1, 1, 1;\n}"
                 : WGMMA_C128 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b) : "memory");
}

// Orders this thread's earlier register writes before the warpgroup's next MMAs.
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }

// Closes the MMAs issued so far into a group and waits for all of them. The empty asm
// statements then pin the accumulators: their reads cannot move above the wait.
template <int N_TILES>
__device__ __forceinline__ void wgmma_commit_wait(float (*d)[4]) {
    asm volatile("wgmma.commit_group.sync.aligned;\nwgmma.wait_group.sync.aligned 0;" ::: "memory");
#pragma unroll
    for (u32 n = 0; n < N_TILES; n++) {
#pragma unroll
        for (u32 e = 0; e < 4; e++) asm volatile("" : "+f"(d[n][e]) :: "memory");
    }
}

// The canonical 128-byte-swizzled layout of wgmma operands: HEAD_DIM / 64 panels of
// `rows` x 64 elements (128-byte lines), the 16-byte chunk c of line r stored at chunk
// c ^ (r % 8); every tile starts 1024-byte aligned. Conflict-free for both the 16-byte
// copies in and the tensor cores' reads. The tensor cores read through the async proxy, so
// copies made by threads are fenced towards it before the barrier.
struct Swizzled {
    __device__ static constexpr u32 elems(u32 rows) { return rows * HEAD_DIM; }
    // Rounded up to the swizzle's alignment (the launch asks for SWIZZLE_ALIGN bytes more).
    __device__ static u16* base(u16* shared) {
        return (u16*)(((size_t)shared + SWIZZLE_ALIGN - 1) & ~(size_t)(SWIZZLE_ALIGN - 1));
    }
    __device__ static u32 at(u32 rows, u32 r, u32 c) {
        return (c / 64) * rows * 64 + r * 64 + (((c % 64) / 8) ^ (r % 8)) * 8 + c % 8;
    }
    __device__ static void publish() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

    // Warpgroup slices: the 64 rows of `row`'s warpgroup.
    template <int A_ROWS, int N>
    __device__ static void scores(float (*s)[4], const u16* a_tile, u32 row, const u16* b_tile) {
        u32 group_row = row / 64 * 64;
#pragma unroll
        for (u32 n = 0; n < N / 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
        wgmma_fence();
#pragma unroll
        for (u32 kk = 0; kk < HEAD_DIM / 16; kk++) {
            wgmma_nt<N>(s, wgmma_descriptor(a_tile + at(A_ROWS, group_row, kk * 16)),
                        wgmma_descriptor(b_tile + at(N, 0, kk * 16)));
        }
        wgmma_commit_wait<N / 8>(s);
    }

    // The A fragments are all converted before the MMAs read them (one fence). Each MMA
    // spans two panels of b where there are two left (half the instructions of one per
    // panel: 3% faster at HEAD_DIM 128, scripts/probe).
    template <int K>
    __device__ static void accumulate(float (*acc)[4], const float (*c)[4], const u16* b_tile) {
        constexpr u32 panels = HEAD_DIM / 64, panel_bytes = K * 64 * 2;
        u32 a[K / 16][4];
#pragma unroll
        for (u32 kk = 0; kk < K / 16; kk++) c_to_a(a[kk], c, kk);
        wgmma_fence();
#pragma unroll
        for (u32 kk = 0; kk < K / 16; kk++) {
#pragma unroll
            for (u32 panel = 0; panel < panels; panel += 2) {
                unsigned long long b = wgmma_descriptor(b_tile + at(K, kk * 16, panel * 64), panel_bytes);
                if (panel + 1 < panels) {
                    wgmma_rn<128>(acc + panel * 8, a[kk], b);
                } else {
                    wgmma_rn<64>(acc + panel * 8, a[kk], b);
                }
            }
        }
        wgmma_commit_wait<HEAD_DIM / 8>(acc);
    }
};

#endif

// The layout (and instructions) of the tiles of every tile kernel.
#if WGMMA
typedef Swizzled TileLayout;
#else
typedef Padded TileLayout;
#endif
