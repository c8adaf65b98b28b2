// Shared by the f32 kernels that stream a block's keys and values through workgroup memory,
// staged as StagedVector (staged_f32.wgsl, or staged_f16.wgsl in the f16 variant, which
// binds the f16 copies of k and v) and read back as f32.
//
// Workgroup memory: KEY_TILE keys and KEY_TILE values of HEAD_DIM staged elements each
//                   (2 * KEY_TILE * HEAD_DIM * 4 or 2 bytes, sized by the host to the adapter).

var<workgroup> key_tile: array<StagedVector, KEY_TILE * HEAD_VECS>;
var<workgroup> value_tile: array<StagedVector, KEY_TILE * HEAD_VECS>;

// Vector `at` of the staged keys (values), in f32.
fn tile_key(at: u32) -> vec4<f32> {
    return vec4<f32>(key_tile[at]);
}
fn tile_value(at: u32) -> vec4<f32> {
    return vec4<f32>(value_tile[at]);
}

// Staging rounds whose loads a thread issues together before it stores them: their round
// trips to memory overlap (H100, 32K, subgroup kernels: attention 39.9 -> 37.6 ms, dq
// 39.7 -> 37.8 ms; bench-results/h100-vulkan-coop-stage/final/).
const STAGE_BATCH: u32 = 4u;

// All threads together copy keys and values [first, first + count) of a group into the
// tiles, then wait for each other. Keys and values are [groups, kv_stride, HEAD_DIM]
// (kv_stride: kv_len, or a KV cache's capacity). Call from uniform control flow.
fn stage_key_tile(group: u32, first: u32, count: u32, lid: u32) {
    let base = (group * params.kv_stride + first) * HEAD_VECS;
    let total = count * HEAD_VECS;
    for (var start = lid; start < total; start += STAGE_BATCH * WORKGROUP_SIZE) {
        var key: array<StagedVector, STAGE_BATCH>;
        var value: array<StagedVector, STAGE_BATCH>;
        // unroll
        for (var round = 0u; round < STAGE_BATCH; round++) {
            let i = start + round * WORKGROUP_SIZE;
            if i < total {
                key[round] = keys[base + i];
                value[round] = values[base + i];
            }
        }
        // unroll
        for (var round = 0u; round < STAGE_BATCH; round++) {
            let i = start + round * WORKGROUP_SIZE;
            if i < total {
                key_tile[i] = key[round];
                value_tile[i] = value[round];
            }
        }
    }
    workgroupBarrier();
}
