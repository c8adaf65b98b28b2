// One workgroup per query row in the gate (gate_topk.wgsl): decodes, whose few rows (one per
// sequence and head) would each leave one thread to walk every block mean of a long cache
// while the GPU idles (H100, a 1M cache of 16 heads: 5.8 ms). The lanes split the blocks,
// then merge their best pairwise in log2(GATE_LANES) rounds: in round r, lane l (a multiple
// of 2^(r+1)) merges lane l + 2^r's list into its own, in workgroup memory (H100, that 1M
// cache: gate 0.58 -> 0.29 ms against lane 0 merging the other lanes in turn;
// bench-results/h100-decode/split-gate/final/).
//
// Workgroup memory: each lane's best TOP_K (score, block) pairs, best first, and how many
// it kept.

const GATE_LANES: u32 = WORKGROUP_SIZE;
const_assert 0u == (GATE_LANES & (GATE_LANES - 1u));

var<workgroup> lane_scores: array<f32, WORKGROUP_SIZE * TOP_K>;
var<workgroup> lane_blocks: array<u32, WORKGROUP_SIZE * TOP_K>;
var<workgroup> lane_kept: array<u32, WORKGROUP_SIZE>;

// This workgroup's row (the same in every thread).
fn gate_row(grid: GridPosition, lid: u32) -> u32 {
    return workgroup_index(grid);
}

// Whether pair `a` outranks pair `b` (flat indices into the lanes' lists).
fn pair_outranks(a: u32, b: u32) -> bool {
    return outranks(lane_scores[a], lane_blocks[a], lane_scores[b], lane_blocks[b]);
}

// Lane `lane`'s list becomes the best `places` of its own and lane `other`'s: both best
// first, so the first pass finds how many of each are in (`from_own`, `from_other`), and the
// second writes them in place from the back, the worst first, each into a slot at or past
// the one it is read from.
fn merge_pair(lane: u32, other: u32, places: u32) {
    let own = lane * TOP_K;
    let theirs = other * TOP_K;
    let own_kept = lane_kept[lane];
    let other_kept = lane_kept[other];
    let count = min(places, own_kept + other_kept);
    var from_own = 0u;
    var from_other = 0u;
    for (var taken = 0u; taken < count; taken++) {
        let take_own = from_other == other_kept
            || (from_own < own_kept && pair_outranks(own + from_own, theirs + from_other));
        from_own += u32(take_own);
        from_other += u32(!take_own);
    }
    for (var at = count; at > 0u; at--) {
        let own_worse = from_other == 0u
            || (from_own > 0u && pair_outranks(theirs + from_other - 1u, own + from_own - 1u));
        var source: u32;
        if own_worse {
            from_own -= 1u;
            source = own + from_own;
        } else {
            from_other -= 1u;
            source = theirs + from_other;
        }
        lane_scores[own + at - 1u] = lane_scores[source];
        lane_blocks[own + at - 1u] = lane_blocks[source];
    }
    lane_kept[lane] = count;
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
    for (var i = 0u; i < kept; i++) {
        lane_scores[lane * TOP_K + i] = (*best_score)[i];
        lane_blocks[lane * TOP_K + i] = (*best_block)[i];
    }
    lane_kept[lane] = kept;
    for (var stride = 1u; stride < GATE_LANES; stride *= 2u) {
        workgroupBarrier();
        if lane % (2u * stride) == 0u {
            merge_pair(lane, lane + stride, places);
        }
    }
    workgroupBarrier();
    let merged = lane_kept[0];
    for (var i = 0u; i < merged; i++) {
        (*best_block)[i] = lane_blocks[i];
    }
    return merged;
}
