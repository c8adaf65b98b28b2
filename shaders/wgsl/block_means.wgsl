// Gate keys: the mean key of every block (the last, partial block averages the keys it has).
//
// Grid: one workgroup per (group, block), linear over groups * num_blocks.
// Threads: WORKGROUP_SIZE threads stride over the HEAD_DIM columns; each sums its column over
//          the block's keys in f32, so consecutive threads read consecutive addresses.
// Memory: keys [groups, kv_len, HEAD_DIM] f32 -> block_means [groups, num_blocks, HEAD_DIM] f32.

@group(0) @binding(1) var<storage, read> keys: array<f32>;
@group(0) @binding(2) var<storage, read_write> block_means: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(grid: GridPosition, @builtin(local_invocation_index) lid: u32) {
    let index = workgroup_index(grid);
    if index >= groups() * params.num_blocks {
        return;
    }
    let group = index / params.num_blocks;
    let block = index % params.num_blocks;
    let first = block * params.block_size;
    let last = min(first + params.block_size, params.kv_len);
    let count = f32(last - first);
    for (var column = lid; column < HEAD_DIM; column += WORKGROUP_SIZE) {
        var sum = 0.0;
        for (var key = first; key < last; key++) {
            sum += keys[(group * params.kv_len + key) * HEAD_DIM + column];
        }
        block_means[index * HEAD_DIM + column] = sum / count;
    }
}
