// MoBA backward, dk and dv on cooperative matrices (tensor cores): for each key, the sum over
// the query rows that chose its block, taken from the inverted lists (block_tiles.wgsl's
// lists and starts: slot by slot, in list order), so no selection is scanned.
//
// Grid: groups * num_blocks * key_chunks workgroups, linear (key_chunks = ceil(block_size /
//       CHUNK_KEYS)); workgroup (group, block, chunk) owns CHUNK_KEYS (64) consecutive keys of
//       the block; surplus workgroups exit.
// Rows: the rows of the block's lists, ROW_TILE (32) at a time, q and dout staged as f16; a
//       causal round whose rows all sit before the chunk's keys is skipped.
// Work split: SUBGROUPS (8) subgroups; subgroup s takes key strip s % KEY_STRIPS (16 keys) in
//       role s / KEY_STRIPS. Role 0 holds its keys as A matrices, forms s^T = k . q^T, then
//       dv += p^T . dout; role 1 holds its values, forms dp^T = v . dout^T, then
//       dk += ds^T . q. Control flow never depends on the subgroup (cooperative operations
//       must stay in uniform control flow): only the addresses do.
// Row-wise work: thread lid takes row lid % ROW_TILE and every (WORKGROUP_SIZE / ROW_TILE)-th
//       key: p = exp2(s * scale_log2 - lse) with the saved lse (masked: keys the row does not see, rows past the
//       list, keys past the block), ds = p (dp - delta); both as f16 for the products.
// Output: dk = scale * sum ds q, dv = sum p dout, a column slice at a time through sd_tile;
//       every key of the block written (zero where no row chose it). Summation order is
//       fixed (slots, then list order), so dk and dv are the same bits on every run.
// Workgroup memory (HEAD_DIM 128, 45.6 KiB): row_tile f16 [2][32 rows][D + 8] (q, dout; first
//       [2][64 keys][32 + 8] key and value columns while the strips load); sd_tile f32
//       [2][64 keys][32 + 4 rows] (s^T, dp^T; at the end [2][64 keys][32 dims] of dv, dk);
//       pd_tile f16 [2][64 keys][32 + 8 rows] (p^T, ds^T); per-row index, position, terms.
// Registers: the loops over the key strip and dk/dv matrices are marked `// unroll` (the host
//       writes them out, src/gpu/unroll.rs), so that they stay in registers.
// Memory: dk, dv [groups, kv_len, HEAD_DIM] vec4 f32; dout_max [1] u32 from backward_prepare
//       (dout and delta are scaled by dout_factor before the f16 rounding).

@group(0) @binding(8) var<storage, read_write> dk: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read_write> dv: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read> dout_max: array<u32>;

const MATRIX: u32 = 16u;
const HEAD_COLUMNS: u32 = HEAD_DIM / MATRIX;
const KEY_STRIPS: u32 = SUBGROUPS / 2u;
const CHUNK_KEYS: u32 = KEY_STRIPS * MATRIX;
const ROW_TILE: u32 = 32u;
const ROW_COLUMNS: u32 = ROW_TILE / MATRIX;
// Vec4s of a row tile (q or dout) each thread stages (HEAD_DIM is a multiple of 32).
const ROW_ROUNDS: u32 = ROW_TILE * HEAD_VECS / WORKGROUP_SIZE;
const_assert ROW_ROUNDS * WORKGROUP_SIZE == ROW_TILE * HEAD_VECS;
// Keys each thread takes per row tile, WORKGROUP_SIZE / ROW_TILE apart.
const KEY_STEP: u32 = WORKGROUP_SIZE / ROW_TILE;
// Head-dim columns per round while the key strips load, and per output slice.
const SLICE_COLUMNS: u32 = 32u;
const SLICE_MATRICES: u32 = SLICE_COLUMNS / MATRIX;
const SLICES: u32 = HEAD_DIM / SLICE_COLUMNS;

