// MoBA attention on cooperative matrices (tensor cores), one pass per selection slot: the
// schedule of attention_pass.wgsl (block_tiles.wgsl) with the tile products on 16x16x16
// f16 x f16 -> f32 matrix units. Native adapters with EXPERIMENTAL_COOPERATIVE_MATRIX only.
//
// Grid: as attention_pass. Workgroup: WORKGROUP_SIZE (256) threads in SUBGROUPS subgroups
//       take QUERY_TILE (128) gathered rows against one block, KEY_TILE (32) keys at a time.
// Queries stay in registers: subgroup s holds its 16-row strip of q as HEAD_COLUMNS
//       cooperative A matrices, loaded once through workgroup memory 32 columns at a time.
// Two sweeps over the block's keys: the first finds every row's max score, the second forms
//       p = exp2(s - max) once and for all, so the output, which lives in cooperative
//       matrices that cannot be scaled row by row, never needs rescaling.
// Softmax: two threads per row, each walking half of every staged key tile.
// Work split: subgroup s owns row strip s: its score tiles (all KEY_COLUMNS) and its output
//       tiles (all HEAD_COLUMNS).
//       Control flow never depends on the subgroup (cooperative operations must stay in
//       uniform control flow): only the addresses do.
// Workgroup memory (HEAD_DIM 128, 43.5 KiB): kv_tile f16 [32 keys][D + 8] of keys then of
//       values (first, [128 rows][32 + 8] query columns); s_tile f32 [32 keys][128 + 4 rows]
//       (key-major, so that the thread of a row walks its keys without bank conflicts; later
//       the output, a column slice at a time, [128 rows][32 dims]); p_tile f16
//       [32 keys][128 + 8 rows]; per-row index, position, max.
//       The padding moves consecutive rows 16 bytes apart across the banks, so the 16-byte row
//       reads of a matrix load do not collide.
// Precision: q, k, v and p are rounded to f16; products accumulate in f32; the scale
//       (log2 domain) multiplies the f32 scores, and the row sums add the f32 p, so the
//       statistics (max, sum, lse) are exact to f32 on f16-exact inputs.

const MATRIX: u32 = 16u;
const KEY_COLUMNS: u32 = KEY_TILE / MATRIX;
const HEAD_COLUMNS: u32 = HEAD_DIM / MATRIX;
const O_TILES: u32 = HEAD_COLUMNS;
const HALF_KEYS: u32 = KEY_TILE / 2u;

// Row strides: rows padded by 16 bytes. The q, k, v tiles hold vec4<f16> (one 8-byte store
// per staged vec4), so their stride and offsets count vec4s.
const HEAD_STRIDE: u32 = (HEAD_DIM + 8u) / 4u;
// Query columns staged per round, and their row stride in vec4s.
const Q_COLUMNS: u32 = 32u;
const Q_STRIDE: u32 = (Q_COLUMNS + 8u) / 4u;
const V_OFFSET: u32 = KEY_TILE * HEAD_STRIDE;
const S_STRIDE: u32 = QUERY_TILE + 4u;
const P_STRIDE: u32 = QUERY_TILE + 8u;

var<workgroup> kv_tile: array<vec4<f16>, max(2u * KEY_TILE * HEAD_STRIDE, QUERY_TILE * Q_STRIDE)>;
var<workgroup> s_tile: array<f32, KEY_TILE * S_STRIDE>;
var<workgroup> p_tile: array<f16, KEY_TILE * P_STRIDE>;
var<workgroup> row_index: array<u32, QUERY_TILE>;
var<workgroup> row_position: array<u32, QUERY_TILE>;
var<workgroup> row_max: array<f32, QUERY_TILE>;
// Scalars padded to 16 bytes: drivers may place f16 tiles after every 4-byte variable, and
// the matrix loads need their rows 16-byte aligned.
var<workgroup> tile_last_position: array<atomic<u32>, 4>;
var<workgroup> tile_key_end: array<u32, 4>;
var<workgroup> shared_tile: BlockTile;

