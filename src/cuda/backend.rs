//! MoBA on burn-cuda: [`MobaBackend`] for `CubeBackend<CudaRuntime, F, i32, _>`. The
//! kernels follow the tensors' dtype (f32, f16 or bf16), not `F`: burn keeps a default dtype
//! per device, so a `Cuda<f16>` tensor may hold bf16. Through the generic impls, burn's
//! `Cuda` (`Fusion` of it) and `Autodiff<Cuda>` follow. Our kernels run on the memory of
//! burn's tensors: burn's queue is drained first, ours before returning, so burn's next op
//! sees the results.

use std::sync::Mutex;
use std::time::Instant;

use burn::backend::cuda::CudaDevice;
use burn::backend::wgpu::{BoolElement, CubeBackend, CubeTensor, FloatElement, into_contiguous};
use burn::cubecl::cuda::CudaRuntime;
use burn::tensor::DType;
use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use cudarc::driver::LaunchConfig;

use burn_cubecl::kernel::cast;

use super::launch::{
    CudaPlan, HEAD_DIM_MULTIPLE, MAX_SHARED_BYTES, SELECT_THREADS, SELECTED_MIN_GROUP,
    SELECTED_THREADS, nsa_select_shared_bytes, nsa_selected_grid, nsa_selected_shared_bytes,
    select_layout,
};
use super::runtime::{CudaRuntime as Driver, profile_launches};
use super::schedule::{
    Arg, BackwardTensors, CudaSchedule, ForwardTensors, Given as Steps, Launch, Scratch,
};
use super::source::{CudaConstants, CudaProgram, ElemKind};
use crate::backend::cube::{
    empty, nsa_select_inputs, padded_backward, padded_forward, problem_shape,
};
use crate::backend::{
    ForwardGiven, MobaBackend, MobaForwardOutput, MobaGradients, MobaSaved, forward_per_head,
    nsa_selection_chunk_blocks, nsa_selection_fits_a_chunk,
};
use crate::config::{MobaConfig, NsaConfig, Shape};
use crate::error::{MobaError, Result};
use crate::kernel_params::KernelParams;
use crate::launch_plan::Stage;
use crate::memory::bytes_of;

type CudaTensor = CubeTensor<CudaRuntime>;
type CudaBackend<F, BT> = CubeBackend<CudaRuntime, F, i32, BT>;

/// Keeps burn's allocations alive (and addressable) while our kernels use them.
struct Addresses {
    _resources: Vec<Box<dyn std::any::Any>>,
}

impl Addresses {
    fn new() -> Self {
        Addresses {
            _resources: Vec::new(),
        }
    }

    /// The device address of a tensor's memory.
    fn of(&mut self, tensor: &CudaTensor) -> u64 {
        let resource = tensor
            .client
            .get_resource(tensor.handle.clone())
            .expect("a live burn-cuda tensor has device memory");
        let address = resource.resource().ptr;
        self._resources.push(Box::new(resource));
        address
    }
}

/// The scratch buffers of a forward (`forward`) or backward of a plan as regions of one
/// f32 tensor on the device of `like` (one allocation and one address lookup, each a round
/// trip to burn's device thread); the block means are the caller's where given.
fn scratch(
    like: &CudaTensor,
    plan: &CudaPlan,
    means: Option<&CudaTensor>,
    forward: bool,
    addresses: &mut Addresses,
) -> (CudaTensor, Scratch) {
    let words = Scratch::words(plan, means.is_some(), forward);
    let buffer = empty(like, vec![words], DType::F32);
    let base = addresses.of(&buffer);
    let means = means.map(|means| addresses.of(means));
    (buffer, Scratch::in_one_buffer(plan, base, means, forward))
}

