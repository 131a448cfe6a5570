/**
 * The demo's worker: owns the WebGPU engine, a DINO trainer (train/trainer.ts), the data (the
 * embedded SyntheticShapes, or the user's images), an in-memory snapshot of the state, and the
 * backbone the user loaded from a file (DINOv2 / DINOv3 / DINO weights, .pth or .safetensors,
 * parsed here from the bytes: models/backbone.ts), shown as the PCA of its patch features and its
 * CLS attention heads on the user's images (eval/visualize.ts).
 *
 * Every command from the page and every training step runs through one serial queue, so GPU work
 * never interleaves (the engine's scopes are a stack in browsers: exact for work that does not
 * run concurrently). While running, the loop takes one step per queue turn, so a pause, a save or
 * a load lands between two steps.
 *
 * Snapshots: every `snapshotEvery` steps, at pause and after a load, the whole state is
 * serialised (train/checkpoint.ts, the same bytes as a downloaded checkpoint) and kept here. When
 * the device is lost, training stops and the page offers `recover`: a new device and trainer,
 * restored from that snapshot (or a fresh start when there is none yet).
 */
import { DeviceError, init, NoAdapterError, type Engine } from '../index.js';
import { type ArchSpec, buildBackbone, describeArch, parseBackboneWeightsAsync } from '../models/backbone.js';
import type { VisionTransformer } from '../models/vit.js';
import { embedForward } from '../eval/embed.js';
import { computeVisuals } from '../eval/visualize.js';
import { checkpointBytes, readCheckpointMeta, restoreCheckpoint } from '../train/checkpoint.js';
import { DinoTrainer, itersPerEpochOf, type TrainConfig } from '../train/trainer.js';
import { evalTransform } from '../train/data/transforms.js';
import { SyntheticShapes } from '../train/data/synthetic.js';
import { DataLoader, type Batch, type LoaderPosition } from '../train/data/loader.js';
import type { Dataset, Sample } from '../train/data/dataset.js';
import type { AttentionMap, BackboneInfo, DemoSettings, FromWorker, RgbImage, RunInfo, ToWorker } from './protocol.js';

/** How many fixed images get attention maps (and features). */
const FIXED_IMAGES = 4;

const scope = self as unknown as {
  postMessage(message: FromWorker, transfer?: Transferable[]): void;
  onmessage: ((ev: MessageEvent<ToWorker>) => void) | null;
};

function post(message: FromWorker, transfer: Transferable[] = []): void {
  scope.postMessage(message, transfer);
}

/** The user's images as a one-class dataset; fewer images than a batch are cycled. */
class ImageList implements Dataset {
  readonly numClasses = 1;
  readonly classNames = ['image'];
  readonly length: number;
  constructor(
    readonly images: RgbImage[],
    readonly names: string[],
    minLength: number,
  ) {
    this.length = Math.max(images.length, minLength);
  }
  getSync(index: number): Sample {
    return { image: this.images[index % this.images.length], label: 0 };
  }
  async get(index: number): Promise<Sample> {
    return this.getSync(index);
  }
  describe(index: number): string {
    return this.names[index % this.names.length];
  }
}

interface State {
  engine: Engine;
  trainer: DinoTrainer;
  dataset: Dataset;
  datasetName: string;
  loader: DataLoader;
  batches: AsyncGenerator<Batch> | null;
  /** Loader position after the last batch trained on (what checkpoints store). */
  position: LoaderPosition;
  itersPerEpoch: number;
  fixed: RgbImage[];
}

let settings: DemoSettings | null = null;
let state: State | null = null;
let running = false;
let lost = false;
let snapshot: { bytes: Uint8Array; iteration: number } | null = null;
/** The user's images, kept across recoveries and loads. */
let userImages: { images: RgbImage[]; names: string[] } | null = null;
let rate = 0;
let lastStepAt = 0;
/** The backbone loaded from a file, on the engine of `state` (freed with it). */
let backbone: { model: VisionTransformer; spec: ArchSpec; info: BackboneInfo; engine: Engine } | null = null;
/** The images the backbone is shown on (null: the trainer's fixed images). */
let backboneImages: { images: RgbImage[]; names: string[] } | null = null;

