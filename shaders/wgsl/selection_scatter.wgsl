// Selection inversion, step 3 of 3: every row that chose a block in a slot is written into
// the list of that (slot, block), the lists holding their rows in row order.
//
// Grid: one workgroup per (group, slot), linear. Its WORKGROUP_SIZE threads walk the group's
//       rows in order, WORKGROUP_SIZE at a time: each row's block in the slot and its rank
//       among the rows of the batch that chose the same block (counted in thread order), so
//       that every list is in row order and two runs build the same lists (dk/dv sums its
//       rows in list order).
// Memory: selection [rows, TOP_K] i32; starts as written by selection_scan; cursors
//         [groups, TOP_K, num_blocks] u32, zeroed by the host, each (group, slot) touched by
//         its workgroup alone; lists [groups, group_size * q_len * TOP_K] u32 holding rows
//         within their group.

@group(0) @binding(2) var<storage, read> starts: array<vec2<u32>>;
@group(0) @binding(3) var<storage, read_write> cursors: array<u32>;
@group(0) @binding(4) var<storage, read_write> lists: array<u32>;

var<workgroup> batch_blocks: array<i32, WORKGROUP_SIZE>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(grid: GridPosition, @builtin(local_invocation_index) lid: u32) {
    let index = workgroup_index(grid);
    let group = index / TOP_K;
    let slot = index % TOP_K;
    if group >= groups() {
        return;
    }
    let rows_per_group = group_size() * params.q_len;
    let lists_per_group = TOP_K * params.num_blocks;
    for (var base = 0u; base < rows_per_group; base += WORKGROUP_SIZE) {
        let local_row = base + lid;
        var block = -1;
        if local_row < rows_per_group {
            block = chosen_block((group * rows_per_group + local_row) * TOP_K + slot);
        }
        batch_blocks[lid] = block;
        workgroupBarrier();
        // Rows of the batch before this one with the same block, and whether any follows.
        var rank = 0u;
        var last = true;
        for (var j = 0u; j < WORKGROUP_SIZE; j++) {
            if batch_blocks[j] == block {
                rank += u32(j < lid);
                last = last && j <= lid;
            }
        }
        let list = slot * params.num_blocks + u32(max(block, 0));
        let cursor = group * lists_per_group + list;
        if block >= 0 {
            let at = starts[group * (lists_per_group + 1u) + list].x + cursors[cursor] + rank;
            lists[group * rows_per_group * TOP_K + at] = local_row;
        }
        // Every cursor read before the last row of each block moves it past the batch.
        storageBarrier();
        if block >= 0 && last {
            cursors[cursor] += rank + 1u;
        }
        storageBarrier();
        workgroupBarrier();
    }
}
