// Where the split decode (decode_split.wgsl, decode_combine.wgsl) keeps its partial results:
// each block splits into chunks of WORKGROUP_SIZE keys, and every (row, slot, chunk) of a
// selected block has one partial output and one (max, sum) (src/gpu/schedule.rs sizes them).
//
// Rows: a group's QUERY_TILE rows (its query heads x q_len queries) are the flat rows
//       group * QUERY_TILE .. (group + 1) * QUERY_TILE, as in [groups, group_size, q_len].

// Chunks of the longest block.
fn chunks_per_block() -> u32 {
    return (params.block_size + WORKGROUP_SIZE - 1u) / WORKGROUP_SIZE;
}

// Chunks of `block` (the last block may be partial).
fn chunks_in_block(block: u32) -> u32 {
    let first = block * params.block_size;
    let end = min(first + params.block_size, params.kv_len);
    return (end - first + WORKGROUP_SIZE - 1u) / WORKGROUP_SIZE;
}

// Slots a row can fill: no more than the blocks there are.
fn slots() -> u32 {
    return min(TOP_K, params.num_blocks);
}

// Index of the partial of (flat row, slot, chunk).
fn partial_index(row: u32, slot: u32, chunk: u32) -> u32 {
    return (row * slots() + slot) * chunks_per_block() + chunk;
}
