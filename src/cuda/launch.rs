//! Launch arithmetic of the CUDA kernels: their parameters, grids, shared memory and scratch
//! sizes. Pure functions (no driver), so CI checks them.

use super::source::{ElemKind, MmaKind};
use crate::config::{MobaConfig, Shape};
use crate::launch_plan::{DECODE_MAX_ROWS, decodes};

/// Threads of a warp.
pub const WARP: u32 = 32;
/// Gathered query rows per attention / dq thread block.
pub const ROW_TILE: usize = 128;
/// Keys per shared-memory tile.
pub const KEY_TILE: usize = 64;
/// Threads of the tile kernels: one warp per 16 rows.
pub const TILE_THREADS: u32 = (ROW_TILE / 16) as u32 * WARP;
/// Threads of the dk/dv kernel: one warp per 16 keys.
pub const KEY_THREADS: u32 = (KEY_TILE / 16) as u32 * WARP;
/// Rows per dk/dv step with mma.sync.
pub const DKDV_ROWS_SYNC: usize = 32;
/// Rows per dk/dv step with warpgroup MMAs.
pub const DKDV_ROWS_WGMMA: usize = 64;
/// Rows per chunk of the counting sort (their entries in every slot a list holds).
pub const CHUNK_ROWS: usize = 1024;
/// Threads of the histogram and scan kernels.
pub const INVERT_THREADS: u32 = 256;
/// Threads of the gate.
pub const GATE_THREADS: u32 = 128;
/// Threads of the block means.
pub const MEAN_THREADS: u32 = 256;
/// Largest block the forward runs by block ([`CudaPlan::by_block`]): a tile of such a
/// block's rows walks at most two key tiles, so the per-slot passes spend their time
/// gathering rows and reading and writing each row's running state.
pub const BY_BLOCK_MAX_BLOCK: usize = 2 * KEY_TILE;
/// Most bytes of the forward by block's per-(row, slot) outputs.
pub const BY_BLOCK_MAX_PARTIAL_BYTES: usize = 16 << 30;
/// Threads of the element-wise and per-row kernels.
pub const ELEMENT_THREADS: u32 = 256;
/// Thread blocks the dk/dv walk fills at least where it can (two per SM of an H100 or
/// H200): below that, each group's query heads are split over several thread blocks.
pub const DKDV_MIN_BLOCKS: usize = 264;
/// Warps of NSA's selection (`nsa_select`), two 16-row m-tiles of its q tile each.
pub const SELECT_WARPS: u32 = 8;
pub const SELECT_THREADS: u32 = SELECT_WARPS * WARP;
/// Rows of `nsa_select`'s q tile: every head of its queries ([`select_layout`]).
pub const SELECT_ROWS: usize = 2 * 16 * SELECT_WARPS as usize;
/// Most queries of one `nsa_select` thread block (one ranking thread each).
pub const SELECT_QUERIES: usize = 128;
/// (query, selection block) pairs each `nsa_select` thread weighs per chunk: a thread block
/// holds no more queries than its threads can weigh every block of a chunk for.
pub const SELECT_PAIRS: usize = 8;
/// Words of each query's survivor mask in `nsa_select`: a bit per selection block of a chunk
/// (at most one per pooled key of it).
pub const SURVIVOR_WORDS: usize = (crate::shared_constants::NSA_SELECT_CHUNK as usize).div_ceil(32);
/// Warps per thread block of NSA's selected branch (`nsa_selected`), 16 query rows each:
/// the block's queries share the key and value tiles of the blocks they chose.
pub const SELECTED_WARPS: u32 = 8;
pub const SELECTED_THREADS: u32 = SELECTED_WARPS * WARP;
/// Most queries of one `nsa_selected` thread block (a lane of one warp follows each one's
/// selection): groups of at least [`SELECTED_MIN_GROUP`] query heads.
pub const SELECTED_QUERIES: u32 = WARP;
pub const SELECTED_MIN_GROUP: usize = 16 * SELECTED_WARPS as usize / SELECTED_QUERIES as usize;
/// Keys per chunk of the split decode, one per thread.
pub const DECODE_KEYS: u32 = 128;
/// Threads of the language model's decode-step kernels (`lm.cu`).
pub const LM_THREADS: u32 = 256;
/// Output columns per thread block of `lm_matvec`; the other factor of [`LM_THREADS`] splits
/// the weight's rows (the WGSL decoder's split).
pub const LM_COLUMNS: u32 = 16;
/// Padding of every padded shared tile row, in 16-bit elements.
const TILE_PAD: usize = 8;
/// Alignment of swizzled shared tiles, in bytes.
const SWIZZLE_ALIGN: usize = 1024;