// Stages keys (and values when `with_values`) [first, first + count) of a group as f16;
// positions past `count` are zero so that they add nothing. Ends with a barrier.
fn stage_keys(group: u32, first: u32, count: u32, lid: u32, with_values: bool) {
    let base = (group * params.kv_len + first) * HEAD_VECS;
    for (var i = lid; i < KEY_TILE * HEAD_VECS; i += WORKGROUP_SIZE) {
        var key = vec4<f32>(0.0);
        var value = vec4<f32>(0.0);
        if i < count * HEAD_VECS {
            key = keys[base + i];
            if with_values {
                value = values[base + i];
            }
        }
        let at = (i / HEAD_VECS) * HEAD_STRIDE + i % HEAD_VECS;
        kv_tile[at] = vec4<f16>(key);
        if with_values {
            kv_tile[V_OFFSET + at] = vec4<f16>(value);
        }
    }
    workgroupBarrier();
}

alias QueryStrip = array<coop_mat16x16<f16, A>, HEAD_COLUMNS>;

// s_tile = (q . k_tile^T)^T for the subgroup's strip on the matrix units (key-major), then a
// barrier.
fn tile_scores(query: ptr<function, QueryStrip>, strip: u32) {
    for (var column = 0u; column < KEY_COLUMNS; column++) {
        var acc = coop_mat16x16<f32, C>();
        for (var c = 0u; c < HEAD_COLUMNS; c++) {
            // B: 16 dims x 16 keys, i.e. k read column-major.
            let b = coopLoad<coop_mat16x16<f16, B>>(&kv_tile[column * MATRIX * HEAD_STRIDE + c * MATRIX / 4u], HEAD_STRIDE);
            acc = coopMultiplyAdd((*query)[c], b, acc);
        }
        // Column-major store: element (row r, key j) lands at j * S_STRIDE + r.
        coopStore(acc, &s_tile[column * MATRIX * S_STRIDE + strip * MATRIX], S_STRIDE);
    }
    workgroupBarrier();
}

// The value of the thread that shares this thread's row (through s_tile, free between the
// sweeps and before the merge). Call from uniform control flow.
fn partner_value(lid: u32, value: f32) -> f32 {
    s_tile[lid] = value;
    workgroupBarrier();
    let partner = s_tile[(lid + QUERY_TILE) % WORKGROUP_SIZE];
    workgroupBarrier();
    return partner;
}