// ---------------------------------------------------------------------------------------------
// Serial queue

let queue: Promise<unknown> = Promise.resolve();

/** Runs `fn` after everything queued before it; errors are reported to the page. */
function exclusive(fn: () => Promise<void>): Promise<void> {
  const p = queue.then(fn).catch((e) => reportError(e));
  queue = p;
  return p;
}

async function isDeviceLost(e: unknown): Promise<boolean> {
  if (!state) return false;
  if (e instanceof DeviceError) return true;
  // A lost device also surfaces as failed mapAsync / operation errors; `lost` settles shortly.
  const gone = await Promise.race([state.engine.device.gpu.lost.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 300))]);
  return gone;
}

async function reportError(e: unknown): Promise<void> {
  running = false;
  post({ type: 'running', running: false });
  const message = e instanceof Error ? e.message : String(e);
  if (e instanceof NoAdapterError) {
    post({ type: 'error', kind: 'no-webgpu', message });
  } else if (await isDeviceLost(e)) {
    if (lost) return; // already reported by the device's lost handler
    lost = true;
    post({ type: 'error', kind: 'device-lost', message, snapshotIteration: snapshot?.iteration ?? null });
  } else {
    post({ type: 'error', kind: 'error', message });
  }
}

// ---------------------------------------------------------------------------------------------
// Set-up

function syntheticFixed(s: DemoSettings): RgbImage[] {
  const val = new SyntheticShapes({ split: 'val', size: s.imageSize, length: FIXED_IMAGES * 10 });
  // One image of each of the first classes, always the same ones.
  return val.examplesByClass(1).slice(0, FIXED_IMAGES).map((x) => x.image);
}

function makeDataset(s: DemoSettings, batchSize: number): { dataset: Dataset; name: string; fixed: RgbImage[] } {
  if (userImages) {
    const ds = new ImageList(userImages.images, userImages.names, batchSize);
    return { dataset: ds, name: `${userImages.images.length} image(s) of yours`, fixed: userImages.images.slice(0, FIXED_IMAGES) };
  }
  const ds = new SyntheticShapes({ split: 'train', size: s.imageSize, length: s.datasetLength });
  return { dataset: ds, name: `SyntheticShapes ${s.datasetLength} × ${s.imageSize} px`, fixed: syntheticFixed(s) };
}

function runInfo(st: State): RunInfo {
  return {
    adapter: st.engine.device.adapterName(),
    variants: st.engine.device.variants,
    config: st.trainer.config,
    parameters: st.trainer.student.numParameters(),
    iteration: st.trainer.iteration,
    total: st.trainer.totalIterations,
    itersPerEpoch: st.itersPerEpoch,
    dataset: st.datasetName,
  };
}

/**
 * Builds trainer and data on `engine`. With `checkpoint`, the trainer is built
 * with the checkpoint's config and restored from it (schedule and data position included).
 */
async function build(s: DemoSettings, checkpoint: Uint8Array | null, engine: Engine): Promise<State> {
  let config: Partial<TrainConfig> = s.config;
  if (checkpoint) config = readCheckpointMeta(checkpoint).config;
  const trainer = new DinoTrainer(engine, config);
  try {
    const { dataset, name, fixed } = makeDataset(s, trainer.config.batchSize);
    const loader = new DataLoader(dataset, { batchSize: trainer.config.batchSize, seed: trainer.config.seed, onWarning: (m) => post({ type: 'log', message: m }) });
    if (loader.batchesPerEpoch < 1) throw new Error(`the dataset has ${dataset.length} images, fewer than one batch of ${trainer.config.batchSize}`);
    let itersPerEpoch = itersPerEpochOf(trainer.config, loader.batchesPerEpoch);
    trainer.setItersPerEpoch(itersPerEpoch);
    if (checkpoint) {
      const meta = restoreCheckpoint(trainer, checkpoint);
      itersPerEpoch = meta.itersPerEpoch;
      const pos = (meta.extra as { loader?: LoaderPosition } | null)?.loader;
      if (pos) {
        try {
          loader.seek(pos);
        } catch {
          post({ type: 'log', message: 'the checkpoint\'s data position does not fit this dataset; starting its epoch from the beginning' });
        }
      }
    }
    return { engine, trainer, dataset, datasetName: name, loader, batches: null, position: loader.position, itersPerEpoch, fixed };
  } catch (e) {
    trainer.dispose();
    throw e;
  }
}

