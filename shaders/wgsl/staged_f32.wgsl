// The vectors the f32 kernels stage in workgroup memory (key_tiles.wgsl, dkdv.wgsl): f32.
// The subgroup kernels' f16 variant takes staged_f16.wgsl instead; both do their arithmetic
// in f32 (tile_key, tile_value and dkdv's reads convert).

alias StagedVector = vec4<f32>;
