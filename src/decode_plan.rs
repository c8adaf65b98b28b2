//! A language model's decode step, written once for every GPU decoder: which kernels run in
//! which order over which buffers, with their sizes, and the weights they read as the host
//! prepares them. The wgpu decoder (`gpu/lm_decode`, WGSL kernels `lm_*.wgsl`) and the CUDA
//! decoder (`cuda/lm_decode.rs`, `lm.cu`) each lower every [`LmStep`] to a launch of their
//! own; both match on it without a catch-all, so a step added here does not build until
//! both lower it.
//!
//! Per layer a step runs: the RMS norm and the q/k/v projection (one matrix product over the
//! three matrices side by side), RoPE with the cache write and the update of the keys' block
//! means, MoBA's decode over the cache, the output projection into the residual stream, the
//! norm and SwiGLU's two products, and its output projection. Then the final norm and the
//! head. Every kernel takes the rows of a submission at once: one position while generating,
//! a chunk of a prompt's positions ([`DecodePlan::chunk_rows`]) while reading it.

use std::future::Future;

use crate::error::{MobaError, Result};
use crate::gpu::{LinearWeights, LmWeights};
use crate::launch_plan::DECODE_MAX_ROWS;

/// Positions a submission of a long prompt reads at most by default: MoBA's row-tiled
/// prefill passes attend them over the cache, the products read each weight once per tile
/// of rows.
pub const PREFILL_ROWS: usize = 256;

/// A language model with its KV cache on a GPU, run by the decode plan: the wgpu decoder
/// ([`crate::gpu::LmDecoder`]) and the CUDA one (`moba::cuda::CudaLmDecoder`). Feed it bytes
/// ([`Decoder::step`] one, [`Decoder::prefill`] a prompt) and read the next byte's scores
/// ([`Decoder::logits`]); [`crate::model::GpuGenerator`] samples from one.
pub trait Decoder {
    /// Reads `sequences[s]` at the next positions of sequence `s`, every sequence as many
    /// bytes, [`Decoder::chunk_rows`] positions per submission at most, with no wait;
    /// [`Decoder::logits`] then reads the scores of the byte after each sequence's last. An
    /// error, before anything is submitted, for a count of sequences other than
    /// [`Decoder::sequences`], sequences of different lengths, a byte past the vocabulary or
    /// more bytes than the cache has room for.
    fn read(&mut self, sequences: &[&[u8]]) -> Result<()>;

    /// Reads `bytes` at the next positions of every sequence ([`Decoder::read`]).
    fn prefill(&mut self, bytes: &[u8]) -> Result<()> {
        self.read(&vec![bytes; self.sequences()])
    }

    /// Reads `byte` at the next position of every sequence: its key and value join the
    /// cache, and the logits of the byte after it are computed. One submission, no wait; an
    /// error once the cache is full.
    fn step(&mut self, byte: u8) -> Result<()> {
        self.prefill(&[byte])
    }

    /// Reads `bytes[s]` at the next position of sequence `s`: one submission for the batch.
    fn step_each(&mut self, bytes: &[u8]) -> Result<()> {
        self.read(&bytes.chunks(1).collect::<Vec<_>>())
    }

    /// The scores of the next byte of each sequence after the last read, `[sequences,
    /// vocab]` (the model's logits before any softmax). Await it before the next read.
    fn logits(&self) -> impl Future<Output = Result<Vec<f32>>>;

    /// The blocks each query head of `layer` attended at the last position read, `[sequences,
    /// n_heads, top_k]` ascending, -1 for none (a view of the routing); an error before
    /// the first byte.
    fn selection(&self, layer: usize) -> impl Future<Output = Result<Vec<i32>>>;

    /// Where the decoder is in its cache.
    fn cursor(&self) -> &Cursor;

    /// The same, to reset.
    fn cursor_mut(&mut self) -> &mut Cursor;

    /// Sequences the decoder reads side by side, each with its own cache (a batch).
    fn sequences(&self) -> usize {
        self.cursor().sequences
    }

