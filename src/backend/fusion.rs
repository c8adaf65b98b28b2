//! MoBA on burn's `Fusion` backend (burn's default `Wgpu` is `Fusion<CubeBackend<..>>`):
//! each call is registered as a custom operation in the fusion stream, and runs the inner
//! backend's MoBA (the WGSL kernels) when the stream executes it.

use std::marker::PhantomData;

use burn::backend::ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{DType, Element, Shape};
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionBackend, FusionRuntime};

use super::{ForwardGiven, MobaBackend, MobaForwardOutput, MobaGradients, MobaSaved};
use crate::config::{MobaConfig, NsaConfig};

type Handles<B> =
    HandleContainer<<<B as FusionBackend>::FusionRuntime as FusionRuntime>::FusionHandle>;

/// The forward as a fusion operation: inputs q, k, v, then the block means, the sequence
/// starts and the selection where given; outputs o, lse, selection.
#[derive(Debug)]
struct ForwardOp<B> {
    desc: CustomOpIr,
    config: MobaConfig,
    /// Which of the means, the sequence starts and the selection are inputs.
    given: [bool; 3],
    /// Whether the given selection is each GQA group's
    /// ([`MobaBackend::moba_forward_group_selection`]).
    group_selection: bool,
    _backend: PhantomData<B>,
}

impl<B: FusionBackend + MobaBackend> Operation<B::FusionRuntime> for ForwardOp<B> {
    fn execute(&self, handles: &mut Handles<B>) {
        let [o, lse, selection] = self.desc.outputs.as_slice() else {
            unreachable!("the forward declares three outputs")
        };
        let mut inputs = self.desc.inputs.iter();
        let mut next = || inputs.next().expect("an input for each tensor given");
        let qkv = [next(), next(), next()].map(|ir| handles.get_float_tensor::<B>(ir));
        let [means, starts, chosen] = self.given;
        let given = ForwardGiven {
            means: means.then(|| handles.get_float_tensor::<B>(next())),
            sequence_starts: starts.then(|| handles.get_int_tensor::<B>(next())),
            selection: chosen.then(|| handles.get_int_tensor::<B>(next())),
        };
        let out = match (self.group_selection, given.selection) {
            (true, Some(selection)) => {
                B::moba_forward_group_selection(qkv, selection, &self.config)
            }
            (_, selection) => {
                let given = ForwardGiven { selection, ..given };
                B::moba_forward_given(qkv, given, &self.config)
            }
        };
        handles.register_float_tensor::<B>(&o.id, out.o);
        handles.register_float_tensor::<B>(&lse.id, out.lse);
        handles.register_int_tensor::<B>(&selection.id, out.selection);
    }
}

/// The backward as a fusion operation: inputs q, k, v, o, lse, selection, dout; outputs dq,
/// dk, dv.
#[derive(Debug)]
struct BackwardOp<B> {
    desc: CustomOpIr,
    config: MobaConfig,
    _backend: PhantomData<B>,
}

impl<B: FusionBackend + MobaBackend> Operation<B::FusionRuntime> for BackwardOp<B> {
    fn execute(&self, handles: &mut Handles<B>) {
        let ([q, k, v, o, lse, selection, dout], [dq, dk, dv]) = self.desc.as_fixed();
        let saved = MobaSaved {
            q: handles.get_float_tensor::<B>(q),
            k: handles.get_float_tensor::<B>(k),
            v: handles.get_float_tensor::<B>(v),
            o: handles.get_float_tensor::<B>(o),
            lse: handles.get_float_tensor::<B>(lse),
            selection: handles.get_int_tensor::<B>(selection),
        };
        let grads = B::moba_backward(saved, handles.get_float_tensor::<B>(dout), &self.config);
        handles.register_float_tensor::<B>(&dq.id, grads.dq);
        handles.register_float_tensor::<B>(&dk.id, grads.dk);
        handles.register_float_tensor::<B>(&dv.id, grads.dv);
    }
}

/// NSA's selection as a fusion operation: inputs q, the pooled keys and the compressed
/// branch's lse; output the selection.
#[derive(Debug)]
struct NsaSelectOp<B> {
    desc: CustomOpIr,
    kv_len: usize,
    config: NsaConfig,
    _backend: PhantomData<B>,
}

impl<B: FusionBackend + MobaBackend> Operation<B::FusionRuntime> for NsaSelectOp<B> {
    fn execute(&self, handles: &mut Handles<B>) {
        let ([q, pooled_keys, lse], [selection]) = self.desc.as_fixed();
        let chosen = B::nsa_select(
            handles.get_float_tensor::<B>(q),
            handles.get_float_tensor::<B>(pooled_keys),
            handles.get_float_tensor::<B>(lse),
            self.kv_len,
            &self.config,
        );
        handles.register_int_tensor::<B>(&selection.id, chosen);
    }
}

impl<B: FusionBackend + MobaBackend> MobaBackend for Fusion<B> {
    fn moba_prepare(
        shape: &crate::config::Shape,
        config: &MobaConfig,
        device: &Self::Device,
    ) -> crate::error::Result<()> {
        B::moba_prepare(shape, config, device)
    }