/// The constants above as every CUDA source sees them (`#define`s the host prepends).
pub fn source_constants() -> [(&'static str, u32); 26] {
    [
        ("WARP", WARP),
        ("ROW_TILE", ROW_TILE as u32),
        ("KEY_TILE", KEY_TILE as u32),
        ("TILE_THREADS", TILE_THREADS),
        ("KEY_THREADS", KEY_THREADS),
        ("DKDV_ROWS_SYNC", DKDV_ROWS_SYNC as u32),
        ("DKDV_ROWS_WGMMA", DKDV_ROWS_WGMMA as u32),
        ("CHUNK_ROWS", CHUNK_ROWS as u32),
        ("INVERT_THREADS", INVERT_THREADS),
        ("GATE_THREADS", GATE_THREADS),
        ("MEAN_THREADS", MEAN_THREADS),
        ("ELEMENT_THREADS", ELEMENT_THREADS),
        ("SELECT_WARPS", SELECT_WARPS),
        ("SELECT_THREADS", SELECT_THREADS),
        ("SELECT_ROWS", SELECT_ROWS as u32),
        ("SELECT_PAIRS", SELECT_PAIRS as u32),
        ("SURVIVOR_WORDS", SURVIVOR_WORDS as u32),
        ("SELECTED_WARPS", SELECTED_WARPS),
        ("SELECTED_THREADS", SELECTED_THREADS),
        ("SELECTED_QUERIES", SELECTED_QUERIES),
        ("TILE_PAD", TILE_PAD as u32),
        ("SWIZZLE_ALIGN", SWIZZLE_ALIGN as u32),
        ("DECODE_KEYS", DECODE_KEYS),
        ("DECODE_MAX_ROWS", DECODE_MAX_ROWS as u32),
        ("LM_THREADS", LM_THREADS),
        ("LM_COLUMNS", LM_COLUMNS),
    ]
}

/// `nsa_select`'s q tile for a group of `group_size` query heads, ranking `chunk_blocks`
/// selection blocks a chunk: (rows per query, queries per thread block). Each query's heads
/// are consecutive rows, the group rounded up to a power of two below 16 (m-tiles of 16 rows
/// hold whole queries) or to a multiple of 16 (a query fills whole m-tiles); as many queries
/// as the tile's [`SELECT_ROWS`] hold, up to [`SELECT_QUERIES`] and to what the threads weigh
/// ([`SELECT_PAIRS`] each). `None` for a group larger than the tile.
pub fn select_layout(group_size: usize, chunk_blocks: usize) -> Option<(usize, usize)> {
    let rows = match group_size >= 16 {
        true => group_size.next_multiple_of(16),
        false => group_size.next_power_of_two(),
    };
    let weighed = SELECT_PAIRS * SELECT_THREADS as usize / chunk_blocks.max(1);
    let most = (SELECT_ROWS / rows).min(SELECT_QUERIES).min(weighed);
    // Whole m-tiles: a multiple of the queries an m-tile holds.
    let per_tile = (16 / rows).max(1);
    let queries = most / per_tile * per_tile;
    (rows <= SELECT_ROWS && queries > 0).then_some((rows, queries))
}

/// Dynamic shared memory of `nsa_select` at `head_dim` for thread blocks of `queries`: the
/// q tile and two key tiles (padded rows), the chunk's summed probabilities (padded f32 rows
/// of the block's queries), each row's lse and eligible count, and each query's ranking
/// floor and the chunk's blocks at or above it ([`SURVIVOR_WORDS`]).
pub fn nsa_select_shared_bytes(head_dim: usize, queries: usize) -> u32 {
    let chunk = crate::shared_constants::NSA_SELECT_CHUNK as usize;
    let tiles = (SELECT_ROWS + 2 * chunk) * (head_dim + TILE_PAD) * 2;
    let ranking = queries * (1 + SURVIVOR_WORDS) * 4;
    (tiles + queries * (chunk + 1) * 4 + SELECT_ROWS * 8 + ranking) as u32
}

/// Dynamic shared memory of `nsa_selected` at `head_dim` for selection blocks of
/// `block_size` keys and top-`top_n`: the q tile and two k and two v tiles (padded rows), and
/// the walk's first key, stop and queries of each of the most key tiles its queries can
/// choose.
pub fn nsa_selected_shared_bytes(head_dim: usize, block_size: usize, top_n: usize) -> u32 {
    let rows = SELECTED_WARPS as usize * 16;
    let tiles = (rows + 4 * KEY_TILE) * (head_dim + TILE_PAD) * 2;
    let walk = SELECTED_QUERIES as usize * top_n * block_size.div_ceil(KEY_TILE);
    (tiles + 3 * walk * 4) as u32
}

/// Thread blocks of `nsa_selected` (a group of at least [`SELECTED_MIN_GROUP`] heads):
/// (warp items of a group over [`SELECTED_WARPS`], groups). A warp takes 16 heads of one
/// query, or a smaller group's heads at `16 / group_size` queries.
pub fn nsa_selected_grid(shape: &Shape) -> (u32, u32, u32) {
    let group = shape.group_size();
    let items = match group >= 16 {
        true => shape.q_len * group.div_ceil(16),
        false => shape.q_len.div_ceil(16 / group),
    };
    (
        items.div_ceil(SELECTED_WARPS as usize) as u32,
        shape.groups() as u32,
        1,
    )
}

/// Dynamic shared memory a thread block may opt into on sm_80 and sm_90 (227 KiB).
pub const MAX_SHARED_BYTES: u32 = 227 * 1024;

/// The tensor-core k step: head dims are padded to a multiple of it.
pub const HEAD_DIM_MULTIPLE: usize = 16;

/// Grids, shared memory and scratch of one problem.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CudaPlan {
    pub num_blocks: usize,
    /// Query heads over the batch (`batch * q_heads`).
    pub query_heads: usize,
    /// Kv heads over the batch (`batch * kv_heads`).
    pub kv_groups: usize,
    /// Query rows (`batch * q_heads * q_len`).
    pub rows: usize,
    /// Keys (and values) per group.
    pub kv_len: usize,
    /// The inversion's lists of the passes per slot (the backward's, and the forward's
    /// where it does not run by block).
    pub slot_lists: ListLayout,
    /// The forward's lists where it runs by block ([`crate::launch_plan::forward_by_block`]):
    /// blocks of at most [`BY_BLOCK_MAX_BLOCK`] keys, two slots or more, and outputs of
    /// every (row, slot) within [`BY_BLOCK_MAX_PARTIAL_BYTES`]; `None` otherwise.
    pub by_block: Option<ListLayout>,
    /// Bytes of one input element (the by-block outputs are stored as the inputs).
    pub elem_bytes: usize,
    /// Key tiles per block in the dk/dv grid.
    pub key_tiles_per_block: usize,
    /// Thread blocks that share one key tile's walk, each over its share of the group's
    /// query heads ([`CudaPlan::dkdv_splits`]); above 1, they write f32 partial sums (into
    /// the dq accumulator, free by then) that `dkdv_combine` adds up.
    pub dkdv_splits: usize,
    pub head_dim: usize,
    /// The tensor-core instructions of the forward (they set its tile layout).
    pub mma: MmaKind,
    /// Where the forward decodes split over keys ([`crate::launch_plan::decodes`]): the
    /// chunks of a block and the selection slots a row can fill; `None` otherwise.
    pub decode: Option<DecodeSplit>,
}

