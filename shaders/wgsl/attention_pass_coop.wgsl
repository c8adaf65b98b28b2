// MoBA attention on cooperative matrices (tensor cores), one pass per selection slot: the
// schedule of attention_pass.wgsl (block_tiles.wgsl) with the tile products on matrix units
// (coop_block_tile.wgsl: grid, tiles, workgroup memory).
//
// Queries stay in registers: subgroup s holds its 16-row strip of q as HEAD_COLUMNS
//       cooperative A matrices.
// One sweep over the block's keys with an online softmax whose max moves lazily: a row's
//       running max changes only when a tile's exceeds it by more than RESCALE_SLACK (so
//       p = exp2(s - max) <= 2^RESCALE_SLACK, safe in f16). Each thread reads its scores
//       once, forming p against the running max, and forms them again only in a tile that
//       moves the max (a row's first tile, then rarely). The output lives in cooperative
//       matrices, which cannot be scaled row by row: when a row's max moves after its first
//       tile, the subgroup rescales its strip's output through its own columns of s_tile
//       (rare: a row's max settles within its first tiles).
// Work split: subgroup s owns row strip s: its score tiles (all KEY_COLUMNS), its output
//       tiles (all HEAD_COLUMNS) and the strip's row-wise work (two lanes a row, lane ^ 16
//       the partner), so that between the products only the subgroup synchronizes.
// Barriers per key tile: two of the workgroup (the staged tile is complete; every subgroup
//       is done with it) and two of the subgroup (its scores are stored; its p is stored);
//       a rescale adds three of the subgroup per column slice. With the staging's loads in
//       flight together (H100, 512K: attention 3.24 -> 2.64 s, forward 3.42 -> 2.81 s;
//       the barriers alone 2.79 -> 2.64 s: bench-results/h100-vulkan-coop-stage/).
// Masks: a key tile that every row of the tile sees whole (causal: it ends before the
//       tile's first row; never under the key-window gate) forms p from the scores alone,
//       without a per-key test (H100, 512K: attention 4.44 -> 3.24 s in one call,
//       bench-results/h100-vulkan-coop-f16/full-tile/).
// Workgroup memory: coop_block_tile.wgsl's, plus each row's max (HEAD_DIM 128: 43 KiB).
// Precision: the row sums add the f32 p, so the statistics (max, sum, lse) are exact to f32
//       on f16-exact inputs.

// How far (log2 domain) a tile's max may exceed a row's running max before the max moves.
const RESCALE_SLACK: f32 = 8.0;

var<workgroup> row_max: array<f32, QUERY_TILE>;

// The rows a strip is made of: the queries.
fn strip_source(source: u32, row: u32, at: u32) -> vec4<f32> {
    return queries[row * HEAD_VECS + at];
}

// Merges element (r, d) of the tile's output into the running state:
// new = old * 2^(m_old - m) + block * 2^(m_block - m).
fn store_output(r: u32, d: u32, value: f32) {
    let at = row_index[r] * HEAD_VECS + d / 4u;
    var old = 0.0;
    var old_state = vec2<f32>(NEG_BIG, 0.0);
    if params.slot > 0u {
        old = out[at][d % 4u];
        old_state = stats[row_index[r]];
    }
    let new_max = max(old_state.x, row_max[r]);
    out[at][d % 4u] = old * exp2(old_state.x - new_max) + value * exp2(row_max[r] - new_max);
}

// o *= factor row by row, for the subgroup's strip alone, a KEY_TILE-wide column slice at a
// time through the strip's own columns of s_tile (key-major, as its scores, which its lanes
// may still be reading: hence the first barrier). Each thread scales its row's half of a
// slice. Call from control flow uniform in the subgroup.
fn rescale_output(o: ptr<function, OutputStrip>, strip: u32, row: u32, half: u32, factor: f32) {
    subgroupBarrier();
    // unroll
    for (var slice = 0u; slice < OUTPUT_SLICES; slice++) {
        // unroll
        for (var c = 0u; c < KEY_COLUMNS; c++) {
            coopStore((*o)[slice * KEY_COLUMNS + c], &s_tile[c * MATRIX * S_STRIDE + strip * MATRIX], S_STRIDE);
        }
        subgroupBarrier();
        for (var i = 0u; i < HALF_KEYS; i++) {
            s_tile[half_key(half, i) * S_STRIDE + row] *= factor;
        }
        subgroupBarrier();
        // unroll
        for (var c = 0u; c < KEY_COLUMNS; c++) {
            (*o)[slice * KEY_COLUMNS + c] = coopLoad<coop_mat16x16<f32, C>>(&s_tile[c * MATRIX * S_STRIDE + strip * MATRIX], S_STRIDE);
        }
        subgroupBarrier();
    }
}

