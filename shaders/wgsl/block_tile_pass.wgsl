// Shared by the f32 kernels that walk a block tile (attention_pass, dq_pass): the entry,
// LANES threads per query row (row_lanes.wgsl), and which of the block's keys the tile walks
// (tile_key_range), agreed by the whole workgroup. Each kernel defines `run_tile`, its work
// on the tile.

const_assert LANES * QUERY_TILE == WORKGROUP_SIZE;

// The tile rows' smallest and largest positions, then the keys they walk.
var<workgroup> tile_positions: array<atomic<u32>, 2>;
var<workgroup> tile_keys: vec2<u32>;

// A thread's row of the tile: thread i takes row i / LANES where the tile has one
// (`present`), as its lane i % LANES (consecutive threads share a row).
struct ThreadRow {
    present: bool,
    flat: u32,
    position: u32,
    lane: u32,
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(grid: GridPosition, @builtin(local_invocation_index) lid: u32) {
    let tile = block_tile(workgroup_index(grid));
    if tile.rows == 0u {
        return;
    }
    var row = ThreadRow(lid / LANES < tile.rows, 0u, 0u, lid % LANES);
    if row.present {
        let at = tile_row(tile, lid / LANES);
        row.flat = at.x;
        row.position = at.y;
    }
    run_tile(tile, row, shared_key_range(tile, row, lid), lid);
}

// The keys [first, end) any row of the tile can see (tile_key_range), the same value in
// every thread. Call from uniform control flow.
fn shared_key_range(tile: BlockTile, row: ThreadRow, lid: u32) -> vec2<u32> {
    if lid == 0u {
        atomicStore(&tile_positions[0], 0xffffffffu);
        atomicStore(&tile_positions[1], 0u);
    }
    workgroupBarrier();
    if row.present {
        atomicMin(&tile_positions[0], row.position);
        atomicMax(&tile_positions[1], row.position);
    }
    workgroupBarrier();
    if lid == 0u {
        tile_keys = tile_key_range(tile, atomicLoad(&tile_positions[0]), atomicLoad(&tile_positions[1]));
    }
    return workgroupUniformLoad(&tile_keys);
}
