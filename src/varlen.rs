//! Varlen batches: sequences of different lengths packed into one batch entry, told apart by
//! cumulative offsets (`cu_seqlens`, as flash-attn's varlen API: sequence `i` is tokens
//! `cu_seqlens[i]..cu_seqlens[i + 1]`).
//!
//! MoBA runs a packed batch by laying every sequence out from a block boundary, the gaps
//! zero ([`Packing`]), so that no block holds keys of two sequences, and by giving the gate
//! the first block of each block's sequence: a causal row ranks only the earlier blocks of
//! its own sequence and attends its own block up to itself, so nothing crosses a boundary.
//! A sequence costs at most `block_size - 1` gap tokens. The backward needs nothing more:
//! it reads the forward's selection. Causal attention only (a non-causal row would attend
//! the gaps of its last block).
//!
//! ```
//! use moba::varlen::Packing;
//!
//! // Three sequences of 3, 5 and 1 tokens in blocks of 4.
//! let packing = Packing::new(&[0, 3, 8, 9], 4)?;
//! assert_eq!(packing.tokens(), 9);
//! assert_eq!(packing.aligned_len(), 16); // 4 + 8 + 4
//! assert_eq!(packing.aligned_positions(), [0, 1, 2, 4, 5, 6, 7, 8, 12]);
//! assert_eq!(packing.sequence_starts(), [0, 1, 1, 3]);
//! # Ok::<(), moba::MobaError>(())
//! ```

use std::ops::Range;

use crate::config::{MobaConfig, Shape};
use crate::error::{MobaError, Result};

/// The block-aligned layout of a varlen batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packing {
    cu_seqlens: Vec<usize>,
    block_size: usize,
    /// The aligned position of each sequence's first token, and the aligned length last.
    aligned_starts: Vec<usize>,
}

impl Packing {
    /// The layout of the sequences `cu_seqlens` delimit (`0 = c0 <= c1 <= ... <= cn`, the
    /// packed tokens `cn`; empty sequences are allowed) in blocks of `block_size`.
    pub fn new(cu_seqlens: &[usize], block_size: usize) -> Result<Self> {
        if block_size == 0 {
            return Err(MobaError::Config("block_size must be >= 1".into()));
        }
        match cu_seqlens {
            [] | [_] => {
                return Err(MobaError::Config(format!(
                    "cu_seqlens needs at least two offsets (0 and the token count), got {cu_seqlens:?}"
                )));
            }
            [first, ..] if *first != 0 => {
                return Err(MobaError::Config(format!(
                    "cu_seqlens must start at 0, got {first}"
                )));
            }
            _ => {}
        }
        if let Some(at) = cu_seqlens.windows(2).position(|w| w[1] < w[0]) {
            return Err(MobaError::Config(format!(
                "cu_seqlens must not decrease: offset {} is {} after {}",
                at + 1,
                cu_seqlens[at + 1],
                cu_seqlens[at]
            )));
        }
        let mut aligned_starts = vec![0];
        for w in cu_seqlens.windows(2) {
            let len = (w[1] - w[0]).next_multiple_of(block_size);
            aligned_starts.push(aligned_starts.last().unwrap() + len);
        }
        Ok(Self {
            cu_seqlens: cu_seqlens.to_vec(),
            block_size,
            aligned_starts,
        })
    }

    /// Packed tokens: the last offset.
    pub fn tokens(&self) -> usize {
        *self.cu_seqlens.last().expect("checked in new")
    }

    /// Number of sequences.
    pub fn sequences(&self) -> usize {
        self.cu_seqlens.len() - 1
    }

    /// The packed tokens of sequence `i`.
    pub fn sequence(&self, i: usize) -> Range<usize> {
        self.cu_seqlens[i]..self.cu_seqlens[i + 1]
    }

    /// Length of the aligned layout: every sequence rounded up to whole blocks.
    pub fn aligned_len(&self) -> usize {
        *self.aligned_starts.last().expect("at least one offset")
    }

    /// The aligned position of every packed token, in order.
    pub fn aligned_positions(&self) -> Vec<usize> {
        (0..self.sequences())
            .flat_map(|i| {
                let start = self.aligned_starts[i];
                (0..self.sequence(i).len()).map(move |t| start + t)
            })
            .collect()
    }

    /// For each block of the aligned layout, the first block of its sequence (what the
    /// gate reads: [`crate::gpu::MobaForward::with_sequence_starts`]).
    pub fn sequence_starts(&self) -> Vec<u32> {
        let bs = self.block_size;
        self.aligned_starts
            .windows(2)
            .flat_map(|w| std::iter::repeat_n((w[0] / bs) as u32, (w[1] - w[0]) / bs))
            .collect()
    }

