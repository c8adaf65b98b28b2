// MoBA backward, step 1: the per-row terms every gradient kernel needs.
//
// Grid: one thread per query row, WORKGROUP_SIZE per workgroup, linear.
// Memory: o, dout [rows, HEAD_DIM] vec4 f32; lse [rows] f32 (natural log) -> row_terms [rows]
//         vec2 f32: x = lse in the log2 domain (so p = exp2(s - x) with s in the log2 domain),
//         y = delta = rowsum(dout * o), the shared term of the softmax Jacobian; dout_max
//         [1] u32: the largest |dout| (integer atomics: the same value in any order).

@group(0) @binding(1) var<storage, read> o: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> dout: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> lse: array<f32>;
@group(0) @binding(4) var<storage, read_write> row_terms: array<vec2<f32>>;
// The largest |dout| of the problem as f32 bits (non-negative floats order as their bits),
// zeroed by the host: what the cooperative kernels scale dout by (backward_rows.wgsl).
@group(0) @binding(5) var<storage, read_write> dout_max: array<atomic<u32>>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(grid: GridPosition, @builtin(local_invocation_index) lid: u32) {
    let row = thread_index(grid, lid);
    if row >= q_rows() {
        return;
    }
    var delta = 0.0;
    var largest = vec4<f32>(0.0);
    for (var i = 0u; i < HEAD_VECS; i++) {
        let grad = dout[row * HEAD_VECS + i];
        delta += dot(grad, o[row * HEAD_VECS + i]);
        largest = max(largest, abs(grad));
    }
    row_terms[row] = vec2<f32>(lse[row] / LN_2, delta);
    atomicMax(&dout_max[0], bitcast<u32>(max(max(largest.x, largest.y), max(largest.z, largest.w))));
}