    /// Positions in each sequence's cache: the bytes read so far.
    fn position(&self) -> usize {
        self.cursor().position
    }

    /// Positions each sequence's cache holds at most (the model's context).
    fn capacity(&self) -> usize {
        self.cursor().capacity
    }

    /// Positions of each sequence one submission reads at most (a long prompt's tile, else
    /// the split decode's chunk).
    fn chunk_rows(&self) -> usize {
        self.cursor().program_rows.last().copied().unwrap_or(1)
    }

    /// Forgets every cached position (the next read is position 0).
    fn reset(&mut self) {
        let cursor = self.cursor_mut();
        cursor.position = 0;
        cursor.last_rows = 1;
    }
}

/// The rows of one submission: the next `positions` of each of `sequences` sequences,
/// sequence-major (row `s * positions + p` is position `p` of sequence `s`). Every decode-step
/// kernel takes them at once; the attention sees a batch of `sequences`, `positions` queries
/// each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rows {
    pub sequences: usize,
    pub positions: usize,
}

impl Rows {
    /// Rows in all.
    pub fn count(&self) -> usize {
        self.sequences * self.positions
    }
}

/// A decoder's place in its cache and the rows of its programs (a submission runs the
/// largest program that the bytes left fill): the bookkeeping both decoders share. Every
/// sequence of a batch is at the same position.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    capacity: usize,
    vocab: usize,
    sequences: usize,
    position: usize,
    /// Positions of the last submission.
    last_rows: usize,
    /// Positions of each program, ascending; the first is 1.
    program_rows: Vec<usize>,
}

impl Cursor {
    /// A decoder of `sequences` caches of `capacity` positions over `vocab` bytes, with no
    /// program yet. Panics for 0 sequences (the decoders refuse them first).
    pub fn new(capacity: usize, vocab: usize, sequences: usize) -> Self {
        assert!(sequences > 0, "a decoder reads at least 1 sequence");
        Cursor {
            capacity,
            vocab,
            sequences,
            position: 0,
            last_rows: 1,
            program_rows: Vec::new(),
        }
    }

    /// Scores per row of logits: the model's vocabulary.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Adds a program of `positions` positions per sequence: 1 first, then each more than
    /// the one before.
    pub fn add_program(&mut self, positions: usize) {
        let next = self
            .program_rows
            .last()
            .map_or(positions == 1, |&last| last < positions);
        assert!(
            next,
            "programs of 1 position first, then ascending ({positions} after {:?})",
            self.program_rows
        );
        self.program_rows.push(positions);
    }

    /// The rows of a program of `positions` positions per sequence.
    pub fn rows(&self, positions: usize) -> Rows {
        Rows {
            sequences: self.sequences,
            positions,
        }
    }

    /// `sequences` (one slice per sequence, all of one length) as submissions, each
    /// `(program, its rows' bytes)` in row order: the largest program that the rest fills;
    /// an error for a count of sequences other than the decoder's, sequences of different
    /// lengths, a byte past the vocabulary, or more bytes than the room left in the cache.
    /// Call after the first [`Cursor::add_program`].
    pub fn submissions(&self, sequences: &[&[u8]]) -> Result<Vec<(usize, Vec<u8>)>> {
        let (capacity, position, vocab) = (self.capacity, self.position, self.vocab);
        if sequences.len() != self.sequences {
            return Err(MobaError::Config(format!(
                "the decoder reads {} sequences side by side, {} given",
                self.sequences,
                sequences.len()
            )));
        }
        let len = sequences[0].len();
        if let Some(other) = sequences.iter().find(|bytes| bytes.len() != len) {
            return Err(MobaError::Config(format!(
                "a batch's sequences advance together: {len} bytes for the first sequence, {} \
                 for another",
                other.len()
            )));
        }
        let all = sequences.iter().flat_map(|bytes| bytes.iter());
        if let Some(&byte) = all.clone().find(|&&byte| usize::from(byte) >= vocab) {
            return Err(MobaError::Config(format!(
                "byte {byte} is past the model's vocabulary of {vocab}"
            )));
        }
        if len > capacity - position {
            return Err(MobaError::Config(format!(
                "the model's context of {capacity} positions is full ({position} are cached, \
                 {len} more given)"
            )));
        }
        let programs = &self.program_rows;
        let mut submissions = Vec::new();
        let mut done = 0;
        while done < len {
            let rest = len - done;
            let program = (0..programs.len())
                .rev()
                .find(|&p| programs[p] <= rest)
                .unwrap_or(0);
            let chunk = done..done + programs[program];
            let rows = sequences.iter().flat_map(|bytes| &bytes[chunk.clone()]);
            submissions.push((program, rows.copied().collect()));
            done = chunk.end;
        }
        Ok(submissions)
    }

