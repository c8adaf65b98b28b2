// Shared by the cooperative-matrix kernels that walk a block tile (attention_pass_coop,
// dq_pass_coop): QUERY_TILE (128) gathered rows of one block's list against the block's keys,
// KEY_TILE (32) keys at a time, with the tile products on 16x16x16 f16 x f16 -> f32 matrix
// units. Native adapters with EXPERIMENTAL_COOPERATIVE_MATRIX only.
//
// Workgroup: WORKGROUP_SIZE (256) threads in SUBGROUPS subgroups; subgroup s owns the 16-row
//       strip s of the tile. Cooperative operations stay in control flow uniform in their
//       subgroup: besides addresses, only the forward's rescale (behind subgroupAny) depends
//       on the subgroup.
// Row-wise work: the lanes of subgroup s do its strip's, two lanes a row (lane l takes row
//       16 s + l % 16 and half l / 16 of every staged key tile; 32 lanes a subgroup, as the
//       host checks), so that a subgroup reads back only the scores it stored and the
//       kernels synchronize the subgroup alone between its products (subgroupBarrier). Known
//       limit: naga 29 lowers it for Vulkan to a subgroup-scope control barrier without
//       workgroup-memory semantics, which NVIDIA's driver orders workgroup memory with
//       anyway (the cooperative tests check it there); Metal's simdgroup_barrier names
//       threadgroup memory.
// Staging: each thread issues all its loads of a key tile before its stores into workgroup
//       memory, so that their round trips overlap (one at a time, they were the largest
//       cost of the forward: H100, 512K, attention 3.24 -> 2.79 s).
// Workgroup memory (HEAD_DIM 128, 43 KiB): kv_tile f16 [32 keys][D + 8] of keys then of values
//       (first, [128 rows][32 + 8] row columns while strips load); s_tile f32
//       [32 keys][128 + 4 rows] (key-major, so that the thread of a row walks its keys without
//       bank conflicts; at the end the output, a column slice at a time, [128 rows][32 dims]);
//       p_tile f16 [32 keys][128 + 8 rows]; per-row index and position. The padding moves
//       consecutive rows 16 bytes apart across the banks, so the 16-byte row reads of a
//       matrix load do not collide.
// Precision: q, k, v (and dout) are rounded to f16; products accumulate in f32; the scale
//       (log2 domain) multiplies the f32 scores.
// Registers: the loops over a strip's matrices are marked `// unroll` (the host writes them
//       out, src/gpu/unroll.rs), so that every index into a strip is a constant and the
//       strips stay in registers.

const MATRIX: u32 = 16u;
const KEY_COLUMNS: u32 = KEY_TILE / MATRIX;
const HEAD_COLUMNS: u32 = HEAD_DIM / MATRIX;
const HALF_KEYS: u32 = KEY_TILE / 2u;

// The two halves of a row walk their keys HALF_ROTATION apart (mod HALF_KEYS), so that a
// subgroup's two 16-lane halves hit disjoint banks of s_tile (rows S_STRIDE = 4 mod 32 words
// apart: keys HALF_KEYS + 4 apart are 16 banks apart) and of p_tile (likewise).
const HALF_ROTATION: u32 = 4u;

// Row strides: rows padded by 16 bytes. The staged tiles hold vec4<f16> (one 8-byte store per
// staged vec4), so their strides and offsets count vec4s.
const HEAD_STRIDE: u32 = (HEAD_DIM + 8u) / 4u;
// Row columns staged per round while a strip loads (STRIP_MATRICES matrices of STRIP_ROUNDS),
// and their row stride in vec4s.
const STRIP_COLUMNS: u32 = 32u;
const STRIP_MATRICES: u32 = STRIP_COLUMNS / MATRIX;
const STRIP_ROUNDS: u32 = HEAD_DIM / STRIP_COLUMNS;
// The output leaves a KEY_TILE-wide column slice at a time.
const OUTPUT_SLICES: u32 = HEAD_COLUMNS / KEY_COLUMNS;
const STRIP_STRIDE: u32 = (STRIP_COLUMNS + 8u) / 4u;
// Vec4s of a key tile (keys or values) each thread stages (HEAD_DIM is a multiple of 32, so
// the tile's KEY_TILE * HEAD_VECS is a multiple of WORKGROUP_SIZE).
const STAGE_ROUNDS: u32 = KEY_TILE * HEAD_VECS / WORKGROUP_SIZE;
const_assert STAGE_ROUNDS * WORKGROUP_SIZE == KEY_TILE * HEAD_VECS;
const V_OFFSET: u32 = KEY_TILE * HEAD_STRIDE;
const S_STRIDE: u32 = QUERY_TILE + 4u;
const P_STRIDE: u32 = QUERY_TILE + 8u;

