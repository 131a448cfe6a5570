/**
 * The demo page: DINO training in a Web Worker (web/worker.ts) with a live loss chart, images/s,
 * pause and resume, attention maps of fixed images redrawn as training goes, checkpoint download
 * (safetensors, the format `webdino train` writes and `webdino embed` reads) and upload, and the
 * user's own images (decoded with createImageBitmap) for training and attention maps.
 *
 * Backbone panel (the embed-in-my-app use case): the user picks a DINOv2 / DINOv3 (or DINO)
 * weights file, .pth or .safetensors, official or Hugging Face layout; the worker parses it from
 * the bytes and builds the backbone (models/backbone.ts), then draws, for the user's images (or
 * the embedded ones until some are picked), the PCA of the patch features as RGB and each head's
 * last-layer CLS attention (eval/visualize.ts). `heads` is asked only when the file cannot tell.
 *
 * Without WebGPU (no navigator.gpu, or no adapter) the page says so and how to turn it on. A lost
 * device stops training; "Recover" continues on a new device from the last in-memory snapshot.
 *
 * URL parameters (all optional) override the training config, which defaults to the project's
 * CPU-sized config (CPU_DEFAULT_CONFIG):
 *   dim, depth, heads, patch          ViT width, blocks, heads, patch size
 *   out, hidden, bottleneck           DINO head: prototypes K, hidden and bottleneck widths
 *   batch, global, local, locals      batch size, crop sides, number of local crops
 *   lr, momentum, warmup, epochs, seed
 *   epochlength                       iterations per schedule epoch (0: one pass over the images)
 *   centering=center|sinkhorn_knopp   teacher targets (the CPU default: sinkhorn_knopp)
 *   bnhead=0|1                        BatchNorm in the DINO head's MLP (the CPU default: 1)
 *   n, size                           synthetic images (count and side)
 *   attn, snap                        attention redraw / in-memory snapshot every N steps
 *   pause                             pause by itself at this iteration
 *   autostart=1                       start training as soon as the worker is ready
 *
 * `window.webdino` exposes the page state and helpers for automation (the browser tests use
 * them): `features()` (teacher CLS features of the fixed images, as `webdino embed` computes them),
 * `backboneFeatures(crop)` (the loaded backbone's CLS features, patch tokens and CLS attention of
 * the backbone images, as `webdino embed` computes them) and `loseDevice()` (destroys the GPU
 * device to exercise recovery).
 */
import { CPU_DEFAULT_CONFIG, type TrainConfig } from '../train/trainer.js';
import { decodeImageFile, drawAttention, drawBackboneVisuals, drawLossChart } from './draw.js';
import type { BackboneInfo, DemoSettings, FromWorker, RgbImage, RunInfo, ToWorker } from './protocol.js';

/** What the page shows, readable by automation through `window.webdino.state`. */
export interface PageState {
  ready: boolean;
  running: boolean;
  run: RunInfo | null;
  iteration: number;
  /** losses[i]: the loss of iteration i (holes where none was seen). */
  losses: number[];
  imagesPerSecond: number;
  /** Iteration of the attention maps on screen (-1: none yet). */
  attentionIteration: number;
  error: { kind: string; message: string } | null;
  log: string[];
  checkpointsSaved: number;
  loaded: { name: string; iteration: number } | null;
  /** The backbone loaded from a file (null: none, or it was on a lost device). */
  backbone: BackboneInfo | null;
  /** Times the backbone pictures were drawn, and what the last drawing showed. */
  backboneDrawn: number;
  backboneView: { side: number; grid: [number, number]; heads: number; images: string[] } | null;
  backboneError: string | null;
  /** Backbone errors so far (automation waits on it). */
  backboneErrors: number;
}

const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`demo: missing #${id}`);
  return el as T;
};

const state: PageState = {
  ready: false,
  running: false,
  run: null,
  iteration: 0,
  losses: [],
  imagesPerSecond: 0,
  attentionIteration: -1,
  error: null,
  log: [],
  checkpointsSaved: 0,
  loaded: null,
  backbone: null,
  backboneDrawn: 0,
  backboneView: null,
  backboneError: null,
  backboneErrors: 0,
};

