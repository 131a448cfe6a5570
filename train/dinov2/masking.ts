/**
 * DINOv2's iBOT masks: BEiT-style block masking (dinov2/data/masking.py, MaskingGenerator) and the
 * per-batch collate logic (dinov2/data/collate.py, collate_data_and_cast), on the CPU, drawn from a
 * checkpointable Rng so a resumed run draws the same masks.
 *
 * Generator on an H×W patch grid (N = H·W), for a target of T patches:
 *   while count < T:
 *     budget = min(T − count, maxNumPatches)
 *     up to 10 attempts:                                                        (masking.py _mask)
 *       area   ~ U(minNumPatches, budget)             (Python's uniform: budget < 4 is allowed)
 *       aspect = exp(U(ln minAspect, ln maxAspect))   (log-uniform in [0.3, 1/0.3])
 *       h = round(√(area·aspect)), w = round(√(area/aspect))   (Python round: half to even)
 *       if w < W and h < H (strict): top ~ U{0..H−h}, left ~ U{0..W−w} (inclusive);
 *         new = h·w − (already masked in the box); accept the box if 0 < new ≤ budget
 *       stop the attempts once a box added something
 *     a round that added nothing ends the loop, so the count may stay BELOW T (DINOv2; DINOv3
 *     completes it randomly, not done here)
 *   Invariant: every accepted box adds at most `budget` patches, so count ≤ T always.
 *
 * Collate, over the n = 2B global crops of a batch (crop-major rows [crop0 × B; crop1 × B]):
 *   nMasked = ⌊n · maskProbability⌋                                  (0.5: half the global crops)
 *   p = linspace(ratioMin, ratioMax, nMasked + 1)                     (0.1 … 0.5)
 *   image i < nMasked targets ⌊N · U(p_i, p_{i+1})⌋ patches (one image per stratum);
 *   upperbound = Σ ⌊N · p_{i+1}⌋ (the official padded buffer size; kept for reference)
 *   the others get no mask; then the list of masks is shuffled (Fisher-Yates, as random.shuffle).
 *   maskIndices = flat indices (image·N + patch) of the masked patches, in order;
 *   maskWeights[j] = 1 / (masked patches of j's image)  (the official clamps the count to ≥ 1,
 *   which only matters for images with no masked patch, which have no entry here).
 *
 * The official draws with Python's `random` (and torch.linspace in float32); this draws the same
 * distributions from the engine's Rng in float64, in the same order: per masked image its target,
 * then its generator draws; then the shuffle.
 *
 * The official max_num_patches is the expression `0.5 * img_size // patch_size * img_size //
 * patch_size` of train.py, which Python evaluates left to right as ⌊⌊0.5·S/p⌋·S/p⌋: 0.5·N for
 * 224/14 (128) and 224/16 (98), but not for every size (12/4 gives 3, not 4.5).
 * {@link officialMaxMaskPatches} reproduces it.
 */
import type { Rng } from '../../engine/random.js';

export interface MaskingOptions {
  /** Smallest block area drawn (4). */
  minNumPatches?: number;
  /** Most patches one block may add (train.py: {@link officialMaxMaskPatches}); default 0.5·N. */
  maxNumPatches?: number;
  /** Aspect ratio range h/w: [minAspect, maxAspect], log-uniform (0.3, 1/0.3). */
  minAspect?: number;
  maxAspect?: number;
}

/** One rectangle of patches: rows top…top+h−1, columns left…left+w−1. */
export interface MaskBlock {
  top: number;
  left: number;
  h: number;
  w: number;
}

/** Python's round() for the block sides: halves go to the even neighbour. */
function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** Python's random.uniform(a, b) = a + (b − a)·U[0, 1) (b < a allowed). */
function uniform(rng: Rng, a: number, b: number): number {
  return a + (b - a) * rng.uniform();
}

/** Python's random.randint(a, b): an integer in [a, b], both included. */
function randint(rng: Rng, a: number, b: number): number {
  return a + rng.int(b - a + 1);
}

/** train.py's max_num_patches for a global crop of `imgSize` and patch `patchSize` (see header). */
export function officialMaxMaskPatches(imgSize: number, patchSize: number): number {
  return Math.floor((Math.floor((0.5 * imgSize) / patchSize) * imgSize) / patchSize);
}

/** BEiT / DINOv2 block masking on an H×W patch grid. */
export class MaskingGenerator {
  readonly height: number;
  readonly width: number;
  readonly numPatches: number;
  readonly minNumPatches: number;
  readonly maxNumPatches: number;
  readonly logAspect: readonly [number, number];
  /** The blocks accepted by the last `generate` call, in order (for tests and visualisation). */
  lastBlocks: MaskBlock[] = [];

  constructor(height: number, width: number, opts: MaskingOptions = {}) {
    if (!(Number.isInteger(height) && Number.isInteger(width) && height > 0 && width > 0)) {
      throw new Error(`MaskingGenerator: the patch grid must be positive integers, got ${height}×${width}`);
    }
    this.height = height;
    this.width = width;
    this.numPatches = height * width;
    this.minNumPatches = opts.minNumPatches ?? 4;
    this.maxNumPatches = opts.maxNumPatches ?? 0.5 * this.numPatches;
    const minAspect = opts.minAspect ?? 0.3;
    const maxAspect = opts.maxAspect ?? 1 / minAspect;
    if (!(minAspect > 0 && maxAspect >= minAspect)) throw new Error(`MaskingGenerator: aspect range [${minAspect}, ${maxAspect}] is invalid`);
    this.logAspect = [Math.log(minAspect), Math.log(maxAspect)];
  }

