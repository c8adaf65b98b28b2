// k and v rounded to f16 once, before the cooperative passes that stage their key tiles
// (half_inputs.wgsl): each pass would otherwise read f32 and convert every tile, once per
// query tile that selected its block.
//
// Grid: one thread per vec4 of k (and of v), WORKGROUP_SIZE per workgroup, linear.
// Memory: keys/values [groups, kv_stride, HEAD_DIM] vec4 f32 in (kv_stride: kv_len, or a KV
//         cache's capacity); half_keys/half_values the same in vec4 f16.

@group(0) @binding(1) var<storage, read> keys: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> values: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> half_keys: array<vec4<f16>>;
@group(0) @binding(4) var<storage, read_write> half_values: array<vec4<f16>>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(grid: GridPosition, @builtin(local_invocation_index) lid: u32) {
    let i = thread_index(grid, lid);
    if i >= groups() * params.kv_stride * HEAD_VECS {
        return;
    }
    half_keys[i] = vec4<f16>(keys[i]);
    half_values[i] = vec4<f16>(values[i]);
}
