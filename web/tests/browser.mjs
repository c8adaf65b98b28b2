// Browser test of the demo page: Debian's Chromium (SwiftShader WebGPU) driven by
// playwright-core. Serves web/ (built by build.sh), runs a small case and checks the
// reported error against the reference, checks the messages for a size over the adapter's
// limits and for a browser without WebGPU, saves a screenshot, and generates text with the
// trained model in lm/.
//
//   node web/tests/browser.mjs [screenshot.png]
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { dirname, extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const web = dirname(dirname(fileURLToPath(import.meta.url)));
const screenshot = process.argv[2] ?? join(web, '..', 'target', 'web', 'screenshot.png');
mkdirSync(dirname(screenshot), { recursive: true });
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
// The f32 kernel against the f64 reference on standard-normal inputs: about 1e-7 here; a
// wrong block, mask or normaliser gives 1e-2 or more.
const ERROR_BOUND = 1e-5;

for (const [path, hint] of [
  [chromiumPath, 'apt-get install -y chromium'],
  [join(web, 'pkg', 'moba_web.js'), 'web/build.sh'],
]) {
  if (!existsSync(path)) {
    console.error(`missing ${path}: run \`${hint}\``);
    process.exit(1);
  }
}

// A static server for web/ (WebGPU needs a secure context: localhost is one).
const types = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.wasm': 'application/wasm' };
const server = createServer((request, response) => {
  const path = normalize(decodeURIComponent(new URL(request.url, 'http://localhost').pathname));
  const file = join(web, path === '/' ? 'index.html' : path);
  if (!file.startsWith(web) || !existsSync(file)) {
    response.writeHead(404).end();
    return;
  }
  response.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream' });
  response.end(readFileSync(file));
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const origin = `http://localhost:${server.address().port}`;

// playwright gives every launch a fresh profile directory of its own.
const browser = await chromium.launch({
  executablePath: chromiumPath,
  args: ['--headless=new', '--no-sandbox', '--enable-unsafe-webgpu', '--disable-gpu-sandbox',
    '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

// Opens the page with URL parameters and waits until `status` (the kernels' status line, or
// the text generation's) reports done or an error.
async function openPage(query, { withoutWebGpu = false, status = 'status' } = {}) {
  const page = await browser.newPage({ viewport: { width: 1100, height: 1000 } });
  const errors = [];
  page.on('pageerror', (error) => errors.push(error.message));
  if (withoutWebGpu) await page.addInitScript(() => delete Navigator.prototype.gpu);
  await page.goto(`${origin}/index.html?${query}`);
  await page.waitForSelector(`#${status}[data-state="done"], #${status}[data-state="error"]`, { timeout: 240_000 });
  assert.deepEqual(errors, [], 'uncaught errors in the page');
  return page;
}

const value = async (page, id) => Number(await page.getAttribute(`#${id}`, 'data-value'));
const statusOf = async (page, id = 'status') => [await page.getAttribute(`#${id}`, 'data-state'), await page.textContent(`#${id}`)];

let failed = false;
async function test(name, body) {
  const start = Date.now();
  try {
    await body();
    console.log(`ok   ${name} (${((Date.now() - start) / 1000).toFixed(1)} s)`);
  } catch (error) {
    failed = true;
    console.log(`FAIL ${name}\n${error.stack}`);
  }
}

await test('a small case matches the reference and draws the selection', async () => {
  const page = await openPage('seqLen=300&blockSize=32&topK=3&heads=2&headDim=32&runs=2&run=1');
  const [state, text] = await statusOf(page);
  assert.equal(state, 'done', text);
  assert.equal(await value(page, 'check-rows'), 600, 'every row checked');
  for (const id of ['o-error', 'lse-error']) {
    const error = await value(page, id);
    assert.ok(error <= ERROR_BOUND, `${id} ${error} > ${ERROR_BOUND}`);
  }
  assert.equal(await value(page, 'selection-check'), 0, 'selection mismatches');
  assert.ok(await value(page, 'moba-ms') > 0, 'MoBA time');
  assert.ok(await value(page, 'dense-ms') > 0, 'dense time');
  // 300 tokens in blocks of 32 with top-3: between 3/10 of the causal pairs and all of them.
  const density = await value(page, 'density');
  assert.ok(density > 0.3 && density < 1, `density ${density}`);
  // One map per head; its first cell (query block 0 to key block 0) is always chosen: darkest.
  assert.equal(await page.locator('#heatmaps canvas').count(), 2);
  const corner = await page.evaluate(() =>
    Array.from(document.querySelector('#heatmaps canvas').getContext('2d').getImageData(0, 0, 1, 1).data));
  assert.deepEqual(corner, [8, 48, 107, 255]);
  assert.match(await page.textContent('#adapter-table'), /max_compute_workgroup_storage_size/);
  // The run as a `moba bench` record, with the browser as its machine; downloadable.
  const record = JSON.parse(await page.textContent('#records'));
  assert.equal(record.seq_len, 300);
  assert.equal(record.backend, 'BrowserWebGpu');
  // Milliseconds through seconds and back: equal up to rounding.
  assert.ok(Math.abs(record.moba_ms - await value(page, 'moba-ms')) < 1e-9, `moba_ms ${record.moba_ms}`);
  assert.match(record.machine, /^browser: /);
  assert.match(await page.getAttribute('#records-download', 'href'), /^blob:/);
  const recordsFile = join(dirname(screenshot), 'browser.jsonl');
  writeFileSync(recordsFile, await page.textContent('#records'));
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`     o error ${await value(page, 'o-error')}, screenshot ${screenshot}, record ${recordsFile}`);
});

await test('a size over the adapter\'s buffer limit names the limit', async () => {
  const probe = await browser.newPage();
  await probe.goto(`${origin}/index.html`);
  const limit = await probe.evaluate(async () =>
    (await navigator.gpu.requestAdapter()).limits.maxStorageBufferBindingSize);
  await probe.close();
  // One head whose q alone is twice the limit (4 bytes x 128 dims per token).
  const seqLen = 2 * Math.ceil(limit / 512);
  const page = await openPage(`seqLen=${seqLen}&blockSize=512&topK=3&heads=1&headDim=128&run=1`);
  const [state, text] = await statusOf(page);
  assert.equal(state, 'error', text);
  assert.match(text, /max_storage_buffer_binding_size/);
});

await test('a browser without WebGPU gets a clear message', async () => {
  const page = await openPage('', { withoutWebGpu: true });
  const [state, text] = await statusOf(page);
  assert.equal(state, 'error');
  assert.match(text, /WebGPU is not available/);
});

// Greedy decoding of the checked-in model must give its checked-in sample (lm/sample.json,
// written by the native `moba generate --temperature 0`), on the CPU without WebGPU and on
// the GPU decoder with it; returns the page's decode rate (bytes/s).
async function generatesTheSample(withoutWebGpu) {
  const sample = JSON.parse(readFileSync(join(web, 'lm', 'sample.json'), 'utf8'));
  const query = new URLSearchParams({
    prompt: sample.prompt, temperature: '0', maxBytes: String(sample.generated.length), generate: '1',
  });
  // SwiftShader is a software adapter, where the page decodes on the CPU unless told.
  if (!withoutWebGpu) query.set('decode', 'webgpu');
  const page = await openPage(query.toString(), { withoutWebGpu, status: 'text-status' });
  const [state, text] = await statusOf(page, 'text-status');
  assert.equal(state, 'done', text);
  assert.equal(await page.getAttribute('#text-device', 'data-value'), withoutWebGpu ? 'CPU' : 'WebGPU');
  assert.equal(await page.textContent('#text-prompt'), sample.prompt);
  assert.equal(await page.textContent('#text-generated'), sample.generated);
  assert.equal(Number(await page.getAttribute('#text-generated', 'data-bytes')), sample.generated.length);
  assert.ok(await value(page, 'text-rate') > 0, 'decode rate');
  assert.match(await page.textContent('#text-model'), /MoBA block 512, top-3/);
  // The routing view drew the last position's choice: 6 layers x 5 heads, one cached block
  // (the sample ends before position 512), each head choosing it.
  const routing = await page.$eval('#text-routing', (canvas) => ({ ...canvas.dataset }));
  assert.equal(Number(routing.position), sample.prompt.length + sample.generated.length - 2);
  assert.equal(Number(routing.blocks), 1);
  assert.equal(Number(routing.chosen), 30);
  assert.equal(await page.isVisible('#text-routing'), true);
  const textScreenshot = screenshot.replace(/\.png$/, withoutWebGpu ? '-text.png' : '-text-webgpu.png');
  await page.locator('#text').screenshot({ path: textScreenshot });
  console.log(`     load: ${await page.textContent('#text-load')}`);
  console.log(`     ${await page.textContent('#text-device')}: ${await page.textContent('#text-rate')}, screenshot ${textScreenshot}`);
  return value(page, 'text-rate');
}

let cpuRate = 0;
await test('the trained model generates text byte by byte on the CPU, as the native build does', async () => {
  cpuRate = await generatesTheSample(true);
});

await test('on WebGPU the GPU decoder generates the same bytes', async () => {
  const gpuRate = await generatesTheSample(false);
  console.log(`     WebGPU decode ${gpuRate.toFixed(1)} bytes/s, CPU ${cpuRate.toFixed(1)} bytes/s`);
});

await browser.close();
server.close();
process.exit(failed ? 1 : 0);