  /**
   * Up to 10 attempts to add one block of at most `budget` new patches to `mask` (row-major H·W,
   * 1 = masked). Returns the number of patches it added (0 when every attempt failed).
   */
  private addBlock(mask: Uint8Array, budget: number, rng: Rng): number {
    const H = this.height;
    const W = this.width;
    for (let attempt = 0; attempt < 10; attempt++) {
      const area = uniform(rng, this.minNumPatches, budget);
      const aspect = Math.exp(uniform(rng, this.logAspect[0], this.logAspect[1]));
      const h = roundHalfEven(Math.sqrt(area * aspect));
      const w = roundHalfEven(Math.sqrt(area / aspect));
      if (!(w < W && h < H)) continue;
      const top = randint(rng, 0, H - h);
      const left = randint(rng, 0, W - w);
      let already = 0;
      for (let i = top; i < top + h; i++) for (let j = left; j < left + w; j++) already += mask[i * W + j];
      const added = h * w - already;
      if (added > 0 && added <= budget) {
        for (let i = top; i < top + h; i++) for (let j = left; j < left + w; j++) mask[i * W + j] = 1;
        this.lastBlocks.push({ top, left, h, w });
        return added;
      }
    }
    return 0;
  }

  /** A mask of at most `target` patches (row-major H·W, 1 = masked); all zero for target 0. */
  generate(target: number, rng: Rng): Uint8Array {
    const mask = new Uint8Array(this.numPatches);
    this.lastBlocks = [];
    let count = 0;
    while (count < target) {
      const budget = Math.min(target - count, this.maxNumPatches);
      const delta = this.addBlock(mask, budget, rng);
      if (delta === 0) break;
      count += delta;
    }
    return mask;
  }
}

/** The masks of one batch of global crops, as collate_data_and_cast returns them. */
export interface MaskBatch {
  /** Global crops n = 2B (rows crop-major). */
  images: number;
  /** Patches per crop N. */
  numPatches: number;
  /** n·N bytes, row-major per image: 1 = the student sees mask_token at that patch. */
  masks: Uint8Array;
  /** Flat indices image·N + patch of the masked patches, ascending. */
  maskIndices: Int32Array;
  /** Per masked patch: 1 / (masked patches of its image). */
  maskWeights: Float32Array;
  /** Per image: its masked-patch count. */
  counts: Int32Array;
  /** Per image: the target it was drawn with (0 for unmasked images), after the shuffle. */
  targets: Int32Array;
  /** Σ ⌊N·p_{i+1}⌋ over the masked strata (the official static buffer size). */
  upperbound: number;
}

export interface CollateMaskOptions {
  /** Fraction of the global crops that get a mask (0.5). */
  maskProbability?: number;
  /** Mask-ratio range stratified over the masked crops ([0.1, 0.5]). */
  ratioMinMax?: readonly [number, number];
}

/** numpy/torch linspace(a, b, n), both ends included. */
function linspace(a: number, b: number, n: number): number[] {
  if (n === 1) return [a];
  return Array.from({ length: n }, (_, i) => a + ((b - a) * i) / (n - 1));
}

/** The masks of `images` global crops (2B), drawn as collate_data_and_cast does (see header). */
export function collateMasks(generator: MaskingGenerator, images: number, rng: Rng, opts: CollateMaskOptions = {}): MaskBatch {
  const N = generator.numPatches;
  const [lo, hi] = opts.ratioMinMax ?? [0.1, 0.5];
  const nMasked = Math.floor(images * (opts.maskProbability ?? 0.5));
  const probs = linspace(lo, hi, nMasked + 1);
  const list: { mask: Uint8Array; target: number }[] = [];
  let upperbound = 0;
  for (let i = 0; i < nMasked; i++) {
    const target = Math.floor(N * uniform(rng, probs[i], probs[i + 1]));
    list.push({ mask: generator.generate(target, rng), target });
    upperbound += Math.floor(N * probs[i + 1]);
  }
  for (let i = nMasked; i < images; i++) list.push({ mask: new Uint8Array(N), target: 0 });
  // random.shuffle: Fisher-Yates from the end, j uniform in [0, i].
  for (let i = list.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [list[i], list[j]] = [list[j], list[i]];
  }
  const masks = new Uint8Array(images * N);
  const counts = new Int32Array(images);
  const targets = new Int32Array(images);
  list.forEach((m, i) => {
    masks.set(m.mask, i * N);
    counts[i] = m.mask.reduce((a, x) => a + x, 0);
    targets[i] = m.target;
  });
  const total = counts.reduce((a, x) => a + x, 0);
  const maskIndices = new Int32Array(total);
  const maskWeights = new Float32Array(total);
  let k = 0;
  for (let i = 0; i < images * N; i++) {
    if (!masks[i]) continue;
    maskIndices[k] = i;
    maskWeights[k] = 1 / Math.max(counts[Math.floor(i / N)], 1);
    k++;
  }
  return { images, numPatches: N, masks, maskIndices, maskWeights, counts, targets, upperbound };
}
