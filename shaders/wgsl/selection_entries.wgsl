// The selection as a list of entries, shared by selection_count and selection_scatter:
// one thread per entry of selection [rows, TOP_K] i32 (ascending block ids, -1 padded).

@group(0) @binding(1) var<storage, read> selection: array<i32>;

// The block chosen by selection entry `entry`, or -1 for padding and entries past the end.
fn chosen_block(entry: u32) -> i32 {
    if entry >= q_rows() * TOP_K {
        return -1;
    }
    return selection[entry];
}
