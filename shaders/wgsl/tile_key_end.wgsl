// Shared by the f32 kernels that walk a block tile (attention_pass, dq_pass): where
// the tile's keys end, agreed by the whole workgroup.

var<workgroup> tile_last_position: atomic<u32>;
var<workgroup> tile_key_end: u32;

// The end of the keys any row of the tile can see (a causal tile stops at its last row's
// position), the same value in every thread. `position` is the calling thread's row position,
// ignored unless `is_row`. Call from uniform control flow.
fn shared_key_end(tile: BlockTile, is_row: bool, position: u32, lid: u32) -> u32 {
    if lid == 0u {
        atomicStore(&tile_last_position, 0u);
    }
    workgroupBarrier();
    if is_row {
        atomicMax(&tile_last_position, position);
    }
    workgroupBarrier();
    if lid == 0u {
        tile_key_end = tile_key_range(tile, atomicLoad(&tile_last_position)).y;
    }
    return workgroupUniformLoad(&tile_key_end);
}