/// Drains burn's queue on the tensor's device, runs `launches` on ours, and waits for them;
/// with `timed`, returns each launch's GPU milliseconds.
/// Under `MOBA_CUDA_PROFILE`, each call also prints its host times: since the last call
/// ended (burn's ops and the host in between), the wait for burn's queue, and our launches.
fn run<F: FloatElement, BT: BoolElement>(
    like: &CudaTensor,
    constants: CudaConstants,
    launches: &[Launch],
    timed: bool,
) -> Result<Vec<f64>> {
    static LAST_END: Mutex<Option<Instant>> = Mutex::new(None);
    let start = Instant::now();
    CudaBackend::<F, BT>::sync(&like.device)
        .map_err(|e| MobaError::Cuda(format!("burn-cuda queue: {e:?}")))?;
    let drained = Instant::now();
    let times = Driver::get(like.device.index)?.execute(launches, constants, timed)?;
    if profile_launches() {
        let mut last = LAST_END.lock().unwrap_or_else(|e| e.into_inner());
        let between = last.map_or(0.0, |end| start.duration_since(end).as_secs_f64() * 1e3);
        eprintln!(
            "moba cuda: call of {} launches: {between:.3} ms since the last, burn's queue \
             {:.3} ms, ours {:.3} ms",
            launches.len(),
            (drained - start).as_secs_f64() * 1e3,
            drained.elapsed().as_secs_f64() * 1e3
        );
        *last = Some(Instant::now());
    }
    Ok(times)
}

/// GPU milliseconds of each kernel launched, by its stage (for the benchmark's split).
pub(crate) type KernelTimes = Vec<(Stage, f64)>;

fn kernel_times(launches: &[Launch], times: Vec<f64>) -> KernelTimes {
    launches.iter().map(|l| l.step.stage()).zip(times).collect()
}

/// The kernels' constants for tensors of `dtype` on the device of `like`.
fn constants(
    like: &CudaTensor,
    head_dim: usize,
    dtype: DType,
    config: &MobaConfig,
) -> Result<CudaConstants> {
    let elem = ElemKind::from_dtype(dtype).ok_or_else(|| {
        MobaError::Unsupported(format!(
            "{dtype:?} tensors on the CUDA path (f32, f16, bf16)"
        ))
    })?;
    Ok(CudaConstants {
        head_dim,
        elem,
        top_k: config.top_k,
        mma: Driver::get(like.device.index)?.mma_kind(head_dim),
    })
}

/// Runs a forward (`backward: false`) or a backward of a problem on `q`'s device: `tensors`
/// are the forward's six (q, k, v, o, lse, selection) and, for a backward, dout, dq, dk, dv;
/// `given` holds contiguous tensors (the means f32, of the kernels' head dim).
fn execute<F: FloatElement, BT: BoolElement>(
    config: &MobaConfig,
    tensors: &[&CudaTensor],
    given: &ForwardGiven<CudaBackend<F, BT>>,
    timed: bool,
    backward: bool,
) -> Result<KernelTimes> {
    let (q, k) = (tensors[0], tensors[1]);
    let shape = problem_shape(q, k);
    let constants = constants(q, shape.head_dim, q.dtype, config)?;
    let plan = CudaPlan::new(&shape, config, constants.mma, constants.elem);
    let mut at = Addresses::new();
    let address: Vec<u64> = tensors.iter().map(|t| at.of(t)).collect();
    let forward = ForwardTensors {
        q: address[0],
        k: address[1],
        v: address[2],
        o: address[3],
        lse: address[4],
        selection: address[5],
        sequence_starts: given
            .sequence_starts
            .as_ref()
            .map_or(0, |starts| at.of(starts)),
    };
    let addresses = match address[6..] {
        [dout, dq, dk, dv] => BackwardTensors {
            forward,
            dout,
            dq,
            dk,
            dv,
        },
        _ => BackwardTensors::forward_only(forward),
    };
    let (_buffer, scratch) = scratch(q, &plan, given.means.as_ref(), !backward, &mut at);
    let schedule = CudaSchedule::new(plan, KernelParams::new(&shape, config), config);
    let launches = match backward {
        false => {
            let steps = Steps {
                means: given.means.is_some(),
                selection: given.selection.is_some(),
            };
            schedule.forward(&forward, &scratch, steps)
        }
        true => schedule.backward(&addresses, &scratch),
    };
    let times = run::<F, BT>(q, constants, &launches, timed)?;
    Ok(kernel_times(&launches, times))
}

