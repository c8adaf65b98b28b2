//! PyTorch's peers beside our records: the JSON lines that `peers_torch.py` (PyTorch SDPA,
//! dense, and FlexAttention with the MoBA selection as a block mask) prints, read back so
//! that `moba bench report --peers` shows every ratio measured on the same GPU.
//!
//! ```
//! use moba::bench::peers::parse_peers;
//!
//! let log = "check S=2048 bs=256 k=3: rel err flex vs naive = 2.17e-03\n\
//!            {\"S\": 8192, \"bs\": 512, \"topk\": 3, \"H\": 16, \"D\": 128, \"sdpa_ms\": 0.52, \"flex_total_ms\": 4.9, \"density\": 0.289}\n\
//!            {\"S\": 8192, \"bs\": 512, \"topk\": 3, \"train\": true, \"sdpa_fwdbwd_ms\": 2.07, \"flex_fwdbwd_ms\": 9.09}\n";
//! let peers = parse_peers(log, "peers.log")?;
//! assert_eq!(peers.len(), 1);                       // the forward and training lines merge
//! assert_eq!((peers[0].heads, peers[0].sdpa_step_ms), (16, Some(2.07)));
//! # Ok::<(), moba::MobaError>(())
//! ```

use std::fmt::Write;

use serde::Deserialize;

use super::{Record, ms_cell};
use crate::error::{MobaError, Result};

/// One problem the peers script measured: its forward line and, where it ran one, its
/// training-step line.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    pub seq_len: usize,
    pub block_size: usize,
    pub top_k: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub density: f64,
    /// `scaled_dot_product_attention(is_causal=True)`: dense.
    pub sdpa_ms: f64,
    /// FlexAttention-MoBA: gate, block-mask build and attention.
    pub flex_ms: f64,
    pub sdpa_step_ms: Option<f64>,
    pub flex_step_ms: Option<f64>,
}

/// A line of the script as printed: forward lines carry H, D and the forward times,
/// training lines (`"train": true`) the forward + backward times.
#[derive(Deserialize)]
struct Line {
    #[serde(rename = "S")]
    seq_len: usize,
    #[serde(rename = "bs")]
    block_size: usize,
    #[serde(rename = "topk")]
    top_k: usize,
    #[serde(rename = "H")]
    heads: Option<usize>,
    #[serde(rename = "D")]
    head_dim: Option<usize>,
    density: Option<f64>,
    sdpa_ms: Option<f64>,
    flex_total_ms: Option<f64>,
    sdpa_fwdbwd_ms: Option<f64>,
    flex_fwdbwd_ms: Option<f64>,
}

/// The peers in the script's output `text` (from the file `name`, for errors). Lines that
/// are not JSON objects (its progress and checks) are skipped; a JSON line that is not a
/// peer line, or a training line without its forward line, is an error naming the line.
pub fn parse_peers(text: &str, name: &str) -> Result<Vec<Peer>> {
    let at = |number: usize, message: String| MobaError::Io {
        path: format!("{name}:{}", number + 1),
        error: message.into(),
    };
    let mut peers: Vec<Peer> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if !line.trim_start().starts_with('{') {
            continue;
        }
        let line: Line = serde_json::from_str(line)
            .map_err(|e| at(number, format!("not a line of peers_torch.py: {e}")))?;
        let key = (line.seq_len, line.block_size, line.top_k);
        let same = |p: &&mut Peer| (p.seq_len, p.block_size, p.top_k) == key;
        match (line.sdpa_ms, line.flex_total_ms, line.heads, line.head_dim) {
            (Some(sdpa_ms), Some(flex_ms), Some(heads), Some(head_dim)) => peers.push(Peer {
                seq_len: line.seq_len,
                block_size: line.block_size,
                top_k: line.top_k,
                heads,
                head_dim,
                density: line.density.unwrap_or(f64::NAN),
                sdpa_ms,
                flex_ms,
                sdpa_step_ms: None,
                flex_step_ms: None,
            }),
            _ => {
                let peer =
                    peers.iter_mut().rev().find(same).ok_or_else(|| {
                        at(number, "a training line before its forward line".into())
                    })?;
                peer.sdpa_step_ms = line.sdpa_fwdbwd_ms;
                peer.flex_step_ms = line.flex_fwdbwd_ms;
            }
        }
    }
    Ok(peers)
}

