// One thread per query row in the gate (gate_topk.wgsl): prefills, whose many rows fill the
// GPU with a thread each.

const GATE_LANES: u32 = 1u;

// This thread's row (past the last row where the grid has none for it).
fn gate_row(grid: GridPosition, lid: u32) -> u32 {
    return thread_index(grid, lid);
}

// The row's one lane holds its best blocks already.
fn merge_lanes(
    best_score: ptr<function, array<f32, TOP_K>>,
    best_block: ptr<function, array<u32, TOP_K>>,
    kept: u32,
    places: u32,
    lane: u32,
) -> u32 {
    return kept;
}
