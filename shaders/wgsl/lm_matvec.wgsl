// One matrix-vector product of a decode step, for each of its ROWS rows:
// out = epilogue(x W + bias), x RMS-normalised first where NORM is 1 (the norm's gain is
// folded into W's rows on the host). A workgroup takes TILE_ROWS rows of the submission
// (across its sequences): it reads each weight once for them.
//
// Grid: COLUMN_GROUPS x ceil(ROWS / TILE_ROWS) workgroups, linear (column group fastest;
//       folded into x and y where longer than a dimension holds);
//       each takes COLUMNS output columns of TILE_ROWS rows.
// Threads: WORKGROUP_SIZE = COLUMNS x SLICES. Thread (slice, column) sums the rows slice,
//       slice + SLICES, ... of one output column for every row of the tile (neighbouring
//       threads read neighbouring columns of a weight row); then the first slice adds the
//       SLICES partial sums in order, row by row, so every run gives the same bits.
// Memory: input [SEQUENCES, D_IN / INPUT_HEAD_DIM, POSITIONS, INPUT_HEAD_DIM] f32:
//       head-major per sequence where it is the attention's output (ROWS = SEQUENCES x
//       POSITIONS), row-major [ROWS, D_IN] where INPUT_HEAD_DIM = D_IN; weight
//       [D_IN, ROW_STRIDE] row-major, burn's Linear layout (ROW_STRIDE = D_OUT, or
//       2 * D_OUT where a SwiGLU's two matrices sit side by side), f32, or f16 two to a
//       32-bit word where WEIGHT_HALF is 1 (element 2i in the low half); bias [ROW_STRIDE];
//       out [ROWS, D_OUT]. Workgroup: each tile row's 1 / rms, the partial sums.
// Epilogue: STORE writes out; RESIDUAL adds into it (the residual stream); SWIGLU writes
//       silu(a) * b of the column's products with the left (a) and right (b) matrices.

const STORE: u32 = 0u;
const RESIDUAL: u32 = 1u;
const SWIGLU: u32 = 2u;

const SLICES: u32 = WORKGROUP_SIZE / COLUMNS;

@group(0) @binding(0) var<storage, read> input: array<f32>;
// f32 bits, or two f16 (WEIGHT_HALF): widened by unpack2x16float, which needs no adapter
// feature (no `shader-f16`), so every adapter can keep its weights at half the bytes.
@group(0) @binding(1) var<storage, read> weight: array<u32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> inverse_rms: array<f32, TILE_ROWS>;
var<workgroup> partial: array<vec2<f32>, WORKGROUP_SIZE>;

// Element `at` of the flat weight matrix.
fn weight_at(at: u32) -> f32 {
    if WEIGHT_HALF != 0u {
        let pair = unpack2x16float(weight[at / 2u]);
        return select(pair.x, pair.y, at % 2u == 1u);
    }
    return bitcast<f32>(weight[at]);
}

// Element i of row `row` (position row % POSITIONS of sequence row / POSITIONS) of the input
// lies at row_start(row) + column_at(i): a head's columns are POSITIONS * INPUT_HEAD_DIM
// apart in the head-major input, so the column's part is the same for every row.
fn row_start(row: u32) -> u32 {
    return row / POSITIONS * POSITIONS * D_IN + row % POSITIONS * INPUT_HEAD_DIM;
}

fn column_at(i: u32) -> u32 {
    return i / INPUT_HEAD_DIM * POSITIONS * INPUT_HEAD_DIM + i % INPUT_HEAD_DIM;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // The host folds a long grid into x and y.
    let workgroup = workgroup_id.y * workgroups.x + workgroup_id.x;
    let first_row = workgroup / COLUMN_GROUPS * TILE_ROWS;
    let rows = min(TILE_ROWS, ROWS - first_row);
    if NORM != 0u {
        for (var r = 0u; r < rows; r++) {
            // The row's sum of squares over the workgroup, as a tree (the same in every
            // workgroup).
            var squares = 0.0;
            for (var i = lid; i < D_IN; i += WORKGROUP_SIZE) {
                let value = input[row_start(first_row + r) + column_at(i)];
                squares += value * value;
            }
            partial[lid] = vec2<f32>(squares, 0.0);
            workgroupBarrier();
            for (var half = WORKGROUP_SIZE / 2u; half > 0u; half /= 2u) {
                if lid < half {
                    partial[lid].x += partial[lid + half].x;
                }
                workgroupBarrier();
            }
            if lid == 0u {
                inverse_rms[r] = 1.0 / sqrt(partial[0].x / f32(D_IN) + EPSILON);
            }
        }
        workgroupBarrier();
    }

    let lane = lid % COLUMNS;
    let slice = lid / COLUMNS;
    let column = workgroup % COLUMN_GROUPS * COLUMNS + lane;
    var sums: array<vec2<f32>, TILE_ROWS>;
    var starts: array<u32, TILE_ROWS>;
    for (var r = 0u; r < TILE_ROWS; r++) {
        starts[r] = row_start(first_row + r);
    }
    if column < D_OUT {
        for (var i = slice; i < D_IN; i += SLICES) {
            let at = i * ROW_STRIDE + column;
            var w = vec2<f32>(weight_at(at), 0.0);
            if EPILOGUE == SWIGLU {
                w.y = weight_at(at + D_OUT);
            }
            let column_offset = column_at(i);
            // Over the constant TILE_ROWS: the sums stay in registers.
            for (var r = 0u; r < TILE_ROWS; r++) {
                if r < rows {
                    sums[r] += input[starts[r] + column_offset] * w;
                }
            }
        }
    }
    for (var r = 0u; r < rows; r++) {
        partial[lid] = sums[r];
        workgroupBarrier();
        if slice == 0u && column < D_OUT {
            var total = vec2<f32>(0.0);
            for (var s = 0u; s < SLICES; s++) {
                total += partial[s * COLUMNS + lane];
            }
            if NORM != 0u {
                // (x / rms) W = (x W) / rms: the row's factor once per column.
                total *= inverse_rms[r];
            }
            let at = (first_row + r) * D_OUT + column;
            let a = total.x + bias[column];
            if EPILOGUE == STORE {
                out[at] = a;
            } else if EPILOGUE == RESIDUAL {
                out[at] += a;
            } else {
                let b = total.y + bias[D_OUT + column];
                out[at] = a / (1.0 + exp(-a)) * b;
            }
        }
        workgroupBarrier();
    }
}
