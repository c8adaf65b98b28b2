//! The MoBA backward on wgpu buffers: dq, dk and dv from a forward's saved o, lse and
//! selection, with the selection held constant (DESIGN §1.6).

use super::forward::{ForwardBuffers, ForwardPass};
use super::pass::{Pass, PlannedPass};

/// The buffers of one backward, row-major f32 unless noted: the forward's (its inputs and
/// saved outputs), then `dout, dq: [B, Hq, S, D]`, `dk, dv: [B, Hkv, Sk, D]`. Every one
/// needs `STORAGE` usage; `dq`, `dk` and `dv` are written whole (dk and dv are zero where no
/// query chose the key's block).
pub struct BackwardBuffers<'a> {
    pub forward: ForwardBuffers<'a>,
    pub dout: &'a wgpu::Buffer,
    pub dq: &'a wgpu::Buffer,
    pub dk: &'a wgpu::Buffer,
    pub dv: &'a wgpu::Buffer,
}

impl<'a> ForwardBuffers<'a> {
    /// A backward's buffers: this forward's, `dout` and the gradients.
    pub fn with_gradients(
        &self,
        dout: &'a wgpu::Buffer,
        dq: &'a wgpu::Buffer,
        dk: &'a wgpu::Buffer,
        dv: &'a wgpu::Buffer,
    ) -> BackwardBuffers<'a> {
        BackwardBuffers {
            forward: *self,
            dout,
            dq,
            dk,
            dv,
        }
    }
}

/// A MoBA backward planned for one shape and config on one adapter.
///
/// Deterministic: dq sums each row's blocks in slot order, dk and dv sum the rows that chose
/// a block in a fixed order (row order in the portable kernel, slot then row order in the
/// cooperative one), and no float atomics are used, so two runs give the same bits.
/// Memory beyond the caller's buffers: the selection inversion (`4 * top_k` bytes per row)
/// and two floats per row, never `S x S`.
///
/// ```no_run
/// use moba::{MobaConfig, Shape, gpu::{ForwardIo, GpuContext, MobaBackward, MobaForward}};
/// let gpu = GpuContext::new_blocking(&Default::default())?;
/// let (shape, config) = (Shape::prefill(1, 2, 512, 64), MobaConfig::new(64, 3));
/// let q = moba::random::normal(shape.q_elems(), 1);
/// let kv = moba::random::normal(shape.kv_elems(), 2);
/// let io = ForwardIo::new(&gpu, &q, &kv, &kv, shape.q_rows(), config.top_k);
/// let (dout, dq) = (gpu.upload("dout", &q), gpu.poisoned("dq", shape.q_elems()));
/// let (dk, dv) = (gpu.poisoned("dk", shape.kv_elems()), gpu.poisoned("dv", shape.kv_elems()));
/// let mut encoder = gpu.device().create_command_encoder(&Default::default());
/// MobaForward::new(&gpu, &shape, &config)?.encode(&mut encoder, &io.buffers())?;
/// let grads = io.buffers().with_gradients(&dout, &dq, &dk, &dv);
/// MobaBackward::new(&gpu, &shape, &config)?.encode(&mut encoder, &grads)?;
/// gpu.submit_and_wait(encoder.finish())?;
/// # Ok::<(), moba::MobaError>(())
/// ```
///
/// [`new`](PlannedPass::new) takes the cooperative kernels where the adapter has them: they
/// round dout and the score gradients to f16 after scaling dout by a power of two (its largest
/// element into [0.5, 1)), so a training loss's small gradients keep f16's precision.
pub type MobaBackward = PlannedPass<BackwardPass>;

/// The backward kind of [`PlannedPass`].
pub struct BackwardPass;

impl Pass for BackwardPass {
    type Buffers<'a> = BackwardBuffers<'a>;
    const BACKWARD: bool = true;
    fn in_order<'a>(io: &Self::Buffers<'a>) -> Vec<&'a wgpu::Buffer> {
        let mut buffers = ForwardPass::in_order(&io.forward);
        buffers.extend([io.dout, io.dq, io.dk, io.dv]);
        buffers
    }
}