/// The inversion's lists: `lists` lists of `slots` selection slots of one query head each
/// (1: a list per (query head, slot); top-k: a list per query head), their entries counted
/// in `chunks` chunks of [`CHUNK_ROWS`] rows' entries, at most `tile_capacity` tiles of [`ROW_TILE`]
/// entries per list (every block's list wastes at most one partial tile).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ListLayout {
    pub lists: usize,
    pub slots: usize,
    pub chunks: usize,
    pub tile_capacity: usize,
}

impl ListLayout {
    fn new(shape: &Shape, config: &MobaConfig, slots: usize) -> Self {
        let entries = shape.q_len * slots;
        ListLayout {
            lists: shape.batch * shape.q_heads * config.top_k / slots,
            slots,
            chunks: shape.q_len.div_ceil(CHUNK_ROWS),
            tile_capacity: entries.div_ceil(ROW_TILE) + shape.num_blocks(config.block_size),
        }
    }

    /// Grid of `selection_count` and `selection_scatter`: (chunks, lists).
    pub fn chunk_grid(&self) -> (u32, u32, u32) {
        (self.chunks as u32, self.lists as u32, 1)
    }
}

/// The split decode's partials: `chunks` chunks of [`DECODE_KEYS`] keys per block, `slots`
/// selection slots per row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeSplit {
    pub chunks: usize,
    pub slots: usize,
}

