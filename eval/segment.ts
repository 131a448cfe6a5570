/**
 * Unsupervised segmentation from the self-attention of the CLS token, scored by the Jaccard index
 * against ground-truth object masks: the measure of the DINO paper's "probing the self-attention
 * map" table (PASCAL VOC12: DINO ViT-S/16 ≈ 45.9 vs random ≈ 22.0). DINO ships no script for it
 * (dino.md §2.7, §7 item 7); this file follows visualize_attention.py for the masks and says how
 * heads are combined.
 *
 * Per image (RGB, any size W×H, with a 0/1 ground-truth mask of W×H):
 *   1. the WHOLE image is resized to side×side (side = the requested size rounded down to a
 *      multiple of the patch p; bicubic, antialiased, ImageNet normalisation). visualize_attention
 *      resizes to 480×480 and then crops to a multiple of p; resizing straight to the multiple keeps
 *      every pixel of the image, so the mask covers the whole ground truth.
 *   2. attention a = the last block's CLS-query attention over the h×w patch tokens, per head
 *      (`attn[:, :, 0, 1 + registers:]`, the CLS column dropped).
 *   3. per head, DINO's `th_attn` mask keeping `threshold` (0.6) of the head's mass
 *      (eval/attention-maps.ts `attentionMasks`).
 *   4. the patch mask is upsampled to the image by nearest neighbour: pixel (y, x) takes cell
 *      (⌊y·h/H⌋, ⌊x·w/W⌋). For H = h·p this is exactly interpolate(scale_factor=p, "nearest"); for
 *      other sizes it is that upsampling followed by a nearest resize of the side×side map to W×H.
 *   5. Jaccard J = |pred ∩ gt| / |pred ∪ gt| per head (1 when both are empty).
 *
 * Figures (means over images): J of each head; the best head = the head with the highest mean J
 * (one head for the whole set, chosen on the same set, as one reads the paper's table); and the
 * per-image oracle = mean over images of the best head of each image (an upper bound, reported
 * for information). Everything here is browser-safe: the Node folder reader is segment-node.ts.
 */
import type { Engine } from '../engine/engine.js';
import type { Tensor } from '../engine/tensor.js';
import { cropBatchRaw, IMAGENET_NORM, type ImageLike, plainCrop, uploadImages } from '../kernels/augment.js';
import type { RgbImage } from '../models/io/image.js';
import type { VisionTransformer } from '../models/vit.js';
import { attentionMasks, jaccard } from './attention-maps.js';
import type { Dataset } from '../train/data/dataset.js';

/** DINO's mass threshold for the attention masks. */
export const SEGMENT_THRESHOLD = 0.6;

/** The model input side for a requested size: rounded down to a multiple of the patch. */
export function attentionInputSide(size: number, patch: number): number {
  const side = size - (size % patch);
  if (!Number.isInteger(size) || side < patch) throw new RangeError(`image size ${size} is smaller than the patch size ${patch}`);
  return side;
}

/**
 * The model input of a batch of images: each WHOLE image resized to side×side (bicubic,
 * antialiased, PIL semantics) and ImageNet-normalised, [B, 3, side, side].
 */
export function squareInput(engine: Engine, images: readonly ImageLike[], side: number): Tensor {
  const packed = uploadImages(engine, images);
  try {
    return cropBatchRaw(engine, packed, images.map((img, b) => plainCrop(b, [0, 0, img.width, img.height], side)), side, { norm: IMAGENET_NORM });
  } finally {
    packed.pixels.dispose();
  }
}

/** The last layer's CLS attention of a batch: [B, heads, h·w] row-major, and the grid. */
export interface ClsAttention {
  attention: Float32Array;
  batch: number;
  heads: number;
  h: number;
  w: number;
}

/**
 * The last block's CLS-query attention over the patch tokens for a normalised input x
 * [B, 3, H, W] (H, W multiples of the patch): `attn[:, :, 0, first patch:]` of the last block,
 * from `model.lastClsAttention` (never the N×N matrix). Runs under noGrad in its own scope; x stays
 * the caller's.
 */