// Writes p = exp2(score - row_max) of this thread's half of the staged keys for tile row
// `row` into p_tile: 0 where masked, for rows past the tile's, and everywhere while the row
// has no max yet (NEG_BIG: before its first visible key). Returns (the half's largest score,
// the sum of its p).
// `every_row_sees`: the tile's keys are all visible to every row (no per-key test).
fn form_probabilities(row: u32, position: u32, is_row: bool, half: u32, first: u32, count: u32, row_max: f32, every_row_sees: bool) -> vec2<f32> {
    var largest = NEG_BIG;
    var sum = 0.0;
    for (var i = 0u; i < HALF_KEYS; i++) {
        let j = half_key(half, i);
        var p = 0.0;
        if is_row {
            var score: f32;
            if every_row_sees {
                score = s_tile[j * S_STRIDE + row] * params.scale_log2;
            } else {
                score = visible_score(row, position, j, first, count);
            }
            largest = max(largest, score);
            if score != NEG_BIG && row_max != NEG_BIG {
                p = exp2(score - row_max);
            }
        }
        p_tile[j * P_STRIDE + row] = f16(p);
        sum += p;
    }
    return vec2<f32>(largest, sum);
}

// The kernel's work on one tile (coop_block_tile.wgsl's entry calls it): its rows walk the
// block's keys `keys` ([first, end)); the subgroup owns row strip `subgroup.index`.
// The branches on subgroupAny are uniform in the subgroup, as the matrix operations need
// (naga checks uniformity only within a function, so rescale_output's operations pass).
fn run_tile(tile: BlockTile, keys: vec2<u32>, lid: u32, subgroup: Strip) {
    let strip = subgroup.index;
    var query: RowStrip;
    load_strip(&query, tile, strip, lid, 0u);
    let row = strip * MATRIX + subgroup.lane % MATRIX;
    let half = subgroup.lane / MATRIX;
    let is_row = row < tile.rows;
    let position = row_position[row];

    // Keys before this one are visible to every row of the tile (a key window tests each).
    var seen_by_all = 0xffffffffu;
    if params.causal != 0u {
        seen_by_all = tile_first_position() + 1u;
    }
    if params.gate == GATE_KEY_WINDOW {
        seen_by_all = 0u;
    }

    var o: OutputStrip;
    zero_output_strip(&o);
    var running_max = NEG_BIG;
    var sum = 0.0;
    for (var first = keys.x; first < keys.y; first += KEY_TILE) {
        let count = min(KEY_TILE, keys.y - first);
        stage_keys(tile.group, first, count, lid);
        tile_products(&query, strip, 0u);
        subgroupBarrier();
        // One read of each score: p against the running max.
        let every_row_sees = count == KEY_TILE && first + KEY_TILE <= seen_by_all;
        let formed = form_probabilities(row, position, is_row, half, first, count, running_max, every_row_sees);
        var tile_sum = formed.y;
        var factor = 1.0;
        let moves = formed.x > running_max + RESCALE_SLACK;
        // A row with keys behind it holds output that a moved max must rescale.
        let rescales = moves && running_max != NEG_BIG;
        if subgroupAny(moves) {
            // Rare after a row's first tile: the moved rows form p again, whole.
            let tile_max = max(formed.x, subgroupShuffleXor(formed.x, MATRIX));
            if tile_max > running_max + RESCALE_SLACK {
                factor = exp2(running_max - tile_max);
                running_max = tile_max;
                tile_sum = form_probabilities(row, position, is_row, half, first, count, running_max, every_row_sees).y;
            }
            if subgroupAny(rescales) {
                rescale_output(&o, strip, row, half, factor);
            }
        }
        sum = sum * factor + tile_sum;
        subgroupBarrier();
        accumulate_products(&o, strip, V_OFFSET);
        workgroupBarrier();
    }
    sum += subgroupShuffleXor(sum, MATRIX);
    if half == 0u {
        row_max[row] = running_max;
    }

    store_output_strips(&o, tile, strip, lid);
    if half == 0u && is_row {
        var old_state = vec2<f32>(NEG_BIG, 0.0);
        if params.slot > 0u {
            old_state = stats[row_index[row]];
        }
        let new_max = max(old_state.x, running_max);
        stats[row_index[row]] = vec2<f32>(
            new_max,
            old_state.y * exp2(old_state.x - new_max) + sum * exp2(running_max - new_max),
        );
    }
}
