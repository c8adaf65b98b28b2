//! `moba attend`: MoBA or NSA attention of `.npy` inputs, written as `.npy` outputs (numpy
//! interop). NSA's flags, gates and computation are in [`nsa`].

use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use burn::tensor::{Element, Tensor, TensorData};
use clap::{Args, ValueEnum};
use moba::backend::{
    MobaBackend, burn_wgpu_device, moba_attention_varlen, moba_attention_with_stats,
};
use moba::gpu::{AdapterRequest, GpuContext};
use moba::{MobaConfig, MobaError, NsaConfig, Result, Shape, files, npy, reference};

mod nsa;

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
    /// Which sparse attention: MoBA, or NSA (always causal; every backend but wgpu, which
    /// has no NSA kernels yet). Each takes its own flags, listed under its heading below.
    #[arg(long, value_enum, default_value_t = Attention::Moba)]
    attention: Attention,
    /// Softmax scale (default 1/sqrt(D)).
    #[arg(long)]
    scale: Option<f32>,
    #[arg(long, value_enum, default_value_t = Backend::Wgpu)]
    backend: Backend,
    /// Element type the backend computes in (bf16 and f16: the cuda backend only). Inputs
    /// and outputs stay f32 `.npy`.
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    dtype: Dtype,
    /// Output gradient f32 [B, Hq, S, D]: also writes dq.npy, dk.npy, dv.npy (and, for NSA,
    /// dgates.npy).
    #[arg(long)]
    dout: Option<PathBuf>,
    /// Folder for o.npy, lse.npy (MoBA), selection.npy (created if missing).
    #[arg(long)]
    out_dir: PathBuf,
    #[command(flatten)]
    moba: MobaArgs,
    #[command(flatten)]
    nsa: nsa::NsaArgs,
}

/// MoBA's flags: `--block-size` and `--top-k` are required with `--attention moba`, and all
/// three are refused with `--attention nsa`.
#[derive(Args, Debug)]
#[command(next_help_heading = "MoBA (--attention moba)")]
struct MobaArgs {
    /// Keys per block (required).
    #[arg(long)]
    block_size: Option<usize>,
    /// Blocks each query attends, its own block included (required).
    #[arg(long)]
    top_k: Option<usize>,
    /// Every block eligible, no causal mask.
    #[arg(long)]
    non_causal: bool,
    /// Sequences packed into batch 1 (varlen, as flash-attn's cu_seqlens): sequence i is
    /// tokens c_i..c_(i+1) of `0,c_1,...,S`, each attended causally on its own. The
    /// selection's block ids count from each sequence's first block.
    #[arg(long, value_delimiter = ',', value_name = "OFFSETS")]
    cu_seqlens: Option<Vec<usize>>,
}

impl MobaArgs {
    /// Every MoBA flag with whether it was given, the required ones first.
    fn flags(&self) -> [(&'static str, bool); 4] {
        [
            ("--block-size", self.block_size.is_some()),
            ("--top-k", self.top_k.is_some()),
            ("--non-causal", self.non_causal),
            ("--cu-seqlens", self.cu_seqlens.is_some()),
        ]
    }

    /// The MoBA flags given on the command line.
    fn given(&self) -> Vec<&'static str> {
        self.flags()
            .into_iter()
            .filter_map(|(flag, given)| given.then_some(flag))
            .collect()
    }

    /// The checked config; names every required flag that is missing.
    fn config(&self, scale: Option<f32>) -> Result<MobaConfig> {
        let (Some(block_size), Some(top_k)) = (self.block_size, self.top_k) else {
            return Err(missing_flags(Attention::Moba, &self.flags()[..2]));
        };
        let config = MobaConfig {
            scale,
            causal: !self.non_causal,
            ..MobaConfig::new(block_size, top_k)
        };
        config.validate()?;
        Ok(config)
    }
}

/// What `--dout` adds to the outputs (`dgates.npy`: NSA only), and MoBA's `lse.npy`: the
/// files that only some runs write. A run removes those it does not write, so that no file
/// of an earlier run (its gradients, or the other attention's outputs) survives beside this
/// run's outputs.
const OPTIONAL_FILES: [&str; 5] = ["lse.npy", "dq.npy", "dk.npy", "dv.npy", "dgates.npy"];

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
enum Attention {
    /// Mixture of Block Attention: top-k blocks by the mean key, per query head.
    Moba,
    /// Native Sparse Attention (arXiv 2502.11089, mean-pooled compression): compressed,
    /// group-shared selected and window branches mixed by per-head gates.
    Nsa,
}

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