function log(message: string): void {
  state.log.push(message);
  const el = $('log');
  el.textContent = state.log.slice(-200).join('\n');
  el.scrollTop = el.scrollHeight;
}

function banner(kind: 'info' | 'warn' | 'error' | null, html = ''): void {
  const el = $('banner');
  el.className = kind ? `banner ${kind}` : 'banner hidden';
  el.innerHTML = html;
}

const ENABLE_WEBGPU_HELP =
  '<ul>' +
  '<li><b>Chrome / Edge 113+</b> on Windows, macOS and ChromeOS have WebGPU on. On <b>Linux</b>, start Chrome with ' +
  '<code>--enable-unsafe-webgpu</code> (or turn on <code>chrome://flags/#enable-unsafe-webgpu</code>); if your GPU is ' +
  'blocklisted, <code>chrome://gpu</code> says so (<code>--ignore-gpu-blocklist</code>).</li>' +
  '<li><b>Firefox</b> 141+ on Windows has WebGPU; elsewhere use Nightly with <code>dom.webgpu.enabled</code> in <code>about:config</code>.</li>' +
  '<li><b>Safari</b> 26+ has WebGPU; on Safari 18, Develop → Feature Flags → WebGPU.</li>' +
  '<li>The page must come from <code>https://</code> or <code>http://localhost</code> / <code>127.0.0.1</code> (a secure context).</li>' +
  '</ul>';

// ---------------------------------------------------------------------------------------------
// Settings from the URL

function settingsFromUrl(): { settings: DemoSettings; autostart: boolean } {
  const q = new URLSearchParams(location.search);
  const num = (k: string): number | undefined => {
    const v = q.get(k);
    if (v === null || v === '') return undefined;
    const n = Number(v);
    if (!Number.isFinite(n)) throw new Error(`URL parameter ${k}=${v} is not a number`);
    return n;
  };
  const map: [string, keyof TrainConfig][] = [
    ['dim', 'embedDim'], ['depth', 'depth'], ['heads', 'numHeads'], ['patch', 'patchSize'],
    ['out', 'outDim'], ['hidden', 'headHidden'], ['bottleneck', 'headBottleneck'],
    ['batch', 'batchSize'], ['global', 'globalSize'], ['local', 'localSize'], ['locals', 'localCrops'],
    ['lr', 'lr'], ['momentum', 'momentumTeacher'], ['warmup', 'warmupEpochs'], ['epochs', 'epochs'], ['epochlength', 'epochLength'], ['seed', 'seed'],
  ];
  const config: Partial<TrainConfig> = { ...CPU_DEFAULT_CONFIG };
  for (const [k, field] of map) {
    const v = num(k);
    if (v !== undefined) (config as Record<string, unknown>)[field] = v;
  }
  const centering = q.get('centering');
  if (centering !== null) {
    if (centering !== 'center' && centering !== 'sinkhorn_knopp') throw new Error(`URL parameter centering=${centering} is not 'center' or 'sinkhorn_knopp'`);
    config.centering = centering;
  }
  const bnHead = num('bnhead');
  if (bnHead !== undefined) config.useBnInHead = bnHead !== 0;
  if (config.embedDim !== undefined || config.depth !== undefined) config.arch = 'custom';
  return {
    settings: {
      config,
      datasetLength: num('n') ?? 5000,
      imageSize: num('size') ?? 64,
      attentionEvery: num('attn') ?? 10,
      snapshotEvery: num('snap') ?? 25,
      pauseAt: num('pause') ?? 0,
    },
    autostart: q.get('autostart') === '1',
  };
}

// ---------------------------------------------------------------------------------------------
// Worker

let worker: Worker | null = null;
const waiters = new Map<string, ((m: FromWorker) => void)[]>();

function send(msg: ToWorker, transfer: Transferable[] = []): void {
  worker?.postMessage(msg, transfer);
}

/** Resolves with the next message of `type` from the worker. */
function next<T extends FromWorker['type']>(type: T): Promise<Extract<FromWorker, { type: T }>> {
  return new Promise((resolve) => {
    const list = waiters.get(type) ?? [];
    list.push(resolve as (m: FromWorker) => void);
    waiters.set(type, list);
  });
}

