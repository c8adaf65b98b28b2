// The page: reads the controls, calls the wasm module (pkg/, built by build.sh), and shows
// what it reports. URL parameters named like the controls preset them; `run=1` starts a
// run on load (the browser test uses both).
import init, { Demo } from './pkg/moba_web.js';
import { offerGpu, setupText } from './text.js';
import { presetForm, setCell, setStatus as setStatusOf } from './ui.js';

const form = document.getElementById('controls');
const button = document.getElementById('run');
const status = document.getElementById('status');
const setStatus = (state, text) => setStatusOf(status, state, text);
// The page's runs as `moba bench` records (JSON lines), and the adapter's name for them.
const records = [];
let adapterName = '';

function settingsFromForm() {
  const data = new FormData(form);
  const number = (name) => Number(data.get(name));
  return {
    seqLen: number('seqLen'), heads: number('heads'), headDim: number('headDim'),
    blockSize: number('blockSize'), topK: number('topK'), runs: number('runs'),
    dense: data.get('dense') === 'on',
  };
}


// Adapter information from the browser beside the limits the kernels plan against.
function showAdapter(report, info) {
  adapterName = [info.vendor, info.architecture, info.device, info.description, report.name]
    .filter(Boolean).join(' / ');
  const rows = [
    ['adapter', adapterName || '(not disclosed by the browser)'],
    ['backend', report.backend],
    ['timestamp queries', report.timestamps ? 'yes' : 'no'],
    ...report.limits.map((limit) => [limit.name, limit.value.toLocaleString('en')]),
  ];
  document.getElementById('adapter-table').replaceChildren(...rows.map(([name, value]) => {
    const header = document.createElement('th');
    header.textContent = name;
    const cell = document.createElement('td');
    cell.textContent = value;
    const row = document.createElement('tr');
    row.append(header, cell);
    return row;
  }));
  document.getElementById('adapter').hidden = false;
}

const ms = (value) => `${value.toFixed(3)} ms`;

function showReport(report) {
  setCell('moba-ms', ms(report.mobaMs), report.mobaMs);
  if (report.denseMs === null || report.denseMs === undefined) {
    setCell('dense-ms', 'not run');
    setCell('speedup', '-');
  } else {
    setCell('dense-ms', ms(report.denseMs), report.denseMs);
    const speedup = report.denseMs / report.mobaMs;
    setCell('speedup', `${speedup.toFixed(2)}x over dense`, speedup);
  }
  setCell('stages', report.stages.length
    ? report.stages.map((s) => `${s.name} ${s.ms.toFixed(3)} ms`).join(', ')
    : 'no timestamp queries on this adapter');
  const density = report.attendedPairs / report.densePairs;
  setCell('density', `${report.attendedPairs.toLocaleString('en')} of `
    + `${report.densePairs.toLocaleString('en')} causal pairs (${(100 * density).toFixed(1)}%)`, density);
  setCell('kernel', `${report.kernel}, ${report.workgroupSize} threads per workgroup, `
    + `${report.keyTile} keys per tile`);

  const check = report.check;
  setCell('check-rows', `${check.passed ? 'PASS' : 'FAIL'}: ${check.rows.toLocaleString('en')} `
    + `${check.allRows ? '(all)' : '(even sample)'}`, check.rows);
  setCell('o-error', `${check.oError.toExponential(2)} (bound ${check.oBound.toExponential(2)})`,
    check.oError);
  setCell('lse-error', `${check.lseError.toExponential(2)} (bound ${check.lseBound.toExponential(2)})`,
    check.lseError);
  setCell('selection-check', `${check.nearTies} / ${check.selectionMismatches}`,
    check.selectionMismatches);

  drawHeatmaps(report.heatmap);
  addRecord(report.record);
  document.getElementById('results').hidden = false;
}