    /// Rows of `width` values of a packed `[heads, tokens, width]` tensor at their aligned
    /// positions in `[heads, aligned_len, width]`, the gaps `gap`.
    pub fn align<T: Copy>(&self, packed: &[T], heads: usize, width: usize, gap: T) -> Vec<T> {
        assert_eq!(packed.len(), heads * self.tokens() * width, "packed rows");
        let (tokens, len) = (self.tokens(), self.aligned_len());
        let mut aligned = vec![gap; heads * len * width];
        for (t, at) in self.aligned_positions().into_iter().enumerate() {
            for h in 0..heads {
                let from = (h * tokens + t) * width;
                let to = (h * len + at) * width;
                aligned[to..to + width].copy_from_slice(&packed[from..from + width]);
            }
        }
        aligned
    }

    /// The inverse of [`Self::align`]: the packed tokens' rows of an aligned tensor.
    pub fn pack<T: Copy>(&self, aligned: &[T], heads: usize, width: usize) -> Vec<T> {
        let len = self.aligned_len();
        assert_eq!(aligned.len(), heads * len * width, "aligned rows");
        let positions = self.aligned_positions();
        (0..heads)
            .flat_map(|h| {
                positions.iter().flat_map(move |&at| {
                    let from = (h * len + at) * width;
                    aligned[from..from + width].iter().copied()
                })
            })
            .collect()
    }

    /// A packed selection `[heads, tokens, top_k]` of aligned block ids made relative to
    /// each row's sequence (its first block is 0); -1 padding stays.
    pub fn selection_in_sequences(&self, selection: &mut [i32], heads: usize, top_k: usize) {
        let tokens = self.tokens();
        assert_eq!(selection.len(), heads * tokens * top_k, "packed selection");
        let first_blocks = self.first_blocks();
        for (row, ids) in selection.chunks_mut(top_k).enumerate() {
            let first = first_blocks[row % tokens];
            for id in ids.iter_mut().filter(|id| **id >= 0) {
                *id -= first;
            }
        }
    }

    /// The first aligned block of every packed token's sequence.
    pub(crate) fn first_blocks(&self) -> Vec<i32> {
        (0..self.sequences())
            .flat_map(|i| {
                let first = (self.aligned_starts[i] / self.block_size) as i32;
                std::iter::repeat_n(first, self.sequence(i).len())
            })
            .collect()
    }
}

/// The packing of a problem whose q and k hold the packed tokens (`shape`), and the shape of
/// its block-aligned layout, once the config, the offsets and the shape agree: a causal
/// config, batch 1, as many queries as keys, the last offset the token count.
pub(crate) fn packed_problem(
    shape: &Shape,
    cu_seqlens: &[usize],
    config: &MobaConfig,
) -> Result<(Packing, Shape)> {
    config.validate()?;
    check_causal(config)?;
    let packing = Packing::new(cu_seqlens, config.block_size)?;
    if shape.batch != 1 {
        return Err(MobaError::Config(format!(
            "a varlen batch packs its sequences into batch 1, got batch {}",
            shape.batch
        )));
    }
    if shape.q_len != shape.kv_len || shape.q_len != packing.tokens() {
        return Err(MobaError::Config(format!(
            "cu_seqlens covers {} tokens; q has {} and k {} (they must all agree)",
            packing.tokens(),
            shape.q_len,
            shape.kv_len
        )));
    }
    let len = packing.aligned_len();
    let aligned = Shape {
        q_len: len,
        kv_len: len,
        ..*shape
    };
    Ok((packing, aligned))
}

/// An error unless `config` is causal: a packed batch is causal per sequence.
pub fn check_causal(config: &MobaConfig) -> Result<()> {
    match config.causal {
        true => Ok(()),
        false => Err(MobaError::Config(
            "varlen (packed) batches are causal per sequence; this config is not causal".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_and_pack_round_trip() {
        let packing = Packing::new(&[0, 1, 1, 6], 4).unwrap();
        // Two heads of six tokens, two values each.
        let packed: Vec<i32> = (0..24).collect();
        let aligned = packing.align(&packed, 2, 2, -1);
        assert_eq!(packing.aligned_len(), 12);
        assert_eq!(packing.aligned_positions(), [0, 4, 5, 6, 7, 8]);
        assert_eq!(&aligned[..4], &[0, 1, -1, -1]);
        assert_eq!(packing.pack(&aligned, 2, 2), packed);
        assert_eq!(packing.sequence_starts(), [0, 1, 1]);
    }

    #[test]
    fn selection_ids_count_from_each_sequence() {
        let packing = Packing::new(&[0, 2, 4], 2).unwrap();
        let mut selection = vec![0, -1, 0, -1, 1, -1, 1, -1];
        packing.selection_in_sequences(&mut selection, 1, 2);
        assert_eq!(selection, [0, -1, 0, -1, 0, -1, 0, -1]);
    }

    #[test]
    fn bad_offsets_are_errors() {
        for (cu, says) in [
            (&[][..], "at least two"),
            (&[3][..], "at least two"),
            (&[1, 4][..], "start at 0"),
            (&[0, 5, 3][..], "offset 2 is 3 after 5"),
        ] {
            let err = Packing::new(cu, 4).unwrap_err().to_string();
            assert!(err.contains(says), "{cu:?}: {err}");
        }
    }
}
