// Shared by the decode-step kernels of a language model (src/gpu/lm_decode): the positions
// every kernel of one submission reads. The host prepends the kernel's `const` lines (ROWS,
// SEQUENCES and POSITIONS among them) before this file.

// [first position, then the byte of each of the ROWS rows]: a submission reads POSITIONS
// consecutive positions (one while generating, a chunk of a prompt in prefill) of each of
// SEQUENCES sequences, all at the same positions; row s * POSITIONS + p is position p of
// sequence s. Written by the host before it.
@group(0) @binding(0) var<storage, read> step: array<u32>;

// The byte that row `row` of the submission reads.
fn step_token(row: u32) -> u32 {
    return step[1u + row];
}

// The position of row `row` of the submission in its sequence.
fn step_position(row: u32) -> u32 {
    return step[0] + row % POSITIONS;
}

// Flat index of this thread in a linear grid of WORKGROUP_SIZE-thread workgroups, which the
// host folds into x and y where longer than a dimension holds (a large batch's rows).
fn folded_thread(workgroup: vec3<u32>, workgroups: vec3<u32>, lid: u32) -> u32 {
    return (workgroup.y * workgroups.x + workgroup.x) * WORKGROUP_SIZE + lid;
}
