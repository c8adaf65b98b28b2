//! Sampling bytes from a [`MobaLm`]: each new byte through one MoBA decode step over the KV
//! cache (one query gated over the cached blocks), so generation is sparse too.
//! [`Generator`] runs on burn's ops (the prompt through one MoBA prefill first);
//! [`GpuGenerator`] on a GPU decoder ([`Decoder`]: [`LmDecoder`] through wgpu, or CUDA's;
//! the prompt a chunk of positions at a time).
//! [`generate`] runs to a length; both generators draw one byte per call.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::lm::MobaLm;
use crate::backend::MobaBackend;
use crate::decode_plan::Decoder;
use crate::error::{MobaError, Result};
use crate::gpu::{DecoderOptions, GpuContext, LmDecoder};
use crate::module::KvCache;

/// How the next byte is drawn from the model's scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Softmax temperature; 0 picks the most likely byte (greedy).
    pub temperature: f32,
    /// Nucleus sampling: draw from the most likely bytes whose probabilities sum to `top_p`.
    pub top_p: f32,
    /// Seed of the draws: the same seed, model and prompt give the same text.
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_p: 0.95,
            seed: 0,
        }
    }
}

impl Sampling {
    /// An error unless `temperature >= 0` and `0 < top_p <= 1`.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(MobaError::Config(format!(
                "temperature must be finite and >= 0, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(MobaError::Config(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        Ok(())
    }

    /// The index drawn from one row of `logits`.
    pub fn draw(&self, logits: &[f32], rng: &mut StdRng) -> usize {
        let best = |(a, x): &(usize, f32), (b, y): &(usize, f32)| x.total_cmp(y).then(b.cmp(a));
        if self.temperature == 0.0 {
            let argmax = logits.iter().copied().enumerate().max_by(best);
            return argmax.map_or(0, |(index, _)| index);
        }
        // Probabilities at the temperature, most likely first, cut at top_p.
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut ranked: Vec<(usize, f32)> = logits
            .iter()
            .map(|&x| ((x - max) / self.temperature).exp())
            .enumerate()
            .collect();
        ranked.sort_by(|a, b| best(b, a));
        let total: f32 = ranked.iter().map(|(_, p)| p).sum();
        let (mut nucleus, mut kept) = (0, 0.0);
        while nucleus < ranked.len() && kept < self.top_p * total {
            kept += ranked[nucleus].1;
            nucleus += 1;
        }
        let mut target = rng.random::<f32>() * kept;
        for &(index, p) in &ranked[..nucleus] {
            if target < p {
                return index;
            }
            target -= p;
        }
        ranked[nucleus - 1].0
    }
}

/// Up to `max_new` bytes after `prompt`, each passed to `on_byte` as it is drawn (to stream
/// them). Stops early at the model's `max_seq_len`.
///
/// ```
/// use burn::backend::NdArray;
/// use moba::model::{LmConfig, Sampling, generate};
///
/// let model = LmConfig::preset("tiny")?.init::<NdArray>(&Default::default())?;
/// let text = generate(&model, b"Once upon", 16, &Sampling::default(), |_| {})?;
/// assert_eq!(text.len(), 16); // untrained: noise, but 16 bytes of it
/// # Ok::<(), moba::MobaError>(())
/// ```
pub fn generate<B: MobaBackend>(
    model: &MobaLm<B>,
    prompt: &[u8],
    max_new: usize,
    sampling: &Sampling,
    mut on_byte: impl FnMut(u8),
) -> Result<Vec<u8>> {
    let mut generator = Generator::new(model, prompt, *sampling)?;
    let mut out = Vec::new();
    while out.len() < max_new {
        let Some(byte) = generator.next_byte(model)? else {
            break;
        };
        on_byte(byte);
        out.push(byte);
    }
    Ok(out)
}

