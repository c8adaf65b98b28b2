// One matrix-vector product of a decode step: out = epilogue(x W + bias), x RMS-normalised
// first where NORM is 1 (the norm's gain is folded into W's rows on the host).
//
// Grid: ceil(D_OUT / COLUMNS) workgroups, linear.
// Threads: WORKGROUP_SIZE = COLUMNS x SLICES. Thread (slice, column) sums the rows slice,
//       slice + SLICES, ... of one output column (neighbouring threads read neighbouring
//       columns of a weight row); then the first slice adds the SLICES partial sums in order,
//       so every run gives the same bits.
// Memory: input [D_IN] f32; weight [D_IN, ROW_STRIDE] f32 row-major, burn's Linear layout
//       (ROW_STRIDE = D_OUT, or 2 * D_OUT where a SwiGLU's two matrices sit side by side);
//       bias [ROW_STRIDE]; out [D_OUT]. Workgroup: the (normalised) input, the partial sums.
// Epilogue: STORE writes out; RESIDUAL adds into it (the residual stream); SWIGLU writes
//       silu(a) * b of the column's products with the left (a) and right (b) matrices.

const STORE: u32 = 0u;
const RESIDUAL: u32 = 1u;
const SWIGLU: u32 = 2u;

const SLICES: u32 = WORKGROUP_SIZE / COLUMNS;

@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> staged: array<f32, D_IN>;
var<workgroup> partial: array<vec2<f32>, WORKGROUP_SIZE>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    var squares = 0.0;
    for (var i = lid; i < D_IN; i += WORKGROUP_SIZE) {
        let value = input[i];
        staged[i] = value;
        squares += value * value;
    }
    if NORM != 0u {
        // The sum of squares over the workgroup, as a tree (the same in every workgroup).
        partial[lid] = vec2<f32>(squares, 0.0);
        workgroupBarrier();
        for (var half = WORKGROUP_SIZE / 2u; half > 0u; half /= 2u) {
            if lid < half {
                partial[lid].x += partial[lid + half].x;
            }
            workgroupBarrier();
        }
        let rms = sqrt(partial[0].x / f32(D_IN) + EPSILON);
        // Each thread scales the elements it staged.
        for (var i = lid; i < D_IN; i += WORKGROUP_SIZE) {
            staged[i] = staged[i] / rms;
        }
    }
    workgroupBarrier();

    let lane = lid % COLUMNS;
    let slice = lid / COLUMNS;
    let column = workgroup.x * COLUMNS + lane;
    var sums = vec2<f32>(0.0);
    if column < D_OUT {
        for (var i = slice; i < D_IN; i += SLICES) {
            let at = i * ROW_STRIDE + column;
            sums.x += staged[i] * weight[at];
            if EPILOGUE == SWIGLU {
                sums.y += staged[i] * weight[at + D_OUT];
            }
        }
    }
    partial[lid] = sums;
    workgroupBarrier();
    if slice != 0u || column >= D_OUT {
        return;
    }
    var total = vec2<f32>(0.0);
    for (var s = 0u; s < SLICES; s++) {
        total += partial[s * COLUMNS + lane];
    }
    let a = total.x + bias[column];
    if EPILOGUE == STORE {
        out[column] = a;
    } else if EPILOGUE == RESIDUAL {
        out[column] += a;
    } else {
        let b = total.y + bias[D_OUT + column];
        out[column] = a / (1.0 + exp(-a)) * b;
    }
}