/// The checked flags of one attention.
enum Method<'a> {
    Moba(MobaConfig),
    Nsa(NsaConfig, &'a Path),
}

impl Method<'_> {
    /// Checks the flags: each attention's own are required, the other's are refused, and
    /// the backend and dtype must compute it.
    fn from_args(args: &AttendArgs) -> Result<Method<'_>> {
        let method = match args.attention {
            Attention::Moba => {
                refuse_flags(&args.nsa.given(), Attention::Nsa, Attention::Moba)?;
                Method::Moba(args.moba.config(args.scale)?)
            }
            Attention::Nsa => {
                refuse_flags(&args.moba.given(), Attention::Moba, Attention::Nsa)?;
                if args.backend == Backend::Wgpu {
                    return Err(MobaError::Config(
                        "NSA runs through burn: use --backend burn-wgpu (the same WGSL \
                         kernels on the same adapter), burn-ndarray, cuda or reference"
                            .into(),
                    ));
                }
                let (config, gates) = args.nsa.config(args.scale)?;
                Method::Nsa(config, gates)
            }
        };
        if args.dtype != Dtype::F32 && args.backend != Backend::Cuda {
            return Err(MobaError::Config(format!(
                "--dtype {:?} needs --backend cuda; the {:?} backend computes in f32",
                args.dtype, args.backend
            )));
        }
        Ok(method)
    }

    /// The dims of `selection.npy`: MoBA selects per query head, NSA per GQA group.
    fn selection_dims(&self, shape: &Shape) -> [usize; 4] {
        match self {
            Method::Moba(config) => [shape.batch, shape.q_heads, shape.q_len, config.top_k],
            Method::Nsa(config, _) => [shape.batch, shape.kv_heads, shape.q_len, config.top_n],
        }
    }
}

/// Fails on the first of `flags` (flags of `owner`) given with `--attention attention`.
fn refuse_flags(flags: &[&str], owner: Attention, attention: Attention) -> Result<()> {
    match flags.first() {
        Some(flag) => Err(MobaError::Config(format!(
            "{flag} belongs to --attention {}, not --attention {}",
            owner.name(),
            attention.name()
        ))),
        None => Ok(()),
    }
}

/// The error for the missing ones of `attention`'s required `(flag, given)` pairs.
fn missing_flags(attention: Attention, flags: &[(&str, bool)]) -> MobaError {
    let missing: Vec<&str> = flags
        .iter()
        .filter_map(|&(flag, given)| (!given).then_some(flag))
        .collect();
    MobaError::Config(format!(
        "--attention {} needs {}",
        attention.name(),
        missing.join(", ")
    ))
}

/// The name of a value on the command line.
fn name_of(value: &impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string())
}

impl Attention {
    fn name(self) -> String {
        name_of(&self)
    }
}

pub fn run(args: &AttendArgs, request: &AdapterRequest) -> Result<()> {
    // Every check before the first write: a refused run leaves the out dir as it was.
    let method = Method::from_args(args)?;
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
    let gates = match &method {
        Method::Nsa(_, path) => Some(nsa::read_gates(path, &shape)?),
        Method::Moba(_) => None,
    };
    // One check of the values for every backend (burn's ops take NaN silently).
    shape.check_inputs(&q.data, &k.data, &v.data)?;
    if let Some(dout) = &dout {
        shape.check_dout(&dout.data)?;
    }
    std::fs::create_dir_all(&args.out_dir).map_err(|e| MobaError::io(&args.out_dir, e))?;

    let problem = Problem {
        q: &q.data,
        k: &k.data,
        v: &v.data,
        gates: gates.as_deref(),
        dout: dout.as_ref().map(|d| &d.data[..]),
        shape: &shape,
        cu_seqlens: args.moba.cu_seqlens.as_deref(),
    };
    let out = match &method {
        Method::Moba(config) => compute(args.backend, args.dtype, request, &problem, config)?,
        Method::Nsa(config, _) => {
            nsa::compute(args.backend, args.dtype, request, &problem, config)?
        }
    };
    let rows = [shape.batch, shape.q_heads, shape.q_len];
    let dir = &args.out_dir;
    let mut files = vec![("o.npy", npy::encode(&q.shape, &out.o))];
    if let Some(lse) = &out.lse {
        files.push(("lse.npy", npy::encode(&rows, lse)));
    }
    let selection_dims = method.selection_dims(&shape);
    files.push((
        "selection.npy",
        npy::encode(&selection_dims, &out.selection),
    ));
    if let Some([dq, dk, dv]) = &out.grads {
        files.push(("dq.npy", npy::encode(&q.shape, dq)));
        files.push(("dk.npy", npy::encode(&k.shape, dk)));
        files.push(("dv.npy", npy::encode(&k.shape, dv)));
    }
    if let Some(dgates) = &out.dgates {
        files.push((
            "dgates.npy",
            npy::encode(&[rows[0], rows[1], rows[2], 3], dgates),
        ));
    }
    // All or nothing: a failed write (a full disk) leaves the folder as it was, and no
    // optional file of an earlier run survives beside this run's outputs.
    let writes: Vec<(PathBuf, &[u8])> = files
        .iter()
        .map(|(name, bytes)| (dir.join(name), &bytes[..]))
        .collect();
    files::write_all_atomically(&writes)?;
    for stale in OPTIONAL_FILES {
        let path = dir.join(stale);
        if !files.iter().any(|(name, _)| *name == stale) && path.exists() {
            std::fs::remove_file(&path).map_err(|e| MobaError::io(&path, e))?;
        }
    }
    let written: Vec<&str> = files
        .iter()
        .map(|(name, _)| name.trim_end_matches(".npy"))
        .collect();
    eprintln!("wrote {} ({})", dir.display(), written.join(", "));
    Ok(())
}

