/**
 * DINO's linear probe (eval_linear.py; dino.md §2.2) of a frozen ViT: a linear classifier trained
 * on features of the backbone, top-1 / top-5 on a held-out split. Browser-safe (engine, models,
 * datasets; no Node built-ins).
 *
 * What follows DINO
 * - Frozen backbone in eval mode; features of `n` last blocks: the CLS token of each block's
 *   output after the final LayerNorm (`get_intermediate_layers`), concatenated [cls_{L−n+1}, …,
 *   cls_L] (n·D). With `avgpool`, the mean of the last block's (normed) patch tokens is added:
 *   for n = 1 interleaved as DINO's stack-then-flatten does (cls₀, avg₀, cls₁, avg₁, …, so released
 *   linear weights line up); for n > 1 DINO's code fails (it concatenates n·D with D on a new
 *   axis), so here the average is appended after the CLS tokens (n·D + D).
 * - Classifier: linear layer [C, F], weight ~ N(0, 0.01²), bias 0; cross-entropy (mean over the
 *   batch); SGD with momentum 0.9 (PyTorch's form: v ← μ·v + g + wd·w; w ← w − lr·v), weight
 *   decay 0; lr = base_lr · batch / 256; CosineAnnealingLR(epochs, eta_min 0) stepped per epoch:
 *   epoch e trains at lr·(1 + cos(π·e/E))/2.
 * - Training transform: RandomResizedCrop(crop, scale (0.08, 1), ratio (3/4, 4/3)) + horizontal
 *   flip (p 0.5) + ImageNet normalisation; evaluation transform: Resize(crop·256/224) + CenterCrop
 *   as k-NN. Validation after every epoch; the best top-1 over epochs is what DINO reports (the
 *   last epoch's figures are returned too).
 *
 * What differs, and why (`LINEAR_CPU_DEFAULTS`, the defaults of `webdino eval linear`; sized for
 * the embedded data and a small ViT on two CPU cores, ~1-3 minutes; `LINEAR_DINO_DEFAULTS` holds
 * the official values)
 * - The backbone forward is the whole cost (~70-100 images/s for the default 64-wide ViT on
 *   lavapipe), so only about two passes over the 5000 training images fit the budget. DINO's
 *   protocol draws fresh crops every epoch for 100 epochs; with two views the classifier would
 *   train on crops (RandomResizedCrop, scale 0.08-1) whose distribution differs from the
 *   centre-crop validation views, and too few of them to expect a gain from augmentation (a
 *   [10, 256] classifier on 5000 images needs little regularisation) — a judgement, not a
 *   measurement on a trained model. So by default the training images go through the evaluation
 *   transform ONCE, their features are kept, and DINO's 100 epochs run on the kept features (about 25 s in
 *   all for the default model on two cores: the backbone pass dominates). `augment: true` (`--augment`) restores DINO's crops and flips;
 *   `views` then sets how many augmented views per image are computed and cycled over the epochs
 *   (default 2: 165 s; 0: fresh crops every epoch, exactly DINO's protocol, one backbone pass per
 *   epoch).
 * - Batch 64 instead of 128 per GPU; base lr 0.3 instead of 0.001 (0.075 after the batch/256
 *   scaling): 100 epochs of 5000 images are ~7800 steps against DINO's ~1M. Measured on the default
 *   `webdino train` teacher (k-NN 57.3 %): base lr 0.1 / 0.3 / 0.5 / 2 gave 58.3 / 63.2 / 64.6 /
 *   64.8 % (the earlier default, 0.02 for 30 epochs, underfit at 44.0 %). Above ~0.3 the first
 *   epochs' loss jumps (to ~17 at 0.5 on a random ViT's features, whose shared mean component makes
 *   the curvature large) before it settles; at 0.3 it peaks near 7 and falls from epoch 2.
 * - RandomResizedCrop resamples with the project's antialiased bicubic kernels (DINO's eval_linear
 *   uses torchvision's default bilinear interpolation).
 *
 * The classifier runs on the GPU through the engine's autograd (linear → soft cross-entropy with
 * one-hot targets → backward), its update by elementwise ops; `sgdStepRef` is the float64 CPU
 * reference of one step used by the tests.
 */