var<workgroup> kv_tile: array<vec4<f16>, max(2u * KEY_TILE * HEAD_STRIDE, QUERY_TILE * STRIP_STRIDE)>;
var<workgroup> s_tile: array<f32, KEY_TILE * S_STRIDE>;
var<workgroup> p_tile: array<f16, KEY_TILE * P_STRIDE>;
var<workgroup> row_index: array<u32, QUERY_TILE>;
var<workgroup> row_position: array<u32, QUERY_TILE>;
// Scalars padded to 16 bytes: drivers may place f16 tiles after every 4-byte variable, and
// the matrix loads need their rows 16-byte aligned.
// The tile rows' largest (LAST_ROW) and smallest (FIRST_ROW) positions, gathered with
// atomics; then shared as plain values: the smallest, and the keys the tile walks
// (FIRST_KEY, KEY_END).
var<workgroup> tile_positions: array<atomic<u32>, 4>;
var<workgroup> tile_bounds: array<u32, 4>;
var<workgroup> shared_tile: BlockTile;
const LAST_ROW: u32 = 0u;
const FIRST_ROW: u32 = 1u;
const FIRST_KEY: u32 = 2u;
const KEY_END: u32 = 3u;

// The subgroup that runs a thread (it owns row strip `index`), and the thread's lane in it.
struct Strip {
    index: u32,
    lane: u32,
}

// The staged key that half `half` of a row reads at step i of its HALF_KEYS.
fn half_key(half: u32, i: u32) -> u32 {
    return half * HALF_KEYS + (i + half * HALF_ROTATION) % HALF_KEYS;
}

// A subgroup's 16-row strip of the tile's rows (of q, or of dout) as cooperative A matrices,
// 16 head dims each.
alias RowStrip = array<coop_mat16x16<f16, A>, HEAD_COLUMNS>;
// A subgroup's 16-row strip of an output, 16 head dims per matrix.
alias OutputStrip = array<coop_mat16x16<f32, C>, HEAD_COLUMNS>;

// The entry of both kernels: the workgroup's tile and its rows, then the kernel's own
// `run_tile` (each kernel defines it), subgroup s on row strip s.
@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    grid: GridPosition,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let tile = open_block_tile(grid, lid);
    if tile.rows == 0u {
        return;
    }
    run_tile(tile, load_tile_rows(tile, lid), lid, Strip(subgroup, lane));
}

// The tile of this workgroup, the same value in every thread (rows == 0: no work).
fn open_block_tile(grid: GridPosition, lid: u32) -> BlockTile {
    // One thread reads the schedule; the load makes it uniform, as the matrix operations need.
    if lid == 0u {
        shared_tile = block_tile(workgroup_index(grid));
    }
    return workgroupUniformLoad(&shared_tile);
}