/// Generation one byte per call, for callers that show each byte before the next is drawn
/// (the browser demo yields to the page between bytes). The first call runs the prompt's
/// MoBA prefill, each later call one MoBA decode step over the cache.
///
/// ```
/// use burn::backend::NdArray;
/// use moba::model::{Generator, LmConfig, Sampling};
///
/// let model = LmConfig::preset("tiny")?.init::<NdArray>(&Default::default())?;
/// let mut generator = Generator::new(&model, b"Once upon", Sampling::default())?;
/// let first = generator.next_byte(&model)?; // prefill: 9 positions in the cache
/// let second = generator.next_byte(&model)?; // decode: the 10th
/// assert!(first.is_some() && second.is_some());
/// assert_eq!(generator.position(), 10);
/// # Ok::<(), moba::MobaError>(())
/// ```
#[derive(Debug)]
pub struct Generator<B: Backend> {
    cache: Vec<KvCache<B>>,
    draws: Draws,
}

impl<B: MobaBackend> Generator<B> {
    /// A generator for `model` (the one every [`Generator::next_byte`] call must pass) that
    /// continues `prompt`; an error for an empty prompt, one longer than the model's
    /// `max_seq_len`, or bad sampling settings.
    pub fn new(model: &MobaLm<B>, prompt: &[u8], sampling: Sampling) -> Result<Self> {
        Ok(Self {
            cache: model.empty_cache(),
            draws: Draws::new(prompt, sampling, model.max_seq_len)?,
        })
    }

    /// The next byte, or `None` once the model's context is full.
    pub fn next_byte(&mut self, model: &MobaLm<B>) -> Result<Option<u8>> {
        let Some(input) = self.draws.input() else {
            return Ok(None);
        };
        let device = model.head.weight.device();
        let tokens = byte_tensor::<B>(input, &device);
        let logits = model.forward_cached(tokens, &mut self.cache)?;
        Ok(Some(self.draws.draw(&last_row(logits))))
    }

    /// Positions in the cache: those the model has read so far.
    pub fn position(&self) -> usize {
        self.cache.first().map_or(0, KvCache::len)
    }

    /// The blocks each query head of `layer` attended at the last position read,
    /// `[n_heads, top_k]` ascending, -1 for none (a view of the routing, as
    /// [`Decoder::selection`] gives it; a full-attention layer's one block holds the
    /// context); `None` before the first byte and for NSA layers. On a GPU backend this
    /// waits for the device.
    pub fn selection(&self, layer: usize) -> Result<Option<Vec<i32>>> {
        let cache = self.cache.get(layer).ok_or_else(|| {
            MobaError::Config(format!("the model has {} layers", self.cache.len()))
        })?;
        cache
            .selection()
            .map(|selection| {
                (selection.into_data().convert::<i32>().to_vec())
                    .map_err(|e| MobaError::Config(format!("reading the selection: {e:?}")))
            })
            .transpose()
    }
}

/// Generation on a GPU decoder ([`Decoder`]: a few kernels per layer around MoBA's split
/// decode, the KV cache on the GPU, one read-back of the logits per byte), for models whose
/// layers it runs (MoBA, full and the static patterns; not NSA or a key convolution). The
/// same draws as [`Generator`] from the same logits. [`GpuGenerator::new`] makes the wgpu
/// decoder ([`LmDecoder`]); [`GpuGenerator::with_decoder`] takes any, such as CUDA's. A
/// decoder of several sequences ([`DecoderOptions::sequences`]) draws that many samples
/// side by side ([`GpuGenerator::next_bytes`]), sequence `s` with seed `seed + s`.
///
/// ```no_run
/// use moba::gpu::GpuContext;
/// use moba::model::{GpuGenerator, LmConfig, Sampling};
///
/// let gpu = GpuContext::new_blocking(&Default::default())?;
/// let model = LmConfig::preset("tiny")?.init::<burn::backend::NdArray>(&Default::default())?;
/// let mut generator = GpuGenerator::new(&gpu, &model, b"Once upon", Sampling::default())?;
/// let byte = gpu.block_on(generator.next_byte())?; // the prompt's 9 positions, then a byte
/// assert!(byte.is_some());
/// # Ok::<(), moba::MobaError>(())
/// ```
pub struct GpuGenerator<D = LmDecoder> {
    decoder: D,
    /// Each sequence's.
    draws: Vec<Draws>,
    /// A step failed: the cache no longer matches the draws.
    failed: bool,
}