import type { Engine } from '../engine/engine.js';
import * as ops from '../engine/ops/index.js';
import { Rng } from '../engine/random.js';
import type { Tensor } from '../engine/tensor.js';
import { cropBatchRaw, IMAGENET_NORM, type ImageLike, plainCrop, uploadImages } from '../kernels/augment.js';
import type { VisionTransformer } from '../models/vit.js';
import { evalTransform, sampleResizedCropBox } from '../train/data/transforms.js';
import type { Dataset } from '../train/data/dataset.js';
import { DataLoader } from '../train/data/loader.js';

/** Settings of the linear probe (see the file header). */
export interface LinearProbeConfig {
  /** CLS tokens of the last n blocks (DINO: 4 for ViT-S, 1 with avgpool for ViT-B). */
  nLastBlocks: number;
  /** Add the mean of the last block's patch tokens (DINO's --avgpool_patchtokens). */
  avgpool: boolean;
  epochs: number;
  batchSize: number;
  /** Base lr, scaled by batchSize / 256. */
  lr: number;
  momentum: number;
  weightDecay: number;
  /** Side of the model input (crops and the evaluation centre crop). */
  crop: number;
  /** RandomResizedCrop + flip on the training images (DINO); false: the eval transform (features computed once). */
  augment: boolean;
  /**
   * Augmented views per image whose features are computed and kept; epoch e trains on view
   * e mod views (0 or >= epochs: fresh crops every epoch, DINO's protocol, nothing kept).
   */
  views: number;
  /** RandomResizedCrop's area range. */
  scale: [number, number];
  /** Seed of the classifier init, the shuffling and the crops. */
  seed: number;
}

/** DINO's eval_linear.py values (crop 224). */
export const LINEAR_DINO_DEFAULTS: Omit<LinearProbeConfig, 'crop'> = {
  nLastBlocks: 4,
  avgpool: false,
  epochs: 100,
  batchSize: 128,
  lr: 0.001,
  momentum: 0.9,
  weightDecay: 0,
  augment: true,
  views: 0,
  scale: [0.08, 1],
  seed: 0,
};

/** The defaults of `webdino eval linear`: DINO's, scaled down to minutes on two CPU cores (see the header). */
export const LINEAR_CPU_DEFAULTS: Omit<LinearProbeConfig, 'crop'> = {
  ...LINEAR_DINO_DEFAULTS,
  epochs: 100,
  batchSize: 64,
  lr: 0.3,
  augment: false,
  views: 2,
};

/** One epoch's figures. */
export interface LinearEpoch {
  epoch: number;
  /** The (scaled) learning rate of the epoch. */
  lr: number;
  /** Mean training loss over the epoch. */
  loss: number;
  /** Validation accuracy in %. */
  top1: number;
  top5: number;
}

/** What {@link linearProbe} returns. */
export interface LinearProbeResult {
  config: LinearProbeConfig;
  /** Feature width F and number of classes C of the classifier. */
  features: number;
  classes: number;
  epochs: LinearEpoch[];
  /** DINO's figure: the best validation top-1 over the epochs, its epoch and that epoch's top-5. */
  best: LinearEpoch;
  /** The last epoch. */
  last: LinearEpoch;
  /** The trained classifier (PyTorch layout: weight [C, F], bias [C]). */
  weight: Float32Array;
  bias: Float32Array;
}

/** Options of {@link linearProbe}. */
export interface LinearProbeOptions extends Partial<LinearProbeConfig> {
  crop: number;
  train: Dataset;
  val: Dataset;
  /** Number of classes (default: the larger of the two datasets'). */
  numClasses?: number;
  onEpoch?: (e: LinearEpoch) => void;
  /** Training images done in the current epoch, and the epoch size. */
  onProgress?: (done: number, total: number, epoch: number) => void;
  onWarning?: (message: string) => void;
}

