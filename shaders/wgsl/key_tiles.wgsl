// Shared by the f32 kernels that stream a block's keys and values through workgroup memory.
//
// Workgroup memory: KEY_TILE keys and KEY_TILE values of HEAD_DIM f32 each
//                   (2 * KEY_TILE * HEAD_DIM * 4 bytes, sized by the host to the adapter).

var<workgroup> key_tile: array<vec4<f32>, KEY_TILE * HEAD_VECS>;
var<workgroup> value_tile: array<vec4<f32>, KEY_TILE * HEAD_VECS>;

// All threads together copy keys and values [first, first + count) of a group into the
// tiles, then wait for each other. Call from uniform control flow.
fn stage_key_tile(group: u32, first: u32, count: u32, lid: u32) {
    let base = (group * params.kv_len + first) * HEAD_VECS;
    for (var i = lid; i < count * HEAD_VECS; i += WORKGROUP_SIZE) {
        key_tile[i] = keys[base + i];
        value_tile[i] = values[base + i];
    }
    workgroupBarrier();
}