/// The forward on contiguous tensors, head dim a multiple of 16, with what the caller gives
/// (block means of another head dim are pooled again): `(o, lse, selection)`, and with
/// `timed` each kernel's GPU time.
pub(crate) fn forward<F: FloatElement, BT: BoolElement>(
    qkv: [CudaTensor; 3],
    given: ForwardGiven<CudaBackend<F, BT>>,
    config: &MobaConfig,
    timed: bool,
) -> Result<([CudaTensor; 3], KernelTimes)> {
    // k and v follow q's dtype.
    let dtype = qkv[0].dtype;
    let [q, k, v] = qkv.map(|t| into_contiguous(cast(t, dtype)));
    let rows = q.meta.shape()[..3].to_vec();
    let o = empty(&q, q.meta.shape().to_vec(), dtype);
    let lse = empty(&q, rows.clone(), DType::F32);
    // A given selection is the output's too (the tensors' selection, no gate writes it).
    let chosen = given.selection.map(into_contiguous);
    let selection = match &chosen {
        Some(chosen) => chosen.clone(),
        None => empty(&q, [rows, vec![config.top_k]].concat(), DType::I32),
    };
    let tensors = [&q, &k, &v, &o, &lse, &selection];
    let num_blocks = problem_shape(&q, &k).num_blocks(config.block_size);
    let [batch, kv_heads, _, head_dim] = k.meta.shape()[..] else {
        unreachable!("k has four dims")
    };
    let means_dims = [batch, kv_heads, num_blocks, head_dim];
    let given = ForwardGiven {
        sequence_starts: given.sequence_starts.map(into_contiguous),
        means: (given.means)
            .filter(|means| means.meta.shape()[..] == means_dims)
            .map(|means| into_contiguous(cast(means, DType::F32))),
        selection: chosen,
    };
    let times = execute::<F, BT>(config, &tensors, &given, timed, false)?;
    Ok(([o, lse, selection], times))
}

/// The backward from a forward's saved tensors: `(dq, dk, dv)`, and with `timed` each
/// kernel's GPU time.
pub(crate) fn backward<F: FloatElement, BT: BoolElement>(
    saved: [CudaTensor; 6],
    dout: CudaTensor,
    config: &MobaConfig,
    timed: bool,
) -> Result<([CudaTensor; 3], KernelTimes)> {
    let [q, k, v, o, lse, selection] = saved;
    let dtype = q.dtype;
    let [q, k, v, o, dout] = [q, k, v, o, dout].map(|t| into_contiguous(cast(t, dtype)));
    let [lse, selection] = [lse, selection].map(into_contiguous);
    let dq = empty(&q, q.meta.shape().to_vec(), dtype);
    let dk = empty(&q, k.meta.shape().to_vec(), dtype);
    let dv = empty(&q, k.meta.shape().to_vec(), dtype);
    let tensors = [&q, &k, &v, &o, &lse, &selection, &dout, &dq, &dk, &dv];
    let times = execute::<F, BT>(config, &tensors, &ForwardGiven::none(), timed, true)?;
    Ok(([dq, dk, dv], times))
}

/// `nsa_select`'s q tile for `shape` and `config` ([`select_layout`]): the one layout that
/// [`MobaBackend::nsa_selects_on_device`] admits and the launch runs.
fn nsa_select_layout(shape: &Shape, config: &NsaConfig) -> Option<(usize, usize)> {
    select_layout(shape.group_size(), nsa_selection_chunk_blocks(config))
}

/// NSA's selection on burn-cuda tensors (`nsa.cu`, the rule of `nsa_select.wgsl`): q `[B,
/// Hq, S, D]` at the last `S` of `kv_len` positions, the pooled keys `[B, Hkv, nc, D]`, the
/// compressed branch's lse `[B, Hq, S]`; Int `[B, Hkv, S, top_n]`. q and the keys are read
/// in q's float type, the head dim padded to the tensor-core step as the other CUDA kernels
/// see it; one thread block per group and tile of queries, every head of its queries scored
/// against each chunk of pooled keys on the tensor cores, no importance matrix.
fn nsa_select<F: FloatElement, BT: BoolElement>(
    q: CudaTensor,
    pooled_keys: CudaTensor,
    lse: CudaTensor,
    kv_len: usize,
    config: &NsaConfig,
) -> Result<CudaTensor> {
    let q_dtype = q.dtype;
    let inputs = nsa_select_inputs::<CudaRuntime, CudaBackend<F, BT>>(
        [q, pooled_keys, lse],
        kv_len,
        config,
        HEAD_DIM_MULTIPLE,
        q_dtype,
    );
    let shape = inputs.shape;
    let (rows_per_query, queries) = nsa_select_layout(&shape, config)
        .expect("nsa_selects_on_device admits groups that fit nsa_select's q tile");
    let mut at = Addresses::new();
    let args = [
        Arg::Params(KernelParams::new(&shape, &inputs.config)),
        Arg::U32(config.compress_block as u32),
        Arg::U32(config.stride as u32),
        Arg::U32(inputs.pooled as u32),
        Arg::U32(rows_per_query as u32),
        Arg::U32(queries as u32),
        Arg::Ptr(at.of(&inputs.q)),
        Arg::Ptr(at.of(&inputs.pooled_keys)),
        Arg::Ptr(at.of(&inputs.lse)),
        Arg::Ptr(at.of(&inputs.selection)),
    ];
    let launch = LaunchConfig {
        grid_dim: (
            shape.q_len.div_ceil(queries) as u32,
            shape.groups() as u32,
            1,
        ),
        block_dim: (SELECT_THREADS, 1, 1),
        shared_mem_bytes: nsa_select_shared_bytes(shape.head_dim, queries),
    };
    let constants = constants(&inputs.q, shape.head_dim, q_dtype, &inputs.config)?;
    run_nsa::<F, BT>(&inputs.q, constants, "nsa_select", launch, &args)?;
    Ok(inputs.selection)
}

