// The page's text generation: loads the trained model in lm/ (train.json and model.mpk, as
// `moba train --run DIR` writes them) into the wasm module's TextModel on first use, then
// draws one byte per call and shows each as it comes: on the page's WebGPU device where
// main.js offers one, else on the CPU. URL parameters named like the controls preset them;
// `generate=1` starts on load (the browser test uses both).
import { TextModel } from './pkg/moba_web.js';
import { drawRouting } from './routing.js';
import { presetForm, setCell, setStatus as setStatusOf } from './ui.js';

const form = document.getElementById('text-controls');
const button = document.getElementById('generate');
const status = document.getElementById('text-status');
const promptSpan = document.getElementById('text-prompt');
const generatedSpan = document.getElementById('text-generated');
const routingView = document.getElementById('text-routing-view');
// Bytes drawn between two chances for the page to paint.
const BYTES_PER_PAINT = 4;
// Least time between two redraws of the routing view (each reads every layer's selection).
const ROUTING_EVERY_MS = 250;

let model = null;

// The page's WebGPU device (a Demo, or null) once main.js has tried to open one, and whether
// its adapter is a software one.
let offerGpuTo;
const gpuOffered = new Promise((resolve) => { offerGpuTo = resolve; });
export function offerGpu(demo, software) { offerGpuTo({ demo, software }); }
// Why the text runs on the CPU although WebGPU is there ('' where it does not).
let cpuBecause = '';

const setStatus = (state, text) => setStatusOf(status, state, text);

async function fetchOk(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status} (train a model into lm/, see lm/README.md)`);
  return response;
}

async function loadModel() {
  if (model) return model;
  setStatus('loading', 'Loading the model (lm/train.json, lm/model.mpk)...');
  const fetchStart = performance.now();
  const [config, weights] = await Promise.all([
    fetchOk('lm/train.json').then((response) => response.text()),
    fetchOk('lm/model.mpk').then((response) => response.arrayBuffer()),
  ]);
  model = new TextModel(config, new Uint8Array(weights));
  // performance.now() counts from the navigation: the page, the wasm module and the model.
  const ready = performance.now();
  setCell('text-load', `${(weights.byteLength / 1e6).toFixed(2)} MB of weights fetched and loaded in `
    + `${(ready - fetchStart).toFixed(0)} ms; ready ${(ready / 1000).toFixed(2)} s after the page was opened`, ready);
  const { demo, software } = await gpuOffered;
  // `decode=webgpu` decodes on a software adapter anyway (the browser test does).
  const forced = new URLSearchParams(location.search).get('decode') === 'webgpu';
  if (demo && (!software || forced)) model.useGpu(demo);
  if (demo && software && !forced) {
    cpuBecause = ' (this WebGPU adapter is a software one, slower than wasm here; ?decode=webgpu uses it)';
  }
  const info = model.info();
  const attention = info.blockSize
    ? `MoBA block ${info.blockSize}, top-${info.topK}` + (info.fullLayers ? `, last ${info.fullLayers} layers full` : '')
    : 'full attention';
  setCell('text-model', `${info.parameters.toLocaleString('en')} parameters, ${info.layers} layers, `
    + `d ${info.dModel}, ${info.heads} heads, ${info.context.toLocaleString('en')}-byte context, ${attention}`,
    info.parameters);
  return model;
}

function settingsFromForm() {
  const data = new FormData(form);
  return {
    prompt: data.get('prompt'), maxBytes: Number(data.get('maxBytes')),
    temperature: Number(data.get('temperature')), topP: Number(data.get('topP')), seed: Number(data.get('seed')),
  };
}

// Draws the routing of the position last read, for a model with MoBA layers.
async function showRouting(lm, info) {
  if (!info.blockSize) return;
  const routing = await lm.routing();
  drawRouting(document.getElementById('text-routing'), document.getElementById('text-routing-caption'),
    routing, info.blockSize);
  routingView.hidden = false;
}

// The blocks the last decode step chose among: its own, and the top-k - 1 best of the others.
function decodeBlocks(info, position) {
  if (!info.blockSize) return 'full attention over every cached position';
  const blocks = Math.ceil(position / info.blockSize);
  return `position ${position.toLocaleString('en')}: attended ${Math.min(info.topK, blocks)} of its ${blocks} `
    + `cached blocks of ${info.blockSize} in each MoBA layer`;
}

async function generate() {
  button.disabled = true;
  try {
    const lm = await loadModel();
    const settings = settingsFromForm();
    lm.start(settings.prompt, settings.temperature, settings.topP, settings.seed);
    setStatus('running', 'Generating...');
    promptSpan.textContent = settings.prompt;
    generatedSpan.textContent = '';
    const decoder = new TextDecoder();
    const info = lm.info();
    const start = performance.now();
    let firstByteMs = 0;
    let count = 0;
    // The routing view's time, left out of the decode rate.
    let routingMs = 0;
    let routedAt = start;
    const routeNow = async () => {
      const before = performance.now();
      await showRouting(lm, info);
      routedAt = performance.now();
      routingMs += routedAt - before;
    };
    while (count < settings.maxBytes) {
      const byte = await lm.nextByte();
      if (byte === undefined) break;
      if (count === 0) firstByteMs = performance.now() - start;
      count += 1;
      generatedSpan.textContent += decoder.decode(new Uint8Array([byte]), { stream: true });
      if (count % BYTES_PER_PAINT === 0) {
        if (performance.now() - routedAt > ROUTING_EVERY_MS) await routeNow();
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
    }
    generatedSpan.textContent += decoder.decode();
    const decodeMs = performance.now() - start - firstByteMs - routingMs;
    if (count > 0) await routeNow();
    generatedSpan.dataset.bytes = String(count);
    setCell('text-prefill', `${firstByteMs.toFixed(1)} ms for ${new TextEncoder().encode(settings.prompt).length} prompt bytes`, firstByteMs);
    const rate = count > 1 ? (count - 1) / (decodeMs / 1000) : 0;
    setCell('text-rate', `${(count - 1).toLocaleString('en')} more bytes at ${rate.toFixed(1)} bytes/s (the routing view's reads left out)`, rate);
    setCell('text-blocks', decodeBlocks(info, lm.position()), lm.position());
    setCell('text-device', lm.runsOn() === 'WebGPU'
      ? 'WebGPU: the GPU decoder (WGSL kernels per layer around MoBA\'s split decode)'
      : `CPU: burn's ndarray backend in wasm${lm.whyCpu() ? ` (${lm.whyCpu()})` : cpuBecause}`, lm.runsOn());
    document.getElementById('text-stats').hidden = false;
    const full = count < settings.maxBytes ? ' (the model\'s context is full)' : '';
    setStatus('done', `Done: ${count} bytes${full}.`);
  } catch (error) {
    setStatus('error', `Error: ${error.message ?? error}`);
  } finally {
    button.disabled = false;
  }
}

// Called once the wasm module is initialised.
export async function setupText(params) {
  presetForm(form, params);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    generate();
  });
  button.disabled = false;
  setStatus('ready', 'Ready: the model loads on the first run.');
  if (params.get('generate') === '1') await generate();
}
