//! Shorter sequences first: a source whose early items are several short sequences in place
//! of one long one. A model forms the circuits of a long-context task (the recall task's
//! lookup) far sooner on short sequences, where few positions compete for each query's
//! attention; packing as many of them into a step as its bytes allow keeps the count of
//! answers per step, and a short step costs less attention.

use std::sync::Arc;

use super::{Sequence, SequenceSource};

/// Stages of halving length (shortest first): item `index` comes from stage
/// `index / per_stage`, and from the last (full-length) stage once the others are through.
/// An item of a stage `2^h` times shorter than the last is `2^h` of its sequences.
///
/// ```
/// use std::sync::Arc;
/// use moba::data::{Curriculum, RecallTask, SequenceSource};
///
/// let task = RecallTask::new(1024, 7)?;
/// let stages = vec![
///     Arc::new(task.scaled(256)?) as Arc<dyn SequenceSource>,
///     Arc::new(task.scaled(512)?),
///     Arc::new(task),
/// ];
/// let curriculum = Curriculum::new(stages, 10);
/// let early = curriculum.item(9);                      // four sequences of 256 bytes
/// assert_eq!((early.len(), early[0].len()), (4, 256));
/// assert_eq!(curriculum.item(10).len(), 2);            // two of 512
/// assert_eq!(curriculum.item(1000).len(), 1);          // then one of 1024
/// assert_eq!(curriculum.seq_len(), 1024);
/// # Ok::<(), moba::MobaError>(())
/// ```
pub struct Curriculum {
    stages: Vec<Arc<dyn SequenceSource>>,
    per_stage: u64,
}

impl Curriculum {
    /// `stages` (at least one), each half as long as the next, read in turn for `per_stage`
    /// items each but the last.
    pub fn new(stages: Vec<Arc<dyn SequenceSource>>, per_stage: u64) -> Self {
        assert!(!stages.is_empty(), "a curriculum needs a stage");
        Self { stages, per_stage }
    }

    /// The stage of item `index` and how many of its sequences make one item.
    fn stage(&self, index: u64) -> (&Arc<dyn SequenceSource>, u64) {
        let last = self.stages.len() - 1;
        let stage = ((index / self.per_stage.max(1)) as usize).min(last);
        (&self.stages[stage], 1 << (last - stage))
    }
}

impl SequenceSource for Curriculum {
    /// The length of the last (full-length) stage.
    fn seq_len(&self) -> usize {
        self.stages[self.stages.len() - 1].seq_len()
    }

    /// The first sequence of item `index`.
    fn sequence(&self, index: u64) -> Sequence {
        let (stage, count) = self.stage(index);
        stage.sequence(index * count)
    }

    fn item(&self, index: u64) -> Vec<Sequence> {
        let (stage, count) = self.stage(index);
        (index * count..(index + 1) * count)
            .map(|i| stage.sequence(i))
            .collect()
    }
}

/// The sequence lengths of a curriculum of `stages` stages up to `seq_len`: halving from the
/// full length down, shortest first (`[seq_len]` for one stage).
pub fn curriculum_lengths(seq_len: usize, stages: usize) -> Vec<usize> {
    (0..stages.max(1))
        .rev()
        .map(|halvings| seq_len >> halvings)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_halve_down_from_the_full_length() {
        assert_eq!(curriculum_lengths(8192, 5), [512, 1024, 2048, 4096, 8192]);
        assert_eq!(curriculum_lengths(8192, 1), [8192]);
        assert_eq!(curriculum_lengths(8192, 0), [8192]);
    }
}
