//! What the kernel backends (burn-wgpu's WGSL, burn-cuda's CUDA) share: new tensors on a
//! device, the problem shape of q and k, and the forward and backward around their
//! kernels (head dims padded to the kernels' multiple, results unpadded).

use burn::backend::wgpu::CubeTensor;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Shape as TensorShape, Tensor, TensorPrimitive};
use burn_cubecl::CubeRuntime as Runtime;

use burn::backend::wgpu::into_contiguous;
use burn_cubecl::kernel::cast;

use super::{MobaForwardOutput, MobaGradients, MobaSaved};
use crate::config::{MobaConfig, NsaConfig, Shape};

/// A new contiguous tensor of `dims` on the device of `like`.
pub(crate) fn empty<R: Runtime>(
    like: &CubeTensor<R>,
    dims: Vec<usize>,
    dtype: DType,
) -> CubeTensor<R> {
    let shape = TensorShape::from(dims);
    let bytes = shape.num_elements() * dtype.size();
    let handle = like.client.empty(bytes.max(4));
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        shape,
        handle,
        dtype,
    )
}

/// The problem shape of q `[B, Hq, S, D]` and k `[B, Hkv, Sk, D]` tensors.
pub(crate) fn problem_shape<R: Runtime>(q: &CubeTensor<R>, k: &CubeTensor<R>) -> Shape {
    Shape::of_dims(q.meta.shape(), k.meta.shape())
}

/// A kernel backend: its tensors (float and int) are cubecl tensors of runtime `R`.
pub(crate) trait KernelBackend<R: Runtime>:
    Backend<FloatTensorPrimitive = CubeTensor<R>, IntTensorPrimitive = CubeTensor<R>>
{
}

impl<R: Runtime, B> KernelBackend<R> for B where
    B: Backend<FloatTensorPrimitive = CubeTensor<R>, IntTensorPrimitive = CubeTensor<R>>
{
}

/// A kernel backend's forward on q, k, v padded to its head-dim `multiple`, with o
/// unpadded: `run` gets the padded tensors and the config to run (its scale fixed for the
/// true head dim), and returns o, lse and the selection.
pub(crate) fn padded_forward<R: Runtime, B: KernelBackend<R>>(
    [q, k, v]: [CubeTensor<R>; 3],
    config: &MobaConfig,
    multiple: usize,
    run: impl FnOnce([CubeTensor<R>; 3], &MobaConfig) -> [CubeTensor<R>; 3],
) -> MobaForwardOutput<B> {
    let head_dim = q.meta.shape()[3];
    let (config, pad) = padding::<B>(head_dim, multiple, config);
    let [o, lse, selection] = run([pad(q), pad(k), pad(v)], &config);
    MobaForwardOutput {
        o: unpad::<B>(o, head_dim),
        lse,
        selection,
    }
}

/// A kernel backend's backward on the saved tensors and dout padded as the forward's, the
/// gradients unpadded: `run` gets `[q, k, v, o, lse, selection]`, dout and the config.
pub(crate) fn padded_backward<R: Runtime, B: KernelBackend<R>>(
    saved: MobaSaved<B>,
    dout: CubeTensor<R>,
    config: &MobaConfig,
    multiple: usize,
    run: impl FnOnce([CubeTensor<R>; 6], CubeTensor<R>, &MobaConfig) -> [CubeTensor<R>; 3],
) -> MobaGradients<B> {
    let head_dim = saved.q.meta.shape()[3];
    let (config, pad) = padding::<B>(head_dim, multiple, config);
    let [q, k, v, o] = [saved.q, saved.k, saved.v, saved.o].map(&pad);
    let [dq, dk, dv] = run([q, k, v, o, saved.lse, saved.selection], pad(dout), &config);
    MobaGradients {
        dq: unpad::<B>(dq, head_dim),
        dk: unpad::<B>(dk, head_dim),
        dv: unpad::<B>(dv, head_dim),
    }
}