/// What one backend computed: the forward and, given `dout`, the gradients.
struct Outputs {
    o: Vec<f32>,
    /// MoBA's log-sum-exp `[B, Hq, S]` (NSA has three softmaxes and writes none).
    lse: Option<Vec<f32>>,
    /// [`Method::selection_dims`].
    selection: Vec<i32>,
    /// `[dq, dk, dv]`, given `dout`.
    grads: Option<[Vec<f32>; 3]>,
    /// NSA's gate gradients `[B, Hq, S, 3]`, given `dout`.
    dgates: Option<Vec<f32>>,
}

/// The inputs of one `attend`: q, k, v, NSA's gates, and dout where gradients are asked for.
struct Problem<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    /// `[B, Hq, S, 3]`: NSA only.
    gates: Option<&'a [f32]>,
    dout: Option<&'a [f32]>,
    shape: &'a Shape,
    /// The offsets of sequences packed into batch 1 (MoBA only).
    cu_seqlens: Option<&'a [usize]>,
}

fn compute(
    backend: Backend,
    dtype: Dtype,
    request: &AdapterRequest,
    p: &Problem,
    config: &MobaConfig,
) -> Result<Outputs> {
    let Problem {
        q,
        k,
        v,
        dout,
        shape,
        cu_seqlens,
        ..
    } = *p;
    match backend {
        Backend::Reference => {
            let out = match cu_seqlens {
                Some(cu) => reference::varlen_forward(q, k, v, shape, cu, config)?,
                None => reference::forward(q, k, v, shape, config)?,
            };
            let grads = dout
                .map(|dout| match cu_seqlens {
                    Some(cu) => reference::varlen_backward(q, k, v, dout, shape, cu, config),
                    None => reference::backward(q, k, v, dout, shape, config),
                })
                .transpose()?
                .map(|g| [to_f32(&g.dq), to_f32(&g.dk), to_f32(&g.dv)]);
            Ok(Outputs {
                o: to_f32(&out.o),
                lse: Some(to_f32(&out.lse)),
                selection: out.selection,
                grads,
                dgates: None,
            })
        }
        Backend::Wgpu => {
            let gpu = GpuContext::new_blocking(request)?;
            eprintln!("adapter: {}", gpu.describe());
            let out = gpu.block_on(async {
                match cu_seqlens {
                    Some(cu) => gpu.moba_forward_varlen(q, k, v, shape, cu, config).await,
                    None => gpu.moba_forward(q, k, v, shape, config).await,
                }
            })?;
            let grads = dout
                .map(|dout| {
                    gpu.block_on(async {
                        match cu_seqlens {
                            Some(cu) => {
                                (gpu.moba_backward_varlen([q, k, v, dout], shape, cu, config)).await
                            }
                            None => gpu.moba_backward(q, k, v, dout, shape, config).await,
                        }
                    })
                })
                .transpose()?
                .map(|g| [g.dq, g.dk, g.dv]);
            Ok(Outputs {
                o: out.o,
                lse: Some(out.lse),
                selection: out.selection,
                grads,
                dgates: None,
            })
        }
        Backend::BurnWgpu | Backend::BurnNdarray | Backend::Cuda => {
            on_burn_backend(backend, dtype, request, p, config)
        }
    }
}

