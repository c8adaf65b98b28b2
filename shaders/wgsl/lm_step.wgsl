// Shared by the decode-step kernels of a language model (src/gpu/lm_decode): the step every
// kernel of one submission sees. The host prepends the kernel's `const` lines before this file.

// (token, position, 0, 0): the byte the step reads and its position in the sequence, written
// by the host before each step's submission.
@group(0) @binding(0) var<storage, read> step: vec4<u32>;

fn step_token() -> u32 {
    return step.x;
}

fn step_position() -> u32 {
    return step.y;
}