// Strides of padded rows (16 bytes of padding); the f16 row tiles count vec4s.
const ROW_STRIDE: u32 = (HEAD_DIM + 8u) / 4u;
const DOUT_OFFSET: u32 = ROW_TILE * ROW_STRIDE;
const KEY_STAGE_STRIDE: u32 = (SLICE_COLUMNS + 8u) / 4u;
const VALUE_STAGE_OFFSET: u32 = CHUNK_KEYS * KEY_STAGE_STRIDE;
const SD_STRIDE: u32 = ROW_TILE + 4u;
const DP_OFFSET: u32 = CHUNK_KEYS * SD_STRIDE;
const DK_OUT_OFFSET: u32 = CHUNK_KEYS * SLICE_COLUMNS;
const PD_STRIDE: u32 = ROW_TILE + 8u;
const DS_OFFSET: u32 = CHUNK_KEYS * PD_STRIDE;

var<workgroup> row_tile: array<vec4<f16>, max(2u * ROW_TILE * ROW_STRIDE, 2u * CHUNK_KEYS * KEY_STAGE_STRIDE)>;
var<workgroup> sd_tile: array<f32, 2u * CHUNK_KEYS * SD_STRIDE>;
var<workgroup> pd_tile: array<f16, 2u * CHUNK_KEYS * PD_STRIDE>;
var<workgroup> staged_row: array<u32, ROW_TILE>;
var<workgroup> staged_position: array<u32, ROW_TILE>;
var<workgroup> staged_terms: array<vec2<f32>, ROW_TILE>;
// Padded to 16 bytes: drivers may place f16 tiles after every 4-byte variable, and the
// matrix loads need their rows 16-byte aligned.
var<workgroup> shared_chunk: KeyChunk;
var<workgroup> shared_list: vec4<u32>;
// Whether any staged row can see a key of the chunk; every thread that finds one writes 1.
var<workgroup> rows_see_chunk: array<u32, 4>;

// The keys of one workgroup: [first, end) of one block of one group.
struct KeyChunk {
    group: u32,
    block: u32,
    first: u32,
    end: u32,
}

fn key_chunk(index: u32) -> KeyChunk {
    let chunks = (params.block_size + CHUNK_KEYS - 1u) / CHUNK_KEYS;
    let group = index / (params.num_blocks * chunks);
    let block = (index / chunks) % params.num_blocks;
    let end = min((block + 1u) * params.block_size, params.kv_len);
    var first = block * params.block_size + (index % chunks) * CHUNK_KEYS;
    if group >= groups() {
        first = end; // no work
    }
    return KeyChunk(group, block, first, end);
}