impl GpuGenerator<LmDecoder> {
    /// Uploads `model` to `gpu` and prepares to continue `prompt` (the errors of
    /// [`Generator::new`], and those [`GpuGenerator::declines`]).
    pub fn new<B: Backend>(
        gpu: &GpuContext,
        model: &MobaLm<B>,
        prompt: &[u8],
        sampling: Sampling,
    ) -> Result<Self> {
        Self::with_options(gpu, model, prompt, sampling, DecoderOptions::default())
    }

    /// [`GpuGenerator::new`] on a decoder built with `options` ([`LmDecoder::with_options`]:
    /// f16 weights, the prompt's submissions, a batch of samples).
    pub fn with_options<B: Backend>(
        gpu: &GpuContext,
        model: &MobaLm<B>,
        prompt: &[u8],
        sampling: Sampling,
        options: DecoderOptions,
    ) -> Result<Self> {
        // The prompt and the sampling are checked before the upload.
        Draws::new(prompt, sampling, model.max_seq_len)?;
        let decoder = LmDecoder::with_options(gpu, &model.decode_weights()?, options)?;
        Self::with_decoder(decoder, prompt, sampling)
    }

    /// Whether `error` from [`GpuGenerator::new`] means that the decoder does not run this
    /// model on this adapter, where [`Generator`] does: `Unsupported`
    /// ([`MobaLm::decode_weights`]: layers the decoder lacks) or `LimitExceeded` (a model
    /// over the adapter's limits).
    pub fn declines(error: &MobaError) -> bool {
        matches!(
            error,
            MobaError::Unsupported(_) | MobaError::LimitExceeded { .. }
        )
    }
}

impl<D: Decoder> GpuGenerator<D> {
    /// Continues `prompt` on `decoder` (from its first position: it is reset) in each of
    /// its sequences: the errors of [`Generator::new`].
    pub fn with_decoder(mut decoder: D, prompt: &[u8], sampling: Sampling) -> Result<Self> {
        let draws = Draws::each(prompt, sampling, &decoder)?;
        decoder.reset();
        Ok(Self {
            decoder,
            draws,
            failed: false,
        })
    }

    /// The next byte of each sequence, or `None` once the model's context is full. After an
    /// error every later call is one too (make a new generator).
    ///
    /// ```no_run
    /// use moba::gpu::{DecoderOptions, GpuContext};
    /// use moba::model::{GpuGenerator, LmConfig, Sampling};
    ///
    /// let gpu = GpuContext::new_blocking(&Default::default())?;
    /// let model = LmConfig::preset("tiny")?.init::<burn::backend::NdArray>(&Default::default())?;
    /// let options = DecoderOptions { sequences: 8, ..Default::default() };
    /// let sampling = Sampling::default();
    /// let mut samples = GpuGenerator::with_options(&gpu, &model, b"Once", sampling, options)?;
    /// let bytes = gpu.block_on(samples.next_bytes())?; // a byte of each of 8 samples
    /// assert_eq!(bytes.map(|b| b.len()), Some(8));
    /// # Ok::<(), moba::MobaError>(())
    /// ```
    pub async fn next_bytes(&mut self) -> Result<Option<Vec<u8>>> {
        if self.failed {
            return Err(MobaError::Config(
                "an earlier step of this generation failed: start a new one".into(),
            ));
        }
        let Some(inputs) = self
            .draws
            .iter()
            .map(Draws::input)
            .collect::<Option<Vec<_>>>()
        else {
            return Ok(None);
        };
        self.failed = true;
        self.decoder.read(&inputs)?;
        let logits = self.decoder.logits().await?;
        self.failed = false;
        let vocab = logits.len() / self.draws.len();
        let draws = self.draws.iter_mut().zip(logits.chunks(vocab));
        Ok(Some(
            draws.map(|(draws, logits)| draws.draw(logits)).collect(),
        ))
    }

    /// The next byte of the first sequence (each sequence draws one), or `None` once the
    /// model's context is full: [`GpuGenerator::next_bytes`] for a decoder of one sequence.
    pub async fn next_byte(&mut self) -> Result<Option<u8>> {
        Ok(self.next_bytes().await?.map(|bytes| bytes[0]))
    }