/// Kernels that read the head dim in steps of `multiple` get zero columns appended (they
/// change no dot product); the scale is fixed for the true head dim first. Returns the
/// config to run and the padding function.
pub(crate) fn padding<B: Backend>(
    head_dim: usize,
    multiple: usize,
    config: &MobaConfig,
) -> (MobaConfig, impl Fn(FloatTensor<B>) -> FloatTensor<B>) {
    let (config, padded) = padded_config(head_dim, multiple, config);
    let pad = move |tensor: FloatTensor<B>| {
        if padded == head_dim {
            return tensor;
        }
        let tensor = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(tensor));
        let [b, h, l, _] = tensor.dims();
        let zeros = Tensor::<B, 4>::zeros([b, h, l, padded - head_dim], &tensor.device())
            .cast(tensor.dtype());
        Tensor::cat(vec![tensor, zeros], 3)
            .into_primitive()
            .tensor()
    };
    (config, pad)
}

/// The config the kernels run (its scale fixed for the true head dim) and the head dim
/// padded to `multiple`.
pub(crate) fn padded_config(
    head_dim: usize,
    multiple: usize,
    config: &MobaConfig,
) -> (MobaConfig, usize) {
    let shape = Shape {
        head_dim,
        ..Shape::prefill(1, 1, 1, head_dim)
    };
    let (padded, config) = shape.padded(config, multiple);
    (config, padded.head_dim)
}

/// The first `head_dim` columns of a padded result.
pub(crate) fn unpad<B: Backend>(tensor: FloatTensor<B>, head_dim: usize) -> FloatTensor<B> {
    let tensor = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(tensor));
    let [b, h, l, d] = tensor.dims();
    if d == head_dim {
        return tensor.into_primitive().tensor();
    }
    tensor
        .slice([0..b, 0..h, 0..l, 0..head_dim])
        .into_primitive()
        .tensor()
}

/// What NSA's selection kernels (`nsa_select.wgsl`, `nsa.cu`) read, from q `[B, Hq, S, D]`
/// at the last `S` of `kv_len` positions, the pooled keys `[B, Hkv, nc, D]` and the
/// compressed branch's lse `[B, Hq, S]`.
pub(crate) struct NsaSelectInputs<R: Runtime> {
    /// q and the pooled keys in the kernel's float type, contiguous, the head dim padded to
    /// the kernels' multiple; the lse in f32, contiguous.
    pub q: CubeTensor<R>,
    pub pooled_keys: CubeTensor<R>,
    pub lse: CubeTensor<R>,
    /// The problem at the padded head dim.
    pub shape: Shape,
    /// MoBA's view of it: blocks of `l'`, top-n, the true head dim's scale.
    pub config: MobaConfig,
    /// The pooled keys' count, `nc`.
    pub pooled: usize,
    /// The output the kernel writes: Int `[B, Hkv, S, top_n]`.
    pub selection: CubeTensor<R>,
}

/// [`NsaSelectInputs`] for a kernel backend whose kernels pad the head dim to `multiple`
/// and read q and the pooled keys as `dtype`.
pub(crate) fn nsa_select_inputs<R: Runtime, B: KernelBackend<R>>(
    [q, pooled_keys, lse]: [CubeTensor<R>; 3],
    kv_len: usize,
    config: &NsaConfig,
    multiple: usize,
    dtype: DType,
) -> NsaSelectInputs<R> {
    let head_dim = q.meta.shape()[3];
    let scale = config.scale_for(head_dim);
    let moba = MobaConfig::new(config.select_block, config.top_n).with_scale(scale);
    let (moba, pad) = padding::<B>(head_dim, multiple, &moba);
    let [q, pooled_keys] = [q, pooled_keys].map(|t| into_contiguous(cast(pad(t), dtype)));
    let [batch, q_heads, q_len, padded] = q.meta.shape().dims::<4>();
    let [_, kv_heads, pooled, _] = pooled_keys.meta.shape().dims::<4>();
    let selection = empty(&q, vec![batch, kv_heads, q_len, config.top_n], DType::I32);
    NsaSelectInputs {
        q,
        pooled_keys,
        lse: into_contiguous(cast(lse, DType::F32)),
        shape: Shape {
            batch,
            q_heads,
            kv_heads,
            q_len,
            kv_len,
            head_dim: padded,
        },
        config: moba,
        pooled,
        selection,
    }
}