// Score of staged key j for tile row r, or NEG_BIG where masked (causal, or past `count`).
fn visible_score(r: u32, j: u32, first: u32, count: u32) -> f32 {
    if j >= count || (params.causal != 0u && first + j > row_position[r]) {
        return NEG_BIG;
    }
    return s_tile[j * S_STRIDE + r] * params.scale_log2;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    grid: GridPosition,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) subgroup: u32,
) {
    // One thread reads the schedule; the load makes it uniform, as the matrix operations need.
    if lid == 0u {
        shared_tile = block_tile(workgroup_index(grid));
    }
    let tile = workgroupUniformLoad(&shared_tile);
    if tile.rows == 0u {
        return;
    }
    // Rows of the tile and the queries as f16 (the scale multiplies the f32 scores).
    if lid == 0u {
        atomicStore(&tile_last_position[0], 0u);
    }
    workgroupBarrier();
    if lid < tile.rows {
        let row = tile_row(tile, lid);
        row_index[lid] = row.x;
        row_position[lid] = row.y;
        atomicMax(&tile_last_position[0], row.y);
    }
    workgroupBarrier();
    // The subgroup's strip of q as matrices, Q_COLUMNS columns per round through kv_tile.
    let strip = subgroup;
    var query: QueryStrip;
    for (var round = 0u; round < HEAD_DIM / Q_COLUMNS; round++) {
        for (var i = lid; i < QUERY_TILE * Q_COLUMNS / 4u; i += WORKGROUP_SIZE) {
            let r = i / (Q_COLUMNS / 4u);
            let c = i % (Q_COLUMNS / 4u);
            var value = vec4<f32>(0.0);
            if r < tile.rows {
                value = queries[row_index[r] * HEAD_VECS + round * Q_COLUMNS / 4u + c];
            }
            kv_tile[r * Q_STRIDE + c] = vec4<f16>(value);
        }
        workgroupBarrier();
        for (var c = 0u; c < Q_COLUMNS / MATRIX; c++) {
            // A: 16 rows x 16 dims of q, row-major.
            query[round * Q_COLUMNS / MATRIX + c] =
                coopLoadT<coop_mat16x16<f16, A>>(&kv_tile[strip * MATRIX * Q_STRIDE + c * MATRIX / 4u], Q_STRIDE);
        }
        workgroupBarrier();
    }
    if lid == 0u {
        tile_key_end[0] = tile_key_range(tile, atomicLoad(&tile_last_position[0])).y;
    }
    let key_end = workgroupUniformLoad(&tile_key_end)[0];
    let key_first = tile.block * params.block_size;
    // The softmax work of a row is split over two threads (WORKGROUP_SIZE = 2 * QUERY_TILE):
    // thread `lid` takes row `row` and the keys of its `half` of every staged tile.
    let row = lid % QUERY_TILE;
    let keys_first = (lid / QUERY_TILE) * HALF_KEYS;
    let is_row = row < tile.rows;

    // Sweep 1: every row's max score over the block.
    var max_score = NEG_BIG;
    for (var first = key_first; first < key_end; first += KEY_TILE) {
        let count = min(KEY_TILE, key_end - first);
        stage_keys(tile.group, first, count, lid, false);
        tile_scores(&query, strip);
        if is_row {
            for (var j = keys_first; j < keys_first + HALF_KEYS; j++) {
                max_score = max(max_score, visible_score(row, j, first, count));
            }
        }
        workgroupBarrier();
    }
    max_score = max(max_score, partner_value(lid, max_score));

    // Sweep 2: p = exp2(s - max), its sum in f32, and o += f16(p) . v on the matrix units.
    var o: array<coop_mat16x16<f32, C>, O_TILES>;
    for (var t = 0u; t < O_TILES; t++) {
        o[t] = coop_mat16x16<f32, C>();
    }
    var sum = 0.0;
    for (var first = key_first; first < key_end; first += KEY_TILE) {
        let count = min(KEY_TILE, key_end - first);
        stage_keys(tile.group, first, count, lid, true);
        tile_scores(&query, strip);
        for (var j = keys_first; j < keys_first + HALF_KEYS; j++) {
            var p = 0.0;
            if is_row {
                p = exp2(visible_score(row, j, first, count) - max_score);
            }
            p_tile[j * P_STRIDE + row] = f16(p);
            sum += p;
        }
        workgroupBarrier();
        for (var t = 0u; t < O_TILES; t++) {
            let column = t;
            for (var k = 0u; k < KEY_TILE; k += MATRIX) {
                // A: 16 rows x 16 keys of p, stored key-major, so read column-major.
                let a = coopLoad<coop_mat16x16<f16, A>>(&p_tile[k * P_STRIDE + strip * MATRIX], P_STRIDE);
                let b = coopLoadT<coop_mat16x16<f16, B>>(&kv_tile[V_OFFSET + k * HEAD_STRIDE + column * MATRIX / 4u], HEAD_STRIDE);
                o[t] = coopMultiplyAdd(a, b, o[t]);
            }
        }
        workgroupBarrier();
    }
    sum += partner_value(lid, sum);
    let owns_row = is_row && lid < QUERY_TILE;
    if owns_row {
        row_max[row] = max_score;
    }

    // Merge with the running state, one KEY_TILE-wide column slice of the output at a time
    // through s_tile: new = old * 2^(m_old - m) + block * 2^(m_block - m).
    for (var slice = 0u; slice < HEAD_COLUMNS / KEY_COLUMNS; slice++) {
        for (var t = 0u; t < O_TILES; t++) {
            let column = t;
            if column / KEY_COLUMNS == slice {
                coopStoreT(o[t], &s_tile[strip * MATRIX * KEY_TILE + (column % KEY_COLUMNS) * MATRIX], KEY_TILE);
            }
        }
        workgroupBarrier();
        for (var i = lid; i < tile.rows * KEY_TILE; i += WORKGROUP_SIZE) {
            let r = i / KEY_TILE;
            let d = slice * KEY_TILE + i % KEY_TILE;
            let at = row_index[r] * HEAD_VECS + d / 4u;
            var old = 0.0;
            var old_state = vec2<f32>(NEG_BIG, 0.0);
            if params.slot > 0u {
                old = out[at][d % 4u];
                old_state = stats[row_index[r]];
            }
            let new_max = max(old_state.x, row_max[r]);
            out[at][d % 4u] = old * exp2(old_state.x - new_max) + s_tile[i] * exp2(row_max[r] - new_max);
        }
        workgroupBarrier();
    }
    if owns_row {
        var old_state = vec2<f32>(NEG_BIG, 0.0);
        if params.slot > 0u {
            old_state = stats[row_index[row]];
        }
        let new_max = max(old_state.x, max_score);
        stats[row_index[row]] = vec2<f32>(
            new_max,
            old_state.y * exp2(old_state.x - new_max) + sum * exp2(max_score - new_max),
        );
    }
}
