// MoBA backward, dq on cooperative matrices (tensor cores): the schedule of dq_pass.wgsl (one
// pass per selection slot over block_tiles.wgsl) with the tile products on matrix units
// (coop_block_tile.wgsl: grid, tiles, workgroup memory).
//
// Per staged key tile, for the subgroup's strip of rows:
//       s = q . k^T (matrix units) -> p = exp2(s * scale_log2 - lse) with the saved lse, kept
//       by the row's threads in registers; dp = dout . v^T (matrix units) -> ds = p (dp - delta)
//       as f16 in p_tile; dq += ds . k (matrix units). Nothing of the softmax is recomputed.
// dout and delta are scaled by a power of two (dout_factor, backward_rows.wgsl) before the
//       f16 rounding, so that a training loss's small gradients keep their precision.
// Registers: the strips of q and dout (2 x HEAD_COLUMNS A matrices) and of dq (HEAD_COLUMNS
//       f32 matrices) per subgroup; HALF_KEYS probabilities per thread.
// Output: dq = scale * sum over the pass's block (+ the earlier slots'), written a column slice
//       at a time through s_tile. Slot 0 starts dq; each row sits in exactly one tile per slot
//       and the slots run in order, so dq is the same bits on every run.
// Memory: dq [rows, HEAD_DIM] vec4 f32.

@group(0) @binding(8) var<storage, read_write> dq: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read> dout_max: array<u32>;

// dout_factor (backward_rows.wgsl) of this problem, and the factor of dq's sums (scaled dout
// gave scaled ds: the power of two divides out exactly); both set once by run_tile.
var<private> dout_scale: f32;
var<private> dq_scale: f32;

// Which rows a strip is made of.
const STRIP_QUERIES: u32 = 0u;
const STRIP_DOUT: u32 = 1u;

fn strip_source(source: u32, row: u32, at: u32) -> vec4<f32> {
    if source == STRIP_QUERIES {
        return queries[row * HEAD_VECS + at];
    }
    return dout[row * HEAD_VECS + at] * dout_scale;
}

// Adds element (r, d) of the tile's dq to the earlier slots'.
fn store_output(r: u32, d: u32, value: f32) {
    let at = row_index[r] * HEAD_VECS + d / 4u;
    var total = dq_scale * value;
    if params.slot > 0u {
        total += dq[at][d % 4u];
    }
    dq[at][d % 4u] = total;
}

// The kernel's work on one tile (coop_block_tile.wgsl's entry calls it): its rows walk the
// block's keys `keys` ([first, end)); the subgroup owns row strip `subgroup.index` and does
// its row-wise work.
fn run_tile(tile: BlockTile, keys: vec2<u32>, lid: u32, subgroup: Strip) {
    let strip = subgroup.index;
    dout_scale = dout_factor(bitcast<f32>(dout_max[0]));
    dq_scale = params.scale_log2 * LN_2 / dout_scale;
    var query: RowStrip;
    var grad_out: RowStrip;
    load_strip(&query, tile, strip, lid, STRIP_QUERIES);
    load_strip(&grad_out, tile, strip, lid, STRIP_DOUT);
    // This thread's row and half of every staged key tile.
    let row = strip * MATRIX + subgroup.lane % MATRIX;
    let half = subgroup.lane / MATRIX;
    let is_row = row < tile.rows;
    let position = row_position[row];
    var terms = vec2<f32>(0.0, 0.0); // (lse in the log2 domain, delta)
    if is_row {
        terms = row_terms[row_index[row]] * vec2<f32>(1.0, dout_scale);
    }

    var grad_query: OutputStrip;
    zero_output_strip(&grad_query);
    var p: array<f32, HALF_KEYS>;
    for (var first = keys.x; first < keys.y; first += KEY_TILE) {
        let count = min(KEY_TILE, keys.y - first);
        stage_keys(tile.group, first, count, lid);
        tile_products(&query, strip, 0u);
        subgroupBarrier();
        // unroll
        for (var i = 0u; i < HALF_KEYS; i++) {
            p[i] = 0.0;
            if is_row {
                p[i] = exp2(visible_score(row, position, half_key(half, i), first, count) - terms.x);
            }
        }
        subgroupBarrier();
        tile_products(&grad_out, strip, V_OFFSET);
        subgroupBarrier();
        // unroll
        for (var i = 0u; i < HALF_KEYS; i++) {
            let key = half_key(half, i);
            // Rows past the tile's have p = 0 and zero dout.
            p_tile[key * P_STRIDE + row] = f16(p[i] * (s_tile[key * S_STRIDE + row] - terms.y));
        }
        subgroupBarrier();
        accumulate_products(&grad_query, strip, 0u);
        workgroupBarrier();
    }

    store_output_strips(&grad_query, tile, strip, lid);
}