// Fills row_index and row_position for the tile's rows and returns the keys [first, end) it
// walks (tile_key_range), the same value in every thread; keeps the first row's position for
// tile_first_position.
fn load_tile_rows(tile: BlockTile, lid: u32) -> vec2<u32> {
    if lid == 0u {
        atomicStore(&tile_positions[LAST_ROW], 0u);
        atomicStore(&tile_positions[FIRST_ROW], 0xffffffffu);
    }
    workgroupBarrier();
    if lid < tile.rows {
        let row = tile_row(tile, lid);
        row_index[lid] = row.x;
        row_position[lid] = row.y;
        atomicMax(&tile_positions[LAST_ROW], row.y);
        atomicMin(&tile_positions[FIRST_ROW], row.y);
    }
    workgroupBarrier();
    if lid == 0u {
        let first_position = atomicLoad(&tile_positions[FIRST_ROW]);
        let keys = tile_key_range(tile, first_position, atomicLoad(&tile_positions[LAST_ROW]));
        tile_bounds[FIRST_KEY] = keys.x;
        tile_bounds[KEY_END] = keys.y;
        tile_bounds[FIRST_ROW] = first_position;
    }
    let bounds = workgroupUniformLoad(&tile_bounds);
    return vec2<u32>(bounds[FIRST_KEY], bounds[KEY_END]);
}

// The smallest position of the tile's rows, the same value in every thread (after
// load_tile_rows).
fn tile_first_position() -> u32 {
    return workgroupUniformLoad(&tile_bounds)[FIRST_ROW];
}

// Loads the subgroup's strip of the rows of `source` (see `strip_source`, which each kernel
// defines) as f16 matrices, STRIP_COLUMNS columns per round through kv_tile. Rows past the
// tile's are zero.
fn load_strip(matrices: ptr<function, RowStrip>, tile: BlockTile, strip: u32, lid: u32, source: u32) {
    // unroll
    for (var round = 0u; round < STRIP_ROUNDS; round++) {
        for (var i = lid; i < QUERY_TILE * STRIP_COLUMNS / 4u; i += WORKGROUP_SIZE) {
            let r = i / (STRIP_COLUMNS / 4u);
            let c = i % (STRIP_COLUMNS / 4u);
            var value = vec4<f32>(0.0);
            if r < tile.rows {
                value = strip_source(source, row_index[r], round * STRIP_COLUMNS / 4u + c);
            }
            kv_tile[r * STRIP_STRIDE + c] = vec4<f16>(value);
        }
        workgroupBarrier();
        // unroll
        for (var c = 0u; c < STRIP_MATRICES; c++) {
            // A: 16 rows x 16 dims, row-major.
            (*matrices)[round * STRIP_MATRICES + c] =
                coopLoadT<coop_mat16x16<f16, A>>(&kv_tile[strip * MATRIX * STRIP_STRIDE + c * MATRIX / 4u], STRIP_STRIDE);
        }
        workgroupBarrier();
    }
}

// Stages keys and values [first, first + count) of a group from their f16 copies
// (half_inputs.wgsl); positions past `count` are zero so that they add nothing. Ends with a
// barrier.
fn stage_keys(group: u32, first: u32, count: u32, lid: u32) {
    let base = (group * params.kv_stride + first) * HEAD_VECS;
    // Every load first, then the stores: the thread's loads are in flight together rather
    // than one round trip to memory per round.
    var key: array<vec4<f16>, STAGE_ROUNDS>;
    var value: array<vec4<f16>, STAGE_ROUNDS>;
    // unroll
    for (var round = 0u; round < STAGE_ROUNDS; round++) {
        let i = lid + round * WORKGROUP_SIZE;
        key[round] = vec4<f16>(0.0);
        value[round] = vec4<f16>(0.0);
        if i < count * HEAD_VECS {
            key[round] = keys[base + i];
            value[round] = values[base + i];
        }
    }
    // unroll
    for (var round = 0u; round < STAGE_ROUNDS; round++) {
        let i = lid + round * WORKGROUP_SIZE;
        let at = (i / HEAD_VECS) * HEAD_STRIDE + i % HEAD_VECS;
        kv_tile[at] = key[round];
        kv_tile[V_OFFSET + at] = value[round];
    }
    workgroupBarrier();
}