/** Frees the trainer; returns the engine it ran on (null when there was none). */
function disposeState(): Engine | null {
  if (!state) return null;
  const old = state;
  state = null;
  void old.batches?.return(undefined);
  try {
    old.trainer.dispose();
  } catch {
    /* the device may be gone */
  }
  return old.engine;
}

/** Engines this worker destroyed on purpose (their `lost` is not a failure). */
const retired = new WeakSet<Engine>();

/** Creates an engine and reports its device loss (a driver reset, a GPU removed) as soon as it happens. */
async function newEngine(): Promise<Engine> {
  const engine = await init();
  lost = false;
  void engine.device.gpu.lost.then((info) => {
    if (retired.has(engine) || state?.engine !== engine || lost) return;
    lost = true;
    running = false;
    post({ type: 'running', running: false });
    post({ type: 'error', kind: 'device-lost', message: `${info.reason}: ${info.message || 'no message'}`, snapshotIteration: snapshot?.iteration ?? null });
  });
  return engine;
}

/** A new engine (device), destroying `old` if it still exists. */
async function freshEngine(old: Engine | null): Promise<Engine> {
  if (backbone) {
    // It lived on the old device.
    disposeBackbone();
    post({ type: 'backbone-error', message: 'the backbone was on the old GPU device: load its file again' });
  }
  if (old) retired.add(old);
  try {
    old?.device.destroy();
  } catch {
    /* already gone */
  }
  return newEngine();
}

async function takeSnapshot(): Promise<void> {
  const st = state!;
  snapshot = { bytes: await checkpointBytes(st.trainer, st.itersPerEpoch, { loader: st.position }), iteration: st.trainer.iteration };
}

// ---------------------------------------------------------------------------------------------
// Attention and features

/** Side at which the fixed images are shown to the model: twice the global crop, a multiple of the patch. */
function attentionSide(st: State): number {
  const c = st.trainer.config;
  const side = 2 * c.globalSize;
  return side - (side % c.patchSize);
}

async function attentionMaps(): Promise<void> {
  const st = state!;
  const e = st.engine;
  const backbone = st.trainer.teacherBackbone;
  const side = attentionSide(st);
  const p = st.trainer.config.patchSize;
  const heads = st.trainer.config.numHeads;
  const g = side / p;
  const maps = await e.noGrad(() =>
    e.scope(async () => {
      // The whole image resized to side × side (resize ratio 1: no centre crop), ImageNet-normalised.
      const x = evalTransform(e, st.fixed, { crop: side, resize: 1 });
      const probs = backbone.lastSelfAttention(x); // [B, heads, N, N]
      const N = probs.shape[3];
      const first = N - g * g;
      const cls = await probs.slice(2, 0, 1).slice(3, first, N).contiguous().toArray(); // [B, heads, g·g]
      const pixels = await x.toArray();
      return st.fixed.map((_, b): AttentionMap => {
        const rgb = new Uint8Array(side * side * 3);
        const mean = [0.485, 0.456, 0.406];
        const std = [0.229, 0.224, 0.225];
        for (let c = 0; c < 3; c++) {
          const base = (b * 3 + c) * side * side;
          for (let i = 0; i < side * side; i++) rgb[i * 3 + c] = Math.max(0, Math.min(255, Math.round((pixels[base + i] * std[c] + mean[c]) * 255)));
        }
        return {
          image: { width: side, height: side, data: rgb },
          attention: cls.slice(b * heads * g * g, (b + 1) * heads * g * g),
          heads,
          h: g,
          w: g,
        };
      });
    }),
  );
  post({ type: 'attention', iteration: st.trainer.iteration, maps }, maps.flatMap((m) => [m.attention.buffer, m.image.data.buffer]));
}

