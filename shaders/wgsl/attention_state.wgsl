// The running state that carries a row of the forward attention from pass to pass.
//
// Memory: out [rows, HEAD_DIM] vec4 f32, the running unnormalised output; stats [rows] vec2
//         f32, the running (max, sum) in the log2 domain.

@group(0) @binding(6) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> stats: array<vec2<f32>>;
