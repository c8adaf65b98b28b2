// Variant (forward only): 128 threads, 4 subgroups, each owning TWO 16-row strips, so that
// every key or value matrix loaded feeds two products; one thread per row.
// Overrides the host's WORKGROUP_SIZE / SUBGROUPS (the dq kernel does not run with it).

const FWD_THREADS: u32 = 128u;
const STRIPS: u32 = 2u;
const MATRIX: u32 = 16u;
const HALF_KEYS: u32 = KEY_TILE / 2u; // dq compiles (it does not run with this variant)
const KEY_COLUMNS: u32 = KEY_TILE / MATRIX;
const HEAD_COLUMNS: u32 = HEAD_DIM / MATRIX;
const STRIP_MATRICES_ALL: u32 = STRIPS * HEAD_COLUMNS;
const HEAD_STRIDE: u32 = (HEAD_DIM + 8u) / 4u;
const STRIP_COLUMNS: u32 = 32u;
const STRIP_MATRICES: u32 = STRIP_COLUMNS / MATRIX;
const STRIP_ROUNDS: u32 = HEAD_DIM / STRIP_COLUMNS;
const OUTPUT_SLICES: u32 = HEAD_COLUMNS / KEY_COLUMNS;
const STRIP_STRIDE: u32 = (STRIP_COLUMNS + 8u) / 4u;
const V_OFFSET: u32 = KEY_TILE * HEAD_STRIDE;
const S_STRIDE: u32 = QUERY_TILE + 4u;
const P_STRIDE: u32 = QUERY_TILE + 8u;

var<workgroup> kv_tile: array<vec4<f16>, max(2u * KEY_TILE * HEAD_STRIDE, QUERY_TILE * STRIP_STRIDE)>;
var<workgroup> s_tile: array<f32, KEY_TILE * S_STRIDE>;
var<workgroup> p_tile: array<f16, KEY_TILE * P_STRIDE>;
var<workgroup> row_index: array<u32, QUERY_TILE>;
var<workgroup> row_position: array<u32, QUERY_TILE>;
var<workgroup> tile_last_position: array<atomic<u32>, 4>;
var<workgroup> tile_key_end: array<u32, 4>;
var<workgroup> shared_tile: BlockTile;

// Strips 2s and 2s + 1 of subgroup s: matrix [k * HEAD_COLUMNS + c] is strip 2s + k.
alias RowStrip = array<coop_mat16x16<f16, A>, STRIP_MATRICES_ALL>;
alias OutputStrip = array<coop_mat16x16<f32, C>, STRIP_MATRICES_ALL>;

@compute @workgroup_size(FWD_THREADS)
fn main(
    grid: GridPosition,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) subgroup: u32,
) {
    let tile = open_block_tile(grid, lid);
    if tile.rows == 0u {
        return;
    }
    run_tile(tile, load_tile_rows(tile, lid), lid, subgroup);
}

fn open_block_tile(grid: GridPosition, lid: u32) -> BlockTile {
    if lid == 0u {
        shared_tile = block_tile(workgroup_index(grid));
    }
    return workgroupUniformLoad(&shared_tile);
}

fn load_tile_rows(tile: BlockTile, lid: u32) -> u32 {
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
    if lid == 0u {
        tile_key_end[0] = tile_key_range(tile, atomicLoad(&tile_last_position[0])).y;
    }
    return workgroupUniformLoad(&tile_key_end)[0];
}