    /// The words of a decoder's step buffer for a submission of `rows` (bytes in row order)
    /// at the next positions: the first position, then each row's byte.
    pub fn step_words(&self, rows: &[u8]) -> Vec<u32> {
        let first = self.position as u32;
        std::iter::once(first)
            .chain(rows.iter().map(|&byte| u32::from(byte)))
            .collect()
    }

    /// A submission of `positions` positions per sequence was queued.
    pub fn advance(&mut self, positions: usize) {
        self.position += positions;
        self.last_rows = positions;
    }

    /// An error before the first byte is read (nothing to read back yet).
    pub fn check_read(&self) -> Result<()> {
        match self.position {
            0 => Err(MobaError::Config("no byte has been read yet".into())),
            _ => Ok(()),
        }
    }

    /// The rows whose logits the last submission leaves to read, each sequence's last, as
    /// runs of side-by-side rows `(first row, rows)` in sequence order: one run of every
    /// sequence where the submission read a position of each, else a row per sequence.
    pub fn logit_runs(&self) -> Vec<(usize, usize)> {
        match self.last_rows {
            1 => vec![(0, self.sequences)],
            positions => (1..=self.sequences)
                .map(|s| (s * positions - 1, 1))
                .collect(),
        }
    }

    /// The last row of each sequence and query head in a selection `[sequences, n_heads,
    /// positions, top_k]` of the last submission: `[sequences, n_heads, top_k]`.
    pub fn last_selection(&self, all: &[i32], heads: usize, top_k: usize) -> Vec<i32> {
        let positions = self.last_rows;
        (0..self.sequences * heads)
            .flat_map(|head| {
                let at = (head * positions + positions - 1) * top_k;
                all[at..at + top_k].to_vec()
            })
            .collect()
    }

    /// Positions in each sequence's cache.
    pub fn position(&self) -> usize {
        self.position
    }
}

/// The error of a decoder of no sequences.
pub fn check_sequences(sequences: usize) -> Result<()> {
    match sequences {
        0 => Err(MobaError::Config(
            "a decoder reads at least 1 sequence".into(),
        )),
        _ => Ok(()),
    }
}

/// The error of a layer index past the model's `layers`.
pub fn check_layer(layer: usize, layers: usize) -> Result<()> {
    match layer < layers {
        true => Ok(()),
        false => Err(MobaError::Config(format!("the model has {layers} layers"))),
    }
}

/// What a matrix-vector product does with its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epilogue {
    /// `out = x W + b`.
    Store = 0,
    /// `out += x W + b`: a residual connection.
    Residual = 1,
    /// `out = silu(x W1 + b1) * (x W2 + b2)`, W1 and W2 side by side in one matrix.
    SwiGlu = 2,
}

