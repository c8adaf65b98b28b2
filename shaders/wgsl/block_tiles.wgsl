// The schedule of one pass over a selection slot, shared by the forward attention kernels and
// the dq kernel: which block and which rows of that block's list (for the pass's slot) a
// workgroup takes.
//
// Memory: lists and starts as written by selection_scatter / selection_scan.

@group(0) @binding(4) var<storage, read> lists: array<u32>;
@group(0) @binding(5) var<storage, read> starts: array<vec2<u32>>;

// Up to QUERY_TILE rows of one block's list; rows == 0 means the workgroup has no work.
struct BlockTile {
    group: u32,
    block: u32,
    first_entry: u32,
    rows: u32,
}

// The tile of workgroup `index`: tile_capacity workgroups per group, the w-th taking the
// w-th tile of slot `params.slot`, found by binary search over the tile starts.
fn block_tile(index: u32) -> BlockTile {
    var tile = BlockTile(index / params.tile_capacity, 0u, 0u, 0u);
    if tile.group >= groups() {
        return tile;
    }
    let slot_starts = tile.group * (TOP_K * params.num_blocks + 1u) + params.slot * params.num_blocks;
    let position = starts[slot_starts].y + index % params.tile_capacity;
    if position >= starts[slot_starts + params.num_blocks].y {
        return tile;
    }
    // The last block whose tiles start at or before `position`.
    var high = params.num_blocks - 1u;
    while tile.block < high {
        let middle = (tile.block + high + 1u) / 2u;
        if starts[slot_starts + middle].y <= position {
            tile.block = middle;
        } else {
            high = middle - 1u;
        }
    }
    let list = starts[slot_starts + tile.block];
    tile.first_entry = list.x + (position - list.y) * QUERY_TILE;
    tile.rows = min(QUERY_TILE, starts[slot_starts + tile.block + 1u].x - tile.first_entry);
    return tile;
}

// Flat query row and absolute position of row `i` (< tile.rows) of a tile.
fn tile_row(tile: BlockTile, i: u32) -> vec2<u32> {
    let rows_per_group = group_size() * params.q_len;
    let local_row = lists[tile.group * rows_per_group * TOP_K + tile.first_entry + i];
    return vec2<u32>(tile.group * rows_per_group + local_row, query_position(local_row % params.q_len));
}

// Keys [first, end) of the tile's block that any of its rows can see, given the smallest and
// largest positions among the rows: a causal tile stops at its last row's position; under the
// key-window gate it starts at the first key its first row's window holds (rounded down to a
// whole KEY_TILE from the block's start), so no key tile that every row masks is walked. It
// keeps at least the key tile of its last key (all masked where no row sees this block).
fn tile_key_range(tile: BlockTile, first_position: u32, last_position: u32) -> vec2<u32> {
    let block_first = tile.block * params.block_size;
    var first = block_first;
    var end = min(block_first + params.block_size, params.kv_len);
    if params.causal != 0u {
        end = min(end, last_position + 1u);
    }
    if params.gate == GATE_KEY_WINDOW && end > block_first
        && first_position + 1u > block_first + params.block_size {
        let window_first = min(first_position + 1u - params.block_size, end - 1u);
        first = block_first + (window_first - block_first) / KEY_TILE * KEY_TILE;
    }
    return vec2<u32>(first, end);
}
