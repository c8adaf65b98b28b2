// MoBA attention, last step: normalise the running output of every row and write its lse.
//
// Grid: one thread per query row, WORKGROUP_SIZE per workgroup, linear.
// Memory: out [rows, HEAD_DIM] vec4 f32, in place; stats [rows] vec2 f32 (max, sum) in the
//         log2 domain; lse [rows] f32 in the natural log.

@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> stats: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(grid: GridPosition, @builtin(local_invocation_index) lid: u32) {
    let row = thread_index(grid, lid);
    if row >= q_rows() {
        return;
    }
    let state = stats[row];
    let inverse_sum = 1.0 / state.y;
    for (var i = 0u; i < HEAD_VECS; i++) {
        out[row * HEAD_VECS + i] *= inverse_sum;
    }
    lse[row] = log_sum_exp(state);
}