/** The width of the probe's features for an embedding width D. */
export function probeFeatureWidth(D: number, nLastBlocks: number, avgpool: boolean): number {
  return nLastBlocks * D + (avgpool ? D : 0);
}

/**
 * The probe's features of a normalised batch x [B, 3, H, W]: [B, F] (see the file header for the
 * layout). Call under noGrad; the result belongs to the caller's scope.
 */
export function probeFeatures(model: VisionTransformer, x: Tensor, nLastBlocks: number, avgpool: boolean): Tensor {
  const depth = model.blocks.length;
  if (!Number.isInteger(nLastBlocks) || nLastBlocks < 1 || nLastBlocks > depth) {
    throw new RangeError(`n_last_blocks must be an integer from 1 to the model's depth ${depth}, got ${nLastBlocks}`);
  }
  const outs = model.intermediateLayers(x, nLastBlocks); // n × (B, N, D), after the final norm
  const [B, N, D] = outs[0].shape;
  const cls = outs.map((t) => t.slice(1, 0, 1).reshape(B, D)); // n × (B, D)
  if (!avgpool) return cls.length === 1 ? cls[0].contiguous() : ops.concat(cls, 1);
  const first = model.numPrefixTokens; // CLS and registers / storage tokens come first
  const avg = outs[nLastBlocks - 1].slice(1, first, N).mean(1); // (B, D)
  if (nLastBlocks === 1) {
    // torch.cat((cls.unsqueeze(-1), avg.unsqueeze(-1)), -1).reshape(B, -1): (B, D, 2) → interleaved.
    return ops.concat([cls[0].reshape(B, D, 1), avg.reshape(B, D, 1)], 2).reshape(B, 2 * D);
  }
  return ops.concat([...cls, avg], 1);
}

/** CosineAnnealingLR(E, eta_min 0) of epoch e: lr·(1 + cos(π·e/E))/2. */
export function cosineEpochLr(lr: number, epoch: number, epochs: number): number {
  return (lr * (1 + Math.cos((Math.PI * epoch) / epochs))) / 2;
}

/**
 * Top-1 / top-5 accuracy (%) of logits [M, C] row-major against labels. Ranking: a class outranks
 * the label when its logit is larger, or equal with a lower index; top-5 uses min(5, C) ranks.
 */
export function topkAccuracy(logits: ArrayLike<number>, labels: ArrayLike<number>, C: number): { top1: number; top5: number } {
  const M = labels.length;
  let t1 = 0;
  let t5 = 0;
  for (let i = 0; i < M; i++) {
    const y = labels[i];
    const ly = logits[i * C + y];
    let rank = 0;
    for (let c = 0; c < C; c++) {
      const l = logits[i * C + c];
      if (c !== y && (l > ly || (l === ly && c < y) || Number.isNaN(ly))) rank++;
    }
    if (rank === 0) t1++;
    if (rank < 5) t5++;
  }
  return { top1: (100 * t1) / M, top5: (100 * t5) / M };
}

/** A linear layer [C, F] with SGD-momentum state, on the GPU. */
export class LinearClassifier {
  readonly weight: Tensor;
  readonly bias: Tensor;
  private readonly vWeight: Tensor;
  private readonly vBias: Tensor;

  /** weight ~ N(0, 0.01²) from `rng`, bias 0 (DINO's LinearClassifier init). */
  constructor(
    readonly engine: Engine,
    readonly features: number,
    readonly classes: number,
    rng: Rng,
  ) {
    const e = engine;
    this.weight = e.keep(e.tensor(rng.fillNormal(new Float32Array(classes * features), 0, 0.01), [classes, features], { label: 'linear.weight' }));
    this.bias = e.keep(e.zeros([classes], { label: 'linear.bias' }));
    this.weight.requiresGrad = true;
    this.bias.requiresGrad = true;
    this.vWeight = e.keep(e.zeros([classes, features], { label: 'linear.weight.momentum' }));
    this.vBias = e.keep(e.zeros([classes], { label: 'linear.bias.momentum' }));
  }

  /** Logits [B, C] of features x [B, F]. */
  forward(x: Tensor): Tensor {
    return ops.linear(x, this.weight, this.bias);
  }

