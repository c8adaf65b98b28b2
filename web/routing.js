// The live routing view of the text section: for the position last read, the cached blocks
// each MoBA layer's gate chose for each query head, over the whole context so far. One row
// of cells per head, one band of rows per layer, one column per cached block; a chosen
// block is filled. Layers that attend every position are listed, not drawn.

const CELL_HEIGHT = 8;
const LAYER_GAP = 6;
const CHOSEN = '#1f6feb';
const NOT_CHOSEN = '#e4e8ee';

// Draws `routing` (TextModel.routing(): { position, layers: [[head blocks]] or null }) into
// `canvas` for blocks of `blockSize`; says in `caption` what it shows. The canvas keeps
// machine-readable copies for the browser test: data-position, data-blocks (cached blocks)
// and data-chosen (cells filled).
export function drawRouting(canvas, caption, routing, blockSize) {
  const blocks = Math.floor(routing.position / blockSize) + 1;
  const routed = routing.layers.filter((layer) => layer !== null);
  const heads = routed.length ? routed[0].length : 0;
  const width = canvas.clientWidth || 600;
  const cell = width / blocks;
  canvas.width = width;
  canvas.height = routed.length * (heads * CELL_HEIGHT + LAYER_GAP);
  const context = canvas.getContext('2d');
  context.clearRect(0, 0, canvas.width, canvas.height);
  let chosen = 0;
  routed.forEach((layer, band) => {
    const top = band * (heads * CELL_HEIGHT + LAYER_GAP);
    layer.forEach((headBlocks, head) => {
      const y = top + head * CELL_HEIGHT;
      context.fillStyle = NOT_CHOSEN;
      context.fillRect(0, y, width, CELL_HEIGHT - 1);
      context.fillStyle = CHOSEN;
      for (const block of headBlocks) {
        if (block < 0) continue;
        context.fillRect(block * cell, y, Math.max(cell - 1, 1), CELL_HEIGHT - 1);
        chosen += 1;
      }
    });
  });
  canvas.dataset.position = String(routing.position);
  canvas.dataset.blocks = String(blocks);
  canvas.dataset.chosen = String(chosen);
  const full = routing.layers.length - routed.length;
  caption.textContent = `Byte ${(routing.position + 1).toLocaleString('en')} of the context: the blocks of ${blockSize} `
    + `each query head chose (filled) among the ${blocks} cached, one row per head, one band per `
    + `MoBA layer (${routed.length})` + (full ? `; ${full} layers attend without blocks (full attention or NSA)` : '')
    + '. Left is the start of the context.';
}
