// One workgroup per query row in the gate (gate_topk.wgsl): decodes, whose few rows (one per
// sequence and head) would each leave one thread to walk every block mean of a long cache
// while the GPU idles (H100, a 1M cache of 16 heads: 5.8 ms). The lanes split the blocks,
// then merge their best pairwise in log2(GATE_LANES) rounds: in round r, lane l (a multiple
// of 2^(r+1)) takes lane l + 2^r's best into its own.
//
// Workgroup memory: each lane's best TOP_K (score, block) pairs and how many it kept.

const GATE_LANES: u32 = WORKGROUP_SIZE;
const_assert 0u == (GATE_LANES & (GATE_LANES - 1u));

var<workgroup> lane_scores: array<f32, WORKGROUP_SIZE * TOP_K>;
var<workgroup> lane_blocks: array<u32, WORKGROUP_SIZE * TOP_K>;
var<workgroup> lane_kept: array<u32, WORKGROUP_SIZE>;

// This workgroup's row (the same in every thread).
fn gate_row(grid: GridPosition, lid: u32) -> u32 {
    return workgroup_index(grid);
}

// Lane `lane`'s best pairs into its slot of workgroup memory.
fn publish_best(
    best_score: ptr<function, array<f32, TOP_K>>,
    best_block: ptr<function, array<u32, TOP_K>>,
    kept: u32,
    lane: u32,
) {
    for (var i = 0u; i < kept; i++) {
        lane_scores[lane * TOP_K + i] = (*best_score)[i];
        lane_blocks[lane * TOP_K + i] = (*best_block)[i];
    }
    lane_kept[lane] = kept;
}

// Lane 0's best pairs become the best of every lane's; returns how many it keeps (the other
// lanes' results are not used). Call from uniform control flow.
fn merge_lanes(
    best_score: ptr<function, array<f32, TOP_K>>,
    best_block: ptr<function, array<u32, TOP_K>>,
    kept: u32,
    places: u32,
    lane: u32,
) -> u32 {
    var merged = kept;
    publish_best(best_score, best_block, merged, lane);
    for (var stride = 1u; stride < GATE_LANES; stride *= 2u) {
        workgroupBarrier();
        if lane % (2u * stride) == 0u {
            let other = lane + stride;
            for (var i = 0u; i < lane_kept[other]; i++) {
                let at = other * TOP_K + i;
                keep_best(lane_scores[at], lane_blocks[at], best_score, best_block, &merged, places);
            }
            publish_best(best_score, best_block, merged, lane);
        }
    }
    return merged;
}