  /**
   * One SGD step on a batch: mean cross-entropy of the logits against `labels`, backward, then
   * v ← μ·v + g + wd·w, w ← w − lr·v. Returns the loss (throws when it is not finite).
   */
  async step(x: Tensor, labels: ArrayLike<number>, lr: number, momentum: number, weightDecay: number): Promise<number> {
    const e = this.engine;
    const [B, F] = x.shape;
    if (F !== this.features || labels.length !== B) throw new RangeError(`LinearClassifier.step: features [${x.shape.join(', ')}] and ${labels.length} labels for a [${this.classes}, ${this.features}] layer`);
    const C = this.classes;
    const oneHot = new Float32Array(B * C);
    for (let i = 0; i < B; i++) {
      const y = labels[i];
      if (!Number.isInteger(y) || y < 0 || y >= C) throw new RangeError(`LinearClassifier.step: label ${y} outside [0, ${C})`);
      oneHot[i * C + y] = 1;
    }
    return e.scope(async () => {
      const loss = ops.softCrossEntropy(e.tensor(oneHot, [B, C]), this.forward(x.detach())).mean();
      loss.backward();
      e.noGrad(() => {
        for (const [w, v] of [[this.weight, this.vWeight], [this.bias, this.vBias]] as const) {
          let g = w.grad!;
          if (weightDecay) g = g.add(w.mul(weightDecay));
          ops.copyInto(v, v.mul(momentum).add(g));
          ops.copyInto(w, w.sub(v.mul(lr)));
          w.zeroGrad();
        }
      });
      const value = await loss.item();
      if (!Number.isFinite(value)) throw new Error(`linear probe: the training loss is ${value}`);
      return value;
    });
  }

  dispose(): void {
    for (const t of [this.weight, this.bias, this.vWeight, this.vBias]) {
      t.zeroGrad();
      t.dispose();
    }
  }
}

/**
 * Float64 reference of {@link LinearClassifier.step}: updates w [C·F], b [C], vw, vb in place and
 * returns the mean cross-entropy before the update.
 */
export function sgdStepRef(
  x: ArrayLike<number>,
  labels: ArrayLike<number>,
  w: Float64Array,
  b: Float64Array,
  vw: Float64Array,
  vb: Float64Array,
  lr: number,
  momentum: number,
  weightDecay: number,
): number {
  const C = b.length;
  const F = w.length / C;
  const B = labels.length;
  const gw = new Float64Array(C * F);
  const gb = new Float64Array(C);
  let loss = 0;
  for (let i = 0; i < B; i++) {
    const z = new Float64Array(C);
    for (let c = 0; c < C; c++) {
      let s = b[c];
      for (let f = 0; f < F; f++) s += w[c * F + f] * x[i * F + f];
      z[c] = s;
    }
    const m = Math.max(...z);
    let se = 0;
    for (let c = 0; c < C; c++) se += Math.exp(z[c] - m);
    loss += (m + Math.log(se) - z[labels[i]]) / B;
    for (let c = 0; c < C; c++) {
      const d = (Math.exp(z[c] - m) / se - (c === labels[i] ? 1 : 0)) / B; // ∂loss/∂z_c
      gb[c] += d;
      for (let f = 0; f < F; f++) gw[c * F + f] += d * x[i * F + f];
    }
  }
  const update = (p: Float64Array, v: Float64Array, g: Float64Array) => {
    for (let k = 0; k < p.length; k++) {
      v[k] = momentum * v[k] + g[k] + weightDecay * p[k];
      p[k] -= lr * v[k];
    }
  };
  update(w, vw, gw);
  update(b, vb, gb);
  return loss;
}

