// Gate keys: the mean key of every block (the last, partial block averages the keys it has).
//
// Grid: one workgroup per (group, block), linear over groups * num_blocks.
// Threads: KEY_LANES lanes of COLUMN_THREADS threads; thread (lane, c) sums vec4 column c
//          (and every COLUMN_THREADS-th after it) over keys first + lane, first + lane +
//          KEY_LANES, ..., so that a wide workgroup splits a long block's keys instead of
//          walking them in one thread per column (4096 dependent loads per thread at block
//          4096); consecutive threads read consecutive addresses.
// Sum: the lanes' partial sums are added in lane order through workgroup memory, so the
//      means are the same bits on every run.
// Memory: keys [groups, kv_len, HEAD_DIM] f32 -> block_means [groups, num_blocks, HEAD_DIM]
//         f32, both read as vec4.

@group(0) @binding(1) var<storage, read> keys: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> block_means: array<vec4<f32>>;

const COLUMN_THREADS: u32 = min(HEAD_VECS, WORKGROUP_SIZE);
const KEY_LANES: u32 = WORKGROUP_SIZE / COLUMN_THREADS;

var<workgroup> partial: array<vec4<f32>, KEY_LANES * HEAD_VECS>;

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
    let lane = lid / COLUMN_THREADS;
    if lane < KEY_LANES {
        for (var column = lid % COLUMN_THREADS; column < HEAD_VECS; column += COLUMN_THREADS) {
            var sum = vec4<f32>(0.0);
            for (var key = first + lane; key < last; key += KEY_LANES) {
                sum += keys[(group * params.kv_len + key) * HEAD_VECS + column];
            }
            partial[lane * HEAD_VECS + column] = sum;
        }
    }
    workgroupBarrier();
    let count = f32(last - first);
    for (var column = lid; column < HEAD_VECS; column += WORKGROUP_SIZE) {
        var sum = vec4<f32>(0.0);
        for (var l = 0u; l < KEY_LANES; l++) {
            sum += partial[l * HEAD_VECS + column];
        }
        block_means[index * HEAD_VECS + column] = sum / count;
    }
}
