/**
 * DINO's multi-crop augmentation (main_dino.DataAugmentationDINO) on the GPU. The crop-box sampling
 * and DINO's eval transform it shares with evaluation live in train/data/transforms.ts.
 *
 * Per source image: 2 global crops and N local crops (DINO's order: global 1, global 2, locals).
 * Each crop, in DINO's order of transforms:
 *   RandomResizedCrop(size, scale, ratio (3/4, 4/3), BICUBIC)
 *   RandomHorizontalFlip(p = 0.5)
 *   RandomApply(ColorJitter(0.4, 0.4, 0.2, 0.1), p = 0.8)   ops in a random order per crop
 *   RandomGrayscale(p = 0.2)
 *   GaussianBlur(p = 1.0 | 0.1 | 0.5 for global 1 | global 2 | local, σ ~ U(0.1, 2.0))
 *   Solarization(p = 0.2, global 2 only)
 *   ToTensor + Normalize(ImageNet mean, std)
 *
 * The random parameters are drawn here on the CPU from the engine's seeded `Rng` (xoshiro128**,
 * whose state is checkpointable), image by image and crop by crop in DINO's order, so the crops
 * are a deterministic function of (images, Rng state). The pixel work runs in kernels/augment.ts.
 * The probabilities follow DINO's comparisons: flip/grayscale/solarize apply when u < p, colour
 * jitter (RandomApply) and blur when u ≤ p (p = 1 always applies).
 *
 * Output: crops of the same size are batched crop-major, as DINO's MultiCropWrapper expects:
 * globals [2B, 3, G, G] with rows [global 1 of images 0..B−1; global 2 of images 0..B−1], locals
 * [N·B, 3, L, L] likewise.
 */
import type { Engine } from '../engine/engine.js';
import type { Rng } from '../engine/random.js';
import type { Tensor } from '../engine/tensor.js';
import {
  type ColourOp,
  cropBatchRaw,
  type CropParams,
  IMAGENET_NORM,
  type ImageLike,
  type Normalisation,
  uploadImages,
} from '../kernels/augment.js';

export type { CropParams, ImageLike, Normalisation } from '../kernels/augment.js';
import { cropImages, evalTransform, type EvalTransformOptions, sampleResizedCropBox } from './data/transforms.js';

/** Configuration of the multi-crop augmentation; every field defaults to DINO's value. */
export interface MultiCropOptions {
  /** Side of the two global crops (224). */
  globalSize?: number;
  /** Side of the local crops (96). */
  localSize?: number;
  /** Number of local crops per image (8; 0 disables multi-crop). */
  localCrops?: number;
  /** Area fraction range of the global crops' RandomResizedCrop (0.4, 1). */
  globalScale?: readonly [number, number];
  /** Area fraction range of the local crops (0.05, 0.4). */
  localScale?: readonly [number, number];
  /** Aspect-ratio range of RandomResizedCrop (3/4, 4/3), sampled log-uniformly. */
  ratio?: readonly [number, number];
  /** Horizontal flip probability (0.5). */
  flipP?: number;
  /** Probability of applying the colour jitter (0.8). */
  jitterP?: number;
  /** Colour-jitter strengths: factors ~U[1−b, 1+b], U[1−c, 1+c], U[1−s, 1+s], hue shift ~U[−h, h]. */
  brightness?: number;
  contrast?: number;
  saturation?: number;
  hue?: number;
  /** Grayscale probability (0.2). */
  grayscaleP?: number;
  /** Blur probability of global crops 1 and 2 ([1.0, 0.1]). */
  globalBlurP?: readonly [number, number];
  /** Blur probability of local crops (0.5). */
  localBlurP?: number;
  /** Blur σ range in output pixels ((0.1, 2.0); DINO's PIL "radius" is σ). */
  blurSigma?: readonly [number, number];
  /** Solarization probability of global crops 1 and 2 ([0, 0.2]). */
  globalSolarizeP?: readonly [number, number];
  /** Solarization probability of local crops (0). */
  localSolarizeP?: number;
  /** Normalisation (ImageNet mean/std). */
  norm?: Normalisation;
}

/** The options with every default filled in. */
export type MultiCropConfig = Required<MultiCropOptions>;