fn load_strip(matrices: ptr<function, RowStrip>, tile: BlockTile, sub: u32, lid: u32, source: u32) {
    // unroll
    for (var round = 0u; round < STRIP_ROUNDS; round++) {
        for (var i = lid; i < QUERY_TILE * STRIP_COLUMNS / 4u; i += FWD_THREADS) {
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
        for (var k = 0u; k < STRIPS; k++) {
            // unroll
            for (var c = 0u; c < STRIP_MATRICES; c++) {
                (*matrices)[k * HEAD_COLUMNS + round * STRIP_MATRICES + c] =
                    coopLoadT<coop_mat16x16<f16, A>>(&kv_tile[(sub * STRIPS + k) * MATRIX * STRIP_STRIDE + c * MATRIX / 4u], STRIP_STRIDE);
            }
        }
        workgroupBarrier();
    }
}

fn stage_keys(group: u32, first: u32, count: u32, lid: u32) {
    let base = (group * half_kv_len() + first) * HEAD_VECS;
    for (var i = lid; i < KEY_TILE * HEAD_VECS; i += FWD_THREADS) {
        var key = vec4<f16>(0.0);
        var value = vec4<f16>(0.0);
        if i < count * HEAD_VECS {
            key = keys[base + i];
            value = values[base + i];
        }
        let at = (i / HEAD_VECS) * HEAD_STRIDE + i % HEAD_VECS;
        kv_tile[at] = key;
        kv_tile[V_OFFSET + at] = value;
    }
    workgroupBarrier();
}

// s_tile for both strips; each key matrix feeds two products.
fn tile_products(rows: ptr<function, RowStrip>, sub: u32, offset: u32) {
    for (var column = 0u; column < KEY_COLUMNS; column++) {
        var acc0 = coop_mat16x16<f32, C>();
        var acc1 = coop_mat16x16<f32, C>();
        // unroll
        for (var c = 0u; c < HEAD_COLUMNS; c++) {
            let b = coopLoad<coop_mat16x16<f16, B>>(&kv_tile[offset + column * MATRIX * HEAD_STRIDE + c * MATRIX / 4u], HEAD_STRIDE);
            acc0 = coopMultiplyAdd((*rows)[c], b, acc0);
            acc1 = coopMultiplyAdd((*rows)[HEAD_COLUMNS + c], b, acc1);
        }
        coopStore(acc0, &s_tile[column * MATRIX * S_STRIDE + (sub * STRIPS) * MATRIX], S_STRIDE);
        coopStore(acc1, &s_tile[column * MATRIX * S_STRIDE + (sub * STRIPS + 1u) * MATRIX], S_STRIDE);
    }
    workgroupBarrier();
}

fn accumulate_products(acc: ptr<function, OutputStrip>, sub: u32, offset: u32) {
    var p: array<coop_mat16x16<f16, A>, 4>; // [strip k][key column]
    // unroll
    for (var k = 0u; k < STRIPS; k++) {
        // unroll
        for (var j = 0u; j < KEY_COLUMNS; j++) {
            p[k * KEY_COLUMNS + j] = coopLoad<coop_mat16x16<f16, A>>(&p_tile[j * MATRIX * P_STRIDE + (sub * STRIPS + k) * MATRIX], P_STRIDE);
        }
    }
    // unroll
    for (var t = 0u; t < HEAD_COLUMNS; t++) {
        // unroll
        for (var j = 0u; j < KEY_COLUMNS; j++) {
            let b = coopLoadT<coop_mat16x16<f16, B>>(&kv_tile[offset + j * MATRIX * HEAD_STRIDE + t * MATRIX / 4u], HEAD_STRIDE);
            (*acc)[t] = coopMultiplyAdd(p[j], b, (*acc)[t]);
            (*acc)[HEAD_COLUMNS + t] = coopMultiplyAdd(p[KEY_COLUMNS + j], b, (*acc)[HEAD_COLUMNS + t]);
        }
    }
}

fn zero_output_strip(acc: ptr<function, OutputStrip>) {
    // unroll
    for (var t = 0u; t < STRIP_MATRICES_ALL; t++) {
        (*acc)[t] = coop_mat16x16<f32, C>();
    }
}

fn visible_score(r: u32, position: u32, j: u32, first: u32, count: u32) -> f32 {
    if j >= count || (params.causal != 0u && first + j > position) {
        return NEG_BIG;
    }
    return s_tile[j * S_STRIDE + r] * params.scale_log2;
}

fn store_output_strips(acc: ptr<function, OutputStrip>, tile: BlockTile, sub: u32, lid: u32) {
    for (var slice = 0u; slice < OUTPUT_SLICES; slice++) {
        stage_output_slice(acc, slice, sub);
        for (var i = lid; i < tile.rows * KEY_TILE; i += FWD_THREADS) {
            store_output(i / KEY_TILE, slice * KEY_TILE + i % KEY_TILE, s_tile[i]);
        }
        workgroupBarrier();
    }
}

// Both strips' output columns of a slice into s_tile as [QUERY_TILE rows][KEY_TILE dims].
fn stage_output_slice(acc: ptr<function, OutputStrip>, slice: u32, sub: u32) {
    // unroll
    for (var k = 0u; k < STRIPS; k++) {
        // unroll
        for (var t = 0u; t < HEAD_COLUMNS; t++) {
            if t / KEY_COLUMNS == slice {
                coopStoreT((*acc)[k * HEAD_COLUMNS + t], &s_tile[(sub * STRIPS + k) * MATRIX * KEY_TILE + (t % KEY_COLUMNS) * MATRIX], KEY_TILE);
            }
        }
    }
    workgroupBarrier();
}
