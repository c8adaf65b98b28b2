//! `moba attend --attention nsa`: NSA's flags, its gates, and its computation
//! (`../shared/NSA.md`), on the reference backend so far.

use std::path::{Path, PathBuf};

use clap::Args;
use moba::config::check_finite;
use moba::{MobaError, NsaConfig, Result, Shape, npy, reference};

use super::{Attention, Outputs, Problem, missing_flags, to_f32};

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

/// NSA on the reference backend: the forward and, given `dout`, the gradients (the
/// selection held constant), rounded to f32.
pub(super) fn compute(p: &Problem, config: &NsaConfig) -> Result<Outputs> {
    let Problem {
        q,
        k,
        v,
        gates,
        dout,
        shape,
    } = *p;
    let gates = gates.ok_or_else(|| missing_flags(Attention::Nsa, &[("--gates", false)]))?;
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
