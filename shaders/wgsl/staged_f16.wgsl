// The vectors the subgroup kernels' f16 variant stages in workgroup memory (key_tiles.wgsl,
// dkdv.wgsl), in place of staged_f32.wgsl: f16, half the bytes of a staged key (or row), so
// a tile holds twice as many within the same workgroup memory. The attention and dq passes
// stage them from the f16 copies of k and v (half_keys.wgsl, half_inputs.wgsl); dk/dv rounds
// q and dout as it stages them. Arithmetic stays f32.

alias StagedVector = vec4<f16>;
