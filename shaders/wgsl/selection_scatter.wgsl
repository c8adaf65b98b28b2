// Selection inversion, step 3 of 3: every selection entry appends its row to the list of
// its (slot, block).
//
// Grid: one thread per selection entry (rows * TOP_K), WORKGROUP_SIZE per workgroup, linear.
// Memory: selection [rows, TOP_K] i32; starts as written by selection_scan; cursors
//         [groups, TOP_K, num_blocks] atomic u32, zeroed by the host; lists
//         [groups, group_size * q_len * TOP_K] u32 holding rows within their group.
// The order inside a list depends on scheduling. Each row's attention result depends only on
// its own inputs, never on its tile mates, so the outputs are the same bits in any order.

@group(0) @binding(2) var<storage, read> starts: array<vec2<u32>>;
@group(0) @binding(3) var<storage, read_write> cursors: array<atomic<u32>>;
@group(0) @binding(4) var<storage, read_write> lists: array<u32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(grid: GridPosition, @builtin(local_invocation_index) lid: u32) {
    let entry = thread_index(grid, lid);
    let block = chosen_block(entry);
    if block < 0 {
        return;
    }
    let row = entry / TOP_K;
    let group = row_group(row);
    let rows_per_group = group_size() * params.q_len;
    let lists_per_group = TOP_K * params.num_blocks;
    let list = (entry % TOP_K) * params.num_blocks + u32(block);
    let start = starts[group * (lists_per_group + 1u) + list].x;
    let at = start + atomicAdd(&cursors[group * lists_per_group + list], 1u);
    lists[group * rows_per_group * TOP_K + at] = row % rows_per_group;
}