/// One decode-step kernel with its sizes (the rows of a submission are the launcher's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LmKernel {
    /// Each row's residual stream starts as its byte's embedding.
    Embed { d_model: usize },
    /// `out = epilogue(x W + b)` for every row.
    Matvec {
        d_in: usize,
        d_out: usize,
        /// RMS-normalise the input first, with this epsilon (the gain is folded into W).
        norm: Option<f32>,
        epilogue: Epilogue,
        /// The input is head-major `[d_in / head_dim, rows, head_dim]` (the attention's
        /// output) with this head dim; `None`: row-major `[rows, d_in]`.
        input_head_dim: Option<usize>,
    },
    /// The rows' queries and keys rotated by RoPE, keys and values written into the cache,
    /// the keys' block sums and means updated.
    RopeCache {
        q_heads: usize,
        kv_heads: usize,
        head_dim: usize,
        capacity: usize,
        rope: bool,
        /// Keys per block of the gate's means.
        block_size: usize,
    },
}

impl LmKernel {
    /// The kernel's name: its WGSL file, its CUDA entry point.
    pub fn name(&self) -> &'static str {
        match self {
            LmKernel::Embed { .. } => "lm_embed",
            LmKernel::Matvec { .. } => "lm_matvec",
            LmKernel::RopeCache { .. } => "lm_rope_cache",
        }
    }

    /// The row width of a product's weight matrix (two matrices side by side for SwiGLU).
    pub fn row_stride(&self) -> usize {
        match *self {
            LmKernel::Matvec {
                d_out,
                epilogue: Epilogue::SwiGlu,
                ..
            } => 2 * d_out,
            LmKernel::Matvec { d_out, .. } => d_out,
            _ => 0,
        }
    }
}

/// A decoder's activation buffers, each `[rows, width]` for the largest submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// The residual stream, `[rows, d_model]`.
    Residual,
    /// The q/k/v product, `[rows, (n_heads + 2 n_kv_heads) head_dim]`.
    Qkv,
    /// SwiGLU's hidden layer, `[rows, d_ff]`.
    Hidden,
    /// The attention's output, head-major `[n_heads, rows, head_dim]`.
    Attended,
    /// The head's scores, `[rows, vocab]`.
    Logits,
}

/// A matrix product with its weights as the host prepares them: the maps over one input side
/// by side (`[d_in, row_stride]`), the gain of the RMS norm before them folded into W's rows.
#[derive(Debug, Clone, PartialEq)]
pub struct HostProduct {
    pub kernel: LmKernel,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub input: Activation,
    pub output: Activation,
}

/// One step of a decode, in order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LmStep {
    /// The embedding of each row's byte into the residual stream.
    Embed(LmKernel),
    /// [`DecodePlan::products`]`[i]`.
    Product(usize),
    /// A layer's RoPE, cache write and block means ([`LmKernel::RopeCache`]).
    RopeCache { layer: usize, kernel: LmKernel },
    /// A layer's MoBA decode over its cache: queries and cache in, [`Activation::Attended`]
    /// out.
    Attention { layer: usize },
}

/// A model's decode step.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodePlan {
    pub steps: Vec<LmStep>,
    pub products: Vec<HostProduct>,
    /// Positions a prompt's submission reads at most: as many as MoBA's split decode takes
    /// per kv head (its rows are the group's query heads times the positions).
    pub chunk_rows: usize,
}

