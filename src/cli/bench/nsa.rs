//! `moba bench --attention nsa`: NSA's forward (and training step) at each `--seq-lens`
//! through burn's wgpu backend or the CUDA path, checked on sampled rows, written as JSON
//! lines ([`moba::bench::nsa::NsaRecord`]) and printed as a table.

use burn::tensor::DType;
use moba::backend::{attention_kernel, burn_wgpu_device};
use moba::bench::nsa::{NsaBenchOptions, NsaRecord, NsaStageTime, measure_nsa};
use moba::gpu::AdapterRequest;
use moba::reference::Precision;
use moba::{MobaError, NsaConfig, Result, Shape};

use super::{BenchArgs, CudaDtype, RecordsFile, check_failures};

pub(super) fn run(args: &BenchArgs, request: &AdapterRequest) -> Result<()> {
    if args.decode || args.burn_baseline {
        return Err(MobaError::Config(
            "--attention nsa times prefill through burn: no --decode or --burn-baseline".into(),
        ));
    }
    let n = &args.nsa;
    let config = NsaConfig::new(
        n.compress_block,
        n.stride,
        n.select_block,
        n.top_n,
        n.window,
    );
    config.validate()?;
    let mut out = RecordsFile::open(&args.out)?;
    let mut records = Vec::new();
    for (index, &seq_len) in args.seq_lens.iter().enumerate() {
        let shape = Shape {
            batch: args.batch,
            q_heads: args.heads,
            kv_heads: args.kv_heads.unwrap_or(args.heads),
            q_len: seq_len,
            kv_len: seq_len,
            head_dim: args.head_dim,
        };
        shape.validate()?;
        let step = format!("[{}/{}] S={seq_len}", index + 1, args.seq_lens.len());
        let progress = |what: &str| eprint!("\r{step}: {what:50}");
        let record = match args.cuda {
            true => measure_cuda(args, &shape, &config, progress)?,
            false => {
                let (device, adapter) = burn_wgpu_device(request)?;
                let kernel = attention_kernel(&device, shape.head_dim, DType::F32);
                let described = format!(
                    "{} ({:?}, {})",
                    adapter.name, adapter.backend, adapter.driver_info
                );
                let backend = format!("wgpu {kernel:?}");
                let options = options(args, kernel.precision());
                let measured = measure_nsa::<burn::backend::Wgpu>(
                    &device, &shape, &config, &options, progress,
                )?;
                NsaRecord::new(described, backend, &shape, &config, &measured)
            }
        };
        out.append(&record)?;
        records.push(record);
    }
    out.report();
    print!("{}", table(&records));
    let failed: Vec<String> = records
        .iter()
        .filter(|r| !r.passed)
        .map(|r| {
            format!(
                "NSA S={}: o error {:.2e} (bound {:.2e}), {} wrong selections",
                r.seq_len, r.o_error, r.o_bound, r.wrong_selections
            )
        })
        .collect();
    check_failures(&failed, records.len())
}

fn options(args: &BenchArgs, precision: Precision) -> NsaBenchOptions {
    NsaBenchOptions {
        runs: args.runs,
        backward: args.backward,
        check_rows: 16,
        precision,
    }
}

/// `stage ms, ...`, or `-` for none.
fn list(stages: &[NsaStageTime]) -> String {
    match stages {
        [] => "-".into(),
        _ => (stages.iter())
            .map(|s| format!("{} {:.2}", s.stage, s.ms))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The records as a markdown table.
fn table(records: &[NsaRecord]) -> String {
    let mut text = String::from(
        "| backend | S | heads (kv) | D | l, d, l', top-n, w | forward ms | its stages alone, ms | step ms | its branches alone (fwd+bwd), ms | o error (bound) |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in records {
        let step = r.step_ms.map_or("-".into(), |ms| format!("{ms:.2}"));
        let (stages, step_stages) = (list(&r.stages), list(&r.step_stages));
        text.push_str(&format!(
            "| {} | {} | {} ({}) | {} | {}, {}, {}, {}, {} | {:.2} | {stages} | {step} | {step_stages} | {:.1e} ({:.1e}) |\n",
            r.backend,
            r.seq_len,
            r.q_heads,
            r.kv_heads,
            r.head_dim,
            r.compress_block,
            r.stride,
            r.select_block,
            r.top_n,
            r.window,
            r.forward_ms,
            r.o_error,
            r.o_bound
        ));
    }
    text
}

/// One measurement on the CUDA path's burn backend in `--dtype` (an error in a build
/// without the `cuda` feature).
fn measure_cuda(
    args: &BenchArgs,
    shape: &Shape,
    config: &NsaConfig,
    progress: impl FnMut(&str),
) -> Result<NsaRecord> {
    #[cfg(feature = "cuda")]
    {
        use burn::backend::Cuda;
        use burn::tensor::{bf16, f16};
        let device = Default::default();
        let described = moba::cuda::CudaRuntime::get(0)?.describe().to_string();
        let (backend, precision) = match args.dtype {
            CudaDtype::F32 => ("cuda f32", Precision::Bf16),
            CudaDtype::F16 => ("cuda f16", Precision::F16),
            CudaDtype::Bf16 => ("cuda bf16", Precision::Bf16),
        };
        let options = options(args, precision);
        let measured = match args.dtype {
            CudaDtype::F32 => measure_nsa::<Cuda<f32>>(&device, shape, config, &options, progress),
            CudaDtype::F16 => measure_nsa::<Cuda<f16>>(&device, shape, config, &options, progress),
            CudaDtype::Bf16 => {
                measure_nsa::<Cuda<bf16>>(&device, shape, config, &options, progress)
            }
        }?;
        Ok(NsaRecord::new(
            described,
            backend.into(),
            shape,
            config,
            &measured,
        ))
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (args, shape, config, progress, CudaDtype::F32);
        Err(moba::cuda::not_built())
    }
}