// s_tile = (rows . staged^T)^T for the subgroup's strip on the matrix units (key-major): the
// staged keys (offset 0) or values (V_OFFSET). The caller places the barrier its readers need.
fn tile_products(rows: ptr<function, RowStrip>, strip: u32, offset: u32) {
    for (var column = 0u; column < KEY_COLUMNS; column++) {
        var acc = coop_mat16x16<f32, C>();
        // unroll
        for (var c = 0u; c < HEAD_COLUMNS; c++) {
            // B: 16 dims x 16 keys, i.e. the staged rows read column-major.
            let b = coopLoad<coop_mat16x16<f16, B>>(&kv_tile[offset + column * MATRIX * HEAD_STRIDE + c * MATRIX / 4u], HEAD_STRIDE);
            acc = coopMultiplyAdd((*rows)[c], b, acc);
        }
        // Column-major store: element (row r, key j) lands at j * S_STRIDE + r.
        coopStore(acc, &s_tile[column * MATRIX * S_STRIDE + strip * MATRIX], S_STRIDE);
    }
}

// acc += p_tile's strip (16 rows x KEY_TILE) . the staged keys or values (at `offset`),
// KEY_TILE x HEAD_DIM.
fn accumulate_products(acc: ptr<function, OutputStrip>, strip: u32, offset: u32) {
    // A: 16 rows x 16 keys of p, stored key-major, so read column-major.
    var p: array<coop_mat16x16<f16, A>, KEY_COLUMNS>;
    // unroll
    for (var k = 0u; k < KEY_COLUMNS; k++) {
        p[k] = coopLoad<coop_mat16x16<f16, A>>(&p_tile[k * MATRIX * P_STRIDE + strip * MATRIX], P_STRIDE);
    }
    // unroll
    for (var t = 0u; t < HEAD_COLUMNS; t++) {
        // unroll
        for (var k = 0u; k < KEY_COLUMNS; k++) {
            let b = coopLoadT<coop_mat16x16<f16, B>>(&kv_tile[offset + k * MATRIX * HEAD_STRIDE + t * MATRIX / 4u], HEAD_STRIDE);
            (*acc)[t] = coopMultiplyAdd(p[k], b, (*acc)[t]);
        }
    }
}

// Sets every matrix of an output strip to zero.
fn zero_output_strip(acc: ptr<function, OutputStrip>) {
    // unroll
    for (var t = 0u; t < HEAD_COLUMNS; t++) {
        (*acc)[t] = coop_mat16x16<f32, C>();
    }
}

// Score of staged key j for tile row r (at `position`) in the log2 domain, or NEG_BIG where
// masked (not visible, or past `count`).
fn visible_score(r: u32, position: u32, j: u32, first: u32, count: u32) -> f32 {
    if j >= count || !key_visible(first + j, position) {
        return NEG_BIG;
    }
    return s_tile[j * S_STRIDE + r] * params.scale_log2;
}

// Writes out the tile's rows of the strips' output matrices (each subgroup its own strip), a
// KEY_TILE-wide column slice at a time through s_tile: element (row r of the tile, dim d)
// goes to `store_output(r, d, value)`, which each kernel defines. Uniform control flow only.
fn store_output_strips(acc: ptr<function, OutputStrip>, tile: BlockTile, strip: u32, lid: u32) {
    for (var slice = 0u; slice < OUTPUT_SLICES; slice++) {
        stage_output_slice(acc, slice, strip);
        for (var i = lid; i < tile.rows * KEY_TILE; i += WORKGROUP_SIZE) {
            store_output(i / KEY_TILE, slice * KEY_TILE + i % KEY_TILE, s_tile[i]);
        }
        workgroupBarrier();
    }
}

// Stores the output columns [slice * KEY_TILE, (slice + 1) * KEY_TILE) of every strip into
// s_tile as [QUERY_TILE rows][KEY_TILE dims], then a barrier.
fn stage_output_slice(acc: ptr<function, OutputStrip>, slice: u32, strip: u32) {
    // unroll
    for (var t = 0u; t < HEAD_COLUMNS; t++) {
        if t / KEY_COLUMNS == slice {
            coopStoreT((*acc)[t], &s_tile[strip * MATRIX * KEY_TILE + (t % KEY_COLUMNS) * MATRIX], KEY_TILE);
        }
    }
    workgroupBarrier();
}
