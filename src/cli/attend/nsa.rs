//! `moba attend --attention nsa`: NSA's flags, its gates, and its computation
//! (`../shared/NSA.md`): the f64 reference, or burn's tensor ops (`moba::backend::nsa_attention`)
//! on burn's wgpu, ndarray or CUDA backend (no NSA kernels yet).

use std::path::{Path, PathBuf};

use clap::Args;
use moba::config::check_finite;
use moba::{MobaError, NsaConfig, Result, Shape, npy, reference};

use burn::backend::Autodiff;
use moba::backend::{MobaBackend, nsa_attention};
use moba::gpu::AdapterRequest;

use super::{
    Attention, Backend, Dtype, OnBurn, Outputs, Problem, burn_tensor, floats, missing_flags,
    on_burn_backend, to_f32,
};

/// NSA's flags: all required with `--attention nsa`, all refused with `--attention moba`.
#[derive(Args, Debug)]
#[command(next_help_heading = "NSA (--attention nsa)")]
pub(super) struct NsaArgs {
    /// Gates of the compressed, selected and window branches, per query head and row,
    /// f32 [B, Hq, S, 3] (the paper's sigmoid of a linear layer; the caller makes them).
    #[arg(long)]
    gates: Option<PathBuf>,
    /// Keys per compressed block, l (a multiple of --stride); its key and value are the
    /// means of the block's.
    #[arg(long, value_name = "L")]
    compress_block: Option<usize>,
    /// Distance between the starts of consecutive compressed blocks, d (blocks overlap
    /// when d < l).
    #[arg(long, value_name = "D")]
    stride: Option<usize>,
    /// Keys per selection block, l' (a multiple of --stride).
    #[arg(long, value_name = "L'")]
    select_block: Option<usize>,
    /// Selection blocks per GQA group and query, the forced ones (block 0, the current
    /// block and the one before it) included (>= 3).
    #[arg(long, value_name = "N")]
    top_n: Option<usize>,
    /// Keys of the sliding window, the query's own included (>= 1).
    #[arg(long, value_name = "W")]
    window: Option<usize>,
}

impl NsaArgs {
    /// Every NSA flag with whether it was given.
    fn flags(&self) -> [(&'static str, bool); 6] {
        [
            ("--gates", self.gates.is_some()),
            ("--compress-block", self.compress_block.is_some()),
            ("--stride", self.stride.is_some()),
            ("--select-block", self.select_block.is_some()),
            ("--top-n", self.top_n.is_some()),
            ("--window", self.window.is_some()),
        ]
    }

    /// The NSA flags given on the command line.
    pub(super) fn given(&self) -> Vec<&'static str> {
        self.flags()
            .into_iter()
            .filter_map(|(flag, given)| given.then_some(flag))
            .collect()
    }

    /// The checked config and the path of the gates; names every flag that is missing.
    pub(super) fn config(&self, scale: Option<f32>) -> Result<(NsaConfig, &Path)> {
        let (
            Some(gates),
            Some(compress_block),
            Some(stride),
            Some(select_block),
            Some(top_n),
            Some(window),
        ) = (
            &self.gates,
            self.compress_block,
            self.stride,
            self.select_block,
            self.top_n,
            self.window,
        )
        else {
            return Err(missing_flags(Attention::Nsa, &self.flags()));
        };
        let config = NsaConfig {
            scale,
            ..NsaConfig::new(compress_block, stride, select_block, top_n, window)
        };
        config.validate()?;
        Ok((config, gates))
    }
}

/// Reads the gates and checks their shape, `[B, Hq, S, 3]` of q's, and their values.
pub(super) fn read_gates(path: &Path, shape: &Shape) -> Result<Vec<f32>> {
    let gates = npy::read::<f32>(path)?;
    let expected = [shape.batch, shape.q_heads, shape.q_len, 3];
    if gates.shape != expected {
        return Err(MobaError::Config(format!(
            "gates has shape {:?}; NSA needs [B, Hq, S, 3] = {expected:?} (one gate per \
             branch for each query head and row of q)",
            gates.shape
        )));
    }
    check_finite("gates", &gates.data)?;
    Ok(gates.data)
}

/// NSA on `backend`: the forward and, given `dout`, the gradients (the selection held
/// constant), in f32.
pub(super) fn compute(
    backend: Backend,
    dtype: Dtype,
    request: &AdapterRequest,
    p: &Problem,
    config: &NsaConfig,
) -> Result<Outputs> {
    match backend {
        Backend::Reference => compute_reference(p, config),
        Backend::Wgpu => unreachable!("Method::from_args refuses NSA on the wgpu backend"),
        Backend::BurnWgpu | Backend::BurnNdarray | Backend::Cuda => {
            on_burn_backend(backend, dtype, request, p, config)
        }
    }
}

impl OnBurn for NsaConfig {
    fn on_burn<B: MobaBackend>(&self, device: &B::Device, p: &Problem) -> Result<Outputs> {
        compute_burn::<B>(device, p, self)
    }
}

/// The f64 reference, rounded to f32.
fn compute_reference(p: &Problem, config: &NsaConfig) -> Result<Outputs> {
    let Problem {
        q,
        k,
        v,
        gates,
        dout,
        shape,
        .. // NSA packs no sequences: --cu-seqlens is MoBA's flag
    } = *p;
    let gates = gates.expect("Method::Nsa reads the gates");
    let out = reference::nsa_forward(q, k, v, gates, shape, config)?;
    let grads = dout
        .map(|dout| reference::nsa_backward(q, k, v, gates, dout, shape, config))
        .transpose()?;
    Ok(Outputs {
        o: to_f32(&out.o),
        lse: None,
        selection: out.selection,
        grads: grads
            .as_ref()
            .map(|g| [to_f32(&g.dq), to_f32(&g.dk), to_f32(&g.dv)]),
        dgates: grads.map(|g| to_f32(&g.dgates)),
    })
}

/// NSA on `B` (its selected branch on `B`'s MoBA kernels), the gradients through
/// `Autodiff<B>`.
fn compute_burn<B: MobaBackend>(
    device: &B::Device,
    p: &Problem,
    config: &NsaConfig,
) -> Result<Outputs> {
    let Problem {
        q,
        k,
        v,
        gates,
        dout,
        shape,
        .. // NSA packs no sequences: --cu-seqlens is MoBA's flag
    } = *p;
    let gates = gates.expect("Method::Nsa reads the gates");
    let gate_dims = [shape.batch, shape.q_heads, shape.q_len, 3];
    let [qt, kt, vt, gt] = [
        (q, shape.q_dims()),
        (k, shape.kv_dims()),
        (v, shape.kv_dims()),
        (gates, gate_dims),
    ]
    .map(|(data, dims)| burn_tensor::<Autodiff<B>>(data, dims, device).require_grad());
    let out = nsa_attention(qt.clone(), kt.clone(), vt.clone(), gt.clone(), config)?;
    let grads = dout.map(|dout| {
        let dout = burn_tensor::<Autodiff<B>>(dout, shape.q_dims(), device);
        let gradients = (out.o.clone() * dout).sum().backward();
        [&qt, &kt, &vt, &gt].map(|t| floats(t.grad(&gradients).expect("a gradient").into_data()))
    });
    let selection = out.selection.into_data().convert::<i32>().to_vec();
    Ok(Outputs {
        o: floats(out.o.into_data()),
        lse: None,
        selection: selection.expect("i32 data"),
        grads: grads
            .as_ref()
            .map(|[dq, dk, dv, _]| [dq.clone(), dk.clone(), dv.clone()]),
        dgates: grads.map(|[_, _, _, dgates]| dgates),
    })
}
