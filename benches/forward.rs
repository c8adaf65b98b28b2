//! `cargo bench`: the MoBA forward against the dense kernel on the default adapter, at sizes
//! that stay small on a CPU adapter. Prints numbers with the adapter beside them; never
//! passes or fails on time. The long-context runs are `moba demo` (see BENCHMARKS.md).

use std::time::Instant;

use moba::gpu::{DenseForward, ForwardIo, GpuContext, MobaForward};
use moba::{MobaConfig, Shape, random};

fn median_ms(
    gpu: &GpuContext,
    runs: usize,
    mut encode: impl FnMut(&mut wgpu::CommandEncoder),
) -> f64 {
    let mut times: Vec<f64> = (0..=runs)
        .map(|_| {
            let mut encoder = gpu.device().create_command_encoder(&Default::default());
            encode(&mut encoder);
            let start = Instant::now();
            gpu.submit_and_wait(encoder.finish())
                .expect("the GPU runs the forward");
            start.elapsed().as_secs_f64() * 1e3
        })
        .skip(1) // warm-up
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let gpu = GpuContext::new_blocking(&Default::default()).expect("a GPU adapter");
    let scale = if gpu.is_cpu() { 1 } else { 16 };
    println!("adapter: {}", gpu.describe());
    println!("| S | H | D | block | top_k | MoBA ms | dense ms |");
    println!("|---|---|---|---|---|---|---|");
    for (seq_len, block, top_k) in [(512, 64, 3), (1024, 64, 3), (2048, 128, 3)] {
        let shape = Shape::prefill(1, 2, seq_len * scale, 64);
        let config = MobaConfig::new(block * scale, top_k);
        let q = random::normal(shape.q_elems(), 1);
        let (k, v) = (
            random::normal(shape.kv_elems(), 2),
            random::normal(shape.kv_elems(), 3),
        );
        let io = ForwardIo::new(&gpu, &q, &k, &v, shape.q_rows(), top_k);
        let moba = MobaForward::new(&gpu, &shape, &config).expect("a MoBA plan");
        let dense = DenseForward::new(&gpu, &shape, &config).expect("a dense plan");
        let moba_ms = median_ms(&gpu, 5, |e| moba.encode(e, &io.buffers()).expect("encode"));
        let dense_ms = median_ms(&gpu, 5, |e| dense.encode(e, &io.buffers()).expect("encode"));
        println!(
            "| {} | 2 | 64 | {} | {top_k} | {moba_ms:.2} | {dense_ms:.2} |",
            shape.q_len, config.block_size
        );
    }
}