impl CudaPlan {
    /// `shape.head_dim` must be a multiple of [`HEAD_DIM_MULTIPLE`].
    pub fn new(shape: &Shape, config: &MobaConfig, mma: MmaKind, elem: ElemKind) -> Self {
        let num_blocks = shape.num_blocks(config.block_size);
        let elem_bytes = elem.bytes();
        let partial_bytes = shape.q_rows() * config.top_k * shape.head_dim * elem_bytes;
        let by_block = config.block_size <= BY_BLOCK_MAX_BLOCK
            && config.top_k > 1
            && partial_bytes <= BY_BLOCK_MAX_PARTIAL_BYTES
            && !decodes(shape);
        CudaPlan {
            num_blocks,
            query_heads: shape.batch * shape.q_heads,
            kv_groups: shape.batch * shape.kv_heads,
            rows: shape.q_rows(),
            kv_len: shape.kv_len,
            slot_lists: ListLayout::new(shape, config, 1),
            by_block: by_block.then(|| ListLayout::new(shape, config, config.top_k)),
            elem_bytes,
            key_tiles_per_block: config.block_size.div_ceil(KEY_TILE),
            dkdv_splits: Self::dkdv_splits(shape, config),
            head_dim: shape.head_dim,
            mma,
            decode: decodes(shape).then(|| DecodeSplit {
                chunks: config.block_size.div_ceil(DECODE_KEYS as usize),
                slots: config.top_k.min(num_blocks),
            }),
        }
    }

    /// Bytes of shared tiles of `rows` rows in all, in the layout of the tile kernels
    /// (`TileLayout`): padded rows for mma.sync; unpadded and swizzled for warpgroup MMAs,
    /// from a 1024-byte aligned start.
    fn tiles_bytes(&self, rows: usize) -> u32 {
        let bytes = match self.mma {
            MmaKind::Sync => rows * (self.head_dim + TILE_PAD) * 2,
            MmaKind::Warpgroup => rows * self.head_dim * 2 + SWIZZLE_ALIGN,
        };
        bytes as u32
    }

    /// How many thread blocks split each key tile's dk/dv walk: enough to bring the grid to
    /// [`DKDV_MIN_BLOCKS`], at most half the group (two query heads or more each), and no
    /// more than the dq accumulator (`[rows, head_dim]` f32) holds partial dk and dv for.
    pub fn dkdv_splits(shape: &Shape, config: &MobaConfig) -> usize {
        let tiles = shape.num_blocks(config.block_size) * config.block_size.div_ceil(KEY_TILE);
        let blocks = tiles * shape.groups();
        let partials_fit = shape.q_rows() / (2 * shape.groups() * shape.kv_len);
        DKDV_MIN_BLOCKS
            .div_ceil(blocks)
            .min(shape.group_size() / 2)
            .min(partials_fit)
            .max(1)
    }

    /// Dynamic shared memory of `attention_pass`: the q tile, and two k and two v tiles
    /// (the next key tile is copied while this one is used).
    pub fn attention_shared_bytes(&self) -> u32 {
        self.tiles_bytes(ROW_TILE + 4 * KEY_TILE)
    }

