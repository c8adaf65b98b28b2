// MoBA backward, step 1: the per-row terms every gradient kernel needs.
//
// Grid: one thread per query row, WORKGROUP_SIZE per workgroup, linear.
// Memory: o, dout [rows, HEAD_DIM] vec4 f32; lse [rows] f32 (natural log) -> row_terms [rows]
//         vec2 f32: x = lse in the log2 domain (so p = exp2(s - x) with s in the log2 domain),
//         y = delta = rowsum(dout * o), the shared term of the softmax Jacobian.

@group(0) @binding(1) var<storage, read> o: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> dout: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> lse: array<f32>;
@group(0) @binding(4) var<storage, read_write> row_terms: array<vec2<f32>>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(grid: GridPosition, @builtin(local_invocation_index) lid: u32) {
    let row = thread_index(grid, lid);
    if row >= q_rows() {
        return;
    }
    var delta = 0.0;
    for (var i = 0u; i < HEAD_VECS; i++) {
        delta += dot(dout[row * HEAD_VECS + i], o[row * HEAD_VECS + i]);
    }
    row_terms[row] = vec2<f32>(lse[row] / LN_2, delta);
}
