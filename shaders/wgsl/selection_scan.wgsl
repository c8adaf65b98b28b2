// Selection inversion, step 2 of 3: where the list of each (slot, block) starts, counted in
// entries and in query tiles.
//
// Grid: one workgroup per group. Its WORKGROUP_SIZE threads scan the group's TOP_K * num_blocks
//       counts in chunks of WORKGROUP_SIZE (Hillis-Steele in workgroup memory, a carry between
//       chunks).
// Memory: counts [groups, TOP_K, num_blocks] u32 -> starts [groups, TOP_K * num_blocks + 1]
//         vec2<u32>: x = exclusive prefix of the counts (the list's first entry in the group's
//         list region), y = exclusive prefix of ceil(count / QUERY_TILE) (its first tile). The
//         extra last entry holds the group's totals.

@group(0) @binding(1) var<storage, read> counts: array<u32>;
@group(0) @binding(2) var<storage, read_write> starts: array<vec2<u32>>;

var<workgroup> chunk: array<vec2<u32>, WORKGROUP_SIZE>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(grid: GridPosition, @builtin(local_invocation_index) lid: u32) {
    let group = workgroup_index(grid);
    if group >= groups() {
        return;
    }
    let total = TOP_K * params.num_blocks;
    var carry = vec2<u32>(0u, 0u);
    for (var base = 0u; base < total; base += WORKGROUP_SIZE) {
        let i = base + lid;
        var value = vec2<u32>(0u, 0u);
        if i < total {
            let count = counts[group * total + i];
            value = vec2<u32>(count, (count + QUERY_TILE - 1u) / QUERY_TILE);
        }
        chunk[lid] = value;
        workgroupBarrier();
        for (var offset = 1u; offset < WORKGROUP_SIZE; offset <<= 1u) {
            var add = vec2<u32>(0u, 0u);
            if lid >= offset {
                add = chunk[lid - offset];
            }
            workgroupBarrier();
            chunk[lid] += add;
            workgroupBarrier();
        }
        if i < total {
            starts[group * (total + 1u) + i] = carry + chunk[lid] - value;
        }
        carry += chunk[WORKGROUP_SIZE - 1u];
        workgroupBarrier();
    }
    if lid == 0u {
        starts[group * (total + 1u) + total] = carry;
    }
}