    /// Continues `prompt` instead, on the same decoder (its weights stay uploaded, its
    /// cache is emptied): the errors of [`Generator::new`].
    pub fn restart(&mut self, prompt: &[u8], sampling: Sampling) -> Result<()> {
        self.draws = Draws::each(prompt, sampling, &self.decoder)?;
        self.decoder.reset();
        self.failed = false;
        Ok(())
    }

    /// The decoder, with its cache and routing.
    pub fn decoder(&self) -> &D {
        &self.decoder
    }
}

/// The sampling state both generators share: what the next step reads (the prompt, then
/// the last byte drawn) and how many bytes fit.
#[derive(Debug)]
struct Draws {
    rng: StdRng,
    sampling: Sampling,
    input: Vec<u8>,
    /// Bytes that can still be drawn before the context is full.
    room: usize,
}

impl Draws {
    fn new(prompt: &[u8], sampling: Sampling, max_seq_len: usize) -> Result<Self> {
        sampling.validate()?;
        if prompt.is_empty() || prompt.len() > max_seq_len {
            return Err(MobaError::Config(format!(
                "the prompt has {} bytes: the model takes 1 to {max_seq_len}",
                prompt.len(),
            )));
        }
        Ok(Self {
            rng: StdRng::seed_from_u64(sampling.seed),
            sampling,
            input: prompt.to_vec(),
            // The last byte is drawn from the logits of position max_seq_len.
            room: max_seq_len - prompt.len() + 1,
        })
    }

    /// The draws of each of `decoder`'s sequences: sequence `s` with seed `seed + s`.
    fn each(prompt: &[u8], sampling: Sampling, decoder: &impl Decoder) -> Result<Vec<Self>> {
        (0..decoder.sequences() as u64)
            .map(|s| {
                let seed = sampling.seed.wrapping_add(s);
                Self::new(prompt, Sampling { seed, ..sampling }, decoder.capacity())
            })
            .collect()
    }

    /// The bytes the next step reads, or `None` once the context is full.
    fn input(&self) -> Option<&[u8]> {
        (self.room > 0).then_some(&self.input)
    }

    /// Draws the next byte from the logits of the last position read.
    fn draw(&mut self, logits: &[f32]) -> u8 {
        let byte = self.sampling.draw(logits, &mut self.rng) as u8;
        self.input = vec![byte];
        self.room -= 1;
        byte
    }
}

/// `bytes` as a `[1, len]` token tensor.
pub fn byte_tensor<B: Backend>(bytes: &[u8], device: &B::Device) -> Tensor<B, 2, Int> {
    let ints: Vec<i64> = bytes.iter().map(|&b| b as i64).collect();
    Tensor::from_data(TensorData::new(ints, [1, bytes.len()]), device)
}

/// The scores of the last position of the first sequence, on the host.
fn last_row<B: Backend>(logits: Tensor<B, 3>) -> Vec<f32> {
    let [_, seq, vocab] = logits.dims();
    logits
        .slice([0..1, seq - 1..seq, 0..vocab])
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32 data")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_argmax_and_top_p_keeps_the_nucleus() {
        let logits = [0.0, 3.0, 1.0, 2.9];
        let mut rng = StdRng::seed_from_u64(1);
        let greedy = Sampling {
            temperature: 0.0,
            ..Default::default()
        };
        assert_eq!(greedy.draw(&logits, &mut rng), 1);
        // Probabilities at temperature 1: 0.02, 0.47, 0.06, 0.43. top_p 0.5 keeps {1, 3}.
        let nucleus = Sampling {
            temperature: 1.0,
            top_p: 0.5,
            seed: 0,
        };
        let draws: Vec<usize> = (0..400).map(|_| nucleus.draw(&logits, &mut rng)).collect();
        assert!(draws.iter().all(|&d| d == 1 || d == 3), "{draws:?}");
        let ones = draws.iter().filter(|&&d| d == 1).count();
        // 0.47 / 0.90 of the draws, within 5 standard deviations (about 0.125).
        assert!((ones as f64 / 400.0 - 0.523).abs() < 0.125, "{ones} of 400");
        let bad = Sampling {
            top_p: 0.0,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("top_p"));
    }
}