/** RandomResizedCrop + flip of a batch, normalised: [B, 3, crop, crop]. */
export function randomResizedCrops(engine: Engine, images: readonly ImageLike[], crop: number, scale: readonly [number, number], rng: Rng): Tensor {
  const params = images.map((img, b) => {
    const box = sampleResizedCropBox(rng, img.width, img.height, scale, [3 / 4, 4 / 3]);
    return { ...plainCrop(b, box, crop), flip: rng.uniform() < 0.5 };
  });
  const packed = uploadImages(engine, images);
  try {
    return cropBatchRaw(engine, packed, params, crop, { norm: IMAGENET_NORM });
  } finally {
    packed.pixels.dispose();
  }
}

/** Features of a whole dataset through the evaluation transform, as a kept [N, F] tensor, and labels. */
async function evalFeatures(
  engine: Engine,
  model: VisionTransformer,
  ds: Dataset,
  cfg: LinearProbeConfig,
  onWarning?: (m: string) => void,
): Promise<{ features: Tensor; labels: Int32Array }> {
  const loader = new DataLoader(ds, { batchSize: cfg.batchSize, shuffle: false, dropLast: false, onWarning });
  const parts: Tensor[] = [];
  const labels: number[] = [];
  try {
    for await (const b of loader.batches()) {
      for (const s of b.samples) labels.push(s.label);
      parts.push(
        engine.keep(
          engine.noGrad(() => engine.scope(() => probeFeatures(model, evalTransform(engine, b.samples.map((s) => s.image), { crop: cfg.crop }), cfg.nLastBlocks, cfg.avgpool))),
        ),
      );
    }
    if (!parts.length) throw new Error('linear probe: no readable images');
    const features = parts.length === 1 ? parts.pop()! : engine.keep(engine.noGrad(() => engine.scope(() => ops.concat(parts, 0))));
    return { features, labels: Int32Array.from(labels) };
  } finally {
    for (const p of parts) p.dispose();
  }
}

/** Resolves the configuration: the CPU defaults, then the caller's values; checks them. */
export function linearProbeConfig(opts: Partial<LinearProbeConfig> & { crop: number }, depth: number): LinearProbeConfig {
  const cfg: LinearProbeConfig = { ...LINEAR_CPU_DEFAULTS, nLastBlocks: Math.min(LINEAR_CPU_DEFAULTS.nLastBlocks, depth), crop: opts.crop };
  for (const [k, v] of Object.entries(opts)) if (v !== undefined) (cfg as unknown as Record<string, unknown>)[k] = v;
  const int = (name: string, v: number, lo: number, hi = Infinity) => {
    if (!Number.isInteger(v) || v < lo || v > hi) throw new RangeError(`linear probe: ${name} must be an integer from ${lo} to ${hi}, got ${v}`);
  };
  int('nLastBlocks', cfg.nLastBlocks, 1, depth);
  int('epochs', cfg.epochs, 1);
  int('views', cfg.views, 0);
  int('batchSize', cfg.batchSize, 1);
  int('crop', cfg.crop, 1);
  if (!(cfg.lr > 0) || !(cfg.momentum >= 0 && cfg.momentum < 1) || !(cfg.weightDecay >= 0)) {
    throw new RangeError(`linear probe: need lr > 0, 0 <= momentum < 1, weightDecay >= 0 (got ${cfg.lr}, ${cfg.momentum}, ${cfg.weightDecay})`);
  }
  if (!(cfg.scale[0] > 0 && cfg.scale[0] <= cfg.scale[1] && cfg.scale[1] <= 1)) throw new RangeError(`linear probe: scale must satisfy 0 < lo <= hi <= 1, got [${cfg.scale.join(', ')}]`);
  return cfg;
}

/**
 * Trains a linear classifier on the frozen `model`'s features of `opts.train` and reports its
 * accuracy on `opts.val` after every epoch (see the file header). The model should be in eval
 * mode; it is not modified.
 */