impl DecodePlan {
    /// The decode step of `weights`, which the caller has checked with
    /// [`LmWeights::validate`].
    pub fn new(weights: &LmWeights) -> Self {
        let (heads, kv_heads) = (weights.n_heads, weights.n_kv_heads);
        let mut products = Vec::new();
        let mut steps = vec![LmStep::Embed(LmKernel::Embed {
            d_model: weights.d_model,
        })];
        let mut product = |product: HostProduct, steps: &mut Vec<LmStep>| {
            steps.push(LmStep::Product(products.len()));
            products.push(product);
        };
        let norm = Some(weights.norm_epsilon);
        for (layer, w) in weights.layers.iter().enumerate() {
            let qkv = [&w.query, &w.key, &w.value];
            let store = (Epilogue::Store, None);
            let qkv = joined(&qkv, w.attention_norm.as_slice(), norm, store);
            product(
                qkv.between(Activation::Residual, Activation::Qkv),
                &mut steps,
            );
            let kernel = LmKernel::RopeCache {
                q_heads: heads,
                kv_heads,
                head_dim: weights.head_dim(),
                capacity: weights.max_seq_len,
                rope: weights.rope.is_some(),
                block_size: w.attention.block_size,
            };
            steps.push(LmStep::RopeCache { layer, kernel });
            steps.push(LmStep::Attention { layer });
            let residual = (Epilogue::Residual, Some(weights.head_dim()));
            let output = joined(&[&w.output], &[], None, residual);
            product(
                output.between(Activation::Attended, Activation::Residual),
                &mut steps,
            );
            let swiglu = (Epilogue::SwiGlu, None);
            let inner = [&w.gate_inner, &w.gate_outer];
            let swiglu = joined(&inner, w.feed_forward_norm.as_slice(), norm, swiglu);
            product(
                swiglu.between(Activation::Residual, Activation::Hidden),
                &mut steps,
            );
            let down = joined(&[&w.down], &[], None, (Epilogue::Residual, None));
            product(
                down.between(Activation::Hidden, Activation::Residual),
                &mut steps,
            );
        }
        let head = joined(
            &[&weights.head],
            weights.final_norm.as_slice(),
            norm,
            (Epilogue::Store, None),
        );
        product(
            head.between(Activation::Residual, Activation::Logits),
            &mut steps,
        );
        DecodePlan {
            steps,
            products,
            chunk_rows: (DECODE_MAX_ROWS / (heads / kv_heads)).clamp(1, weights.max_seq_len),
        }
    }
}

