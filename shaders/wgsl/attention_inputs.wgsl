// Queries, keys and values, shared by the attention kernels (bindings 1 to 3):
// queries [groups, group_size, q_len, HEAD_DIM], keys/values [groups, kv_len, HEAD_DIM], f32.

@group(0) @binding(1) var<storage, read> queries: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> keys: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> values: array<vec4<f32>>;