/// Runs kernel `name` of `nsa.cu` on burn-cuda tensors of `like`'s device (burn's queue
/// drained first) and waits for it.
fn run_nsa<F: FloatElement, BT: BoolElement>(
    like: &CudaTensor,
    constants: CudaConstants,
    name: &str,
    launch: LaunchConfig,
    args: &[Arg],
) -> Result<()> {
    let driver = Driver::get(like.device.index)?;
    let function = driver.kernel(CudaProgram::Nsa, constants, name, launch.shared_mem_bytes)?;
    CudaBackend::<F, BT>::sync(&like.device)
        .map_err(|e| MobaError::Cuda(format!("burn-cuda queue: {e:?}")))?;
    driver.launch_kernel(name, &function, launch, args)?;
    driver.synchronize(name)
}

/// NSA's selected branch on burn-cuda tensors (`nsa_selected` in `nsa.cu`, the rule of
/// `nsa_selected.wgsl`): q, k, v of a head dim the kernels take, the group's selection
/// `[B, Hkv, S, top_k]`; `[o, lse, per-head selection]` as the forward gives them. Each
/// selected key tile is read once for the queries of a thread block that chose it.
fn nsa_selected<F: FloatElement, BT: BoolElement>(
    qkv: [CudaTensor; 3],
    selection: CudaTensor,
    config: &MobaConfig,
) -> Result<[CudaTensor; 3]> {
    let dtype = qkv[0].dtype;
    let [q, k, v] = qkv.map(|t| into_contiguous(cast(t, dtype)));
    let selection = into_contiguous(selection);
    let shape = problem_shape(&q, &k);
    let rows = vec![shape.batch, shape.q_heads, shape.q_len];
    let o = empty(&q, q.meta.shape().to_vec(), dtype);
    let lse = empty(&q, rows.clone(), DType::F32);
    let per_head = empty(&q, [rows, vec![config.top_k]].concat(), DType::I32);
    let mut at = Addresses::new();
    let args = [
        Arg::Params(KernelParams::new(&shape, config)),
        Arg::Ptr(at.of(&q)),
        Arg::Ptr(at.of(&k)),
        Arg::Ptr(at.of(&v)),
        Arg::Ptr(at.of(&selection)),
        Arg::Ptr(at.of(&o)),
        Arg::Ptr(at.of(&lse)),
        Arg::Ptr(at.of(&per_head)),
    ];
    let launch = LaunchConfig {
        grid_dim: nsa_selected_grid(&shape),
        block_dim: (SELECTED_THREADS, 1, 1),
        shared_mem_bytes: nsa_selected_shared_bytes(
            shape.head_dim,
            config.block_size,
            config.top_k,
        ),
    };
    let constants = constants(&q, shape.head_dim, dtype, config)?;
    run_nsa::<F, BT>(&q, constants, "nsa_selected", launch, &args)?;
    Ok([o, lse, per_head])
}