export async function linearProbe(engine: Engine, model: VisionTransformer, opts: LinearProbeOptions): Promise<LinearProbeResult> {
  const cfg = linearProbeConfig(opts, model.blocks.length);
  const C = opts.numClasses ?? Math.max(opts.train.numClasses, opts.val.numClasses);
  const F = probeFeatureWidth(model.cfg.embedDim, cfg.nLastBlocks, cfg.avgpool);
  const rng = new Rng(cfg.seed);
  const clf = new LinearClassifier(engine, F, C, rng);
  const lr0 = (cfg.lr * cfg.batchSize) / 256;
  const loader = new DataLoader(opts.train, { batchSize: cfg.batchSize, shuffle: true, seed: cfg.seed, dropLast: false, onWarning: opts.onWarning });
  const val = await evalFeatures(engine, model, opts.val, cfg, opts.onWarning);
  const N = opts.train.length;
  const labelOf = new Int32Array(N).fill(-1);
  // The feature bank: per view, the features of every training image by dataset index. Without
  // augmentation there is one view (the eval transform); with `views` = 0 (or >= epochs) every
  // epoch draws fresh crops and nothing is kept.
  const nViews = !cfg.augment ? 1 : cfg.views === 0 || cfg.views >= cfg.epochs ? 0 : cfg.views;
  const bank: ({ features: Float32Array; have: Uint8Array } | null)[] = new Array(nViews).fill(null);
  const input = (images: ImageLike[]) =>
    cfg.augment ? randomResizedCrops(engine, images, cfg.crop, cfg.scale, rng) : evalTransform(engine, images, { crop: cfg.crop });
  const history: LinearEpoch[] = [];
  try {
    for (let epoch = 0; epoch < cfg.epochs; epoch++) {
      const lr = cosineEpochLr(lr0, epoch, cfg.epochs);
      let lossSum = 0;
      let seen = 0;
      const view = nViews ? epoch % nViews : -1;
      const stored = view >= 0 ? bank[view] : null;
      if (stored) {
        // A view computed in an earlier epoch: the same crops' features, in this epoch's order.
        const order = Array.from(loader.order(epoch)).filter((i) => stored.have[i]);
        for (let s = 0; s < order.length; s += cfg.batchSize) {
          const idx = order.slice(s, s + cfg.batchSize);
          const rows = new Float32Array(idx.length * F);
          idx.forEach((i, r) => rows.set(stored.features.subarray(i * F, (i + 1) * F), r * F));
          const labels = idx.map((i) => labelOf[i]);
          const loss = await engine.scope(() => clf.step(engine.tensor(rows, [idx.length, F]), labels, lr, cfg.momentum, cfg.weightDecay));
          lossSum += loss * idx.length;
          seen += idx.length;
          opts.onProgress?.(seen, order.length, epoch);
        }
      } else {
        const store = view >= 0 ? (bank[view] = { features: new Float32Array(N * F), have: new Uint8Array(N) }) : null;
        loader.seek({ epoch, index: 0 });
        for await (const b of loader.batches()) {
          const labels = b.samples.map((s) => s.label);
          const loss = await engine.scope(async () => {
            const x = engine.noGrad(() => probeFeatures(model, input(b.samples.map((s) => s.image)), cfg.nLastBlocks, cfg.avgpool));
            if (store) {
              const rows = await x.toArray();
              b.indices.forEach((i, r) => {
                store.features.set(rows.subarray(r * F, (r + 1) * F), i * F);
                store.have[i] = 1;
                labelOf[i] = labels[r];
              });
            }
            return clf.step(x, labels, lr, cfg.momentum, cfg.weightDecay);
          });
          lossSum += loss * labels.length;
          seen += labels.length;
          opts.onProgress?.(seen, N, epoch);
        }
      }
      const logits = await engine.noGrad(() => engine.scope(() => clf.forward(val.features).toArray()));
      const acc = topkAccuracy(logits, val.labels, C);
      const rec: LinearEpoch = { epoch, lr, loss: lossSum / Math.max(seen, 1), ...acc };
      history.push(rec);
      opts.onEpoch?.(rec);
    }
    const best = history.reduce((a, b) => (b.top1 > a.top1 ? b : a));
    return {
      config: cfg,
      features: F,
      classes: C,
      epochs: history,
      best,
      last: history[history.length - 1],
      weight: await clf.weight.toArray(),
      bias: await clf.bias.toArray(),
    };
  } finally {
    clf.dispose();
    val.features.dispose();
  }
}
