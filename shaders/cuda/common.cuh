// Shared by every MoBA CUDA kernel: element types, the problem's parameters, row and key
// addressing, and the tensor-core fragments.
//
// Compiled by NVRTC with no headers: the Rust side prepends
//   HEAD_DIM (a multiple of 16), ELEM_KIND (ELEM_F32 | ELEM_F16 | ELEM_BF16), TOP_K.
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

#define WARP 32
// Tiles of the attention kernels: ROW_TILE gathered query rows (16 per warp) x KEY_TILE
// keys; the dk/dv kernel gives each warp 16 keys instead. 128 rows share each key/value
// tile load between 8 warps. The Rust launch arithmetic (src/cuda/launch.rs) uses the same
// numbers.
#define ROW_TILE 128
#define KEY_TILE 64
#define TILE_THREADS (ROW_TILE / 16 * WARP)
#define KEY_THREADS (KEY_TILE / 16 * WARP)
#define NEG_INF (__int_as_float(0xff800000))
#define LOG2E 1.4426950408889634f

// The problem (DESIGN §1), passed by value to every kernel; mirrors `CudaParams` in Rust.
struct Params {
    u32 batch;
    u32 q_heads;
    u32 kv_heads;
    u32 q_len;
    u32 kv_len;
    u32 block_size;
    u32 num_blocks;
    u32 causal;
    u32 gate;        // 0 mean key, 1 recent, 2 sink and recent
    u32 sink_blocks;
    float scale;      // softmax scale
    float scale_log2; // scale * log2(e): scores in base 2
};

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
// One past the last key of block `j`.
__device__ __forceinline__ u32 block_end(const Params& p, u32 j) {
    return min((j + 1) * p.block_size, p.kv_len);
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

__device__ __forceinline__ void store_elem(elem_t* out, size_t i, float x) {
#if ELEM_KIND == ELEM_F32
    out[i] = x;
#elif ELEM_KIND == ELEM_F16
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
    out[i] = h;
#else
    u16 h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(x));
    out[i] = h;
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
#define TILE_PAD 8
#define TILE_STRIDE (HEAD_DIM + TILE_PAD)

__device__ __forceinline__ u32 shared_address(const void* p) {
    return (u32)__cvta_generic_to_shared(p);
}

// A fragment of rows m0..m0+15, columns k0..k0+15 of a row-major tile.
__device__ __forceinline__ void load_a(u32 a[4], const u16* tile, u32 stride, u32 m0, u32 k0) {
    u32 lane = threadIdx.x % WARP;
    const u16* p = tile + (m0 + lane % 16) * stride + k0 + (lane / 16) * 8;
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
                 : "r"(shared_address(p)));
}

// B fragments of two n-tiles (n0..n0+7 and n0+8..n0+15), k0..k0+15, from a tile stored
// [n][k] (the key tile of q.k^T): b[0..1] for the first n-tile, b[2..3] for the second.
__device__ __forceinline__ void load_b_nk(u32 b[4], const u16* tile, u32 stride, u32 n0, u32 k0) {
    u32 lane = threadIdx.x % WARP;
    const u16* p = tile + (n0 + lane % 8 + (lane / 16) * 8) * stride + k0 + ((lane / 8) % 2) * 8;
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(b[0]), "=r"(b[1]), "=r"(b[2]), "=r"(b[3])
                 : "r"(shared_address(p)));
}

// The same two n-tiles from a tile stored [k][n] (the value tile of p.v), transposed by
// ldmatrix on the way.
__device__ __forceinline__ void load_b_kn(u32 b[4], const u16* tile, u32 stride, u32 k0, u32 n0) {
    u32 lane = threadIdx.x % WARP;
    const u16* p = tile + (k0 + lane % 16) * stride + n0 + (lane / 16) * 8;
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(b[0]), "=r"(b[1]), "=r"(b[2]), "=r"(b[3])
                 : "r"(shared_address(p)));
}