impl<F: FloatElement, BT: BoolElement> MobaBackend for CudaBackend<F, BT> {
    /// A driver and a GPU of compute capability 8.0+, and every program built (NVRTC) for
    /// this head dim, top-k and float type, so that compile errors surface here.
    fn moba_prepare(shape: &Shape, config: &MobaConfig, device: &CudaDevice) -> Result<()> {
        // The kernels index the selection with 32-bit integers (and size arrays by top-k).
        let selection = bytes_of(&[shape.q_rows(), config.top_k], 1).unwrap_or(u64::MAX);
        if selection > i32::MAX as u64 {
            return Err(MobaError::limit(
                "the selection [B, Hq, S, top_k]",
                "2^31 elements (the kernels' 32-bit indices)",
                selection,
                i32::MAX as u64,
            ));
        }
        let driver = Driver::get(device.index)?;
        let head_dim = shape.padded(config, HEAD_DIM_MULTIPLE).0.head_dim;
        let dtype = <F as burn::tensor::Element>::dtype();
        let elem = ElemKind::from_dtype(dtype).ok_or_else(|| {
            MobaError::Unsupported(format!(
                "{dtype:?} tensors on the CUDA path (f32, f16, bf16)"
            ))
        })?;
        driver.prepare(CudaConstants {
            head_dim,
            elem,
            top_k: config.top_k,
            mma: driver.mma_kind(head_dim),
        })
    }

    /// Reads given block means where the head dim needs no padding (else pools its own).
    fn moba_forward_given(
        qkv: [FloatTensor<Self>; 3],
        given: ForwardGiven<Self>,
        config: &MobaConfig,
    ) -> MobaForwardOutput<Self> {
        padded_forward::<CudaRuntime, Self>(qkv, config, HEAD_DIM_MULTIPLE, |qkv, config| {
            forward::<F, BT>(qkv, given, config, false)
                .unwrap_or_else(|e| panic!("MoBA CUDA forward: {e}"))
                .0
        })
    }

    /// `nsa_selected` where it takes the problem (causal, no key-window mask: NSA's selected
    /// branch; groups of at least [`SELECTED_MIN_GROUP`] heads; its shared memory within
    /// sm_80/sm_90's [`MAX_SHARED_BYTES`]), else each head given its copy.
    fn moba_forward_group_selection(
        qkv: [FloatTensor<Self>; 3],
        selection: IntTensor<Self>,
        config: &MobaConfig,
    ) -> MobaForwardOutput<Self> {
        let [_, q_heads, _, head_dim] = qkv[0].meta.shape().dims::<4>();
        let group_size = q_heads / selection.meta.shape()[1];
        let padded = head_dim.next_multiple_of(HEAD_DIM_MULTIPLE);
        let shared = nsa_selected_shared_bytes(padded, config.block_size, config.top_k);
        if !config.masks_causally_only()
            || group_size < SELECTED_MIN_GROUP
            || shared > MAX_SHARED_BYTES
        {
            return forward_per_head::<Self>(qkv, selection, config);
        }
        padded_forward::<CudaRuntime, Self>(qkv, config, HEAD_DIM_MULTIPLE, |qkv, config| {
            nsa_selected::<F, BT>(qkv, selection, config)
                .unwrap_or_else(|e| panic!("NSA's selected branch on CUDA: {e}"))
        })
    }

    fn moba_backward(
        saved: MobaSaved<Self>,
        dout: FloatTensor<Self>,
        config: &MobaConfig,
    ) -> MobaGradients<Self> {
        padded_backward::<CudaRuntime, Self>(
            saved,
            dout,
            config,
            HEAD_DIM_MULTIPLE,
            |[q, k, v, o, lse, selection], dout, config| {
                let saved = [q, k, v, o, cast(lse, DType::F32), selection];
                backward::<F, BT>(saved, dout, config, false)
                    .unwrap_or_else(|e| panic!("MoBA CUDA backward: {e}"))
                    .0
            },
        )
    }

    /// Where the chunk holds a selection block's pooled keys, and the q tile a query's heads
    /// (groups of up to 256 heads) within the shared memory of one thread block.
    fn nsa_selects_on_device(shape: &Shape, config: &NsaConfig) -> bool {
        let layout = nsa_select_layout(shape, config);
        let head_dim = shape.head_dim.next_multiple_of(HEAD_DIM_MULTIPLE);
        nsa_selection_fits_a_chunk(config)
            && layout.is_some_and(|(_, queries)| {
                nsa_select_shared_bytes(head_dim, queries) <= MAX_SHARED_BYTES
            })
    }

    fn nsa_select(
        q: FloatTensor<Self>,
        pooled_keys: FloatTensor<Self>,
        compressed_lse: FloatTensor<Self>,
        kv_len: usize,
        config: &NsaConfig,
    ) -> IntTensor<Self> {
        nsa_select::<F, BT>(q, pooled_keys, compressed_lse, kv_len, config)
            .unwrap_or_else(|e| panic!("NSA's selection on CUDA: {e}"))
    }
}
