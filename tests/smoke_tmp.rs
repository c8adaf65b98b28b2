use moba::{MobaConfig, Shape, gpu::GpuContext, reference};
#[test]
fn smoke() {
    let gpu = GpuContext::new_blocking(&Default::default()).unwrap();
    eprintln!("{}", gpu.describe());
    let shape = Shape { batch: 2, q_heads: 4, kv_heads: 2, q_len: 100, kv_len: 113, head_dim: 16 };
    let cfg = MobaConfig::new(16, 3);
    let q = moba::random::normal(shape.q_elems(), 1);
    let k = moba::random::normal(shape.kv_elems(), 2);
    let v = moba::random::normal(shape.kv_elems(), 3);
    let out = gpu.moba_forward_blocking(&q, &k, &v, &shape, &cfg).unwrap();
    let r = reference::forward(&q, &k, &v, &shape, &cfg).unwrap();
    let err = out.o.iter().zip(&r.o).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
    let lerr = out.lse.iter().zip(&r.lse).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
    let sel_diff = out.selection.iter().zip(&r.selection).filter(|(a, b)| a != b).count();
    eprintln!("o err {err:e} lse err {lerr:e} sel diff {sel_diff}");
    let d = gpu.dense_forward_blocking(&q, &k, &v, &shape, &cfg).unwrap();
    let rd = reference::dense_forward(&q, &k, &v, &shape, cfg.scale_for(16), true).unwrap();
    let err = d.o.iter().zip(&rd.o).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
    eprintln!("dense err {err:e}");
}
