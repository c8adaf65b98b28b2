//! `moba attend`: attention of `.npy` inputs, written as `.npy` outputs (numpy interop).

use std::path::PathBuf;

use burn::backend::Autodiff;
use burn::tensor::{Element, Tensor, TensorData};
use clap::{Args, ValueEnum};
use moba::backend::{MobaBackend, burn_wgpu_device, moba_attention_with_stats};
use moba::gpu::{AdapterRequest, GpuContext};
use moba::{MobaConfig, MobaError, Result, Shape, files, npy, reference};

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
    /// Element type the backend computes in (bf16 and f16: the cuda backend only). Inputs
    /// and outputs stay f32 `.npy`.
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    dtype: Dtype,
    /// Output gradient f32 [B, Hq, S, D]: also writes dq.npy, dk.npy, dv.npy.
    #[arg(long)]
    dout: Option<PathBuf>,
    /// Folder for o.npy, lse.npy, selection.npy (created if missing).
    #[arg(long)]
    out_dir: PathBuf,
}

/// What `--dout` adds to the outputs.
const GRADIENT_FILES: [&str; 3] = ["dq.npy", "dk.npy", "dv.npy"];

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
enum Backend {
    /// The exact CPU reference (f64 accumulation).
    Reference,
    /// The WGSL kernels on the chosen adapter.
    Wgpu,
    /// The same kernels through burn's wgpu backend (template kernels, Fusion, Autodiff).
    BurnWgpu,
    /// burn's ndarray backend (CPU): MoBA composed of burn tensor ops.
    BurnNdarray,
    /// burn-cuda with the CUDA kernels (tensor cores; needs `--features cuda` and an
    /// NVIDIA GPU of compute capability 8.0+).
    Cuda,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
enum Dtype {
    F32,
    F16,
    Bf16,
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
    if let Some(dout) = &dout
        && dout.shape != q.shape
    {
        return Err(MobaError::Config(format!(
            "dout has shape {:?} but q has {:?}",
            dout.shape, q.shape
        )));
    }
    // One check of the values for every backend (burn's ops take NaN silently).
    shape.check_inputs(&q.data, &k.data, &v.data)?;
    if let Some(dout) = &dout {
        shape.check_dout(&dout.data)?;
    }
    std::fs::create_dir_all(&args.out_dir).map_err(|e| MobaError::io(&args.out_dir, e))?;

