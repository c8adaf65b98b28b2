//! MoBA on burn's ndarray (CPU) backend: the generic tensor-op implementation.

use burn::backend::NdArray;
use burn::backend::ndarray::{
    FloatNdArrayElement, IntNdArrayElement, NdArrayTensor, QuantElement, SharedArray,
};
use burn::tensor::ops::FloatTensor;

use super::{ForwardGiven, MobaBackend, MobaForwardOutput, MobaGradients, MobaSaved, generic};
use crate::config::{MobaConfig, Shape};
use crate::error::Result;

impl<E: FloatNdArrayElement, I: IntNdArrayElement, Q: QuantElement> MobaBackend for NdArray<E, I, Q>
where
    NdArrayTensor: From<SharedArray<E>>,
    NdArrayTensor: From<SharedArray<I>>,
{
    fn moba_prepare(shape: &Shape, config: &MobaConfig, _: &Self::Device) -> Result<()> {
        generic::check_memory(shape, config)
    }

    fn moba_forward_given(
        qkv: [FloatTensor<Self>; 3],
        given: ForwardGiven<Self>,
        config: &MobaConfig,
    ) -> MobaForwardOutput<Self> {
        generic::forward(qkv, given, config)
    }

    fn moba_backward(
        saved: MobaSaved<Self>,
        dout: FloatTensor<Self>,
        config: &MobaConfig,
    ) -> MobaGradients<Self> {
        generic::backward(saved, dout, config)
    }
}