function showRun(run: RunInfo): void {
  state.run = run;
  state.iteration = run.iteration;
  const c = run.config;
  $('adapter').textContent = `${run.adapter} (${run.variants} kernels)`;
  $('model').textContent =
    `ViT dim ${c.embedDim}, depth ${c.depth}, ${c.numHeads} heads, patch ${c.patchSize}; head K = ${c.outDim}; ` +
    `${(run.parameters / 1e6).toFixed(2)} M parameters; batch ${c.batchSize}, crops 2 × ${c.globalSize} px + ${c.localCrops} × ${c.localSize} px`;
  $('data').textContent = run.dataset;
  updateStats();
}

function updateStats(): void {
  const run = state.run;
  const last = state.losses[state.iteration - 1];
  $('iteration').textContent = run ? `${state.iteration} / ${run.total}` : '–';
  $('epoch').textContent = run ? String(Math.floor(state.iteration / Math.max(1, run.itersPerEpoch))) : '–';
  $('loss').textContent = Number.isFinite(last) ? last.toFixed(4) : '–';
  $('ips').textContent = state.imagesPerSecond > 0 ? state.imagesPerSecond.toFixed(1) : '–';
  drawLossChart($('loss-chart'), state.losses, run?.total ?? 0);
}

function setRunning(running: boolean): void {
  state.running = running;
  const b = $<HTMLButtonElement>('start');
  b.textContent = running ? 'Pause' : state.iteration > 0 ? 'Resume' : 'Start training';
  b.disabled = !state.ready;
}