    /// Dynamic shared memory of `dq_pass`: the q and dO tiles, and two k and two v tiles.
    pub fn dq_shared_bytes(&self) -> u32 {
        self.tiles_bytes(2 * ROW_TILE + 4 * KEY_TILE)
    }

    /// Dynamic shared memory of `dkdv`: the k and v tiles, and two q and two dO tiles (the
    /// next step's rows are copied while this step's are used).
    pub fn dkdv_shared_bytes(&self) -> u32 {
        let rows = match self.mma {
            MmaKind::Sync => DKDV_ROWS_SYNC,
            MmaKind::Warpgroup => DKDV_ROWS_WGMMA,
        };
        self.tiles_bytes(2 * KEY_TILE + 4 * rows)
    }

    /// Dynamic shared memory of the histogram and scatter kernels: one u32 per block.
    pub fn inversion_shared_bytes(&self) -> u32 {
        (self.num_blocks * 4) as u32
    }

    /// Grid of the tile passes over `lists` (attention, dq; attention by block): (tile
    /// capacity, query heads).
    pub fn pass_grid(&self, lists: &ListLayout) -> (u32, u32, u32) {
        (lists.tile_capacity as u32, self.query_heads as u32, 1)
    }

    /// The lists of the forward's inversion: by block where it runs so, else per slot.
    pub fn forward_lists(&self) -> ListLayout {
        self.by_block.unwrap_or(self.slot_lists)
    }

    /// Grid of `dkdv`: (key tiles of every block, kv groups, splits of a group's heads).
    pub fn dkdv_grid(&self) -> (u32, u32, u32) {
        let tiles = self.key_tiles_per_block * self.num_blocks;
        (tiles as u32, self.kv_groups as u32, self.dkdv_splits as u32)
    }

    /// Grid of `decode_split`: (chunks of a block, blocks, kv groups).
    pub fn decode_grid(&self, decode: DecodeSplit) -> (u32, u32, u32) {
        (
            decode.chunks as u32,
            self.num_blocks as u32,
            self.kv_groups as u32,
        )
    }

    /// Blocks of `threads` threads covering `items`, one item per thread.
    pub fn cover(items: usize, threads: u32) -> (u32, u32, u32) {
        (items.div_ceil(threads as usize) as u32, 1, 1)
    }

    /// Elements of k (and of v): `[kv groups, kv_len, head_dim]`.
    pub fn kv_elements(&self) -> usize {
        self.kv_groups * self.kv_len * self.head_dim
    }

    /// Element counts of the scratch buffers of a forward (`forward`) or a backward, in
    /// 4-byte words. The per-slot lists are the largest (a by-block list holds a query
    /// head's slots in one, counted in as many chunks).
    pub fn scratch_words(&self, forward: bool) -> ScratchWords {
        let lists = &self.slot_lists;
        // The split decode's f32 partials of every (row, slot, chunk) with (max, sum); the
        // forward by block's outputs of every (row, slot) as elements with their lse.
        let (partial_out, partial_stats) = match (self.decode, self.by_block) {
            _ if !forward => (0, 0),
            (Some(d), _) => {
                let partials = self.rows * d.slots * d.chunks;
                (partials * self.head_dim, partials * 2)
            }
            (None, Some(by_block)) => {
                let pairs = self.rows * by_block.slots;
                ((pairs * self.head_dim * self.elem_bytes).div_ceil(4), pairs)
            }
            (None, None) => (0, 0),
        };
        // The forward by block keeps no running state per row.
        let state = !(forward && self.by_block.is_some());
        ScratchWords {
            means: self.kv_groups * self.num_blocks * self.head_dim,
            counts: lists.lists * self.num_blocks * lists.chunks,
            starts: lists.lists * (self.num_blocks + 1),
            lists: lists.lists * (self.rows / self.query_heads),
            row_state: if state { self.rows * 2 } else { 0 },
            row_accumulator: if state { self.rows * self.head_dim } else { 0 },
            partial_out,
            partial_stats,
        }
    }
}

