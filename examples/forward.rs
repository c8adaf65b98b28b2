//! MoBA on the default GPU adapter, checked against the exact CPU reference.
//!
//! `cargo run --release --example forward`

use moba::gpu::GpuContext;
use moba::{MobaConfig, Shape, random, reference};

fn main() -> moba::Result<()> {
    let gpu = GpuContext::new_blocking(&Default::default())?;
    println!("adapter: {}", gpu.describe());

    // 2 query heads sharing 1 kv head (GQA), 512 tokens, head dim 64.
    let shape = Shape {
        kv_heads: 1,
        ..Shape::prefill(1, 2, 512, 64)
    };
    let config = MobaConfig::new(64, 3); // blocks of 64 keys, own block + 2 best, causal
    let q = random::normal(shape.q_elems(), 1);
    let k = random::normal(shape.kv_elems(), 2);
    let v = random::normal(shape.kv_elems(), 3);

    let out = gpu.block_on(gpu.moba_forward(&q, &k, &v, &shape, &config))?;
    let exact = reference::forward(&q, &k, &v, &shape, &config)?;
    println!(
        "o: {} values, max |error| {:.2e}",
        out.o.len(),
        reference::max_abs_error(&out.o, &exact.o)
    );
    println!(
        "last query attends blocks {:?}",
        &out.selection[out.selection.len() - 3..]
    );
    Ok(())
}