// Adds a run to the records shown and offered for download, named by this browser and the
// adapter it discloses (wgpu sees neither in a browser).
function addRecord(record) {
  records.push(JSON.stringify({
    ...record,
    machine: `browser: ${navigator.userAgent}`,
    adapter: adapterName || record.adapter || '(not disclosed by the browser)',
  }));
  const lines = records.join('\n') + '\n';
  document.getElementById('records').textContent = lines;
  const link = document.getElementById('records-download');
  if (link.href.startsWith('blob:')) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(new Blob([lines], { type: 'application/x-ndjson' }));
}

// One canvas per head: query block down, key block across, darker = chosen more often.
function drawHeatmaps(map) {
  const merged = map.blocksPerCell > 1 ? ` (${map.blocksPerCell} x ${map.blocksPerCell} blocks per cell)` : '';
  document.getElementById('heatmap-caption').textContent =
    `Share of the queries of each query block (down) that chose each key block (across)${merged}.`;
  const scale = Math.max(1, Math.floor(192 / map.cols));
  const figures = [];
  for (let head = 0; head < map.heads; head++) {
    const canvas = document.createElement('canvas');
    canvas.width = map.cols;
    canvas.height = map.rows;
    canvas.style.width = `${map.cols * scale}px`;
    canvas.style.height = `${map.rows * scale}px`;
    const context = canvas.getContext('2d');
    const image = context.createImageData(map.cols, map.rows);
    const offset = head * map.rows * map.cols;
    for (let cell = 0; cell < map.rows * map.cols; cell++) {
      const value = map.values[offset + cell];
      // White (never chosen) to dark blue (always chosen).
      image.data.set([247 - 239 * value, 251 - 203 * value, 255 - 148 * value, 255], 4 * cell);
    }
    context.putImageData(image, 0, 0);
    const figure = document.createElement('figure');
    const caption = document.createElement('figcaption');
    caption.textContent = `head ${head}`;
    figure.append(canvas, caption);
    figures.push(figure);
  }
  document.getElementById('heatmaps').replaceChildren(...figures);
}

async function run(demo) {
  button.disabled = true;
  const settings = settingsFromForm();
  setStatus('running', `Running S=${settings.seqLen}, ${settings.heads} heads, D=${settings.headDim}, `
    + `block ${settings.blockSize}, top-${settings.topK}...`);
  try {
    const report = await demo.run(settings);
    showReport(report);
    setStatus('done', `Done: S=${settings.seqLen}, ${settings.heads} heads, D=${settings.headDim}, `
      + `block ${settings.blockSize}, top-${settings.topK}.`);
  } catch (error) {
    setStatus('error', `Error: ${error.message ?? error}`);
  } finally {
    button.disabled = false;
  }
}

// The MoBA kernels on WebGPU: needs navigator.gpu and an adapter.
async function setupDemo(params) {
  if (!navigator.gpu) {
    setStatus('error', 'WebGPU is not available here: this browser has no navigator.gpu. '
      + 'Use a browser with WebGPU enabled (Chromium started with --enable-unsafe-webgpu on Linux), '
      + 'and load the page from localhost or https.');
    offerGpu(null, false);
    return;
  }
  let demo;
  try {
    demo = await Demo.open();
  } catch (error) {
    setStatus('error', `Error: no WebGPU device: ${error.message ?? error}`);
    offerGpu(null, false);
    return;
  }
  const info = await navigator.gpu.requestAdapter().then((adapter) => adapter?.info ?? {}, () => ({}));
  // The text generation decodes on this device too, but for a software adapter
  // (SwiftShader: the same CPU cores behind WebGPU's submissions), where wasm is faster.
  const software = Boolean(info.isFallbackAdapter)
    || /swiftshader/i.test(`${info.vendor} ${info.architecture} ${info.description}`);
  offerGpu(demo, software);
  showAdapter(demo.adapter(), info);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    run(demo);
  });
  button.disabled = false;
  setStatus('ready', 'Ready.');
  if (params.get('run') === '1') await run(demo);
}

async function main() {
  const params = new URLSearchParams(location.search);
  presetForm(form, params);
  await init();
  // Text generation decodes on WebGPU where setupDemo opens it, else on the CPU.
  await Promise.all([setupText(params), setupDemo(params)]);
}

main();
