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
//       matrices, which cannot be scaled row by row: when some row's max moves after its
//       first tile, the whole workgroup rescales its output through s_tile (rare: a row's
//       max settles within its first tiles).
// Barriers per key tile: staging, products, one that both shares the flags (did some
//       row's max move? does the output need rescaling?) and each half's largest score, and
//       the tile's end; a tile that moves a max adds one, and a rescale its own (H100, 512K:
//       3.81 -> 3.71 s with the f16 copies, bench-results/h100-vulkan-coop-f16/).
// Masks: a key tile that every row of the tile sees whole (causal: it ends before the
//       tile's first row; never under the key-window gate) forms p from the scores alone,
//       without a per-key test (H100, 512K: attention 4.44 -> 3.24 s in one call,
//       bench-results/h100-vulkan-coop-f16/full-tile/).
// Work split: subgroup s owns row strip s: its score tiles (all KEY_COLUMNS) and its output
//       tiles (all HEAD_COLUMNS).
// Workgroup memory: coop_block_tile.wgsl's, plus per-row max, rescale factor, a partner
//       slot per thread and the tile's flags (HEAD_DIM 128: 45 KiB).
// Precision: the row sums add the f32 p, so the statistics (max, sum, lse) are exact to f32
//       on f16-exact inputs.

// How far (log2 domain) a tile's max may exceed a row's running max before the max moves.
const RESCALE_SLACK: f32 = 8.0;

var<workgroup> row_max: array<f32, QUERY_TILE>;
var<workgroup> row_factor: array<f32, QUERY_TILE>;
// One value per thread: its half's largest score of a tile, then partner_value's.
var<workgroup> partner_slots: array<f32, WORKGROUP_SIZE>;
// Per key tile: whether some row's max moved (MOVED) and whether some row with keys behind
// it moved (RESCALE: the output needs rescaling). Every thread that sets one writes 1.
// Padded to 16 bytes (see coop_block_tile.wgsl).
var<workgroup> tile_flags: array<u32, 4>;
const MOVED: u32 = 0u;
const RESCALE: u32 = 1u;

// The value of the thread that shares this thread's row (WORKGROUP_SIZE = 2 * QUERY_TILE).
// Call from uniform control flow, with a barrier between two calls.
fn partner_value(lid: u32, value: f32) -> f32 {
    partner_slots[lid] = value;
    workgroupBarrier();
    return partner_slots[(lid + QUERY_TILE) % WORKGROUP_SIZE];
}

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

// o *= row_factor, row by row, a KEY_TILE-wide column slice at a time through s_tile.
// Call from uniform control flow.
fn rescale_output(o: ptr<function, OutputStrip>, strip: u32, lid: u32) {
    // unroll
    for (var slice = 0u; slice < OUTPUT_SLICES; slice++) {
        stage_output_slice(o, slice, strip);
        for (var i = lid; i < QUERY_TILE * KEY_TILE; i += WORKGROUP_SIZE) {
            s_tile[i] *= row_factor[i / KEY_TILE];
        }
        workgroupBarrier();
        // unroll
        for (var c = 0u; c < KEY_COLUMNS; c++) {
            (*o)[slice * KEY_COLUMNS + c] = coopLoadT<coop_mat16x16<f32, C>>(&s_tile[strip * MATRIX * KEY_TILE + c * MATRIX], KEY_TILE);
        }
        workgroupBarrier();
    }
}

// Writes p = exp2(score - row_max) of this thread's half of the staged keys for tile row
// `row` into p_tile: 0 where masked, for rows past the tile's, and everywhere while the row
// has no max yet (NEG_BIG: before its first visible key). Returns (the half's largest score,
// the sum of its p).
// `every_row_sees`: the tile's keys are all visible to every row (no per-key test).
fn form_probabilities(row: u32, position: u32, is_row: bool, keys_first: u32, first: u32, count: u32, row_max: f32, every_row_sees: bool) -> vec2<f32> {
    var largest = NEG_BIG;
    var sum = 0.0;
    for (var j = keys_first; j < keys_first + HALF_KEYS; j++) {
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

// The kernel's work on one tile (coop_block_tile.wgsl's entry calls it): its rows' keys end
// at `key_end`; subgroup `strip` owns row strip `strip`.
fn run_tile(tile: BlockTile, key_end: u32, lid: u32, strip: u32) {
    var query: RowStrip;
    load_strip(&query, tile, strip, lid, 0u);
    // Thread `lid` takes row `row` and the keys of its half of every staged tile.
    let row = lid % QUERY_TILE;
    let keys_first = (lid / QUERY_TILE) * HALF_KEYS;
    let is_row = row < tile.rows;
    let position = row_position[row];
    let owns_row = lid < QUERY_TILE;

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
    for (var first = tile.block * params.block_size; first < key_end; first += KEY_TILE) {
        let count = min(KEY_TILE, key_end - first);
        if lid == 0u {
            tile_flags[MOVED] = 0u;
            tile_flags[RESCALE] = 0u;
        }
        stage_keys(tile.group, first, count, lid);
        tile_products(&query, strip, 0u);
        // One read of each score: p against the running max. A half whose largest score
        // moves the max says so before the barrier that also shares the halves' maxima.
        let every_row_sees = count == KEY_TILE && first + KEY_TILE <= seen_by_all;
        let formed = form_probabilities(row, position, is_row, keys_first, first, count, running_max, every_row_sees);
        partner_slots[lid] = formed.x;
        if formed.x > running_max + RESCALE_SLACK {
            tile_flags[MOVED] = 1u;
            if running_max != NEG_BIG {
                tile_flags[RESCALE] = 1u;
            }
        }
        let flags = workgroupUniformLoad(&tile_flags);
        var tile_sum = formed.y;
        var factor = 1.0;
        if flags[MOVED] != 0u {
            // Rare after a row's first tile: the moved rows form p again, whole.
            let tile_max = max(formed.x, partner_slots[(lid + QUERY_TILE) % WORKGROUP_SIZE]);
            if tile_max > running_max + RESCALE_SLACK {
                factor = exp2(running_max - tile_max);
                running_max = tile_max;
                tile_sum = form_probabilities(row, position, is_row, keys_first, first, count, running_max, every_row_sees).y;
            }
            if owns_row {
                row_factor[row] = factor;
            }
            workgroupBarrier();
            if flags[RESCALE] != 0u {
                rescale_output(&o, strip, lid);
            }
        }
        sum = sum * factor + tile_sum;
        accumulate_products(&o, strip, V_OFFSET);
        workgroupBarrier();
    }
    sum += partner_value(lid, sum);
    if owns_row {
        row_max[row] = running_max;
    }

    store_output_strips(&o, tile, strip, lid);
    if owns_row && is_row {
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
