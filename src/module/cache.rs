//! The key/value cache of one attention layer, for generation: prefill fills it, each decode
//! step appends one position and attends the whole cache through MoBA's gate. It also keeps
//! the mean key of every block for that gate, updated as positions arrive.

use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Int, Tensor};

/// Keys (already rotated by RoPE) and values of the positions a layer has seen:
/// `[batch, n_kv_heads, len, head_dim]` each. Empty until the first call.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    entries: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
    means: Option<BlockMeans<B>>,
    /// The last keys before a key convolution (`taps - 1` of them), which the next
    /// positions' convolved keys read.
    key_history: Option<Tensor<B, 4>>,
    /// `[batch, n_heads, 1, top_k]`: the blocks MoBA's gate chose for the last position
    /// read (a view of the routing).
    selection: Option<Tensor<B, 4, Int>>,
}

/// The mean key of every block of the cached keys, as of `len` positions.
#[derive(Debug, Clone)]
struct BlockMeans<B: Backend> {
    block_size: usize,
    len: usize,
    /// `[batch, n_kv_heads, ceil(len / block_size), head_dim]`.
    means: Tensor<B, 4>,
}

impl<B: Backend> Default for KvCache<B> {
    fn default() -> Self {
        Self {
            entries: None,
            means: None,
            key_history: None,
            selection: None,
        }
    }
}

impl<B: Backend> KvCache<B> {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many positions the cache holds.
    pub fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, |(k, _)| k.dims()[2])
    }

    /// True before the first call.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The batch size of the cached positions, if any.
    pub fn batch(&self) -> Option<usize> {
        self.entries.as_ref().map(|(k, _)| k.dims()[0])
    }

    /// The blocks each query head attended at the last position read, `[batch, n_heads, 1,
    /// top_k]` ascending and padded with -1: `None` before the first call and for layers
    /// that attend without MoBA's selection (NSA).
    pub fn selection(&self) -> Option<Tensor<B, 4, Int>> {
        self.selection.clone()
    }

    /// Keeps the last row of a call's `selection: [batch, n_heads, rows, top_k]`, or none.
    pub(crate) fn set_selection(&mut self, selection: Option<Tensor<B, 4, Int>>) {
        self.selection = selection.map(|selection| {
            let rows = selection.dims()[2];
            selection.slice_dim(2, rows - 1..rows)
        });
    }

    /// The unconvolved keys a key convolution reads before the next positions.
    pub(crate) fn key_history(&self) -> Option<Tensor<B, 4>> {
        self.key_history.clone()
    }

    /// Keeps the last `keep` of the history and the unconvolved keys `new` after it.
    pub(crate) fn extend_key_history(&mut self, new: Tensor<B, 4>, keep: usize) {
        if keep == 0 {
            return;
        }
        let all = match self.key_history.take() {
            Some(history) => Tensor::cat(vec![history, new], 2),
            None => new,
        };
        let len = all.dims()[2];
        self.key_history = Some(all.slice_dim(2, len.saturating_sub(keep)..len));
    }

    /// Appends `k, v: [batch, n_kv_heads, new, head_dim]` and returns the whole cache.
    /// A concatenation: it copies the cache once per call, which is small beside the
    /// attention of a long prompt; the attention itself only reads the selected blocks.
    pub fn append(&mut self, k: Tensor<B, 4>, v: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let entries = match self.entries.take() {
            Some((past_k, past_v)) => (
                Tensor::cat(vec![past_k, k], 2),
                Tensor::cat(vec![past_v, v], 2),
            ),
            None => (k, v),
        };
        self.entries = Some(entries.clone());
        entries
    }

    /// The mean of every block of `block_size` cached keys (the last block's over the keys
    /// it has), in f32: `[batch, n_kv_heads, ceil(len / block_size), head_dim]`, what MoBA's gate
    /// scores (`moba::backend::moba_attention_with_means`). Kept between calls: only the
    /// blocks that gained positions since the last call are pooled again (one block per
    /// decode step), never the whole cache. `None` while the cache is empty.
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::tensor::{Distribution, Tensor};
    /// use moba::module::KvCache;
    ///
    /// let device = Default::default();
    /// let mut cache = KvCache::<NdArray>::new();
    /// let kv = Tensor::random([1, 2, 20, 8], Distribution::Normal(0.0, 1.0), &device);
    /// cache.append(kv.clone(), kv);
    /// assert_eq!(cache.block_means(8).unwrap().dims(), [1, 2, 3, 8]); // blocks of 8, 8, 4
    /// let next = Tensor::random([1, 2, 1, 8], Distribution::Normal(0.0, 1.0), &device);
    /// cache.append(next.clone(), next);
    /// assert_eq!(cache.block_means(8).unwrap().dims(), [1, 2, 3, 8]); // the last block: 5 keys
    /// ```
    pub fn block_means(&mut self, block_size: usize) -> Option<Tensor<B, 4>> {
        let (keys, _) = self.entries.as_ref()?;
        let [batch, heads, len, dim] = keys.dims();
        if len == 0 {
            return None;
        }
        let keys = keys.clone();
        // Blocks before the first one that gained positions keep their means.
        let (kept, past) = match self.means.take() {
            Some(old) if old.block_size == block_size && old.len <= len => {
                let kept = old.len / block_size;
                let means = old.means.slice([0..batch, 0..heads, 0..kept, 0..dim]);
                (kept, (kept > 0).then_some(means))
            }
            _ => (0, None),
        };
        // Only the keys of the blocks that gained positions, pooled in f32 whatever the keys'
        // type, as the kernels pool them (DESIGN §1.2).
        let first = kept * block_size;
        let fresh = keys
            .slice([0..batch, 0..heads, first..len])
            .cast(FloatDType::F32);
        let (full, tail) = ((len - first) / block_size, (len - first) % block_size);
        let mut parts: Vec<Tensor<B, 4>> = past.into_iter().collect();
        if full > 0 {
            let whole = fresh
                .clone()
                .slice([0..batch, 0..heads, 0..full * block_size]);
            let pooled = whole
                .reshape([batch, heads, full, block_size, dim])
                .mean_dim(3);
            parts.push(pooled.reshape([batch, heads, full, dim]));
        }
        if tail > 0 {
            let rest = full * block_size..full * block_size + tail;
            parts.push(fresh.slice([0..batch, 0..heads, rest]).mean_dim(2));
        }
        let means = Tensor::cat(parts, 2);
        self.means = Some(BlockMeans {
            block_size,
            len,
            means: means.clone(),
        });
        Some(means)
    }
}