async function features(): Promise<void> {
  const st = state!;
  const e = st.engine;
  const crop = st.trainer.config.globalSize;
  const out = await e.noGrad(() =>
    e.scope(async () => {
      // DINO's eval transform (resize to round(crop·256/224), centre crop, normalise), as `webdino embed`.
      const x = evalTransform(e, st.fixed, { crop });
      return st.trainer.teacherBackbone.forward(x).toArray();
    }),
  );
  const D = st.trainer.config.embedDim;
  const images = st.fixed.map((im) => ({ width: im.width, height: im.height, data: im.data.slice() }));
  post({ type: 'features', iteration: st.trainer.iteration, features: out, shape: [out.length / D, D], images, crop }, [out.buffer]);
}

// ---------------------------------------------------------------------------------------------
// A backbone from a file: PCA maps, attention heads, features

function disposeBackbone(): void {
  const b = backbone;
  backbone = null;
  try {
    b?.model.dispose();
  } catch {
    /* the device may be gone */
  }
}

/** The images the backbone is shown on: the user's, else the trainer's fixed images. */
function shownImages(): { images: RgbImage[]; names: string[] } {
  if (backboneImages) return backboneImages;
  const fixed = state?.fixed ?? [];
  return { images: fixed, names: fixed.map((_, i) => `image ${i + 1}`) };
}

/** Parses and builds the backbone from the file's bytes (see the file header); replaces the old one. */
async function loadBackboneFile(bytes: Uint8Array, name: string, numHeads: number | null): Promise<void> {
  const engine = current().engine;
  let weights;
  try {
    weights = await parseBackboneWeightsAsync(bytes, { name });
  } catch (e) {
    throw new Error(`${name}: ${(e as Error).message}`, { cause: e });
  }
  let loaded;
  try {
    loaded = buildBackbone(engine, weights, numHeads ? { numHeads } : {}, name);
  } catch (e) {
    const m = (e as Error).message;
    // buildBackbone's messages name the file already; say where the page takes the heads.
    throw new Error(/numHeads|heads/.test(m) && !numHeads ? `${m} (enter the number of heads on the page)` : m, { cause: e });
  }
  const { model, spec } = loaded;
  model.eval();
  disposeBackbone();
  const info: BackboneInfo = {
    name,
    description: describeArch(spec),
    format: weights.format,
    embedDim: spec.embedDim,
    depth: spec.depth,
    numHeads: spec.numHeads,
    patchSize: spec.patchSize,
    prefixTokens: model.numPrefixTokens - 1,
    parameters: model.numParameters(),
  };
  backbone = { model, spec, info, engine };
  post({ type: 'backbone-ready', info });
}

/** The PCA and attention pictures of the shown images at `size` px (eval/visualize.ts). */
async function backboneVisuals(size: number): Promise<void> {
  if (!backbone) return;
  const { images, names } = shownImages();
  if (!images.length) return;
  const t0 = performance.now();
  const r = await computeVisuals(backbone.engine, backbone.model, images, { size: Math.max(size, backbone.spec.patchSize), batchSize: 8 });
  const items = r.images.map((v, i) => ({ name: names[i], input: v.input, pca: v.pca, attention: v.attention }));
  const seconds = (performance.now() - t0) / 1000;
  const transfer = items.flatMap((it) => [it.input.data.buffer, it.pca.data.buffer, ...it.attention.map((a) => a.data.buffer)]);
  post({ type: 'backbone-visuals', side: r.side, grid: r.grid, heads: r.heads, items, seconds }, transfer);
}

