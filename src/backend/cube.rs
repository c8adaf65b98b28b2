//! What the kernel backends (burn-wgpu's WGSL, burn-cuda's CUDA) share: new tensors on a
//! device, the problem shape of q and k, and head-dim padding to the kernels' multiple.

use burn::backend::wgpu::CubeTensor;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Shape as TensorShape, Tensor, TensorPrimitive};
use burn_cubecl::CubeRuntime as Runtime;

use crate::config::{MobaConfig, Shape};

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
    let (q, k) = (q.meta.shape(), k.meta.shape());
    Shape {
        batch: q[0],
        q_heads: q[1],
        kv_heads: k[1],
        q_len: q[2],
        kv_len: k[2],
        head_dim: q[3],
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
    let config = config.with_scale(config.scale_for(head_dim));
    (config, head_dim.next_multiple_of(multiple))
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
