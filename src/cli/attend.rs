//! `moba attend`: attention of `.npy` inputs, written as `.npy` outputs (numpy interop).

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use moba::gpu::{AdapterRequest, GpuContext};
use moba::{MobaConfig, MobaError, Result, Shape, npy, reference};

#[derive(Args, Debug)]
pub struct AttendArgs {
    /// Queries, f32 [B, Hq, S, D].
    #[arg(long)]
    q: PathBuf,
    /// Keys, f32 [B, Hkv, Sk, D].
    #[arg(long)]
    k: PathBuf,
    /// Values, f32 [B, Hkv, Sk, D].
    #[arg(long)]
    v: PathBuf,
    #[arg(long)]
    block_size: usize,
    #[arg(long)]
    top_k: usize,
    /// Softmax scale (default 1/sqrt(D)).
    #[arg(long)]
    scale: Option<f32>,
    /// Every block eligible, no causal mask.
    #[arg(long)]
    non_causal: bool,
    #[arg(long, value_enum, default_value_t = Backend::Wgpu)]
    backend: Backend,
    /// Output gradient f32 [B, Hq, S, D]: also writes dq.npy, dk.npy, dv.npy.
    #[arg(long)]
    dout: Option<PathBuf>,
    /// Folder for o.npy, lse.npy, selection.npy (created if missing).
    #[arg(long)]
    out_dir: PathBuf,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
enum Backend {
    /// The exact CPU reference (f64 accumulation).
    Reference,
    /// The WGSL kernels on the chosen adapter.
    Wgpu,
}

pub fn run(args: &AttendArgs, request: &AdapterRequest) -> Result<()> {
    let q = npy::read::<f32>(&args.q)?;
    let k = npy::read::<f32>(&args.k)?;
    let v = npy::read::<f32>(&args.v)?;
    let shape = Shape::from_dims(&q.shape, &k.shape)?;
    if v.shape != k.shape {
        return Err(MobaError::Config(format!(
            "v has shape {:?} but k has {:?}",
            v.shape, k.shape
        )));
    }
    let config = MobaConfig {
        scale: args.scale,
        causal: !args.non_causal,
        ..MobaConfig::new(args.block_size, args.top_k)
    };
    config.validate()?;
    let dout = args
        .dout
        .as_ref()
        .map(|path| npy::read::<f32>(path))
        .transpose()?;
    if let Some(dout) = &dout {
        if dout.shape != q.shape {
            return Err(MobaError::Config(format!(
                "dout has shape {:?} but q has {:?}",
                dout.shape, q.shape
            )));
        }
        if args.backend != Backend::Reference {
            return Err(MobaError::Unsupported(
                "--dout with --backend wgpu: the WGSL backward kernels are not built yet (use --backend reference)".into(),
            ));
        }
    }
    std::fs::create_dir_all(&args.out_dir).map_err(|e| MobaError::io(&args.out_dir, e))?;

    let (o, lse, selection) = match args.backend {
        Backend::Reference => {
            let out = reference::forward(&q.data, &k.data, &v.data, &shape, &config)?;
            (to_f32(&out.o), to_f32(&out.lse), out.selection)
        }
        Backend::Wgpu => {
            let gpu = GpuContext::new_blocking(request)?;
            eprintln!("adapter: {}", gpu.describe());
            let out = gpu.moba_forward_blocking(&q.data, &k.data, &v.data, &shape, &config)?;
            (out.o, out.lse, out.selection)
        }
    };
    let rows = [shape.batch, shape.q_heads, shape.q_len];
    let dir = &args.out_dir;
    npy::write(&dir.join("o.npy"), &q.shape, &o)?;
    npy::write(&dir.join("lse.npy"), &rows, &lse)?;
    npy::write(
        &dir.join("selection.npy"),
        &[rows[0], rows[1], rows[2], config.top_k],
        &selection,
    )?;
    if let Some(dout) = dout {
        let grads = reference::backward(&q.data, &k.data, &v.data, &dout.data, &shape, &config)?;
        npy::write(&dir.join("dq.npy"), &q.shape, &to_f32(&grads.dq))?;
        npy::write(&dir.join("dk.npy"), &k.shape, &to_f32(&grads.dk))?;
        npy::write(&dir.join("dv.npy"), &k.shape, &to_f32(&grads.dv))?;
    }
    eprintln!(
        "wrote {} (o, lse, selection{})",
        dir.display(),
        if args.dout.is_some() {
            ", dq, dk, dv"
        } else {
            ""
        }
    );
    Ok(())
}

fn to_f32(data: &[f64]) -> Vec<f32> {
    data.iter().map(|&x| x as f32).collect()
}