/** Features as `webdino embed` computes them (eval transform at `crop`, eval/embed.ts `embedForward`). */
async function backboneFeatures(crop: number): Promise<void> {
  if (!backbone) throw new Error('no backbone loaded');
  const { model, engine: e } = backbone;
  const { images } = shownImages();
  if (!images.length) throw new Error('no images to embed');
  const r = await e.noGrad(() =>
    e.scope(async () => {
      const x = evalTransform(e, images, { crop });
      const o = embedForward(model, x, { attention: true, patchTokens: true });
      return {
        f: await o.features.toArray(),
        t: await o.patchTokens!.toArray(),
        a: await o.attention!.toArray(),
        fs: o.features.shape as [number, number],
        ts: o.patchTokens!.shape as [number, number, number],
        as: o.attention!.shape as [number, number, number],
      };
    }),
  );
  const copies = images.map((im) => ({ width: im.width, height: im.height, data: im.data.slice() }));
  post(
    { type: 'backbone-features', crop, features: r.f, featuresShape: r.fs, patchTokens: r.t, patchTokensShape: r.ts, attention: r.a, attentionShape: r.as, images: copies },
    [r.f.buffer, r.t.buffer, r.a.buffer, ...copies.map((c) => c.data.buffer)],
  );
}

/** Runs a backbone command; its failures are reported as backbone errors (training goes on), device losses as usual. */
async function backboneCommand(fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (e) {
    if (e instanceof DeviceError || (await isDeviceLost(e))) throw e;
    post({ type: 'backbone-error', message: e instanceof Error ? e.message : String(e) });
  }
}

// ---------------------------------------------------------------------------------------------
// Training

async function step(): Promise<void> {
  const st = state!;
  const t = st.trainer;
  if (t.iteration >= t.totalIterations) {
    running = false;
    post({ type: 'running', running: false });
    post({ type: 'log', message: `training finished: ${t.iteration} iterations` });
    await takeSnapshot();
    return;
  }
  st.batches ??= st.loader.batches();
  let next = await st.batches.next();
  if (next.done) {
    st.batches = st.loader.batches();
    next = await st.batches.next();
    if (next.done) throw new Error('the data loader gave no batch');
  }
  const batch = next.value;
  const r = await t.stepImages(batch.samples.map((s) => s.image));
  st.position = batch.next;
  const now = performance.now();
  if (lastStepAt > 0) {
    const inst = r.images / ((now - lastStepAt) / 1000);
    rate = rate > 0 ? 0.8 * rate + 0.2 * inst : inst;
  }
  lastStepAt = now;
  post({
    type: 'step',
    step: { iteration: r.iteration, epoch: r.epoch, loss: r.loss, lr: r.lr, teacherEntropy: r.teacherEntropy, imagesPerSecond: rate, total: t.totalIterations },
  });
  const it = t.iteration;
  const s = settings!;
  if (s.attentionEvery > 0 && it % s.attentionEvery === 0) await attentionMaps();
  if (s.snapshotEvery > 0 && it % s.snapshotEvery === 0) await takeSnapshot();
  if (s.pauseAt > 0 && it >= s.pauseAt && running) {
    s.pauseAt = 0; // once: a later Start trains on
    running = false;
    post({ type: 'running', running: false });
    await takeSnapshot();
    await attentionMaps();
  }
}

async function loop(): Promise<void> {
  while (running) {
    await exclusive(async () => {
      if (running && state) await step();
    });
    // Let queued commands (pause, save...) in before the next step.
    await new Promise((r) => setTimeout(r, 0));
  }
}

// ---------------------------------------------------------------------------------------------
// Commands

/** The current state; a clear error when there is none (not initialised, or no WebGPU). */
function current(): State {
  if (!state) throw new Error(lost ? 'the GPU device was lost: recover first' : 'the model is not ready (no WebGPU device yet)');
  return state;
}

