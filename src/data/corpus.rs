//! Any files as a byte corpus: the first part trains, the last part validates.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::Rng;

use super::{Sequence, SequenceSource, item_rng};
use crate::error::{MobaError, Result};

/// The bytes of some files, in path order (directories are read recursively, their entries
/// sorted), and where validation starts.
///
/// ```no_run
/// use moba::data::{SequenceSource, TextCorpus};
///
/// let corpus = TextCorpus::load(&["books/".into()], 0.05)?;   // the last 5% validates
/// let train = corpus.train(8192, 1)?;                         // random 8K windows, seed 1
/// let first = train.sequence(0);                              // 8193 bytes
/// assert_eq!(first.tokens.len(), 8193);
/// # Ok::<(), moba::MobaError>(())
/// ```
#[derive(Debug, Clone)]
pub struct TextCorpus {
    bytes: Arc<[u8]>,
    valid_start: usize,
    /// The offset of every file's first byte (the documents), ascending from 0.
    documents: Arc<[usize]>,
}

impl TextCorpus {
    /// Reads `paths` (files or directories); `valid_fraction` of the bytes, at the end,
    /// validate. A missing or unreadable path is an error naming it.
    pub fn load(paths: &[PathBuf], valid_fraction: f64) -> Result<Self> {
        let mut files = Vec::new();
        for path in paths {
            collect_files(path, &mut files)?;
        }
        let mut bytes = Vec::new();
        let mut documents = Vec::new();
        for file in &files {
            documents.push(bytes.len());
            bytes.extend(std::fs::read(file).map_err(|e| MobaError::io(file, e))?);
        }
        if bytes.is_empty() {
            return Err(MobaError::Io {
                path: display(paths),
                error: "no data: no files, or only empty ones".into(),
            });
        }
        Ok(Self {
            documents: documents.into(),
            ..Self::from_bytes(bytes, valid_fraction)?
        })
    }

    /// A corpus of `bytes` held in memory; the last `valid_fraction` of them validate.
    pub fn from_bytes(bytes: Vec<u8>, valid_fraction: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&valid_fraction) {
            return Err(MobaError::Config(format!(
                "valid fraction must be in [0, 1), got {valid_fraction}"
            )));
        }
        let valid_start = bytes.len() - (bytes.len() as f64 * valid_fraction) as usize;
        Ok(Self {
            bytes: bytes.into(),
            valid_start,
            documents: Arc::new([0]),
        })
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True for a corpus without bytes.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// How many files were read (each one document).
    pub fn files(&self) -> usize {
        self.documents.len()
    }

    /// Training windows of `seq_len + 1` bytes at random offsets of the training part.
    pub fn train(&self, seq_len: usize, seed: u64) -> Result<CorpusWindows> {
        self.windows("training", 0..self.valid_start, seq_len, Some(seed))
    }

    /// Validation windows: consecutive, non-overlapping windows of the validation part.
    pub fn valid(&self, seq_len: usize) -> Result<CorpusWindows> {
        self.windows(
            "validation",
            self.valid_start..self.bytes.len(),
            seq_len,
            None,
        )
    }

    fn windows(
        &self,
        part: &str,
        range: std::ops::Range<usize>,
        seq_len: usize,
        seed: Option<u64>,
    ) -> Result<CorpusWindows> {
        if range.len() < seq_len + 1 {
            return Err(MobaError::Config(format!(
                "the {part} part of the corpus has {} bytes, fewer than one sequence of {} \
                 (seq_len + 1): give more text or a shorter --seq-len",
                range.len(),
                seq_len + 1
            )));
        }
        Ok(CorpusWindows {
            bytes: self.bytes.clone(),
            documents: None,
            grain: 1,
            range,
            seq_len,
            seed,
        })
    }
}

impl CorpusWindows {
    /// The same windows, each telling where its files start ([`Sequence::documents`]), so
    /// that the model attends within each file only instead of across the boundary. A
    /// document shorter than `grain` bytes shares its attention with the next one: a packed
    /// document is padded to a block boundary, and `grain` (the largest block) bounds that
    /// padding by the window's length (at most `seq_len / grain + 1` documents a window).
    pub fn by_document(self, corpus: &TextCorpus, grain: usize) -> Self {
        Self {
            documents: Some(corpus.documents.clone()),
            grain: grain.max(1),
            ..self
        }
    }
}

/// Windows of a [`TextCorpus`] part (see [`TextCorpus::train`] and [`TextCorpus::valid`]).
#[derive(Debug, Clone)]
pub struct CorpusWindows {
    bytes: Arc<[u8]>,
    /// The corpus's file offsets, where windows tell their documents apart.
    documents: Option<Arc<[usize]>>,
    /// The shortest document a window tells apart (`by_document`).
    grain: usize,
    range: std::ops::Range<usize>,
    seq_len: usize,
    seed: Option<u64>,
}

impl SequenceSource for CorpusWindows {
    fn seq_len(&self) -> usize {
        self.seq_len
    }

    fn sequence(&self, index: u64) -> Sequence {
        let window = self.seq_len + 1;
        let offset = match self.seed {
            Some(seed) => item_rng(seed, index).random_range(0..=self.range.len() - window),
            None => (index % self.distinct().unwrap_or(1)) as usize * window,
        };
        let start = self.range.start + offset;
        let mut sequence = Sequence::uniform(self.bytes[start..start + window].to_vec());
        if let Some(documents) = &self.documents {
            // Files that start at input positions 1..seq_len.
            let inside = documents.partition_point(|&at| at <= start)
                ..documents.partition_point(|&at| at < start + self.seq_len);
            let mut last = 0;
            for at in documents[inside].iter().map(|&at| at - start) {
                if at - last >= self.grain {
                    sequence.documents.push(at);
                    last = at;
                }
            }
        }
        sequence
    }

    fn distinct(&self) -> Option<u64> {
        match self.seed {
            Some(_) => None,
            None => Some((self.range.len() / (self.seq_len + 1)) as u64),
        }
    }
}

/// Every file under `path`, sorted, into `files`.
fn collect_files(path: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let metadata = std::fs::metadata(path).map_err(|e| MobaError::io(path, e))?;
    if metadata.is_file() {
        files.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| MobaError::io(path, e))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| MobaError::io(path, e))?;
    entries.sort();
    for entry in entries {
        collect_files(&entry, files)?;
    }
    Ok(())
}

fn display(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}