export async function clsAttention(model: VisionTransformer, x: Tensor): Promise<ClsAttention> {
  const e = x.engine;
  const p = model.cfg.patchSize;
  const [B, , H, W] = x.shape;
  if (H % p !== 0 || W % p !== 0) throw new RangeError(`clsAttention: input ${W}x${H} is not a multiple of the patch ${p}`);
  const first = model.numPrefixTokens; // CLS and registers / storage tokens come first
  const attention = await e.noGrad(() =>
    e.scope(async () => {
      const probs = model.lastClsAttention(x); // (B, heads, 1, N)
      const N = probs.shape[3];
      return probs.slice(3, first, N).contiguous().toArray(); // (B, heads, 1, hw)
    }),
  );
  return { attention, batch: B, heads: model.cfg.numHeads, h: H / p, w: W / p };
}

/**
 * Nearest-neighbour upsampling of an h×w 0/1 grid to an H×W mask: pixel (y, x) takes cell
 * (⌊y·h/H⌋, ⌊x·w/W⌋) (see the file header).
 */
export function maskToImage(grid: ArrayLike<number>, h: number, w: number, H: number, W: number): Uint8Array {
  if (grid.length !== h * w) throw new RangeError(`maskToImage: ${grid.length} cells for a ${h}x${w} grid`);
  const out = new Uint8Array(H * W);
  const col = new Int32Array(W);
  for (let x = 0; x < W; x++) col[x] = Math.floor((x * w) / W);
  for (let y = 0; y < H; y++) {
    const row = Math.floor((y * h) / H) * w;
    for (let x = 0; x < W; x++) out[y * W + x] = grid[row + col[x]] ? 1 : 0;
  }
  return out;
}

/**
 * Jaccard index of each head's attention mask against a ground-truth mask: `attn` is one image's
 * [heads, h·w] CLS attention, `gt` its H×W 0/1 mask. Returns [heads] values in [0, 1].
 */
export function attentionJaccard(
  attn: ArrayLike<number>,
  heads: number,
  h: number,
  w: number,
  gt: ArrayLike<number>,
  H: number,
  W: number,
  threshold = SEGMENT_THRESHOLD,
): Float64Array {
  if (attn.length !== heads * h * w) throw new RangeError(`attentionJaccard: ${attn.length} values are not ${heads} heads of ${h}x${w}`);
  if (gt.length !== H * W) throw new RangeError(`attentionJaccard: a ground-truth mask of ${gt.length} pixels for a ${W}x${H} image`);
  const masks = attentionMasks(attn, heads, threshold);
  const n = h * w;
  const out = new Float64Array(heads);
  for (let k = 0; k < heads; k++) out[k] = jaccard(maskToImage(masks.subarray(k * n, (k + 1) * n), h, w, H, W), gt);
  return out;
}

/** One image with its ground-truth mask (W·H bytes, nonzero = object). */
export interface SegmentationSample {
  image: RgbImage;
  mask: Uint8Array;
  /** For messages (a file name, `synthetic:val[3]`). */
  name?: string;
}

/** Images with ground-truth masks, by index. */
export interface SegmentationSource {
  readonly length: number;
  get(index: number): Promise<SegmentationSample>;
}

/** A Dataset whose samples carry masks (the embedded synthetic dataset) as a segmentation source. */
export function datasetSegmentationSource(ds: Dataset, name = 'dataset'): SegmentationSource {
  return {
    length: ds.length,
    async get(i) {
      const s = ds.getSync ? ds.getSync(i) : await ds.get(i);
      const where = ds.describe?.(i) ?? `${name}[${i}]`;
      if (!s.mask) throw new Error(`${where}: this dataset has no ground-truth masks (use synthetic:val or a folder of image/mask pairs)`);
      return { image: s.image, mask: s.mask, name: where };
    },
  };
}

/** Options of {@link evaluateSegmentation}. */
export interface SegmentOptions {
  /** Side the images are resized to, rounded down to a multiple of the patch. */
  size: number;
  /** Fraction of the attention mass the masks keep (0.6). */
  threshold?: number;
  /** Images per forward pass (default 32). */
  batchSize?: number;
  /** After each batch: images done and the total. */
  onProgress?: (done: number, total: number) => void;
}