async function handle(msg: ToWorker): Promise<void> {
  switch (msg.type) {
    case 'init': {
      settings = msg.settings;
      state = await build(settings, null, await newEngine());
      post({ type: 'ready', run: runInfo(state) });
      await attentionMaps();
      await takeSnapshot();
      return;
    }
    case 'start': {
      if (!state || running) return;
      if (lost) throw new DeviceError('the GPU device was lost: recover first');
      running = true;
      lastStepAt = 0;
      post({ type: 'running', running: true });
      void loop();
      return;
    }
    case 'pause': {
      // `running` was cleared when the message arrived (see onmessage).
      post({ type: 'running', running: false });
      if (state && !lost) await takeSnapshot();
      return;
    }
    case 'images':
    case 'synthetic': {
      const st = current();
      userImages = msg.type === 'images' ? { images: msg.images, names: msg.names } : null;
      const { dataset, name, fixed } = makeDataset(settings!, st.trainer.config.batchSize);
      void st.batches?.return(undefined);
      st.dataset = dataset;
      st.datasetName = name;
      st.fixed = fixed;
      // The schedule stays as it is (it counts iterations); only the images change.
      st.loader = new DataLoader(dataset, { batchSize: st.trainer.config.batchSize, seed: st.trainer.config.seed + st.trainer.iteration });
      st.batches = null;
      st.position = st.loader.position;
      post({ type: 'log', message: `training on ${name}` });
      post({ type: 'ready', run: runInfo(st) });
      await attentionMaps();
      return;
    }
    case 'save': {
      const st = current();
      const bytes = await checkpointBytes(st.trainer, st.itersPerEpoch, { loader: st.position });
      post({ type: 'checkpoint', bytes, iteration: st.trainer.iteration }, [bytes.buffer]);
      return;
    }
    case 'load': {
      // Validate before anything is torn down.
      try {
        readCheckpointMeta(msg.bytes);
      } catch (e) {
        throw new Error(`${msg.name}: ${(e as Error).message}`, { cause: e });
      }
      if (!settings) throw new Error('the model is not ready (no WebGPU device yet)');
      running = false;
      post({ type: 'running', running: false });
      const old = disposeState();
      const engine = old && !lost ? old : await freshEngine(old);
      try {
        state = await build(settings!, msg.bytes, engine);
      } catch (e) {
        // Keep a usable state: rebuild from the last snapshot, then report the failure.
        state = await build(settings!, snapshot?.bytes ?? null, engine);
        post({ type: 'ready', run: runInfo(state) });
        throw new Error(`${msg.name}: ${(e as Error).message}`, { cause: e });
      }
      snapshot = { bytes: msg.bytes, iteration: state.trainer.iteration };
      post({ type: 'loaded', name: msg.name, run: runInfo(state) });
      await attentionMaps();
      return;
    }
    case 'features':
      current();
      await features();
      return;
    case 'recover': {
      const engine = await freshEngine(disposeState());
      state = await build(settings!, snapshot?.bytes ?? null, engine);
      post({ type: 'log', message: snapshot ? `recovered on a new device from the snapshot at iteration ${snapshot.iteration}` : 'recovered on a new device; no snapshot yet, so training starts over' });
      post({ type: 'ready', run: runInfo(state) });
      await attentionMaps();
      return;
    }
    case 'lose-device':
      state?.engine.device.gpu.destroy();
      return;
    case 'backbone':
      await backboneCommand(async () => {
        await loadBackboneFile(msg.bytes, msg.name, msg.numHeads);
        await backboneVisuals(msg.size);
      });
      return;
    case 'backbone-images':
      if (msg.images) backboneImages = { images: msg.images, names: msg.names };
      await backboneCommand(() => backboneVisuals(msg.size));
      return;
    case 'backbone-features':
      await backboneCommand(() => backboneFeatures(msg.crop));
      return;
  }
}

scope.onmessage = (ev) => {
  const msg = ev.data;
  // A pause stops the loop at once: no further step is queued after this message.
  if (msg.type === 'pause') running = false;
  void exclusive(() => handle(msg));
};
