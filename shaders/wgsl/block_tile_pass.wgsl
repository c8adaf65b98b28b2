// Shared by the f32 kernels that walk a block tile (attention_pass, dq_pass): the entry,
// LANES threads per query row (row_lanes.wgsl), and where the tile's keys end, agreed by the
// whole workgroup. Each kernel defines `run_tile`, its work on the tile.

const_assert LANES * QUERY_TILE == WORKGROUP_SIZE;

var<workgroup> tile_last_position: atomic<u32>;
var<workgroup> tile_key_end: u32;

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
    run_tile(tile, row, shared_key_end(tile, row, lid), lid);
}

// The end of the keys any row of the tile can see (a causal tile stops at its last row's
// position), the same value in every thread. Call from uniform control flow.
fn shared_key_end(tile: BlockTile, row: ThreadRow, lid: u32) -> u32 {
    if lid == 0u {
        atomicStore(&tile_last_position, 0u);
    }
    workgroupBarrier();
    if row.present {
        atomicMax(&tile_last_position, row.position);
    }
    workgroupBarrier();
    if lid == 0u {
        tile_key_end = tile_key_range(tile, atomicLoad(&tile_last_position)).y;
    }
    return workgroupUniformLoad(&tile_key_end);
}
