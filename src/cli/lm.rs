//! What the language-model commands (`train`, `eval`, `generate`, `compare`) share: the
//! backend choice and the flags that define a training run.

use std::path::PathBuf;

use burn::backend::wgpu::WgpuRuntime;
use burn::backend::{NdArray, Wgpu};
use burn::cubecl::Runtime;
use burn::tensor::backend::Backend;
use clap::{Args, ValueEnum};
use moba::backend::{MobaBackend, burn_wgpu_device};
use moba::data::RecallTask;
use moba::gpu::AdapterRequest;
use moba::model::LmConfig;
use moba::module::AttentionKind;
use moba::train::{DataConfig, DeviceCapacity, MemoryProbe, TrainConfig, nvidia_memory_probe};
use moba::{MobaError, Result};

/// The burn backend a command runs on.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum LmBackend {
    /// burn's wgpu backend (Vulkan, Metal, DX12): the WGSL kernels.
    Wgpu,
    /// burn's CPU backend (MoBA composed of tensor ops): slow, for tiny models.
    Ndarray,
    /// burn-cuda with the CUDA kernels: f32 weights, attention on tensor cores in bf16
    /// (needs `--features cuda` and an NVIDIA driver).
    Cuda,
}

/// Where a command runs: the device, its memory probe (the GPU memory metric) and what it
/// holds (checked before training).
pub struct Placement<B: Backend> {
    pub device: B::Device,
    pub memory: Option<MemoryProbe>,
    pub capacity: DeviceCapacity,
    /// The device of index `i` of the same backend (`--devices`; 0 is `device`).
    pub device_at: Box<dyn Fn(usize) -> Result<B::Device>>,
}

/// A command body generic over the backend (a closure cannot be generic).
pub trait BackendJob {
    type Output;
    fn run<B: MobaBackend>(self, placement: Placement<B>) -> Result<Self::Output>;
}

/// Runs `job` on `backend`: wgpu on the adapter `request` names (`--adapter`, `--api`),
/// the others on their default device.
pub fn dispatch<J: BackendJob>(
    backend: LmBackend,
    request: &AdapterRequest,
    job: J,
) -> Result<J::Output> {
    match backend {
        LmBackend::Wgpu => {
            let (device, adapter) = burn_wgpu_device(request)?;
            eprintln!("adapter: {} ({:?})", adapter.name, adapter.backend);
            let largest = WgpuRuntime::client(&device)
                .properties()
                .memory
                .max_page_size;
            let capacity = DeviceCapacity {
                // A CPU adapter (lavapipe, llvmpipe) allocates host memory; a GPU's own
                // memory is not something wgpu reports.
                memory: match adapter.device_type {
                    wgpu::DeviceType::Cpu => DeviceCapacity::host().memory,
                    _ => None,
                },
                largest_buffer: Some((largest, "max_storage_buffer_binding_size")),
            };
            let only = device.clone();
            job.run::<Wgpu>(Placement {
                device,
                memory: nvidia_memory_probe(0),
                capacity,
                device_at: Box::new(move |index| match index {
                    0 => Ok(only.clone()),
                    _ => Err(MobaError::Unsupported(
                        "more than one device on the wgpu backend (data parallel runs on \
                         --backend cuda, and on ndarray's CPU workers)"
                            .into(),
                    )),
                }),
            })
        }
        LmBackend::Ndarray => job.run::<NdArray>(Placement {
            device: Default::default(),
            memory: None,
            capacity: DeviceCapacity::host(),
            // One CPU: each index is a worker on it.
            device_at: Box::new(|_| Ok(Default::default())),
        }),
        LmBackend::Cuda => dispatch_cuda(job),
    }
}

#[cfg(feature = "cuda")]
fn dispatch_cuda<J: BackendJob>(job: J) -> Result<J::Output> {
    eprintln!("device: {}", moba::cuda::CudaRuntime::get(0)?.describe());
    job.run::<burn::backend::Cuda<f32>>(Placement {
        device: Default::default(),
        memory: nvidia_memory_probe(0),
        capacity: DeviceCapacity::default(),
        device_at: Box::new(|index| {
            eprintln!(
                "device {index}: {}",
                moba::cuda::CudaRuntime::get(index)?.describe()
            );
            Ok(burn::backend::cuda::CudaDevice::new(index))
        }),
    })
}

