// Selection inversion, step 1 of 3: how many query rows chose each (slot, block).
//
// Grid: one thread per selection entry (rows * TOP_K), WORKGROUP_SIZE per workgroup, linear.
// Memory: selection [rows, TOP_K] i32 -> counts [groups, TOP_K, num_blocks] atomic u32,
//         zeroed by the host before the launch. Integer atomics: the counts are exact.

@group(0) @binding(2) var<storage, read_write> counts: array<atomic<u32>>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(grid: GridPosition, @builtin(local_invocation_index) lid: u32) {
    let entry = thread_index(grid, lid);
    let block = chosen_block(entry);
    if block < 0 {
        return;
    }
    let row = entry / TOP_K;
    let slot = entry % TOP_K;
    atomicAdd(&counts[(row_group(row) * TOP_K + slot) * params.num_blocks + u32(block)], 1u);
}
