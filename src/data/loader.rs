//! A burn `DataLoader` over a [`SequenceSource`]: each pass (a training epoch) yields a fixed
//! number of batches; a training loader moves on to fresh sequences every pass, a validation
//! loader repeats the same ones.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::tensor::backend::Backend;

use super::{SequenceSource, TokenBatch};

/// Batches of sequences `first + pass * per_pass + i` of a source.
///
/// ```
/// use std::sync::Arc;
/// use burn::backend::NdArray;
/// use burn::data::dataloader::DataLoader;
/// use moba::data::{RecallTask, SequenceLoader};
///
/// let task = Arc::new(RecallTask::new(256, 1)?);
/// let loader = SequenceLoader::<NdArray>::training(task, 4, 10, 0, Default::default());
/// let batch = loader.iter().next().unwrap();
/// assert_eq!(batch.dims(), [4, 256]);
/// # Ok::<(), moba::MobaError>(())
/// ```
#[derive(Clone)]
pub struct SequenceLoader<B: Backend> {
    source: Arc<dyn SequenceSource>,
    batch_size: usize,
    batches: usize,
    first: u64,
    /// Passes started; `None` repeats the same sequences every pass.
    passes: Option<Arc<AtomicU64>>,
    device: B::Device,
    /// Data parallel: each batch is dealt to this many devices, `shard` getting its part.
    shards: usize,
    shard: usize,
}

impl<B: Backend> SequenceLoader<B> {
    /// `batches` batches per pass, fresh sequences every pass; `passes_done` passes (epochs)
    /// are skipped, so a resumed run continues with the sequences it would have seen.
    pub fn training(
        source: Arc<dyn SequenceSource>,
        batch_size: usize,
        batches: usize,
        passes_done: u64,
        device: B::Device,
    ) -> Self {
        Self {
            source,
            batch_size,
            batches,
            first: 0,
            passes: Some(Arc::new(AtomicU64::new(passes_done))),
            device,
            shards: 1,
            shard: 0,
        }
    }

    /// The same loader dealt over `devices` for data parallel training: burn-train's
    /// multi-device strategy splits it ([`DataLoader::slice`]) into one loader per device,
    /// each yielding its `batch_size / devices` sequences of every batch, so that a step on
    /// all devices reads the batch one device would.
    pub fn sharded(self, devices: usize) -> Self {
        assert!(
            devices >= 1 && self.batch_size.is_multiple_of(devices),
            "a batch of {} is not dealt evenly over {devices} devices",
            self.batch_size
        );
        Self {
            shards: devices,
            ..self
        }
    }

    /// The same `batches` batches every pass (fewer if the source has fewer sequences).
    pub fn validation(
        source: Arc<dyn SequenceSource>,
        batch_size: usize,
        batches: usize,
        device: B::Device,
    ) -> Self {
        let available = source
            .distinct()
            .map_or(batches, |n| (n as usize / batch_size).max(1));
        Self {
            source,
            batch_size,
            batches: batches.min(available),
            first: 0,
            passes: None,
            device,
            shards: 1,
            shard: 0,
        }
    }

    /// Batches per pass.
    pub fn batches(&self) -> usize {
        self.batches
    }
}

struct Batches<'a, B: Backend> {
    loader: &'a SequenceLoader<B>,
    start: u64,
    next: usize,
}

impl<B: Backend> Iterator for Batches<'_, B> {
    type Item = TokenBatch<B>;

    fn next(&mut self) -> Option<TokenBatch<B>> {
        if self.next == self.loader.batches {
            return None;
        }
        let loader = self.loader;
        let share = (loader.batch_size / loader.shards) as u64;
        let first =
            self.start + self.next as u64 * loader.batch_size as u64 + loader.shard as u64 * share;
        let sequences: Vec<_> = (first..first + share)
            .flat_map(|index| loader.source.item(index))
            .collect();
        self.next += 1;
        let mut batch = TokenBatch::new(&sequences, &loader.device);
        batch.shards = loader.shards;
        Some(batch)
    }
}

impl<B: Backend> DataLoaderIterator<TokenBatch<B>> for Batches<'_, B> {
    fn progress(&self) -> Progress {
        Progress::new(self.next * self.loader.batch_size, self.loader.num_items())
    }
}

impl<B: Backend> DataLoader<B, TokenBatch<B>> for SequenceLoader<B> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<TokenBatch<B>> + 'a> {
        let pass = self
            .passes
            .as_ref()
            .map_or(0, |passes| passes.fetch_add(1, Ordering::Relaxed));
        Box::new(Batches {
            loader: self,
            start: self.first + pass * self.num_items() as u64,
            next: 0,
        })
    }

    fn num_items(&self) -> usize {
        self.batches * self.batch_size
    }

    fn to_device(&self, device: &B::Device) -> Arc<dyn DataLoader<B, TokenBatch<B>>> {
        Arc::new(Self {
            device: device.clone(),
            ..self.clone()
        })
    }

    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<B, TokenBatch<B>>> {
        if self.shards > 1 {
            // burn-train's split: equal consecutive ranges, one per device. Each device
            // gets its share of every batch instead, and counts its own passes.
            let per_device = self.num_items() / self.shards;
            return Arc::new(Self {
                shard: (start / per_device.max(1)).min(self.shards - 1),
                passes: (self.passes.as_ref())
                    .map(|passes| Arc::new(AtomicU64::new(passes.load(Ordering::Relaxed)))),
                ..self.clone()
            });
        }
        Arc::new(Self {
            first: self.first + start as u64,
            batches: end.saturating_sub(start).div_ceil(self.batch_size),
            ..self.clone()
        })
    }
}
