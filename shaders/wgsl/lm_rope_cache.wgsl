// A submission's new positions into one layer's KV cache, for each of SEQUENCES sequences
// (POSITIONS positions each, row s * POSITIONS + p): the query and key heads of each row
// rotated by RoPE at the row's position (where ROPE is 1), the key and value written into
// the sequence's cache, and the running sum and mean of each key's block updated: the
// gate's block means, pooled in key order as they arrive (the sums block_means.wgsl makes
// from scratch), never re-pooled.
//
// Grid: ceil(SEQUENCES * THREADS / WORKGROUP_SIZE) workgroups, linear (folded into x and y
//       where longer than a dimension holds). THREADS = (Q_HEADS +
//       KV_HEADS) * HALF + KV_HEADS * HEAD_DIM (HALF = HEAD_DIM / 2) per sequence: one
//       rotated pair of a query head, one rotated pair of a key head (with its two columns
//       of the block sums), or one element of a value, each for the sequence's positions in
//       order (so one thread adds a column's keys to the sums, in key order).
// Memory: qkv [ROWS, Q_HEADS * HEAD_DIM queries | KV_HEADS * HEAD_DIM keys | as many
//       values] f32; rope [positions, HALF] vec2 f32 (cos, sin) of angle i at each position
//       (burn's RotaryEncoding table, whose columns 2i and 2i + 1 both hold angle i, once);
//       queries [SEQUENCES, Q_HEADS, POSITIONS, HEAD_DIM] (the attention's layout);
//       keys, values [SEQUENCES, KV_HEADS, CAPACITY, HEAD_DIM]; key_sums, means
//       [SEQUENCES, KV_HEADS, MEAN_BLOCKS, HEAD_DIM] (blocks of BLOCK_SIZE keys).

@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> rope: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> queries: array<f32>;
@group(0) @binding(4) var<storage, read_write> keys: array<f32>;
@group(0) @binding(5) var<storage, read_write> values: array<f32>;
@group(0) @binding(6) var<storage, read_write> key_sums: array<f32>;
@group(0) @binding(7) var<storage, read_write> means: array<f32>;

const HALF: u32 = HEAD_DIM / 2u;
const QUERY_PAIRS: u32 = Q_HEADS * HALF;
const KEY_PAIRS: u32 = KV_HEADS * HALF;
const THREADS: u32 = QUERY_PAIRS + KEY_PAIRS + KV_HEADS * HEAD_DIM;
// One row of qkv.
const QKV_WIDTH: u32 = (Q_HEADS + 2u * KV_HEADS) * HEAD_DIM;

// The pair (a, b) at columns 2i, 2i + 1 rotated by angle i at `position`, as burn's
// RotaryEncoding::apply computes it: (a cos - b sin, b cos + a sin).
fn rotated(a: f32, b: f32, pair: u32, position: u32) -> vec2<f32> {
    if ROPE == 0u {
        return vec2<f32>(a, b);
    }
    let angle = rope[position * HALF + pair];
    return vec2<f32>(a * angle.x - b * angle.y, b * angle.x + a * angle.y);
}

// Adds the key element `k` at `position` of column `column` of cached head `cached` (a kv
// head of a sequence) to its block's sum and mean.
fn pool_key(cached: u32, column: u32, k: f32, position: u32) {
    let block = position / BLOCK_SIZE;
    let at = (cached * MEAN_BLOCKS + block) * HEAD_DIM + column;
    let first = position % BLOCK_SIZE == 0u;
    let sum = select(key_sums[at], 0.0, first) + k;
    key_sums[at] = sum;
    means[at] = sum / f32(position % BLOCK_SIZE + 1u);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let thread = folded_thread(workgroup, workgroups, lid);
    let sequence = thread / THREADS;
    let t = thread % THREADS;
    if sequence >= SEQUENCES {
        return;
    }
    for (var p = 0u; p < POSITIONS; p++) {
        let r = sequence * POSITIONS + p;
        let position = step_position(r);
        let row = r * QKV_WIDTH;
        if t < QUERY_PAIRS {
            let head = t / HALF;
            let pair = t % HALF;
            let at = head * HEAD_DIM + 2u * pair;
            let q = rotated(qkv[row + at], qkv[row + at + 1u], pair, position);
            let to = ((sequence * Q_HEADS + head) * POSITIONS + p) * HEAD_DIM + 2u * pair;
            queries[to] = q.x;
            queries[to + 1u] = q.y;
        } else if t < QUERY_PAIRS + KEY_PAIRS {
            let head = (t - QUERY_PAIRS) / HALF;
            let pair = (t - QUERY_PAIRS) % HALF;
            let column = 2u * pair;
            let at = row + Q_HEADS * HEAD_DIM + head * HEAD_DIM + column;
            let k = rotated(qkv[at], qkv[at + 1u], pair, position);
            let cached = sequence * KV_HEADS + head;
            let to = (cached * CAPACITY + position) * HEAD_DIM + column;
            keys[to] = k.x;
            keys[to + 1u] = k.y;
            pool_key(cached, column, k.x, position);
            pool_key(cached, column + 1u, k.y, position);
        } else {
            let element = t - QUERY_PAIRS - KEY_PAIRS;
            let cached = sequence * KV_HEADS + element / HEAD_DIM;
            let column = element % HEAD_DIM;
            let at = row + (Q_HEADS + KV_HEADS) * HEAD_DIM + element;
            values[(cached * CAPACITY + position) * HEAD_DIM + column] = qkv[at];
        }
    }
}
