// Queries, and keys and values rounded to f16 once (half_keys.wgsl), shared by the kernels
// that stage f16 key tiles, cooperative and the subgroup kernels' f16 variant (bindings 1 to 3): queries [groups, group_size,
// q_len, HEAD_DIM] f32; keys/values [groups, kv_stride, HEAD_DIM] f16.
// Staging them is a copy: half the bytes of f32, no conversion per tile.

@group(0) @binding(1) var<storage, read> queries: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> keys: array<vec4<f16>>;
@group(0) @binding(3) var<storage, read> values: array<vec4<f16>>;