/** What {@link evaluateSegmentation} measures (Jaccard values in [0, 1]). */
export interface SegmentResult {
  images: number;
  heads: number;
  /** Model input side and patch grid. */
  side: number;
  grid: [number, number];
  threshold: number;
  /** Mean Jaccard of each head over the images. */
  perHead: number[];
  /** The head with the highest mean Jaccard, and that mean. */
  bestHead: number;
  bestHeadJaccard: number;
  /** Mean over images of each image's best head (an oracle upper bound). */
  oracleJaccard: number;
  /** Jaccard of every image and head, [images, heads] row-major. */
  perImage: Float64Array;
}

/**
 * Scores the attention masks of `model` against every ground-truth mask of `source` (see the
 * file header). The model should be in eval mode; nothing is written.
 */
export async function evaluateSegmentation(engine: Engine, model: VisionTransformer, source: SegmentationSource, opts: SegmentOptions): Promise<SegmentResult> {
  const threshold = opts.threshold ?? SEGMENT_THRESHOLD;
  if (!(threshold >= 0 && threshold <= 1)) throw new RangeError(`threshold must be in [0, 1], got ${threshold}`);
  const n = source.length;
  if (n < 1) throw new RangeError('evaluateSegmentation: no images');
  const side = attentionInputSide(opts.size, model.cfg.patchSize);
  const batchSize = opts.batchSize ?? 32;
  const heads = model.cfg.numHeads;
  const perImage = new Float64Array(n * heads);
  let h = 0;
  let w = 0;
  for (let start = 0; start < n; start += batchSize) {
    const samples: SegmentationSample[] = [];
    for (let i = start; i < Math.min(n, start + batchSize); i++) {
      const s = await source.get(i);
      if (s.mask.length !== s.image.width * s.image.height) {
        throw new Error(`${s.name ?? `image ${i}`}: its mask has ${s.mask.length} pixels, the image ${s.image.width}x${s.image.height}`);
      }
      samples.push(s);
    }
    const x = squareInput(engine, samples.map((s) => s.image), side);
    let a: ClsAttention;
    try {
      a = await clsAttention(model, x);
    } finally {
      x.dispose();
    }
    ({ h, w } = a);
    const per = heads * h * w;
    samples.forEach((s, b) => {
      const j = attentionJaccard(a.attention.subarray(b * per, (b + 1) * per), heads, h, w, s.mask, s.image.height, s.image.width, threshold);
      perImage.set(j, (start + b) * heads);
    });
    opts.onProgress?.(Math.min(n, start + batchSize), n);
  }
  const perHead = new Array<number>(heads).fill(0);
  let oracle = 0;
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let k = 0; k < heads; k++) {
      perHead[k] += perImage[i * heads + k] / n;
      best = Math.max(best, perImage[i * heads + k]);
    }
    oracle += best / n;
  }
  const bestHead = perHead.indexOf(Math.max(...perHead));
  return { images: n, heads, side, grid: [h, w], threshold, perHead, bestHead, bestHeadJaccard: perHead[bestHead], oracleJaccard: oracle, perImage };
}

/**
 * An evaluation hook for runTraining (`RunOptions.evaluate`): the teacher backbone's segmentation
 * Jaccard on `source` at the training resolution, as { seg_jaccard_best_head, seg_jaccard_oracle }
 * in percent (the unit of the k-NN figures, so both share the report's chart). Combine hooks with
 * `async (t) => ({ ...(await knn(t)), ...(await seg(t)) })`.
 */
export function segmentationEvaluator(
  engine: Engine,
  source: SegmentationSource,
  opts: { threshold?: number; batchSize?: number } = {},
): (trainer: { teacherBackbone: VisionTransformer; config: { globalSize: number } }) => Promise<Record<string, number>> {
  return async (trainer) => {
    const r = await evaluateSegmentation(engine, trainer.teacherBackbone, source, { size: trainer.config.globalSize, ...opts });
    return { seg_jaccard_best_head: 100 * r.bestHeadJaccard, seg_jaccard_oracle: 100 * r.oracleJaccard };
  };
}