// Entries [x, y) of the lists of `group` that hold the rows which chose `block` in `slot`.
fn list_range(group: u32, block: u32, slot: u32) -> vec4<u32> {
    let at = group * (TOP_K * params.num_blocks + 1u) + slot * params.num_blocks + block;
    return vec4<u32>(starts[at].x, starts[at + 1u].x, 0u, 0u);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    grid: GridPosition,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) subgroup: u32,
) {
    if lid == 0u {
        shared_chunk = key_chunk(workgroup_index(grid));
    }
    let chunk = workgroupUniformLoad(&shared_chunk);
    if chunk.first >= chunk.end {
        return;
    }
    // dout and delta scaled by a power of two before the f16 rounding (dout_factor).
    let dout_scale = dout_factor(bitcast<f32>(dout_max[0]));
    let key_strip = subgroup % KEY_STRIPS;
    let role = subgroup / KEY_STRIPS;

    // The strip's keys (role 0) or values (role 1) as A matrices, SLICE_COLUMNS per round.
    var strip: array<coop_mat16x16<f16, A>, HEAD_COLUMNS>;
    let kv_base = (chunk.group * params.kv_len + chunk.first) * HEAD_VECS;
    // unroll
    for (var round = 0u; round < SLICES; round++) {
        for (var i = lid; i < CHUNK_KEYS * SLICE_COLUMNS / 4u; i += WORKGROUP_SIZE) {
            let key = i / (SLICE_COLUMNS / 4u);
            let c = i % (SLICE_COLUMNS / 4u);
            var k = vec4<f32>(0.0);
            var v = vec4<f32>(0.0);
            if chunk.first + key < chunk.end {
                let at = kv_base + key * HEAD_VECS + round * SLICE_COLUMNS / 4u + c;
                k = keys[at];
                v = values[at];
            }
            row_tile[key * KEY_STAGE_STRIDE + c] = vec4<f16>(k);
            row_tile[VALUE_STAGE_OFFSET + key * KEY_STAGE_STRIDE + c] = vec4<f16>(v);
        }
        workgroupBarrier();
        // unroll
        for (var c = 0u; c < SLICE_MATRICES; c++) {
            // A: 16 keys x 16 dims, row-major.
            let at = role * VALUE_STAGE_OFFSET + key_strip * MATRIX * KEY_STAGE_STRIDE + c * MATRIX / 4u;
            strip[round * SLICE_MATRICES + c] = coopLoadT<coop_mat16x16<f16, A>>(&row_tile[at], KEY_STAGE_STRIDE);
        }
        workgroupBarrier();
    }

    var grad: array<coop_mat16x16<f32, C>, HEAD_COLUMNS>; // dv (role 0) or dk (role 1)
    // unroll
    for (var t = 0u; t < HEAD_COLUMNS; t++) {
        grad[t] = coop_mat16x16<f32, C>();
    }
    let rows_per_group = group_size() * params.q_len;
    let list_base = chunk.group * rows_per_group * TOP_K;
    let r = lid % ROW_TILE;
    if lid == 0u {
        rows_see_chunk[0] = u32(params.causal == 0u);
    }
    for (var slot = 0u; slot < TOP_K; slot++) {
        if lid == 0u {
            shared_list = list_range(chunk.group, chunk.block, slot);
        }
        let list = workgroupUniformLoad(&shared_list);
        for (var entry = list.x; entry < list.y; entry += ROW_TILE) {
            let rows = min(ROW_TILE, list.y - entry);
            // Stage the rows: their index, position and terms, then q and dout as f16 (zero
            // past `rows`).
            if lid < rows {
                let local_row = lists[list_base + entry + lid];
                let row = chunk.group * rows_per_group + local_row;
                let position = query_position(local_row % params.q_len);
                staged_row[lid] = row;
                staged_position[lid] = position;
                staged_terms[lid] = row_terms[row];
                if position >= chunk.first {
                    rows_see_chunk[0] = 1u;
                }
            }
            // Causal: rows that all sit before the chunk's keys add nothing (lists are in row
            // order, so early rounds of a block's own list are skipped whole).
            if workgroupUniformLoad(&rows_see_chunk)[0] == 0u {
                continue;
            }
            // Every load first, then the stores (the loads in flight together).
            var q: array<vec4<f32>, ROW_ROUNDS>;
            var d: array<vec4<f32>, ROW_ROUNDS>;
            // unroll
            for (var round = 0u; round < ROW_ROUNDS; round++) {
                let i = lid + round * WORKGROUP_SIZE;
                q[round] = vec4<f32>(0.0);
                d[round] = vec4<f32>(0.0);
                if i / HEAD_VECS < rows {
                    let source = staged_row[i / HEAD_VECS] * HEAD_VECS + i % HEAD_VECS;
                    q[round] = queries[source];
                    d[round] = dout[source];
                }
            }
            // unroll
            for (var round = 0u; round < ROW_ROUNDS; round++) {
                let i = lid + round * WORKGROUP_SIZE;
                let at = (i / HEAD_VECS) * ROW_STRIDE + i % HEAD_VECS;
                row_tile[at] = vec4<f16>(q[round]);
                row_tile[DOUT_OFFSET + at] = vec4<f16>(d[round] * dout_scale);
            }
            workgroupBarrier();
            // s^T = k . q^T (role 0) or dp^T = v . dout^T (role 1): 16 keys x ROW_TILE rows.
            for (var column = 0u; column < ROW_COLUMNS; column++) {
                var acc = coop_mat16x16<f32, C>();
                // unroll
                for (var c = 0u; c < HEAD_COLUMNS; c++) {
                    // B: 16 dims x 16 rows, i.e. the staged rows read column-major.
                    let at = role * DOUT_OFFSET + column * MATRIX * ROW_STRIDE + c * MATRIX / 4u;
                    acc = coopMultiplyAdd(strip[c], coopLoad<coop_mat16x16<f16, B>>(&row_tile[at], ROW_STRIDE), acc);
                }
                let at = role * DP_OFFSET + key_strip * MATRIX * SD_STRIDE + column * MATRIX;
                coopStoreT(acc, &sd_tile[at], SD_STRIDE);
            }
            workgroupBarrier();
            // p and ds of row r against the chunk's keys.
            var terms = vec2<f32>(0.0, 0.0); // (lse in the log2 domain, delta)
            if r < rows {
                terms = staged_terms[r] * vec2<f32>(1.0, dout_scale);
            }
            for (var key = lid / ROW_TILE; key < CHUNK_KEYS; key += KEY_STEP) {
                let position = chunk.first + key;
                let masked = r >= rows || position >= chunk.end
                    || !key_visible(position, staged_position[r]);
                var p = 0.0;
                if !masked {
                    p = exp2(sd_tile[key * SD_STRIDE + r] * params.scale_log2 - terms.x);
                }
                let ds = p * (sd_tile[DP_OFFSET + key * SD_STRIDE + r] - terms.y);
                pd_tile[key * PD_STRIDE + r] = f16(p);
                pd_tile[DS_OFFSET + key * PD_STRIDE + r] = f16(ds);
            }
            // Every thread has read the flag (a skipped round leaves it as it was).
            if lid == 0u {
                rows_see_chunk[0] = u32(params.causal == 0u);
            }
            workgroupBarrier();
            // dv += p^T . dout (role 0) or dk += ds^T . q (role 1).
            // A: 16 keys x 16 rows, row-major; B: 16 rows x 16 dims, row-major.
            var pd: array<coop_mat16x16<f16, A>, ROW_COLUMNS>;
            // unroll
            for (var k = 0u; k < ROW_COLUMNS; k++) {
                let a_at = role * DS_OFFSET + key_strip * MATRIX * PD_STRIDE + k * MATRIX;
                pd[k] = coopLoadT<coop_mat16x16<f16, A>>(&pd_tile[a_at], PD_STRIDE);
            }
            // unroll
            for (var t = 0u; t < HEAD_COLUMNS; t++) {
                // unroll
                for (var k = 0u; k < ROW_COLUMNS; k++) {
                    let b_at = (1u - role) * DOUT_OFFSET + k * MATRIX * ROW_STRIDE + t * MATRIX / 4u;
                    let b = coopLoadT<coop_mat16x16<f16, B>>(&row_tile[b_at], ROW_STRIDE);
                    grad[t] = coopMultiplyAdd(pd[k], b, grad[t]);
                }
            }
            workgroupBarrier();
        }
    }

    // Write dv and dk, SLICE_COLUMNS head dims at a time through sd_tile.
    // Scaled dout gave scaled sums: the power of two divides out exactly.
    let scale = params.scale_log2 * LN_2 / dout_scale;
    for (var slice = 0u; slice < SLICES; slice++) {
        // unroll
        for (var t = 0u; t < HEAD_COLUMNS; t++) {
            if t / SLICE_MATRICES == slice {
                let at = role * DK_OUT_OFFSET + key_strip * MATRIX * SLICE_COLUMNS + (t % SLICE_MATRICES) * MATRIX;
                coopStoreT(grad[t], &sd_tile[at], SLICE_COLUMNS);
            }
        }
        workgroupBarrier();
        for (var i = lid; i < CHUNK_KEYS * SLICE_COLUMNS; i += WORKGROUP_SIZE) {
            let key = i / SLICE_COLUMNS;
            if chunk.first + key < chunk.end {
                let d = slice * SLICE_COLUMNS + i % SLICE_COLUMNS;
                let at = kv_base + key * HEAD_VECS + d / 4u;
                dv[at][d % 4u] = sd_tile[i] / dout_scale;
                dk[at][d % 4u] = scale * sd_tile[DK_OUT_OFFSET + i];
            }
        }
        workgroupBarrier();
    }
}