/** DINO's defaults (dino.md 1.6). */
export const DINO_MULTICROP: MultiCropConfig = {
  globalSize: 224,
  localSize: 96,
  localCrops: 8,
  globalScale: [0.4, 1],
  localScale: [0.05, 0.4],
  ratio: [3 / 4, 4 / 3],
  flipP: 0.5,
  jitterP: 0.8,
  brightness: 0.4,
  contrast: 0.4,
  saturation: 0.2,
  hue: 0.1,
  grayscaleP: 0.2,
  globalBlurP: [1.0, 0.1],
  localBlurP: 0.5,
  blurSigma: [0.1, 2.0],
  globalSolarizeP: [0, 0.2],
  localSolarizeP: 0,
  norm: IMAGENET_NORM,
};

/** What one kind of crop draws: its size, RandomResizedCrop scale and probabilities. */
export interface CropSpec {
  size: number;
  scale: readonly [number, number];
  blurP: number;
  solarizeP: number;
}

/** A random permutation of [0, 1, 2, 3] (Fisher-Yates): ColorJitter's op order. */
function permutation4(rng: Rng): ColourOp[] {
  const p: ColourOp[] = [0, 1, 2, 3];
  for (let i = 3; i > 0; i--) {
    const j = rng.int(i + 1);
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

/**
 * Draws every parameter of one crop of image `image` (width×height) in DINO's order of transforms:
 * box, flip, colour jitter (apply?, order, four factors), grayscale, blur (apply?, σ), solarize.
 */
export function sampleCropParams(rng: Rng, image: number, width: number, height: number, spec: CropSpec, cfg: MultiCropConfig): CropParams {
  const box = sampleResizedCropBox(rng, width, height, spec.scale, cfg.ratio);
  const flip = rng.uniform() < cfg.flipP;
  let ops: ColourOp[] = [];
  let brightness = 1;
  let contrast = 1;
  let saturation = 1;
  let hue = 0;
  if (rng.uniform() <= cfg.jitterP) {
    ops = permutation4(rng);
    brightness = rng.range(Math.max(0, 1 - cfg.brightness), 1 + cfg.brightness);
    contrast = rng.range(Math.max(0, 1 - cfg.contrast), 1 + cfg.contrast);
    saturation = rng.range(Math.max(0, 1 - cfg.saturation), 1 + cfg.saturation);
    hue = rng.range(-cfg.hue, cfg.hue);
  }
  const grayscale = rng.uniform() < cfg.grayscaleP;
  const sigma = rng.uniform() <= spec.blurP ? rng.range(cfg.blurSigma[0], cfg.blurSigma[1]) : 0;
  const solarize = spec.solarizeP > 0 && rng.uniform() < spec.solarizeP;
  return {
    image, box, outW: spec.size, outH: spec.size, ox: 0, oy: 0, flip, ops,
    brightness, contrast, saturation, hue, grayscale, sigma, solarize,
  };
}

/** The crops of one `augment` call: tensors, and the parameters each row came from. */
export interface MultiCropBatch {
  /** [2B, 3, G, G]: rows [global 1 × B; global 2 × B]. */
  globals: Tensor;
  /** [N·B, 3, L, L] crop-major, or null when there are no local crops. */
  locals: Tensor | null;
  /** The parameters of each row of `globals` and `locals` (same order). */
  params: { globals: CropParams[]; locals: CropParams[] };
}

/**
 * DINO's multi-crop augmentation. `augment(images, rng)` turns a batch of decoded RGB images (any
 * sizes) into the global and local crop tensors; the parameters come from `rng`, so the same Rng
 * state gives the same crops.
 *
 * ```ts
 * const aug = new MultiCropAugmenter(wd, { globalSize: 32, localSize: 16, localCrops: 6 });
 * const { globals, locals } = aug.augment(images, rng); // [2B,3,32,32], [6B,3,16,16]
 * ```
 */
export class MultiCropAugmenter {
  readonly engine: Engine;
  readonly config: MultiCropConfig;

  constructor(engine: Engine, opts: MultiCropOptions = {}) {
    this.engine = engine;
    const cfg: MultiCropConfig = { ...DINO_MULTICROP };
    for (const [k, v] of Object.entries(opts)) if (v !== undefined) (cfg as Record<string, unknown>)[k] = v;
    this.config = cfg;
    for (const [name, s] of [['globalSize', cfg.globalSize], ['localSize', cfg.localSize]] as const) {
      if (!Number.isInteger(s) || s < 1) throw new RangeError(`MultiCropAugmenter: ${name} must be a positive integer, got ${s}`);
    }
    if (!Number.isInteger(cfg.localCrops) || cfg.localCrops < 0) {
      throw new RangeError(`MultiCropAugmenter: localCrops must be a non-negative integer, got ${cfg.localCrops}`);
    }
    for (const [name, s] of [['globalScale', cfg.globalScale], ['localScale', cfg.localScale], ['ratio', cfg.ratio]] as const) {
      if (!(s[0] > 0 && s[0] <= s[1])) throw new RangeError(`MultiCropAugmenter: ${name} must be (lo, hi) with 0 < lo <= hi, got (${s.join(', ')})`);
    }
    if (!(cfg.blurSigma[0] > 0 && cfg.blurSigma[0] <= cfg.blurSigma[1])) {
      throw new RangeError(`MultiCropAugmenter: blurSigma must be (lo, hi) with 0 < lo <= hi, got (${cfg.blurSigma.join(', ')})`);
    }
  }

  /** The spec of crop `c` (0, 1 global; 2.. local). */
  cropSpec(c: number): CropSpec {
    const cfg = this.config;
    return c < 2
      ? { size: cfg.globalSize, scale: cfg.globalScale, blurP: cfg.globalBlurP[c], solarizeP: cfg.globalSolarizeP[c] }
      : { size: cfg.localSize, scale: cfg.localScale, blurP: cfg.localBlurP, solarizeP: cfg.localSolarizeP };
  }

  /**
   * Draws the parameters of every crop of the batch: image by image, crops in DINO's order, placed
   * crop-major (global c of image b at c·B + b; local c at c·B + b).
   */
  sample(images: readonly { width: number; height: number }[], rng: Rng): { globals: CropParams[]; locals: CropParams[] } {
    const B = images.length;
    const n = this.config.localCrops;
    const globals: CropParams[] = new Array(2 * B);
    const locals: CropParams[] = new Array(n * B);
    images.forEach((img, b) => {
      for (let c = 0; c < 2 + n; c++) {
        const p = sampleCropParams(rng, b, img.width, img.height, this.cropSpec(c), this.config);
        if (c < 2) globals[c * B + b] = p;
        else locals[(c - 2) * B + b] = p;
      }
    });
    return { globals, locals };
  }

  /**
   * Augments a batch: uploads the images once, draws every crop's parameters from `rng` (advancing
   * it) and records the crop kernels. Returns new tensors (owned by the caller's scope).
   */
  augment(images: readonly ImageLike[], rng: Rng): MultiCropBatch {
    if (images.length === 0) throw new RangeError('MultiCropAugmenter.augment: empty batch');
    const params = this.sample(images, rng);
    const cfg = this.config;
    // One upload for both crop sizes when the batch fits a storage binding (as before); else each
    // crop size uploads its images in runs that fit (cropImages).
    if (images.reduce((n, im) => n + im.width * im.height * 4, 0) > this.engine.device.limits.maxStorageBufferBindingSize) {
      const globals = cropImages(this.engine, images, params.globals, cfg.globalSize, cfg.norm);
      const locals = cfg.localCrops > 0 ? cropImages(this.engine, images, params.locals, cfg.localSize, cfg.norm) : null;
      return { globals, locals, params };
    }
    const packed = uploadImages(this.engine, images);
    try {
      const globals = cropBatchRaw(this.engine, packed, params.globals, cfg.globalSize, { norm: cfg.norm });
      const locals = cfg.localCrops > 0 ? cropBatchRaw(this.engine, packed, params.locals, cfg.localSize, { norm: cfg.norm }) : null;
      return { globals, locals, params };
    } finally {
      packed.pixels.dispose();
    }
  }

  /** The eval transform (Resize(round(crop·256/224)) + CenterCrop(crop) + normalise); crop defaults to globalSize. */
  evalTransform(images: readonly ImageLike[], opts: EvalTransformOptions = {}): Tensor {
    return evalTransform(this.engine, images, { crop: this.config.globalSize, norm: this.config.norm, ...opts });
  }
}
