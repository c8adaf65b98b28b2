//! Numbers the Rust side and the kernels must agree on, written once: the host code reads
//! these constants, and every kernel source receives them as generated lines at its top
//! (`const NAME: u32 = N;` in WGSL, `#define NAME N` in CUDA), so no kernel file repeats
//! one and no test has to compare copies.

/// `Params::gate` of every kernel: rank blocks by query . mean key (DESIGN §1).
pub const GATE_MEAN_KEY: u32 = 0;
/// `Params::gate`: the most recent blocks win.
pub const GATE_RECENT: u32 = 1;
/// `Params::gate`: blocks `[0, sink_blocks)` win, then the most recent.
pub const GATE_SINK_AND_RECENT: u32 = 2;
/// `Params::gate`: the most recent blocks win, and a query at `p` sees keys
/// `(p - block_size, p]` only (`MobaConfig::key_window`).
pub const GATE_KEY_WINDOW: u32 = 3;

/// Threads that merge one (row, columns) of a split decode's partials, each every
/// `DECODE_COMBINE_LANES`-th partial of the row, then in lane order: a long row's hundreds of
/// partials (12 blocks of 4,096 keys make 384 chunks) are no single thread's serial walk.
pub const DECODE_COMBINE_LANES: u32 = 16;

/// Compressed blocks whose probabilities one thread of NSA's selection kernel
/// (`nsa_select.wgsl`) holds at once: one selection block's reach, `l' / d + l / d - 1`
/// compressed blocks, must fit.
pub const NSA_SELECT_CHUNK: u32 = 64;

/// The constants every kernel language sees.
pub const EVERY_KERNEL: [(&str, u32); 6] = [
    ("GATE_MEAN_KEY", GATE_MEAN_KEY),
    ("GATE_RECENT", GATE_RECENT),
    ("GATE_SINK_AND_RECENT", GATE_SINK_AND_RECENT),
    ("GATE_KEY_WINDOW", GATE_KEY_WINDOW),
    ("DECODE_COMBINE_LANES", DECODE_COMBINE_LANES),
    ("NSA_SELECT_CHUNK", NSA_SELECT_CHUNK),
];

/// WGSL `const` lines for `constants`.
pub fn wgsl_lines(constants: &[(&str, u32)]) -> String {
    constants
        .iter()
        .map(|(name, value)| format!("const {name}: u32 = {value}u;\n"))
        .collect()
}

/// CUDA `#define` lines for `constants`.
pub fn cuda_lines(constants: &[(&str, u32)]) -> String {
    constants
        .iter()
        .map(|(name, value)| format!("#define {name} {value}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_in_both_languages() {
        let constants = [("A", 1), ("B_C", 20)];
        assert_eq!(
            wgsl_lines(&constants),
            "const A: u32 = 1u;\nconst B_C: u32 = 20u;\n"
        );
        assert_eq!(cuda_lines(&constants), "#define A 1\n#define B_C 20\n");
    }
}
