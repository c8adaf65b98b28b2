// MoBA attention on cooperative matrices (tensor cores), one pass per selection slot: the
// schedule of attention_pass.wgsl (block_tiles.wgsl) with the tile products on matrix units
// (coop_block_tile.wgsl: grid, tiles, workgroup memory).
//
// Queries stay in registers: subgroup s holds its 16-row strip of q as HEAD_COLUMNS
//       cooperative A matrices.
// Two sweeps over the block's keys: the first finds every row's max score, the second forms
//       p = exp2(s - max) once and for all, so the output, which lives in cooperative
//       matrices that cannot be scaled row by row, never needs rescaling.
// Work split: subgroup s owns row strip s: its score tiles (all KEY_COLUMNS) and its output
//       tiles (all HEAD_COLUMNS).
// Workgroup memory: coop_block_tile.wgsl's, plus the rows' max (HEAD_DIM 128: 43.5 KiB).
// Precision: the row sums add the f32 p, so the statistics (max, sum, lse) are exact to f32
//       on f16-exact inputs.

var<workgroup> row_max: array<f32, QUERY_TILE>;

// The rows a strip is made of: the queries.
fn strip_source(source: u32, row: u32, at: u32) -> vec4<f32> {
    return queries[row * HEAD_VECS + at];
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    grid: GridPosition,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) subgroup: u32,
) {
    let tile = open_block_tile(grid, lid);
    if tile.rows == 0u {
        return;
    }
    let key_end = load_tile_rows(tile, lid);
    let strip = subgroup;
    var query: RowStrip;
    load_strip(&query, tile, strip, lid, 0u);
    let key_first = tile.block * params.block_size;
    // Thread `lid` takes row `row` and the keys of its half of every staged tile.
    let row = lid % QUERY_TILE;
    let keys_first = (lid / QUERY_TILE) * HALF_KEYS;
    let is_row = row < tile.rows;

    // Sweep 1: every row's max score over the block.
    var max_score = NEG_BIG;
    for (var first = key_first; first < key_end; first += KEY_TILE) {
        let count = min(KEY_TILE, key_end - first);
        stage_keys(tile.group, first, count, lid, false);
        tile_products(&query, strip, 0u);
        if is_row {
            for (var j = keys_first; j < keys_first + HALF_KEYS; j++) {
                max_score = max(max_score, visible_score(row, j, first, count));
            }
        }
        workgroupBarrier();
    }
    max_score = max(max_score, partner_value(lid, max_score));

    // Sweep 2: p = exp2(s - max), its sum in f32, and o += f16(p) . v on the matrix units.
    var o: OutputStrip;
    for (var t = 0u; t < HEAD_COLUMNS; t++) {
        o[t] = coop_mat16x16<f32, C>();
    }
    var sum = 0.0;
    for (var first = key_first; first < key_end; first += KEY_TILE) {
        let count = min(KEY_TILE, key_end - first);
        stage_keys(tile.group, first, count, lid, true);
        tile_products(&query, strip, 0u);
        for (var j = keys_first; j < keys_first + HALF_KEYS; j++) {
            var p = 0.0;
            if is_row {
                p = exp2(visible_score(row, j, first, count) - max_score);
            }
            p_tile[j * P_STRIDE + row] = f16(p);
            sum += p;
        }
        workgroupBarrier();
        accumulate_products(&o, strip, V_OFFSET);
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
        stage_output_slice(&o, slice, strip);
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
