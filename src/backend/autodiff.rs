//! MoBA under burn's autodiff: the forward of the inner backend, recorded with a custom
//! backward that calls the inner backend's `moba_backward`.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::{FloatTensor, IntTensor};

use super::{ForwardGiven, MobaBackend, MobaForwardOutput, MobaGradients, MobaSaved, RowMove};
use crate::config::{MobaConfig, NsaConfig, Shape};
use crate::error::Result;

/// The backward node of one MoBA call; its state is what the backward reads.
#[derive(Debug)]
struct MobaBackwardNode {
    config: MobaConfig,
}

impl<B: MobaBackend> Backward<B, 3> for MobaBackwardNode {
    type State = MobaSaved<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dout = grads.consume::<B>(&ops.node);
        let MobaGradients { dq, dk, dv } = B::moba_backward(ops.state, dout, &self.config);
        for (parent, gradient) in ops.parents.iter().zip([dq, dk, dv]) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, gradient);
            }
        }
    }
}

/// The backward node of one row move; its state is the move back.
#[derive(Debug)]
struct MoveRowsBackwardNode;

impl<B: MobaBackend> Backward<B, 1> for MoveRowsBackwardNode {
    type State = RowMove<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        if let [Some(node)] = &ops.parents {
            grads.register::<B>(node.id, B::moba_move_rows(grad, ops.state));
        }
    }
}

impl<B: MobaBackend, C: CheckpointStrategy> MobaBackend for Autodiff<B, C> {
    fn moba_prepare(shape: &Shape, config: &MobaConfig, device: &Self::Device) -> Result<()> {
        B::moba_prepare(shape, config, device)
    }

    /// The inner backend reads what is given; the block means get no gradient (the
    /// selection they make is a constant, DESIGN §1.6).
    fn moba_forward_given(
        qkv: [FloatTensor<Self>; 3],
        given: ForwardGiven<Self>,
        config: &MobaConfig,
    ) -> MobaForwardOutput<Self> {
        let inner = qkv.each_ref().map(|t| t.primitive.clone());
        let given = ForwardGiven {
            means: given.means.map(|means| means.primitive),
            sequence_starts: given.sequence_starts,
            selection: given.selection,
        };
        let out = B::moba_forward_given(inner, given, config);
        record(qkv, out, config)
    }

    /// The inner backend's; the backward reads the per-head selection it returns.
    fn moba_forward_group_selection(
        qkv: [FloatTensor<Self>; 3],
        selection: IntTensor<Self>,
        config: &MobaConfig,
    ) -> MobaForwardOutput<Self> {
        let inner = qkv.each_ref().map(|t| t.primitive.clone());
        let out = B::moba_forward_group_selection(inner, selection, config);
        record(qkv, out, config)
    }

    fn moba_backward(
        saved: MobaSaved<Self>,
        dout: FloatTensor<Self>,
        config: &MobaConfig,
    ) -> MobaGradients<Self> {
        // Gradients of gradients are not tracked: the inner backward, as constants.
        let inner = B::moba_backward(
            MobaSaved {
                q: saved.q.primitive,
                k: saved.k.primitive,
                v: saved.v.primitive,
                o: saved.o.primitive,
                lse: saved.lse.primitive,
                selection: saved.selection,
            },
            dout.primitive,
            config,
        );
        MobaGradients {
            dq: Self::from_inner(inner.dq),
            dk: Self::from_inner(inner.dk),
            dv: Self::from_inner(inner.dv),
        }
    }

    /// The inner backend's move; its gradient moves rows back.
    fn moba_move_rows(x: FloatTensor<Self>, rows: RowMove<Self>) -> FloatTensor<Self> {
        let node = x.node.clone();
        let rows = RowMove::<B> {
            sources: rows.sources,
            destinations: rows.destinations,
        };
        let back = rows.clone().reversed();
        let moved = B::moba_move_rows(x.primitive, rows);
        match MoveRowsBackwardNode
            .prepare::<C>([node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(back, moved),
            OpsKind::UnTracked(prep) => prep.finish(moved),
        }
    }

    fn nsa_selects_on_device(shape: &Shape, config: &NsaConfig) -> bool {
        B::nsa_selects_on_device(shape, config)
    }

    fn moba_moves_between_devices() -> bool {
        B::moba_moves_between_devices()
    }

    /// The inner backend's, on the inner tensors: a selection has no gradient.
    fn nsa_select(
        q: FloatTensor<Self>,
        pooled_keys: FloatTensor<Self>,
        compressed_lse: FloatTensor<Self>,
        kv_len: usize,
        config: &NsaConfig,
    ) -> IntTensor<Self> {
        B::nsa_select(
            q.primitive,
            pooled_keys.primitive,
            compressed_lse.primitive,
            kv_len,
            config,
        )
    }
}

/// The inner forward's outputs on the tape: o with the backward node (saving what
/// `moba_backward` reads) where q, k or v is tracked.
fn record<B: MobaBackend, C: CheckpointStrategy>(
    qkv: [FloatTensor<Autodiff<B, C>>; 3],
    out: MobaForwardOutput<B>,
    config: &MobaConfig,
) -> MobaForwardOutput<Autodiff<B, C>> {
    // lse and the selection are results, not differentiable outputs.
    let lse = Autodiff::<B, C>::from_inner(out.lse.clone());
    let node = MobaBackwardNode { config: *config };
    let o = match node
        .prepare::<C>(qkv.each_ref().map(|t| t.node.clone()))
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let [q, k, v] = qkv;
            let saved = MobaSaved {
                q: q.primitive,
                k: k.primitive,
                v: v.primitive,
                o: out.o.clone(),
                lse: out.lse,
                selection: out.selection.clone(),
            };
            prep.finish(saved, out.o)
        }
        OpsKind::UnTracked(prep) => prep.finish(out.o),
    };
    MobaForwardOutput {
        o,
        lse,
        selection: out.selection,
    }
}
