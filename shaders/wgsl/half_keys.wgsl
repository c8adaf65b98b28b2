// k and v rounded to f16 once, before the cooperative passes that stage their key tiles
// (half_inputs.wgsl): each pass would otherwise read f32 and convert every tile, once per
// query tile that selected its block.
//
// Grid: one thread per vec4 of the copies, WORKGROUP_SIZE per workgroup, linear.
// Memory: keys/values [groups, kv_len, HEAD_DIM] vec4 f32 in; half_keys/half_values
//         [groups, half_kv_len(), HEAD_DIM] vec4 f16 out, zero past kv_len (so a key tile
//         read whole never leaves its group).

@group(0) @binding(1) var<storage, read> keys: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> values: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> half_keys: array<vec4<f16>>;
@group(0) @binding(4) var<storage, read_write> half_values: array<vec4<f16>>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(grid: GridPosition, @builtin(local_invocation_index) lid: u32) {
    let i = thread_index(grid, lid);
    let padded = half_kv_len();
    let row = i / HEAD_VECS; // (group, key) in the copies
    if row >= groups() * padded {
        return;
    }
    let key = row % padded;
    var k = vec4<f32>(0.0);
    var v = vec4<f32>(0.0);
    if key < params.kv_len {
        let at = ((row / padded) * params.kv_len + key) * HEAD_VECS + i % HEAD_VECS;
        k = keys[at];
        v = values[at];
    }
    half_keys[i] = vec4<f16>(k);
    half_values[i] = vec4<f16>(v);
}