#[cfg(not(feature = "cuda"))]
fn dispatch_cuda<J: BackendJob>(_: J) -> Result<J::Output> {
    Err(moba::cuda::not_built())
}

/// The attention of the MoBA layers.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum AttentionChoice {
    Moba,
    Full,
    /// NSA (`--compress-block` ... `--window`): its three branches on MoBA's kernels.
    Nsa,
    /// Sliding-window attention over the `--window` keys ending at each query (NSA's window
    /// branch alone, on MoBA's kernels): the local-attention baseline.
    Window,
}

/// Flags that define a training run (`moba train`; `moba compare` trains one run per arm).
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Model size: tiny, small, 8k or 32k (the flags below override its parts).
    #[arg(long, default_value = "small")]
    preset: String,
    /// Width of the residual stream.
    #[arg(long)]
    d_model: Option<usize>,
    /// Transformer blocks.
    #[arg(long)]
    layers: Option<usize>,
    /// Query heads.
    #[arg(long)]
    heads: Option<usize>,
    /// Key/value heads (GQA).
    #[arg(long)]
    kv_heads: Option<usize>,
    /// SwiGLU hidden width.
    #[arg(long)]
    d_ff: Option<usize>,
    /// RoPE's base (default 10000). Larger bases rotate the slowest pairs of a head's
    /// dimensions less over the context, which a content lookup across long distances needs
    /// when heads are narrow (long-context models use 500000 and more).
    #[arg(long)]
    rope_theta: Option<f32>,
    /// Keys per MoBA block (default: the preset's).
    #[arg(long)]
    block_size: Option<usize>,
    /// Blocks each query attends, its own included (default 3).
    #[arg(long)]
    top_k: Option<usize>,
    /// Taps of a short causal depthwise convolution of the MoBA layers' keys (FlashMoBA's
    /// key convolution: the gate's block means then carry each key's neighbours), trained
    /// with the model; starts as the identity.
    #[arg(long, value_name = "N")]
    key_conv: Option<usize>,
    /// NSA (--attention nsa): keys per compressed block, l.
    #[arg(long, default_value_t = 32, value_name = "L")]
    compress_block: usize,
    /// NSA: distance between the starts of consecutive compressed blocks, d.
    #[arg(long, default_value_t = 16, value_name = "D")]
    stride: usize,
    /// NSA: keys per selection block, l'.
    #[arg(long, default_value_t = 64, value_name = "L'")]
    select_block: usize,
    /// NSA: selection blocks per GQA group and query, the forced three included.
    #[arg(long, default_value_t = 16, value_name = "N")]
    top_n: usize,
    /// NSA and --attention window: keys of the sliding window, the query's own included.
    #[arg(long, default_value_t = 512, value_name = "W")]
    window: usize,
    /// NSA: compress each block of keys (and of values) with a learned MLP over its keys and
    /// an intra-block position embedding, as the paper does, instead of their mean.
    #[arg(long)]
    learned_compression: bool,
    /// Bytes per training sequence (default: the preset's context).
    #[arg(long)]
    seq_len: Option<usize>,
    /// Train on these files or directories (bytes) instead of the synthetic recall task.
    #[arg(long, num_args = 1..)]
    text: Vec<PathBuf>,
    /// Fraction of the text that validates (its end).
    #[arg(long, default_value_t = 0.05)]
    valid_fraction: f64,
    /// Recall task: key-value records per sequence (default: 4 per query).
    #[arg(long)]
    recall_pairs: Option<usize>,
    /// Recall task: queries per sequence (default: one per 512 bytes, 1 to 16).
    #[arg(long)]
    recall_queries: Option<usize>,
    /// Shorter sequences first: the first half of the steps climbs through N - 1 halvings of
    /// --seq-len (shortest first, equal parts, as many more sequences per batch as they are
    /// shorter), the second half reads --seq-len.
    #[arg(long, default_value_t = 1)]
    curriculum: usize,
    /// Optimizer steps.
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Sequences per forward.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Forwards per optimizer step.
    #[arg(long, default_value_t = 1)]
    grad_accumulation: usize,
    /// Optimizer steps between validations and checkpoints (must divide --steps;
    /// default: a tenth of them).
    #[arg(long)]
    valid_every: Option<usize>,
    /// Batches per validation.
    #[arg(long, default_value_t = 4)]
    valid_batches: usize,
    /// Peak learning rate (warm-up, then cosine to a tenth).
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Warm-up steps (default: a twentieth of the steps).
    #[arg(long)]
    warmup: Option<usize>,
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f32,
    /// Seed of the weights and the data.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Start from the weights of this run directory (fine-tuning, e.g. at a longer
    /// --seq-len) instead of fresh ones; the model flags must give the same shapes.
    #[arg(long)]
    init_from: Option<PathBuf>,
}