    if args.dtype != Dtype::F32 && args.backend != Backend::Cuda {
        return Err(MobaError::Config(format!(
            "--dtype {:?} needs --backend cuda; the {:?} backend computes in f32",
            args.dtype, args.backend
        )));
    }
    let problem = Problem {
        q: &q.data,
        k: &k.data,
        v: &v.data,
        dout: dout.as_ref().map(|d| &d.data[..]),
        shape: &shape,
        config: &config,
    };
    let out = compute(args.backend, args.dtype, request, &problem)?;
    let rows = [shape.batch, shape.q_heads, shape.q_len];
    let dir = &args.out_dir;
    let mut files = vec![
        ("o.npy", npy::encode(&q.shape, &out.o)),
        ("lse.npy", npy::encode(&rows, &out.lse)),
        (
            "selection.npy",
            npy::encode(&[rows[0], rows[1], rows[2], config.top_k], &out.selection),
        ),
    ];
    if let Some([dq, dk, dv]) = &out.grads {
        files.push(("dq.npy", npy::encode(&q.shape, dq)));
        files.push(("dk.npy", npy::encode(&k.shape, dk)));
        files.push(("dv.npy", npy::encode(&k.shape, dv)));
    }
    // All or nothing: a failed write (a full disk) leaves the folder as it was, and no
    // gradient of an earlier run with --dout survives beside this run's outputs.
    let writes: Vec<(PathBuf, &[u8])> = files
        .iter()
        .map(|(name, bytes)| (dir.join(name), &bytes[..]))
        .collect();
    files::write_all_atomically(&writes)?;
    for stale in GRADIENT_FILES {
        let path = dir.join(stale);
        if !files.iter().any(|(name, _)| *name == stale) && path.exists() {
            std::fs::remove_file(&path).map_err(|e| MobaError::io(&path, e))?;
        }
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

/// What one backend computed: the forward and, given `dout`, `[dq, dk, dv]`.
struct Outputs {
    o: Vec<f32>,
    lse: Vec<f32>,
    selection: Vec<i32>,
    grads: Option<[Vec<f32>; 3]>,
}

/// The inputs of one `attend`: q, k, v, and dout where gradients are asked for.
struct Problem<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    dout: Option<&'a [f32]>,
    shape: &'a Shape,
    config: &'a MobaConfig,
}

fn compute(
    backend: Backend,
    dtype: Dtype,
    request: &AdapterRequest,
    p: &Problem,
) -> Result<Outputs> {
    let Problem {
        q,
        k,
        v,
        dout,
        shape,
        config,
    } = *p;
    match backend {
        Backend::Reference => {
            let out = reference::forward(q, k, v, shape, config)?;
            let grads = dout
                .map(|dout| reference::backward(q, k, v, dout, shape, config))
                .transpose()?
                .map(|g| [to_f32(&g.dq), to_f32(&g.dk), to_f32(&g.dv)]);
            Ok(Outputs {
                o: to_f32(&out.o),
                lse: to_f32(&out.lse),
                selection: out.selection,
                grads,
            })
        }
        Backend::Wgpu => {
            let gpu = GpuContext::new_blocking(request)?;
            eprintln!("adapter: {}", gpu.describe());
            let out = gpu.block_on(gpu.moba_forward(q, k, v, shape, config))?;
            let grads = dout
                .map(|dout| gpu.block_on(gpu.moba_backward(q, k, v, dout, shape, config)))
                .transpose()?
                .map(|g| [g.dq, g.dk, g.dv]);
            Ok(Outputs {
                o: out.o,
                lse: out.lse,
                selection: out.selection,
                grads,
            })
        }
        Backend::BurnWgpu => {
            let (device, adapter) = burn_wgpu_device(request)?;
            eprintln!("adapter: {} ({:?})", adapter.name, adapter.backend);
            compute_burn::<burn::backend::Wgpu>(&device, p)
        }
        Backend::BurnNdarray => compute_burn::<burn::backend::NdArray>(&Default::default(), p),
        Backend::Cuda => compute_cuda(dtype, p),
    }
}

/// The CUDA backend in the chosen element type, after a clear check for a driver and GPU.
#[cfg(feature = "cuda")]
fn compute_cuda(dtype: Dtype, p: &Problem) -> Result<Outputs> {
    use burn::backend::Cuda;
    use burn::tensor::{bf16, f16};
    eprintln!("device: {}", moba::cuda::CudaRuntime::get(0)?.describe());
    match dtype {
        Dtype::F32 => compute_burn::<Cuda<f32>>(&Default::default(), p),
        Dtype::F16 => compute_burn::<Cuda<f16>>(&Default::default(), p),
        Dtype::Bf16 => compute_burn::<Cuda<bf16>>(&Default::default(), p),
    }
}

#[cfg(not(feature = "cuda"))]
fn compute_cuda(_dtype: Dtype, _p: &Problem) -> Result<Outputs> {
    Err(moba::cuda::not_built())
}

/// Forward (and gradients through `Autodiff<B>`) on a burn backend.
fn compute_burn<B: MobaBackend>(device: &B::Device, p: &Problem) -> Result<Outputs> {
    let Problem {
        q,
        k,
        v,
        dout,
        shape,
        config,
    } = *p;
    let (q_dims, kv_dims) = (shape.q_dims(), shape.kv_dims());
    let tensor = |data: &[f32], dims: [usize; 4]| {
        // The backend's own float type, not the device's default dtype.
        let dtype = <B::FloatElem as Element>::dtype();
        let data = TensorData::new(data.to_vec(), dims).convert_dtype(dtype);
        Tensor::<Autodiff<B>, 4>::from_data(data, (device, dtype)).require_grad()
    };
    let (qt, kt, vt) = (tensor(q, q_dims), tensor(k, kv_dims), tensor(v, kv_dims));
    let out = moba_attention_with_stats(qt.clone(), kt.clone(), vt.clone(), config)?;
    let floats =
        |data: TensorData| -> Vec<f32> { data.convert::<f32>().to_vec().expect("f32 data") };
    let grads = dout.map(|dout| {
        let gradients = (out.o.clone() * tensor(dout, q_dims)).sum().backward();
        [&qt, &kt, &vt].map(|t| floats(t.grad(&gradients).expect("a gradient").into_data()))
    });
    Ok(Outputs {
        o: floats(out.o.into_data()),
        lse: floats(out.lse.into_data()),
        selection: out
            .selection
            .into_data()
            .convert::<i32>()
            .to_vec()
            .expect("i32 data"),
        grads,
    })
}

fn to_f32(data: &[f64]) -> Vec<f32> {
    data.iter().map(|&x| x as f32).collect()
}