/// A product's kernel and weights, before its buffers are named.
struct Joined {
    kernel: LmKernel,
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl Joined {
    fn between(self, input: Activation, output: Activation) -> HostProduct {
        HostProduct {
            kernel: self.kernel,
            weight: self.weight,
            bias: self.bias,
            input,
            output,
        }
    }
}

/// One product over `maps` side by side (SwiGLU: its two matrices), the RMS norm with gain
/// `gain` first where `norm` is given (`x / rms * g` then `W` is `x / rms` then `diag(g) W`);
/// `epilogue` with the head dim of a head-major input.
fn joined(
    maps: &[&LinearWeights],
    gain: &[f32],
    norm: Option<f32>,
    (epilogue, input_head_dim): (Epilogue, Option<usize>),
) -> Joined {
    let (rows, width) = (maps[0].d_in, maps.iter().map(|m| m.d_out).sum::<usize>());
    let mut weight = Vec::with_capacity(rows * width);
    for row in 0..rows {
        let scale = gain.get(row).copied().unwrap_or(1.0);
        for map in maps {
            let weights = &map.weight[row * map.d_out..(row + 1) * map.d_out];
            weight.extend(weights.iter().map(|w| w * scale));
        }
    }
    let bias = (maps.iter())
        .flat_map(|map| match &map.bias {
            Some(bias) => bias.clone(),
            None => vec![0.0; map.d_out],
        })
        .collect();
    let d_out = match epilogue {
        Epilogue::SwiGlu => maps[0].d_out,
        _ => width,
    };
    Joined {
        kernel: LmKernel::Matvec {
            d_in: rows,
            d_out,
            norm,
            epilogue,
            input_head_dim,
        },
        weight,
        bias,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LmConfig;
    use burn::backend::NdArray;

    #[test]
    fn a_prompt_goes_in_the_largest_chunks_that_fit() {
        let mut cursor = Cursor::new(100, 256, 1);
        assert!(cursor.check_read().is_err());
        cursor.add_program(1);
        cursor.add_program(8);
        let bytes = [7u8; 21];
        let split = cursor.submissions(&[&bytes]).unwrap();
        let programs: Vec<(usize, usize)> = split.iter().map(|(p, b)| (*p, b.len())).collect();
        assert_eq!(
            programs,
            [(1, 8), (1, 8), (0, 1), (0, 1), (0, 1), (0, 1), (0, 1)]
        );
        assert_eq!(cursor.step_words(b"ab"), [0, 97, 98]);
        cursor.advance(80);
        assert_eq!(cursor.step_words(b"a"), [80, 97]);
        let error = cursor.submissions(&[&bytes]).unwrap_err();
        assert!(error.to_string().contains("full"), "{error}");
        let error = Cursor::new(100, 128, 1).submissions(&[&[3, 200]]);
        assert!(error.unwrap_err().to_string().contains("byte 200"));
        // The last row of each of 2 heads of a submission of 80 rows, top-1.
        let all: Vec<i32> = (0..160).collect();
        assert_eq!(cursor.last_selection(&all, 2, 1), [79, 159]);
        assert!(check_layer(2, 2).is_err() && check_layer(1, 2).is_ok());
    }

    #[test]
    fn a_batch_of_sequences_goes_sequence_major() {
        let mut cursor = Cursor::new(100, 256, 2);
        cursor.add_program(1);
        cursor.add_program(4);
        // 5 positions of each sequence: a program of 4, then of 1.
        let split = cursor.submissions(&[b"abcde", b"vwxyz"]).unwrap();
        assert_eq!(split[0], (1, b"abcdvwxy".to_vec()));
        assert_eq!(split[1], (0, b"ez".to_vec()));
        assert_eq!(cursor.rows(4).count(), 8);
        cursor.advance(4);
        assert_eq!(cursor.logit_runs(), [(3, 1), (7, 1)]);
        // [2 sequences, 3 heads, 4 positions, top-1]: each sequence's and head's last.
        let all: Vec<i32> = (0..24).collect();
        assert_eq!(cursor.last_selection(&all, 3, 1), [3, 7, 11, 15, 19, 23]);
        let error = cursor.submissions(&[b"ab", b"c"]).unwrap_err();
        assert!(error.to_string().contains("advance together"), "{error}");
        let error = cursor.submissions(&[b"ab"]).unwrap_err();
        assert!(error.to_string().contains("2 sequences"), "{error}");
        // A position of each: their rows side by side, one run.
        cursor.advance(1);
        assert_eq!(cursor.logit_runs(), [(0, 2)]);
        assert!(check_sequences(0).is_err() && check_sequences(2).is_ok());
    }

    #[test]
    fn a_layer_runs_its_products_around_the_cache_and_the_attention() {
        let model = LmConfig::preset("tiny").unwrap();
        let model = model.init::<NdArray>(&Default::default()).unwrap();
        let weights = model.decode_weights().unwrap();
        let plan = DecodePlan::new(&weights);
        let names: Vec<String> = (plan.steps.iter())
            .map(|step| match step {
                LmStep::Embed(_) => "embed".into(),
                LmStep::Product(i) => format!("{:?}", plan.products[*i].output),
                LmStep::RopeCache { layer, .. } => format!("cache {layer}"),
                LmStep::Attention { layer } => format!("attention {layer}"),
            })
            .collect();
        let layer = |l: usize| {
            [
                "Qkv".into(),
                format!("cache {l}"),
                format!("attention {l}"),
                "Residual".into(),
                "Hidden".into(),
                "Residual".into(),
            ]
        };
        let expected: Vec<String> = [vec!["embed".into()], layer(0).into(), layer(1).into()]
            .concat()
            .into_iter()
            .chain(["Logits".into()])
            .collect();
        assert_eq!(names, expected);
        // 4 heads over 2 kv heads: 8 positions per prompt submission.
        assert_eq!(plan.chunk_rows, 8);
        // SwiGLU's two matrices side by side, the norm's gain folded into each row.
        let swiglu = &plan.products[2];
        let w = &weights.layers[0];
        assert_eq!(swiglu.kernel.row_stride(), 2 * weights.d_ff);
        let (d_ff, gain) = (weights.d_ff, w.feed_forward_norm[1]);
        assert_eq!(swiglu.weight[2 * d_ff], w.gate_inner.weight[d_ff] * gain);
        assert_eq!(swiglu.weight[3 * d_ff], w.gate_outer.weight[d_ff] * gain);
    }
}