/// An attention that runs on burn's backends: MoBA through `MobaBackend`, NSA on burn's
/// tensor ops.
trait OnBurn {
    /// The forward and, given `dout`, the gradients through `Autodiff<B>`.
    fn on_burn<B: MobaBackend>(&self, device: &B::Device, p: &Problem) -> Result<Outputs>;
}

impl OnBurn for MobaConfig {
    fn on_burn<B: MobaBackend>(&self, device: &B::Device, p: &Problem) -> Result<Outputs> {
        compute_burn::<B>(device, p, self)
    }
}

/// `attention` on one of burn's backends: burn-wgpu (on the requested adapter),
/// burn-ndarray or cuda.
fn on_burn_backend(
    backend: Backend,
    dtype: Dtype,
    request: &AdapterRequest,
    p: &Problem,
    attention: &impl OnBurn,
) -> Result<Outputs> {
    match backend {
        Backend::BurnWgpu => {
            let (device, adapter) = burn_wgpu_device(request)?;
            eprintln!("adapter: {} ({:?})", adapter.name, adapter.backend);
            attention.on_burn::<burn::backend::Wgpu>(&device, p)
        }
        Backend::BurnNdarray => attention.on_burn::<burn::backend::NdArray>(&Default::default(), p),
        Backend::Cuda => compute_cuda(dtype, p, attention),
        Backend::Reference | Backend::Wgpu => unreachable!("{backend:?} is not one of burn's"),
    }
}

/// The CUDA backend in the chosen element type, after a clear check for a driver and GPU.
#[cfg(feature = "cuda")]
fn compute_cuda(dtype: Dtype, p: &Problem, attention: &impl OnBurn) -> Result<Outputs> {
    use burn::backend::Cuda;
    use burn::tensor::{bf16, f16};
    eprintln!("device: {}", moba::cuda::CudaRuntime::get(0)?.describe());
    let device = Default::default();
    match dtype {
        Dtype::F32 => attention.on_burn::<Cuda<f32>>(&device, p),
        Dtype::F16 => attention.on_burn::<Cuda<f16>>(&device, p),
        Dtype::Bf16 => attention.on_burn::<Cuda<bf16>>(&device, p),
    }
}

#[cfg(not(feature = "cuda"))]
fn compute_cuda(_dtype: Dtype, _p: &Problem, _attention: &impl OnBurn) -> Result<Outputs> {
    Err(moba::cuda::not_built())
}

/// Forward (and gradients through `Autodiff<B>`) on a burn backend.
fn compute_burn<B: MobaBackend>(
    device: &B::Device,
    p: &Problem,
    config: &MobaConfig,
) -> Result<Outputs> {
    let Problem {
        q,
        k,
        v,
        dout,
        shape,
        cu_seqlens,
        ..
    } = *p;
    let (q_dims, kv_dims) = (shape.q_dims(), shape.kv_dims());
    let tensor = |data: &[f32], dims| burn_tensor::<Autodiff<B>>(data, dims, device).require_grad();
    let (qt, kt, vt) = (tensor(q, q_dims), tensor(k, kv_dims), tensor(v, kv_dims));
    let qkv = (qt.clone(), kt.clone(), vt.clone());
    let out = match cu_seqlens {
        Some(cu) => moba_attention_varlen(qkv.0, qkv.1, qkv.2, cu, config)?,
        None => moba_attention_with_stats(qkv.0, qkv.1, qkv.2, config)?,
    };
    let grads = dout.map(|dout| {
        let gradients = (out.o.clone() * tensor(dout, q_dims)).sum().backward();
        [&qt, &kt, &vt].map(|t| floats(t.grad(&gradients).expect("a gradient").into_data()))
    });
    Ok(Outputs {
        o: floats(out.o.into_data()),
        lse: Some(floats(out.lse.into_data())),
        selection: out
            .selection
            .into_data()
            .convert::<i32>()
            .to_vec()
            .expect("i32 data"),
        grads,
        dgates: None,
    })
}

/// `data` as a tensor of `B`'s own float type (not the device's default dtype).
fn burn_tensor<B: burn::tensor::backend::Backend>(
    data: &[f32],
    dims: [usize; 4],
    device: &B::Device,
) -> Tensor<B, 4> {
    let dtype = <B::FloatElem as Element>::dtype();
    let data = TensorData::new(data.to_vec(), dims).convert_dtype(dtype);
    Tensor::from_data(data, (device, dtype))
}

/// A tensor's values as f32.
fn floats(data: TensorData) -> Vec<f32> {
    data.convert::<f32>().to_vec().expect("f32 data")
}

fn to_f32(data: &[f64]) -> Vec<f32> {
    data.iter().map(|&x| x as f32).collect()
}
