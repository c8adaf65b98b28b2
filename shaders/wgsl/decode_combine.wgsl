// MoBA decode, last step: merge every row's partials (decode_split.wgsl) over its slots and
// their chunks, in that fixed order (the same bits on every run), into o and lse.
//
// Grid: one thread per (row, column vector): q_rows * HEAD_VECS threads, WORKGROUP_SIZE per
//       workgroup, linear. The threads of a row read the same stats.
// Memory: selection [rows, TOP_K] i32; partial_out, partial_stats as decode_split writes
//         them; o [rows, HEAD_DIM] vec4 f32; lse [rows] f32 in the natural log.

@group(0) @binding(1) var<storage, read> selection: array<i32>;
@group(0) @binding(2) var<storage, read> partial_out: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> partial_stats: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(grid: GridPosition, @builtin(local_invocation_index) lid: u32) {
    let element = thread_index(grid, lid);
    if element >= q_rows() * HEAD_VECS {
        return;
    }
    let row = element / HEAD_VECS;
    let i = element % HEAD_VECS;
    var row_max = NEG_BIG;
    for (var s = 0u; s < TOP_K; s++) {
        let block = selection[row * TOP_K + s];
        if block < 0 {
            continue;
        }
        for (var c = 0u; c < chunks_in_block(u32(block)); c++) {
            row_max = max(row_max, partial_stats[partial_index(row, s, c)].x);
        }
    }
    var sum = 0.0;
    var acc = vec4<f32>(0.0);
    for (var s = 0u; s < TOP_K; s++) {
        let block = selection[row * TOP_K + s];
        if block < 0 {
            continue;
        }
        for (var c = 0u; c < chunks_in_block(u32(block)); c++) {
            let at = partial_index(row, s, c);
            let stats = partial_stats[at];
            let factor = exp2(stats.x - row_max);
            sum += stats.y * factor;
            acc += partial_out[at * HEAD_VECS + i] * factor;
        }
    }
    out[row * HEAD_VECS + i] = acc / sum;
    if i == 0u {
        lse[row] = log_sum_exp(vec2<f32>(row_max, sum));
    }
}
