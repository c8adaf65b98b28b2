// MoBA decode, last step: merge every row's partials (decode_split.wgsl) into o and lse.
// DECODE_COMBINE_LANES lanes share one (row, column vector): the row's partials, counted over
// its slots and their chunks in order, go to the lanes in turn; each lane merges its own
// with an online softmax, then lane 0 merges the lanes in lane order (the same bits on every
// run).
//
// Grid: q_rows * HEAD_VECS * DECODE_COMBINE_LANES threads, WORKGROUP_SIZE per workgroup (a
//       multiple of DECODE_COMBINE_LANES), linear: a workgroup holds ITEMS (row, vector)
//       items, and the lanes of one item are ITEMS threads apart.
// Memory: selection [rows, TOP_K] i32; partial_out, partial_stats as decode_split writes
//         them; o [rows, HEAD_DIM] vec4 f32; lse [rows] f32 in the natural log.
//         Workgroup: each thread's (max, sum) and accumulator.

@group(0) @binding(1) var<storage, read> selection: array<i32>;
@group(0) @binding(2) var<storage, read> partial_out: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> partial_stats: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;

const ITEMS: u32 = WORKGROUP_SIZE / DECODE_COMBINE_LANES;

var<workgroup> lane_stats: array<vec2<f32>, WORKGROUP_SIZE>;
var<workgroup> lane_acc: array<vec4<f32>, WORKGROUP_SIZE>;

// A running (max, sum) and accumulator with one more partial merged in (log2 domain).
struct Merged {
    stats: vec2<f32>,
    acc: vec4<f32>,
}

fn merge(into: Merged, stats: vec2<f32>, acc: vec4<f32>) -> Merged {
    // A chunk the row sees no key of adds nothing.
    if stats.y == 0.0 {
        return into;
    }
    let top = max(into.stats.x, stats.x);
    let kept = exp2(into.stats.x - top);
    let added = exp2(stats.x - top);
    return Merged(vec2<f32>(top, into.stats.y * kept + stats.y * added), into.acc * kept + acc * added);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(grid: GridPosition, @builtin(local_invocation_index) lid: u32) {
    let lane = lid / ITEMS;
    let element = workgroup_index(grid) * ITEMS + lid % ITEMS;
    let live = element < q_rows() * HEAD_VECS;
    let row = element / HEAD_VECS;
    let i = element % HEAD_VECS;
    var merged = Merged(vec2<f32>(NEG_BIG, 0.0), vec4<f32>(0.0));
    if live {
        // The row's partials before this slot's first chunk.
        var before = 0u;
        for (var s = 0u; s < TOP_K; s++) {
            let block = selection[row * TOP_K + s];
            if block < 0 {
                continue;
            }
            let chunks = chunks_in_block(u32(block));
            // This lane's first chunk of the slot: the partial numbered lane mod LANES.
            let first = (lane + DECODE_COMBINE_LANES - before % DECODE_COMBINE_LANES) % DECODE_COMBINE_LANES;
            for (var c = first; c < chunks; c += DECODE_COMBINE_LANES) {
                let at = partial_index(row, s, c);
                merged = merge(merged, partial_stats[at], partial_out[at * HEAD_VECS + i]);
            }
            before += chunks;
        }
    }
    lane_stats[lid] = merged.stats;
    lane_acc[lid] = merged.acc;
    workgroupBarrier();
    if live && lane == 0u {
        for (var l = 1u; l < DECODE_COMBINE_LANES; l++) {
            merged = merge(merged, lane_stats[lid + l * ITEMS], lane_acc[lid + l * ITEMS]);
        }
        out[row * HEAD_VECS + i] = merged.acc / merged.stats.y;
        if i == 0u {
            lse[row] = log_sum_exp(merged.stats);
        }
    }
}
