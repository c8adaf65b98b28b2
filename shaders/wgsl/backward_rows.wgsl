// The inputs of the gradient kernels beside q, k, v (bindings 6 and 7 of each):
// dout [rows, HEAD_DIM] vec4 f32; row_terms [rows] vec2 f32 as written by backward_prepare
// (lse in the log2 domain, delta).

@group(0) @binding(6) var<storage, read> dout: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> row_terms: array<vec2<f32>>;

// The power of two that brings the largest |dout| (of the whole problem, from
// backward_prepare) into [0.5, 1): the cooperative kernels multiply dout and delta by it
// before rounding to f16, where a training loss's small gradients would underflow, and
// divide their sums by it (exactly, being a power of two). 1 when dout is all zero.
fn dout_factor(max_abs: f32) -> f32 {
    if !(max_abs > 0.0) {
        return 1.0;
    }
    return ldexp(1.0, clamp(-frexp(max_abs).exp, -126, 126));
}

// dS / scale of one (row, key) pair: p * (dout . v - delta), with p from the saved lse.
// `score` is q . k in the log2 domain, `dp` is dout . v.
fn score_gradient(score: f32, dp: f32, terms: vec2<f32>) -> vec2<f32> {
    let p = exp2(score - terms.x);
    return vec2<f32>(p, p * (dp - terms.y));
}