// c += a . b on the tensor cores.
__device__ __forceinline__ void mma(float c[4], const u32 a[4], u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." MMA_TYPE "." MMA_TYPE ".f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The A fragment for k-slice `j` (16 columns) of a C tile held as 8-wide n-tiles: the
// accumulator of one product feeds the next (probabilities into p.v).
__device__ __forceinline__ void c_to_a(u32 a[4], const float (*c)[4], u32 j) {
    a[0] = pack2(c[2 * j][0], c[2 * j][1]);
    a[1] = pack2(c[2 * j][2], c[2 * j][3]);
    a[2] = pack2(c[2 * j + 1][0], c[2 * j + 1][1]);
    a[3] = pack2(c[2 * j + 1][2], c[2 * j + 1][3]);
}

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

// Rows `row_of(0..count)` of a [*, HEAD_DIM] tensor into a padded shared tile of `TILE` rows
// (missing rows zeroed), 16 bytes per thread per step.
template <int TILE, typename RowOf>
__device__ __forceinline__ void stage(u16* tile, const elem_t* src, RowOf row_of, u32 count) {
    const u32 chunks = HEAD_DIM / 8;
    for (u32 i = threadIdx.x; i < TILE * chunks; i += blockDim.x) {
        u32 r = i / chunks, c = (i % chunks) * 8;
        uint4 value = make_uint4(0, 0, 0, 0);
        if (r < count) {
            value = load8(src + (size_t)row_of(r) * HEAD_DIM + c);
        }
        *(uint4*)(tile + r * TILE_STRIDE + c) = value;
    }
}

// `stage` without waiting: 16-bit elements are copied by `cp.async` (sm_80+; rows past
// `count` zero-filled) and land once the caller's cp_async_wait says so, while the tensor
// cores work on another buffer. f32 elements need converting on the way, so they are
// staged synchronously (the waits are then no-ops). `count` must be positive.
template <int TILE, typename RowOf>
__device__ __forceinline__ void stage_async(u16* tile, const elem_t* src, RowOf row_of, u32 count) {
#if ELEM_KIND == ELEM_F32
    stage<TILE>(tile, src, row_of, count);
#else
    const u32 chunks = HEAD_DIM / 8;
    for (u32 i = threadIdx.x; i < TILE * chunks; i += blockDim.x) {
        u32 r = i / chunks, c = (i % chunks) * 8;
        // A row past the end reads nothing (source size 0) from a valid address.
        const elem_t* from = src + (size_t)row_of(r < count ? r : 0) * HEAD_DIM + c;
        u32 bytes = r < count ? 16 : 0;
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;"
                     :: "r"(shared_address(tile + r * TILE_STRIDE + c)), "l"(from), "r"(bytes));
    }
#endif
}

// Closes the group of cp.async copies issued so far by this thread.
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }

// Waits until at most `PENDING` of this thread's committed groups are still in flight.
template <int PENDING>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" :: "n"(PENDING));
}

// The key and value tiles of keys `first..stop`, KEY_TILE keys at a time, double-buffered in
// `buffers` (k0, v0, k1, v1: four tiles): tile i sits in buffer i % 2 while tile i + 1 is
// copied into the other. For each tile i: arrive(i), use k_tile(i) and v_tile(i), release().
struct KeyValueTiles {
    u16* buffers;
    const elem_t* k;
    const elem_t* v;
    u32 first, stop, count;

    __device__ KeyValueTiles(u16* buffers, const elem_t* k, const elem_t* v, u32 first, u32 stop)
        : buffers(buffers), k(k), v(v), first(first), stop(stop),
          count((stop - first + KEY_TILE - 1) / KEY_TILE) {
        fetch(0);
    }
    // The first key of tile i.
    __device__ u32 key(u32 i) const { return first + i * KEY_TILE; }
    // The buffers of tile i: its keys, then its values.
    __device__ u16* k_tile(u32 i) const { return buffers + 2 * (i % 2) * KEY_TILE * TILE_STRIDE; }
    __device__ u16* v_tile(u32 i) const { return k_tile(i) + KEY_TILE * TILE_STRIDE; }
    // Starts copying tile i (if there is one) into its buffers.
    __device__ void fetch(u32 i) const {
        if (i >= count) return;
        u32 keys = min((u32)KEY_TILE, stop - key(i));
        stage_async<KEY_TILE>(k_tile(i), k, Span{key(i)}, keys);
        stage_async<KEY_TILE>(v_tile(i), v, Span{key(i)}, keys);
        cp_async_commit();
    }
    // Starts the copy of tile i + 1, waits for tile i and shows it to the whole block.
    __device__ void arrive(u32 i) const {
        if (i + 1 < count) {
            fetch(i + 1);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
    }
    // Every warp is done with the tile: its buffer may take the tile after next.
    __device__ void release() const { __syncthreads(); }
};

// Max and sum over the four lanes that share an accumulator row.
__device__ __forceinline__ float quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffff, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffff, x, 1);
    return x + __shfl_xor_sync(0xffffffff, x, 2);
}

// ---- the inverted selection (see inversion.cu) ----
// For query head `bh` and slot `s` ("list" bh * TOP_K + s), `lists` holds the query rows
// (t) grouped by the block chosen in that slot, in row order: block j's rows are
// lists[starts[j] .. starts[j + 1]). `tiles[j]` counts the ROW_TILE-row tiles of the blocks
// before j, so one grid enumerates every (block, tile) pair of a slot.
//   lists [lists, q_len] u32; starts, tiles [lists, num_blocks + 1] u32.

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

// The rows of one tile of gathered queries: block `block`, rows `rows[0..count)`.
struct GatheredTile {
    u32 block;
    u32 first; // index of the first row in the list
    u32 count;
};

// Tile `x` of list `list`; count is 0 past the last tile (the grid is an upper bound).
__device__ __forceinline__ GatheredTile gathered_tile(const Params& p, const u32* starts,
                                                     const u32* tiles, u32 list, u32 x) {
    const u32* list_starts = starts + (size_t)list * (p.num_blocks + 1);
    const u32* list_tiles = tiles + (size_t)list * (p.num_blocks + 1);
    GatheredTile tile = {0, 0, 0};
    if (x >= list_tiles[p.num_blocks]) return tile;
    tile.block = tile_block(list_tiles, p.num_blocks, x);
    tile.first = list_starts[tile.block] + (x - list_tiles[tile.block]) * ROW_TILE;
    tile.count = min((u32)ROW_TILE, list_starts[tile.block + 1] - tile.first);
    return tile;
}
