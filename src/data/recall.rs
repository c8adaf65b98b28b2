//! Synthetic long-range recall: key-value records scattered through filler text, queried at
//! the end. Only the queries' copied bytes count in the loss, so the loss and the accuracy
//! measure recall alone; the distance from a record to the queries sets the difficulty.
//!
//! Layout of a sequence of `seq_len + 1` bytes: filler (random lowercase letters and spaces)
//! with `pairs` records `#KEYVAL;` (3 capital letters, 3 digits, distinct keys) in distinct
//! 16-byte slots at random offsets; then `queries` queries `?KEYVAL;` of distinct records, in
//! random order. The model must predict the 3 digits of every query's value (recall
//! accuracy), and the loss also counts the key's second and third letters.
//!
//! The value follows its key with no separator, so the lookup is a copy: find where the
//! query's bytes so far appeared and continue from there (what induction heads do). The key
//! letters after the first are such copies too, which trains that mechanism on more bytes.
//! (With a `=` between key and value, and the value digits alone in the loss, small models
//! settled on guessing among the values in view instead: RESULTS.md.)

use std::ops::Range;

use rand::Rng;
use rand::seq::SliceRandom;

use super::{Sequence, SequenceSource, item_rng};
use crate::error::{MobaError, Result};

/// Bytes of a key.
const KEY_LEN: usize = 3;
/// Bytes of a record and of a query: `#KEYVAL;`.
pub const RECORD_LEN: usize = KEY_LEN + 5;
/// Records sit in slots of this many bytes, at a random offset inside the slot.
const SLOT: usize = 16;
/// Offset of the value inside a record or query.
const VALUE_AT: usize = KEY_LEN + 1;
const VALUE_LEN: usize = 3;
const FILLER: &[u8] = b"abcdefghijklmnopqrstuvwxyz ";

/// The recall task (see the module documentation).
///
/// ```
/// use moba::data::{RecallTask, SequenceSource};
///
/// let task = RecallTask::new(1024, 7)?;               // 1K bytes of context, seed 7
/// let sample = task.sample(0);
/// let query = &sample.queries[0];
/// let text = &sample.sequence.tokens;
/// assert_eq!(text[query.at - 4], b'?');                // `?KEY` then the value
/// assert_eq!(&text[query.at..query.at + 3], query.value.as_bytes());
/// assert_eq!(task.sequence(0), sample.sequence);      // a function of the index
/// # Ok::<(), moba::MobaError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RecallTask {
    seq_len: usize,
    pairs: usize,
    queries: usize,
    seed: u64,
    /// Slots the queried records may take (all of them unless a distance range is set).
    slots: Range<usize>,
}

/// One query of a [`RecallSample`].
#[derive(Debug, Clone, PartialEq)]
pub struct RecallQuery {
    /// Token index of the first value digit (the model predicts it from index `at - 1`).
    pub at: usize,
    /// The three digits.
    pub value: String,
    /// Bytes from the queried record to the first query.
    pub distance: usize,
    /// Token index where the queried record starts (its `#`).
    pub record: usize,
}

/// A sequence of the task with the positions of its answers.
#[derive(Debug, Clone, PartialEq)]
pub struct RecallSample {
    pub sequence: Sequence,
    pub queries: Vec<RecallQuery>,
}

impl RecallTask {
    /// The task at `seq_len` bytes of model input with the default number of records and
    /// queries: one query per 512 bytes (1 to 16) and four records per query.
    pub fn new(seq_len: usize, seed: u64) -> Result<Self> {
        let queries = (seq_len / 512).clamp(1, 16);
        Self::with_counts(seq_len, 4 * queries, queries, seed)
    }

    /// The task with `pairs` records, `queries` of which are asked (`queries <= pairs`).
    pub fn with_counts(seq_len: usize, pairs: usize, queries: usize, seed: u64) -> Result<Self> {
        let context = (seq_len + 1).saturating_sub(queries * RECORD_LEN);
        let slots = context / SLOT;
        if queries == 0 || queries > pairs || pairs > slots {
            return Err(MobaError::Config(format!(
                "recall task: need 1 <= queries ({queries}) <= pairs ({pairs}) <= {slots} \
                 (the {SLOT}-byte slots before the queries at seq_len {seq_len})"
            )));
        }
        Ok(Self {
            seq_len,
            pairs,
            queries,
            seed,
            slots: 0..slots,
        })
    }

    /// The same task with every queried record `distance` bytes (a range) before the
    /// queries; the other records stay anywhere. Errors when too few slots fit the range.
    pub fn at_distance(&self, distance: Range<usize>) -> Result<Self> {
        let context = self.context();
        // A record starts 0 to SLOT - RECORD_LEN bytes into its slot; keep the slots whose
        // every start is in range.
        let first = context
            .checked_sub(distance.end)
            .map_or(0, |x| x / SLOT + 1);
        let end = context
            .checked_sub(distance.start + SLOT - RECORD_LEN)
            .map_or(0, |x| x / SLOT + 1)
            .min(self.slots_total());
        let slots = first..end.max(first);
        if slots.len() < self.queries {
            return Err(MobaError::Config(format!(
                "recall task: only {} slots lie {distance:?} bytes before the queries; {} needed",
                slots.len(),
                self.queries
            )));
        }
        Ok(Self {
            slots,
            ..self.clone()
        })
    }