impl ScratchWords {
    /// Words of every buffer together (the starts twice: list and tile starts).
    pub fn total(&self) -> usize {
        self.means
            + self.counts
            + 2 * self.starts
            + self.lists
            + self.row_state
            + self.row_accumulator
            + self.partial_out
            + self.partial_stats
    }
}

/// Sizes (4-byte words) of the scratch buffers the kernels share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScratchWords {
    /// Block means, f32 `[kv groups, blocks, D]`.
    pub means: usize,
    /// Histogram then offsets, `[lists, blocks, chunks]`.
    pub counts: usize,
    /// List starts and tile starts, each `[lists, blocks + 1]`.
    pub starts: usize,
    /// Gathered rows, `[lists, q_len]`.
    pub lists: usize,
    /// Per-row (max, sum) or (lse, delta), `[rows, 2]`.
    pub row_state: usize,
    /// Per-row f32 accumulator (o or dq), `[rows, D]`.
    pub row_accumulator: usize,
    /// The split decode's partial outputs, f32 `[rows, slots, chunks, D]`, or the forward
    /// by block's, elements `[rows, top_k, D]` (0 without either).
    pub partial_out: usize,
    /// The split decode's (max, sum) pairs, f32 `[rows, slots, chunks, 2]`, or the forward
    /// by block's lse (base 2), f32 `[rows, top_k]` (0 without either).
    pub partial_stats: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::nsa_selection_chunk_blocks;
    use crate::config::{NsaConfig, Shape};

    #[test]
    fn the_tile_grid_covers_every_list_of_a_slot() {
        // Worst case: every block's list ends in a partial tile.
        let shape = Shape::prefill(1, 2, 1000, 128);
        let plan = CudaPlan::new(
            &shape,
            &MobaConfig::new(100, 3),
            MmaKind::Sync,
            ElemKind::Bf16,
        );
        let (num_blocks, q_len): (usize, usize) = (10, 1000);
        let partial_tiles: usize = (0..num_blocks)
            .map(|_| (q_len / num_blocks).div_ceil(ROW_TILE))
            .sum();
        assert!(plan.slot_lists.tile_capacity >= partial_tiles);
        assert_eq!(
            plan.slot_lists.tile_capacity,
            q_len.div_ceil(ROW_TILE) + num_blocks
        );
        assert_eq!(plan.pass_grid(&plan.slot_lists), (18, 2, 1));
        assert_eq!(plan.dkdv_grid(), (20, 2, 1));
        assert_eq!(plan.slot_lists.chunk_grid(), (1, 6, 1));
    }

    #[test]
    fn a_small_dkdv_grid_splits_the_group_heads() {
        // NSA's compressed branch at 8K: 1024 heads over 4 kv heads, one block of 511 keys
        // (8 tiles): 32 thread blocks alone, so 9 splits of 29 heads each (the last 24).
        let shape = Shape {
            kv_heads: 4,
            ..Shape::prefill(1, 1024, 511, 128)
        };
        let config = MobaConfig::new(511, 1);
        assert_eq!(CudaPlan::dkdv_splits(&shape, &config), 9);
        let plan = CudaPlan::new(&shape, &config, MmaKind::Sync, ElemKind::Bf16);
        assert_eq!(plan.dkdv_grid(), (8, 4, 9));
        // The partial dk and dv fit in the backward's dq accumulator.
        let partials = 2 * 9 * 4 * 511 * 128;
        assert!(partials <= plan.scratch_words(false).row_accumulator);
        // No group to split (MHA), a grid that fills the GPU, a decode's few rows: whole.
        for (shape, config) in [
            (Shape::prefill(1, 2, 1000, 128), MobaConfig::new(100, 3)),
            (
                Shape {
                    kv_heads: 4,
                    ..Shape::prefill(1, 64, 65536, 128)
                },
                MobaConfig::new(64, 16),
            ),
            (
                Shape {
                    kv_heads: 4,
                    q_len: 1,
                    ..Shape::prefill(1, 64, 8192, 128)
                },
                MobaConfig::new(64, 16),
            ),
        ] {
            assert_eq!(CudaPlan::dkdv_splits(&shape, &config), 1, "{shape:?}");
        }
    }

    #[test]
    fn shared_memory_fits_an_sm80_block_at_head_dim_128() {
        // 227 KiB is the opt-in limit of sm_80 / sm_90; the kernels raise their limit to this.
        let shape = Shape::prefill(1, 16, 32768, 128);
        let plan = CudaPlan::new(
            &shape,
            &MobaConfig::new(512, 3),
            MmaKind::Sync,
            ElemKind::Bf16,
        );
        assert_eq!(plan.attention_shared_bytes(), (128 + 4 * 64) * 136 * 2);
        // Two attention blocks per SM on sm_90 (228 KiB), with either layout.
        assert!(2 * plan.attention_shared_bytes() <= 228 * 1024);
        let wgmma = CudaPlan::new(
            &shape,
            &MobaConfig::new(512, 3),
            MmaKind::Warpgroup,
            ElemKind::Bf16,
        );
        assert_eq!(
            wgmma.attention_shared_bytes(),
            (128 + 4 * 64) * 128 * 2 + 1024
        );
        assert!(2 * wgmma.attention_shared_bytes() <= 228 * 1024);
        assert_eq!(wgmma.dq_shared_bytes(), (2 * 128 + 4 * 64) * 128 * 2 + 1024);
        assert_eq!(
            wgmma.dkdv_shared_bytes(),
            (2 * 64 + 4 * 64) * 128 * 2 + 1024
        );
        assert!(2 * wgmma.dkdv_shared_bytes() <= 228 * 1024);
        assert_eq!(plan.dq_shared_bytes(), (2 * 128 + 4 * 64) * 136 * 2);
        assert_eq!(plan.dkdv_shared_bytes(), (2 * 64 + 4 * 32) * 136 * 2);
        assert!(plan.dq_shared_bytes() <= 227 * 1024);
        // NSA's selection: the q tile (256 rows) and two key tiles of padded rows, 16 x 65
        // f32 sums for a group of 16 (32 for 8), 256 rows' lse and eligible counts, 16
        // floors and survivor masks; two blocks per SM on sm_90 (each with the 1 KiB the
        // driver reserves).
        assert_eq!(
            nsa_select_shared_bytes(128, 16),
            (256 + 2 * 64) * 136 * 2 + 16 * 65 * 4 + 256 * 8 + 16 * 12
        );
        assert!(2 * (nsa_select_shared_bytes(128, 32) + 1024) <= 228 * 1024);
        // Its q tile: a query's heads rounded up (to 8 below 16, to 48 above), whole
        // queries per m-tile or whole m-tiles per query; small groups hold up to 128
        // queries, as far as the threads weigh their blocks (15 a chunk in the Triton
        // setting, 31 with l' = 2d, 64 with l' = d).
        let chunk_blocks =
            |l, d, l_sel| nsa_selection_chunk_blocks(&NsaConfig::new(l, d, l_sel, 4, 16));
        assert_eq!(chunk_blocks(32, 16, 64), 15);
        assert_eq!(chunk_blocks(8, 4, 8), 31);
        assert_eq!(chunk_blocks(16, 16, 16), 64);
        assert_eq!(select_layout(1, 15), Some((1, 128)));
        assert_eq!(select_layout(2, 31), Some((2, 64)));
        assert_eq!(select_layout(1, 64), Some((1, 32)));
        assert_eq!(select_layout(5, 15), Some((8, 32)));
        assert_eq!(select_layout(16, 15), Some((16, 16)));
        assert_eq!(select_layout(40, 15), Some((48, 5)));
        assert_eq!(select_layout(256, 15), Some((256, 1)));
        assert_eq!(select_layout(257, 15), None);
        for group in 1..=256 {
            for chunk_blocks in [1, 15, 31, 64] {
                let (rows, queries) = select_layout(group, chunk_blocks).unwrap();
                assert!(rows * queries <= SELECT_ROWS && (rows * queries).is_multiple_of(16));
                assert!(queries <= SELECT_QUERIES);
                assert!(queries * chunk_blocks <= SELECT_PAIRS * SELECT_THREADS as usize);
            }
        }
        // NSA's selected branch (8 warps): the q tile, two k and two v tiles, and a walk of
        // at most 32 queries' 16 blocks of 64 keys; two blocks per SM.
        assert_eq!(
            nsa_selected_shared_bytes(128, 64, 16),
            (128 + 4 * 64) * 136 * 2 + 3 * 32 * 16 * 4
        );
        assert!(2 * nsa_selected_shared_bytes(128, 64, 16) <= 228 * 1024);
        assert_eq!(
            nsa_selected_grid(&Shape {
                kv_heads: 4,
                ..Shape::prefill(1, 64, 1000, 128)
            }),
            (125, 4, 1)
        );
        // Groups of 4 heads: 4 queries a warp, 32 a thread block.
        assert_eq!(
            nsa_selected_grid(&Shape {
                kv_heads: 4,
                ..Shape::prefill(1, 16, 1000, 128)
            }),
            (32, 4, 1)
        );
        assert_eq!(SELECTED_MIN_GROUP, 4);
    }

    #[test]
    fn scratch_sizes_follow_the_problem() {
        let shape = Shape::prefill(1, 2, 2048, 64);
        let plan = CudaPlan::new(
            &shape,
            &MobaConfig::new(256, 3),
            MmaKind::Sync,
            ElemKind::Bf16,
        );
        let words = plan.scratch_words(true);
        assert_eq!(words.means, 2 * 8 * 64);
        assert_eq!(words.counts, 6 * 8 * 2);
        assert_eq!(words.starts, 6 * 9);
        assert_eq!(words.lists, 6 * 2048);
        assert_eq!(words.row_state, 2 * 2048 * 2);
        assert_eq!(words.row_accumulator, 2 * 2048 * 64);
        assert_eq!((words.partial_out, words.partial_stats), (0, 0));
        assert_eq!(CudaPlan::cover(1000, 256), (4, 1, 1));
    }

    #[test]
    fn small_blocks_run_the_forward_by_block_within_its_scratch() {
        let plan = |shape: &Shape, block, top_k, elem| {
            CudaPlan::new(shape, &MobaConfig::new(block, top_k), MmaKind::Sync, elem)
        };
        let shape = Shape::prefill(2, 4, 3000, 64);
        let small = plan(&shape, 128, 8, ElemKind::Bf16);
        let by_block = small.by_block.expect("blocks of 128 run by block");
        assert_eq!((by_block.lists, by_block.slots), (8, 8));
        assert_eq!(by_block.chunks, 3000_usize.div_ceil(CHUNK_ROWS));
        assert_eq!(by_block.tile_capacity, 24000_usize.div_ceil(ROW_TILE) + 24);
        // The per-slot lists' scratch holds the by-block ones.
        let slots = small.slot_lists;
        assert!(slots.lists * slots.chunks >= by_block.lists * by_block.chunks);
        // A forward keeps every (row, slot)'s output as bf16 with its lse; a backward none.
        let rows = 2 * 4 * 3000;
        let words = small.scratch_words(true);
        assert_eq!(words.partial_out, rows * 8 * 64 * 2 / 4);
        assert_eq!(words.partial_stats, rows * 8);
        assert_eq!((words.row_state, words.row_accumulator), (0, 0));
        let backward = small.scratch_words(false);
        assert_eq!(backward.partial_out, 0);
        assert_eq!(backward.row_accumulator, rows * 64);
        // Larger blocks, one slot, a decode, or outputs past the limit: per slot.
        assert!(plan(&shape, 256, 8, ElemKind::Bf16).by_block.is_none());
        assert!(plan(&shape, 64, 1, ElemKind::Bf16).by_block.is_none());
        let decode = Shape { q_len: 1, ..shape };
        assert!(plan(&decode, 64, 8, ElemKind::Bf16).by_block.is_none());
        // 1M rows of 16 heads at top-8: 32 GiB of bf16 outputs.
        let long = Shape::prefill(1, 16, 1 << 20, 128);
        assert!(plan(&long, 128, 8, ElemKind::Bf16).by_block.is_none());
        assert!(plan(&long, 128, 2, ElemKind::Bf16).by_block.is_some());
    }
}