function download(bytes: Uint8Array, name: string): void {
  const url = URL.createObjectURL(new Blob([bytes as BlobPart], { type: 'application/octet-stream' }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function onMessage(m: FromWorker): void {
  switch (m.type) {
    case 'ready':
      state.ready = true;
      state.error = null;
      banner(null);
      showRun(m.run);
      state.losses.length = Math.min(state.losses.length, m.run.iteration);
      document.querySelectorAll<HTMLButtonElement>('.needs-ready').forEach((b) => (b.disabled = false));
      $<HTMLButtonElement>('recover').hidden = true;
      setRunning(false);
      updateStats();
      break;
    case 'step':
      state.losses[m.step.iteration] = m.step.loss;
      state.iteration = m.step.iteration + 1;
      state.imagesPerSecond = m.step.imagesPerSecond;
      $('lr').textContent = m.step.lr.toExponential(2);
      $('entropy').textContent = Number.isFinite(m.step.teacherEntropy) ? m.step.teacherEntropy.toFixed(3) : '–';
      updateStats();
      break;
    case 'attention':
      state.attentionIteration = m.iteration;
      drawAttention($('attention'), m.maps);
      $('attention-caption').textContent = `after ${m.iteration} iterations (teacher, last layer, CLS query)`;
      break;
    case 'running':
      setRunning(m.running);
      break;
    case 'checkpoint':
      state.checkpointsSaved++;
      download(m.bytes, `webdino-dino-it${m.iteration}.safetensors`);
      log(`checkpoint of iteration ${m.iteration} saved (${(m.bytes.byteLength / 1e6).toFixed(2)} MB)`);
      break;
    case 'loaded':
      state.loaded = { name: m.name, iteration: m.run.iteration };
      state.error = null;
      banner(null);
      log(`loaded ${m.name}: iteration ${m.run.iteration}`);
      showRun(m.run);
      state.losses.length = Math.min(state.losses.length, m.run.iteration);
      setRunning(false);
      break;
    case 'features':
    case 'backbone-features':
      break;
    case 'backbone-ready': {
      const b = m.info;
      state.backbone = b;
      state.backboneError = null;
      if (!state.error) banner(null);
      $('backbone-info').textContent =
        `${b.name}: ${b.description}; ${(b.parameters / 1e6).toFixed(2)} M parameters (${b.format})`;
      log(`backbone ${b.name} loaded: ${b.description}`);
      break;
    }
    case 'backbone-visuals':
      state.backboneDrawn++;
      state.backboneView = { side: m.side, grid: m.grid, heads: m.heads, images: m.items.map((i) => i.name) };
      drawBackboneVisuals($('backbone-canvas'), m.items);
      if (state.backbone) {
        $('backbone-info').textContent =
          `${state.backbone.name}: ${state.backbone.description}. ${m.items.length} image(s) at ${m.side}×${m.side} px ` +
          `(${m.grid[0]}×${m.grid[1]} patches, ${m.heads} heads) in ${m.seconds.toFixed(1)} s`;
      }
      break;
    case 'backbone-error':
      state.backboneError = m.message;
      state.backboneErrors++;
      if (/old GPU device/.test(m.message)) {
        state.backbone = null;
        $('backbone-info').textContent = 'no backbone loaded';
      }
      log(`backbone: ${m.message}`);
      banner('error', `<b>Backbone</b>: ${escapeHtml(m.message)}`);
      break;
    case 'log':
      log(m.message);
      break;
    case 'error':
      state.error = { kind: m.kind, message: m.message };
      log(`error (${m.kind}): ${m.message}`);
      if (m.kind === 'no-webgpu') {
        state.ready = false;
        banner('error', `<b>WebGPU is not available here</b>: ${escapeHtml(m.message)}${ENABLE_WEBGPU_HELP}`);
        document.querySelectorAll<HTMLButtonElement>('button').forEach((b) => (b.disabled = true));
      } else if (m.kind === 'device-lost') {
        const from = m.snapshotIteration == null ? 'no snapshot was taken yet, so training would start over' : `the last snapshot is from iteration ${m.snapshotIteration}`;
        banner('warn', `<b>The GPU device was lost</b> (${escapeHtml(m.message)}). Training stopped; ${from}. Press <b>Recover</b> to continue on a new device.`);
        $<HTMLButtonElement>('recover').hidden = false;
        $<HTMLButtonElement>('recover').disabled = false;
        $<HTMLButtonElement>('start').disabled = true;
      } else {
        banner('error', `<b>Error</b>: ${escapeHtml(m.message)}`);
      }
      break;
  }
  const list = waiters.get(m.type);
  if (list?.length) {
    waiters.set(m.type, []);
    for (const w of list) w(m);
  }
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
}

// ---------------------------------------------------------------------------------------------
// Start-up

function main(): void {
  let parsed: ReturnType<typeof settingsFromUrl>;
  try {
    parsed = settingsFromUrl();
  } catch (e) {
    banner('error', escapeHtml((e as Error).message));
    return;
  }
  const { settings, autostart } = parsed;
  document.querySelectorAll<HTMLButtonElement>('.needs-ready').forEach((b) => (b.disabled = true));
  drawLossChart($('loss-chart'), [], 0);
  if (!('gpu' in navigator) || !navigator.gpu) {
    state.error = { kind: 'no-webgpu', message: 'navigator.gpu is missing' };
    banner('error', '<b>This browser does not offer WebGPU</b> (<code>navigator.gpu</code> is missing), so the demo cannot train here.' + ENABLE_WEBGPU_HELP);
    document.querySelectorAll<HTMLButtonElement>('button').forEach((b) => (b.disabled = true));
    return;
  }
  banner('info', 'Starting the GPU worker and building the model…');
  worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module', name: 'webdino-trainer' });
  worker.onmessage = (ev: MessageEvent<FromWorker>) => onMessage(ev.data);
  worker.onerror = (ev) => {
    state.error = { kind: 'error', message: ev.message };
    banner('error', `<b>The training worker failed</b>: ${escapeHtml(ev.message || 'unknown error')}`);
  };

  $('start').onclick = () => send({ type: state.running ? 'pause' : 'start' });
  $('save').onclick = () => send({ type: 'save' });
  $('recover').onclick = () => {
    $<HTMLButtonElement>('recover').disabled = true;
    banner('info', 'Recovering on a new device…');
    send({ type: 'recover' });
  };
  $('load-checkpoint').onchange = async (ev) => {
    const input = ev.target as HTMLInputElement;
    const file = input.files?.[0];
    input.value = '';
    if (!file) return;
    const bytes = new Uint8Array(await file.arrayBuffer());
    send({ type: 'load', bytes, name: file.name }, [bytes.buffer]);
  };
  $('load-images').onchange = async (ev) => {
    const input = ev.target as HTMLInputElement;
    const files = Array.from(input.files ?? []);
    input.value = '';
    if (!files.length) return;
    const images: RgbImage[] = [];
    const names: string[] = [];
    for (const f of files) {
      try {
        images.push(await decodeImageFile(f));
        names.push(f.name);
      } catch (e) {
        log(`${f.name}: could not decode (${(e as Error).message || 'not an image'}); skipped`);
      }
    }
    if (!images.length) return;
    log(`using ${images.length} image(s) of yours for training and attention maps`);
    send({ type: 'images', images, names }, images.map((i) => i.data.buffer));
  };
  $('use-synthetic').onclick = () => send({ type: 'synthetic' });
  wireBackbonePanel();

  send({ type: 'init', settings });
  if (autostart) void next('ready').then(() => send({ type: 'start' }));
}

/** The backbone panel's controls: weights file, heads, image side, images. */
function wireBackbonePanel(): void {
  const side = (): number => {
    const v = Math.round(Number($<HTMLInputElement>('backbone-size').value));
    return Number.isFinite(v) && v >= 16 ? Math.min(v, 1024) : 224;
  };
  $('load-backbone').onchange = async (ev) => {
    const input = ev.target as HTMLInputElement;
    const file = input.files?.[0];
    input.value = '';
    if (!file) return;
    const h = Math.round(Number($<HTMLInputElement>('backbone-heads').value));
    const numHeads = Number.isFinite(h) && h >= 1 ? h : null;
    state.backboneError = null;
    banner('info', `Reading ${escapeHtml(file.name)} (${(file.size / 1e6).toFixed(1)} MB) in the worker…`);
    const bytes = new Uint8Array(await file.arrayBuffer());
    send({ type: 'backbone', bytes, name: file.name, numHeads, size: side() }, [bytes.buffer]);
  };
  $('backbone-size').onchange = () => {
    if (state.backbone) send({ type: 'backbone-images', images: null, names: [], size: side() });
  };
  $('backbone-images').onchange = async (ev) => {
    const input = ev.target as HTMLInputElement;
    const files = Array.from(input.files ?? []);
    input.value = '';
    const images: RgbImage[] = [];
    const names: string[] = [];
    for (const f of files) {
      try {
        images.push(await decodeImageFile(f, 1024));
        names.push(f.name);
      } catch (e) {
        log(`${f.name}: could not decode (${(e as Error).message || 'not an image'}); skipped`);
      }
    }
    if (!images.length) return;
    log(`showing the backbone on ${images.length} image(s) of yours`);
    send({ type: 'backbone-images', images, names, size: side() }, images.map((i) => i.data.buffer));
  };
}

/** Automation hooks (see the file header). */
const api = {
  state,
  /** Teacher CLS features of the fixed images (eval transform at the global crop size). */
  async features() {
    const p = next('features');
    send({ type: 'features' });
    const m = await p;
    return {
      iteration: m.iteration,
      shape: m.shape,
      crop: m.crop,
      features: Array.from(m.features),
      images: m.images.map((i) => ({ width: i.width, height: i.height, data: Array.from(i.data) })),
    };
  },
  /** The loaded backbone's outputs on the backbone images, as `webdino embed` computes them (eval transform at `crop`). */
  async backboneFeatures(crop: number) {
    const p = Promise.race([next('backbone-features'), next('backbone-error')]);
    send({ type: 'backbone-features', crop });
    const m = await p;
    if (m.type === 'backbone-error') throw new Error(m.message);
    return {
      crop: m.crop,
      features: Array.from(m.features),
      featuresShape: m.featuresShape,
      patchTokens: Array.from(m.patchTokens),
      patchTokensShape: m.patchTokensShape,
      attention: Array.from(m.attention),
      attentionShape: m.attentionShape,
      images: m.images.map((i) => ({ width: i.width, height: i.height, data: Array.from(i.data) })),
    };
  },
  /** Destroys the GPU device (as a driver reset would). */
  loseDevice() {
    send({ type: 'lose-device' });
  },
};
(globalThis as unknown as { webdino: typeof api }).webdino = api;

main();