    /// [`RecallTask::at_distance`], asking fewer queries where fewer slots lie in the range
    /// than the task asks (evaluation by distance of a task with many queries); an error only
    /// when not one slot does.
    pub fn near(&self, distance: Range<usize>) -> Result<Self> {
        let mut error = None;
        for queries in (1..=self.queries).rev() {
            let fewer = Self::with_counts(self.seq_len, self.pairs, queries, self.seed)?;
            match fewer.at_distance(distance.clone()) {
                Ok(task) => return Ok(task),
                Err(e) => error = error.or(Some(e)),
            }
        }
        Err(error.expect("at least one query was tried"))
    }

    /// The task at another length with the same seed and the same density of records and
    /// queries (at least one query; a curriculum's shorter stages).
    pub fn scaled(&self, seq_len: usize) -> Result<Self> {
        let scale = |count: usize| count * seq_len / self.seq_len;
        let queries = scale(self.queries).max(1);
        let pairs = scale(self.pairs).max(queries);
        Self::with_counts(seq_len, pairs, queries, self.seed)
    }

    /// The same task drawing from another seed (validation uses a seed of its own).
    pub fn with_seed(&self, seed: u64) -> Self {
        Self {
            seed,
            ..self.clone()
        }
    }

    /// Bytes before the queries.
    pub fn context(&self) -> usize {
        self.seq_len + 1 - self.queries * RECORD_LEN
    }

    /// Records and queries per sequence.
    pub fn counts(&self) -> (usize, usize) {
        (self.pairs, self.queries)
    }

    fn slots_total(&self) -> usize {
        self.context() / SLOT
    }

    /// Sequence `index` with its queries.
    pub fn sample(&self, index: u64) -> RecallSample {
        let mut rng = item_rng(self.seed, index);
        let context = self.context();
        let mut tokens: Vec<u8> = (0..self.seq_len + 1)
            .map(|_| FILLER[rng.random_range(0..FILLER.len())])
            .collect();
        let mut keys: Vec<[u8; KEY_LEN]> = Vec::with_capacity(self.pairs);
        while keys.len() < self.pairs {
            let key = [(); KEY_LEN].map(|_| b'A' + rng.random_range(0..26u8));
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        let values: Vec<[u8; 3]> = (0..self.pairs)
            .map(|_| [(); 3].map(|_| b'0' + rng.random_range(0..10u8)))
            .collect();

        // Queried records take slots in the allowed range, the others any free slot.
        let mut allowed: Vec<usize> = self.slots.clone().collect();
        allowed.shuffle(&mut rng);
        let mut slots: Vec<usize> = allowed[..self.queries].to_vec();
        let mut free: Vec<usize> = (0..self.slots_total())
            .filter(|s| !slots.contains(s))
            .collect();
        free.shuffle(&mut rng);
        slots.extend_from_slice(&free[..self.pairs - self.queries]);
        let starts: Vec<usize> = slots
            .iter()
            .map(|&slot| slot * SLOT + rng.random_range(0..=SLOT - RECORD_LEN))
            .collect();
        for ((&start, key), value) in starts.iter().zip(&keys).zip(&values) {
            write_record(&mut tokens[start..start + RECORD_LEN], b'#', key, value);
        }

        let mut order: Vec<usize> = (0..self.queries).collect();
        order.shuffle(&mut rng);
        let mut weights = vec![0.0; self.seq_len];
        let queries = order
            .iter()
            .enumerate()
            .map(|(slot, &record)| {
                let start = context + slot * RECORD_LEN;
                write_record(
                    &mut tokens[start..start + RECORD_LEN],
                    b'?',
                    &keys[record],
                    &values[record],
                );
                let at = start + VALUE_AT;
                // The key after its first letter and the value: from the first letter on, the
                // rest is a copy of the record's bytes.
                weights[start + 1..at - 1 + VALUE_LEN].fill(1.0);
                RecallQuery {
                    at,
                    value: String::from_utf8(values[record].to_vec()).expect("digits"),
                    distance: context - starts[record],
                    record: starts[record],
                }
            })
            .collect();
        RecallSample {
            sequence: Sequence {
                tokens,
                weights,
                documents: Vec::new(),
            },
            queries,
        }
    }
}

impl SequenceSource for RecallTask {
    fn seq_len(&self) -> usize {
        self.seq_len
    }

    fn sequence(&self, index: u64) -> Sequence {
        self.sample(index).sequence
    }
}

/// `{mark}KEYVAL;` into `out` (RECORD_LEN bytes).
fn write_record(out: &mut [u8], mark: u8, key: &[u8; KEY_LEN], value: &[u8; 3]) {
    out[0] = mark;
    out[1..VALUE_AT].copy_from_slice(key);
    out[VALUE_AT..VALUE_AT + VALUE_LEN].copy_from_slice(value);
    out[RECORD_LEN - 1] = b';';
}
