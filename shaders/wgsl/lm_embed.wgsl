// A decode step's first kernel: the residual stream of each row starts as the embedding of
// the row's byte.
//
// Grid: ceil(ROWS * D_MODEL / WORKGROUP_SIZE) workgroups, linear: one thread per element of x.
// Memory: embedding [VOCAB, D_MODEL] f32; x [ROWS, D_MODEL] f32.

@group(0) @binding(1) var<storage, read> embedding: array<f32>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if i < ROWS * D_MODEL {
        x[i] = embedding[step_token(i / D_MODEL) * D_MODEL + i % D_MODEL];
    }
}