impl RunArgs {
    /// The run these flags describe, with `attention` in all but the last `full_layers`.
    pub fn config(&self, attention: AttentionChoice, full_layers: usize) -> Result<TrainConfig> {
        let preset = LmConfig::preset(&self.preset)?;
        let kind = match (attention, preset.attention) {
            (AttentionChoice::Full, _) => AttentionKind::Full,
            (AttentionChoice::Moba, AttentionKind::Moba { block_size, top_k }) => {
                AttentionKind::Moba {
                    block_size: self.block_size.unwrap_or(block_size),
                    top_k: self.top_k.unwrap_or(top_k),
                }
            }
            (AttentionChoice::Moba, other) => other,
            (AttentionChoice::Nsa, _) => AttentionKind::Nsa {
                compress_block: self.compress_block,
                stride: self.stride,
                select_block: self.select_block,
                top_n: self.top_n,
                window: self.window,
            },
            (AttentionChoice::Window, _) => AttentionKind::KeyWindow { keys: self.window },
        };
        let seq_len = self.seq_len.unwrap_or(preset.max_seq_len);
        let model = LmConfig {
            d_model: self.d_model.unwrap_or(preset.d_model),
            n_layers: self.layers.unwrap_or(preset.n_layers),
            n_heads: self.heads.unwrap_or(preset.n_heads),
            n_kv_heads: self.kv_heads.unwrap_or(preset.n_kv_heads),
            d_ff: self.d_ff.unwrap_or(preset.d_ff),
            attention: kind,
            full_layers,
            max_seq_len: seq_len.max(preset.max_seq_len),
            rope_theta: self.rope_theta.unwrap_or(preset.rope_theta),
            key_conv: self.key_conv,
            // NSA's alone: `moba compare` gives it to the NSA arm, as --key-conv to MoBA's.
            learned_compression: Some(
                self.learned_compression && attention == AttentionChoice::Nsa,
            ),
        };
        let data = if self.text.is_empty() {
            // The default counts only where a count is left out: at short lengths they may
            // not fit where the given ones do.
            let (pairs, queries) = match (self.recall_pairs, self.recall_queries) {
                (Some(pairs), Some(queries)) => (pairs, queries),
                (pairs, queries) => {
                    let defaults = RecallTask::new(seq_len, self.seed)?.counts();
                    (pairs.unwrap_or(defaults.0), queries.unwrap_or(defaults.1))
                }
            };
            DataConfig::Recall { pairs, queries }
        } else {
            DataConfig::Text {
                paths: self.text.iter().map(|p| p.display().to_string()).collect(),
                valid_fraction: self.valid_fraction,
            }
        };
        let valid_every = self.valid_every.unwrap_or(match self.steps {
            steps if steps % 10 == 0 => steps / 10,
            steps => steps,
        });
        let config = TrainConfig::new(model, data, seq_len, self.steps)
            .with_batch_size(self.batch_size)
            .with_grad_accumulation(self.grad_accumulation)
            .with_valid_every(valid_every)
            .with_valid_batches(self.valid_batches)
            .with_learning_rate(self.lr)
            .with_warmup_steps(self.warmup.unwrap_or(self.steps / 20))
            .with_weight_decay(self.weight_decay)
            .with_curriculum((self.curriculum != 1).then_some(self.curriculum))
            .with_init_from(self.init_from.as_ref().map(|p| p.display().to_string()))
            .with_seed(self.seed)
            .with_absolute_paths()?;
        config.validate()?;
        Ok(config)
    }
}

/// An error for a run directory that holds another run than the flags describe.
pub fn other_run(dir: &std::path::Path) -> MobaError {
    MobaError::Config(format!(
        "{} holds a run with other settings than these flags: pick another directory",
        dir.display()
    ))
}