    fn moba_forward_given(
        qkv: [FloatTensor<Self>; 3],
        given: ForwardGiven<Self>,
        config: &MobaConfig,
    ) -> MobaForwardOutput<Self> {
        register_forward::<B>(qkv, given, config, false)
    }

    fn moba_forward_group_selection(
        qkv: [FloatTensor<Self>; 3],
        selection: IntTensor<Self>,
        config: &MobaConfig,
    ) -> MobaForwardOutput<Self> {
        let given = ForwardGiven {
            selection: Some(selection),
            ..ForwardGiven::none()
        };
        register_forward::<B>(qkv, given, config, true)
    }

    fn moba_backward(
        saved: MobaSaved<Self>,
        dout: FloatTensor<Self>,
        config: &MobaConfig,
    ) -> MobaGradients<Self> {
        let client = saved.q.client.clone();
        let inputs = [
            &saved.q,
            &saved.k,
            &saved.v,
            &saved.o,
            &saved.lse,
            &saved.selection,
            &dout,
        ];
        let streams = OperationStreams::with_inputs(inputs);
        let output = |like: &FloatTensor<Self>| {
            TensorIr::uninit(client.create_empty_handle(), like.shape.clone(), like.dtype)
        };
        let outputs = [output(&saved.q), output(&saved.k), output(&saved.v)];
        let desc = CustomOpIr::new(
            "moba_backward",
            &inputs.map(|tensor| tensor.clone().into_ir()),
            &outputs,
        );
        let op = BackwardOp::<B> {
            desc: desc.clone(),
            config: *config,
            _backend: PhantomData,
        };
        let [dq, dk, dv] = client
            .register(streams, OperationIr::Custom(desc), op)
            .try_into()
            .expect("the backward declares three outputs");
        MobaGradients { dq, dk, dv }
    }

    fn nsa_selects_on_device(shape: &crate::config::Shape, config: &NsaConfig) -> bool {
        B::nsa_selects_on_device(shape, config)
    }

    fn moba_moves_between_devices() -> bool {
        B::moba_moves_between_devices()
    }

    fn nsa_select(
        q: FloatTensor<Self>,
        pooled_keys: FloatTensor<Self>,
        compressed_lse: FloatTensor<Self>,
        kv_len: usize,
        config: &NsaConfig,
    ) -> IntTensor<Self> {
        let client = q.client.clone();
        let inputs = [&q, &pooled_keys, &compressed_lse];
        let streams = OperationStreams::with_inputs(inputs);
        let [b, _, s, _] = q.shape.dims::<4>();
        let groups = pooled_keys.shape.dims::<4>()[1];
        let dims = Shape::from(vec![b, groups, s, config.top_n]);
        let output = TensorIr::uninit(client.create_empty_handle(), dims, B::IntElem::dtype());
        let desc = CustomOpIr::new(
            "nsa_select",
            &inputs.map(|tensor| tensor.clone().into_ir()),
            &[output],
        );
        let op = NsaSelectOp::<B> {
            desc: desc.clone(),
            kv_len,
            config: *config,
            _backend: PhantomData,
        };
        let [selection] = client
            .register(streams, OperationIr::Custom(desc), op)
            .try_into()
            .expect("the selection is the one output");
        selection
    }
}

/// Registers the forward in the fusion stream: its inputs are q, k, v and what is given
/// (the selection each GQA group's where `group_selection`; the output's is per head).
fn register_forward<B: FusionBackend + MobaBackend>(
    qkv: [FloatTensor<Fusion<B>>; 3],
    given: ForwardGiven<Fusion<B>>,
    config: &MobaConfig,
    group_selection: bool,
) -> MobaForwardOutput<Fusion<B>> {
    let flags = [
        given.means.is_some(),
        given.sequence_starts.is_some(),
        given.selection.is_some(),
    ];
    // Float and int tensors of `Fusion` are the same type.
    let inputs: Vec<_> = (qkv.into_iter())
        .chain(given.means)
        .chain(given.sequence_starts)
        .chain(given.selection)
        .collect();
    let q = &inputs[0];
    let client = q.client.clone();
    let streams = OperationStreams::with_inputs(&inputs);
    let dims = q.shape.dims::<4>();
    let output = |dims: Vec<usize>, dtype: DType| {
        TensorIr::uninit(client.create_empty_handle(), Shape::from(dims), dtype)
    };
    let outputs = [
        output(dims.to_vec(), q.dtype),
        // Every kernel backend returns lse in f32, whatever the float type.
        output(dims[..3].to_vec(), DType::F32),
        output(
            vec![dims[0], dims[1], dims[2], config.top_k],
            B::IntElem::dtype(),
        ),
    ];
    let inputs: Vec<TensorIr> = inputs.into_iter().map(|t| t.into_ir()).collect();
    let desc = CustomOpIr::new("moba_forward", &inputs, &outputs);
    let op = ForwardOp::<B> {
        desc: desc.clone(),
        config: *config,
        given: flags,
        group_selection,
        _backend: PhantomData,
    };
    let [o, lse, selection] = client
        .register(streams, OperationIr::Custom(desc), op)
        .try_into()
        .expect("the forward declares three outputs");
    MobaForwardOutput { o, lse, selection }
}