/// A markdown table: each peer problem with every record of the same problem (S, heads,
/// head dim, block, top-k) and the ratios of the peers' times over ours (above 1: ours is
/// faster), forward and training step. A problem no record measured gets one row of peers.
pub fn peers_table(records: &[Record], peers: &[Peer]) -> String {
    let mut table = String::from(
        "| S | H | D | block | top_k | density | SDPA ms | Flex-MoBA ms | MoBA (adapter, kernel) | MoBA ms | vs SDPA | vs Flex | SDPA fwd+bwd | Flex fwd+bwd | MoBA fwd+bwd | vs SDPA | vs Flex |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let ratio = |peer: Option<f64>, ours: Option<f64>| match (peer, ours) {
        (Some(peer), Some(ours)) => format!("{:.2}x", peer / ours),
        _ => "-".to_string(),
    };
    for peer in peers {
        let mine: Vec<&Record> = records
            .iter()
            .filter(|r| {
                (r.seq_len, r.q_heads, r.head_dim, r.block_size, r.top_k)
                    == (
                        peer.seq_len,
                        peer.heads,
                        peer.head_dim,
                        peer.block_size,
                        peer.top_k,
                    )
            })
            .collect();
        let ours: Vec<Option<&Record>> = match mine.is_empty() {
            true => vec![None],
            false => mine.into_iter().map(Some).collect(),
        };
        for record in ours {
            let forward = record.map(|r| r.moba_ms);
            let step = record.and_then(|r| r.step_ms);
            let _ = writeln!(
                table,
                "| {} | {} | {} | {} | {} | {:.3} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                peer.seq_len,
                peer.heads,
                peer.head_dim,
                peer.block_size,
                peer.top_k,
                peer.density,
                peer.sdpa_ms,
                peer.flex_ms,
                record.map_or("-".to_string(), |r| format!("{}, {}", r.adapter, r.kernel)),
                ms_cell(forward),
                ratio(Some(peer.sdpa_ms), forward),
                ratio(Some(peer.flex_ms), forward),
                ms_cell(peer.sdpa_step_ms),
                ms_cell(peer.flex_step_ms),
                ms_cell(step),
                ratio(peer.sdpa_step_ms, step),
                ratio(peer.flex_step_ms, step),
            );
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "check S=2048 bs=256 k=3: rel err flex vs naive = 2.17e-03\n\
        {\"S\": 32768, \"bs\": 512, \"topk\": 3, \"H\": 16, \"D\": 128, \"sdpa_ms\": 6.8, \"flex_total_ms\": 42.0, \"density\": 0.0767}\n\
        {\"S\": 32768, \"bs\": 512, \"topk\": 3, \"train\": true, \"sdpa_fwdbwd_ms\": 28.0, \"flex_fwdbwd_ms\": 94.0}\n\
        {\"S\": 131072, \"bs\": 4096, \"topk\": 12, \"H\": 16, \"D\": 128, \"sdpa_ms\": 126.0, \"flex_total_ms\": 394.0, \"density\": 0.59}\n";

    fn record(seq_len: usize, block_size: usize, top_k: usize) -> Record {
        Record {
            machine: "linux x86_64".into(),
            adapter: "GPU".into(),
            backend: "CUDA".into(),
            device_type: "DiscreteGpu".into(),
            driver: "d".into(),
            kernel: "cuda-bf16".into(),
            pass: "forward".into(),
            batch: 1,
            seq_len,
            kv_len: seq_len,
            q_heads: 16,
            kv_heads: 16,
            head_dim: 128,
            block_size,
            top_k,
            runs: 5,
            density: 0.0767,
            attended_pairs: 1,
            moba_ms: 4.0,
            moba_tflops: 1.0,
            dense_ms: None,
            stage_ms: None,
            o_error: 1e-3,
            o_bound: None,
            passed: None,
            step_ms: Some(14.0),
            step_tflops: None,
            backward_stage_ms: None,
            memory_bytes: None,
            dense_fallback_bytes: None,
            bytes_per_cached_token: None,
            burn_ms: None,
        }
    }

    #[test]
    fn forward_and_training_lines_merge_and_ratios_are_peer_over_ours() {
        let peers = parse_peers(LOG, "peers.log").unwrap();
        assert_eq!(peers.len(), 2);
        assert_eq!(
            (peers[0].sdpa_step_ms, peers[0].flex_step_ms),
            (Some(28.0), Some(94.0))
        );
        assert_eq!(peers[1].sdpa_step_ms, None);
        let table = peers_table(&[record(32768, 512, 3)], &peers);
        let rows: Vec<&str> = table.lines().skip(2).collect();
        assert_eq!(rows.len(), 2, "{table}");
        // 6.8 / 4 = 1.70, 42 / 4 = 10.50; 28 / 14 = 2.00, 94 / 14 = 6.71.
        assert!(rows[0].contains("| 1.70x | 10.50x |"), "{}", rows[0]);
        assert!(
            rows[0].ends_with("| 14.00 | 2.00x | 6.71x |"),
            "{}",
            rows[0]
        );
        // No record of the 128K problem: the peers alone.
        assert!(
            rows[1].starts_with("| 131072 |") && rows[1].contains("| - | - |"),
            "{}",
            rows[1]
        );
    }

    #[test]
    fn a_bad_json_line_and_an_orphan_training_line_name_their_line() {
        let err = parse_peers("progress\n{\"S\": 1}\n", "p.log").unwrap_err();
        assert!(err.to_string().contains("p.log:2"), "{err}");
        let orphan = "{\"S\": 8, \"bs\": 4, \"topk\": 1, \"train\": true, \"sdpa_fwdbwd_ms\": 1.0}";
        let err = parse_peers(orphan, "p.log").unwrap_err();
        assert!(
            err.to_string().contains("p.log:1") && err.to_string().contains("before its forward"),
            "{err}"
        );
    }
}
