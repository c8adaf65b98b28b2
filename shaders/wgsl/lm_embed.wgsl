// A decode step's first kernel: the residual stream of each row starts as the embedding of
// the row's byte.
//
// Grid: ceil(ROWS * D_MODEL / WORKGROUP_SIZE) workgroups, linear (folded into x and y where
//       longer than a dimension holds): one thread per element of x.
// Memory: embedding [VOCAB, D_MODEL] f32; x [ROWS, D_MODEL] f32.

@group(0) @binding(1) var<storage, read> embedding: array<f32>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = folded_thread(workgroup, workgroups, lid);
    if i < ROWS * D_MODEL {
        x[i] = embedding[step_token(i / D_MODEL) * D_MODEL + i % D_MODEL];
    }
}
