/**
 * Attention maps as DINO's visualize_attention.py draws them: the last layer's CLS attention per
 * head over the patch grid, the masks that keep a fraction of its mass, heat-map colours, overlays
 * of a heat map on its image, and nearest-neighbour upsampling to image resolution. Pure TypeScript (no engine, no Node built-ins):
 * `webdino attention` uses it, and so can mask metrics such as the Jaccard index of DINO's
 * segmentation evaluation.
 *
 * Threshold masks (visualize_attention.py, `th_attn`), per head, for attention a ∈ ℝⁿ (n patches)
 * and a threshold t (0.6):
 *
 *   val, idx = sort(a)                 ascending
 *   val /= Σ val                       (a need not sum to 1: the CLS column was dropped)
 *   cum = cumsum(val)
 *   keep[idx[i]] = cum[i] > 1 − t
 *
 * i.e. walking from the largest value down, a patch is kept while the mass of the larger patches
 * (strictly before it) is < t: the kept set is the smallest top set whose mass reaches t, so its
 * mass m satisfies t ≤ m < t + (its smallest value) — up to rounding of the cumulative sum.
 * Ties: the sort is stable (equal values keep index order), where torch.sort leaves the order of
 * ties unspecified; the sums here are accumulated in float64.
 *
 * Layouts: attention [heads, n] row-major (n = h·w patches in row-major grid order); masks are
 * Uint8Array of 0/1 with the same layout; images are row-major RGB bytes.
 */

/**
 * DINO's `th_attn` for every head: a 0/1 mask [heads, n] keeping the patches that hold a fraction
 * `threshold` of each head's attention mass (see the file header for the exact rule).
 * Throws RangeError when `attn.length` is not heads·n or the threshold is outside [0, 1].
 */
export function attentionMasks(attn: ArrayLike<number>, heads: number, threshold = 0.6): Uint8Array {
  if (!Number.isInteger(heads) || heads < 1 || attn.length % heads !== 0) {
    throw new RangeError(`attentionMasks: ${attn.length} values are not ${heads} heads of equal length`);
  }
  if (!(threshold >= 0 && threshold <= 1)) throw new RangeError(`attentionMasks: threshold must be in [0, 1], got ${threshold}`);
  const n = attn.length / heads;
  const mask = new Uint8Array(attn.length);
  const idx = new Array<number>(n);
  for (let h = 0; h < heads; h++) {
    const base = h * n;
    for (let i = 0; i < n; i++) idx[i] = i;
    // Stable ascending sort by value (Array.prototype.sort is stable).
    idx.sort((a, b) => attn[base + a] - attn[base + b]);
    let total = 0;
    for (let i = 0; i < n; i++) total += attn[base + i];
    let cum = 0;
    for (let i = 0; i < n; i++) {
      cum += attn[base + idx[i]];
      if (cum / total > 1 - threshold) mask[base + idx[i]] = 1;
    }
  }
  return mask;
}

/** Fraction of each head's attention mass inside its mask: [heads] (for checks and reports). */
export function maskedMass(attn: ArrayLike<number>, mask: ArrayLike<number>, heads: number): Float64Array {
  const n = attn.length / heads;
  const out = new Float64Array(heads);
  for (let h = 0; h < heads; h++) {
    let kept = 0;
    let total = 0;
    for (let i = h * n; i < (h + 1) * n; i++) {
      total += attn[i];
      if (mask[i]) kept += attn[i];
    }
    out[h] = total > 0 ? kept / total : 0;
  }
  return out;
}

/**
 * Jaccard index |A ∩ B| / |A ∪ B| of two 0/1 masks of equal length (1 when both are empty), the
 * measure DINO's segmentation evaluation reports.
 */
export function jaccard(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new RangeError(`jaccard: masks of ${a.length} and ${b.length} elements`);
  let inter = 0;
  let union = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] !== 0;
    const y = b[i] !== 0;
    if (x && y) inter++;
    if (x || y) union++;
  }
  return union === 0 ? 1 : inter / union;
}

/**
 * matplotlib's viridis (the default colour map of `plt.imsave`, which visualize_attention.py uses),
 * as its 9 colours at 0, 1/8, …, 1 (R's viridisLite(9)), linearly interpolated in between.
 */
const VIRIDIS_9: readonly (readonly [number, number, number])[] = [
  [0x44, 0x01, 0x54],
  [0x47, 0x2d, 0x7b],
  [0x3b, 0x52, 0x8b],
  [0x2c, 0x72, 0x8e],
  [0x21, 0x90, 0x8c],
  [0x27, 0xad, 0x81],
  [0x5d, 0xc8, 0x63],
  [0xaa, 0xdc, 0x32],
  [0xfd, 0xe7, 0x25],
];

/** The viridis colour of v ∈ [0, 1] (clamped; NaN → 0) as 8-bit RGB. */
export function viridis(v: number): [number, number, number] {
  const x = Number.isNaN(v) ? 0 : Math.min(1, Math.max(0, v)) * (VIRIDIS_9.length - 1);
  const i = Math.min(VIRIDIS_9.length - 2, Math.floor(x));
  const f = x - i;
  const a = VIRIDIS_9[i];
  const b = VIRIDIS_9[i + 1];
  return [0, 1, 2].map((c) => Math.round(a[c] + (b[c] - a[c]) * f)) as [number, number, number];
}

/**
 * A heat map of one [h, w] grid as RGB bytes [h·w·3]: values min-max normalised to [0, 1] (as
 * `plt.imsave` does; a constant grid maps to 0) and coloured with {@link viridis}.
 */
export function heatmapRgb(values: ArrayLike<number>, h: number, w: number): Uint8Array {
  if (values.length !== h * w) throw new RangeError(`heatmapRgb: ${values.length} values for a ${h}x${w} grid`);
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < values.length; i++) {
    lo = Math.min(lo, values[i]);
    hi = Math.max(hi, values[i]);
  }
  const range = hi - lo;
  const out = new Uint8Array(h * w * 3);
  for (let i = 0; i < h * w; i++) out.set(viridis(range > 0 ? (values[i] - lo) / range : 0), i * 3);
  return out;
}

/** A 0/1 mask [h·w] as RGB bytes: white where 1, black where 0. */
export function maskRgb(mask: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(mask.length * 3);
  for (let i = 0; i < mask.length; i++) if (mask[i]) out.fill(255, i * 3, i * 3 + 3);
  return out;
}

/**
 * Nearest-neighbour upsampling of an [h, w] image with `channels` bytes per pixel by an integer
 * factor (every cell becomes a factor×factor block): [h·f, w·f, channels], as
 * `nn.functional.interpolate(scale_factor=patch, mode="nearest")` does for an integer scale.
 */
export function upsampleNearest(pixels: Uint8Array, h: number, w: number, channels: number, factor: number): Uint8Array {
  if (pixels.length !== h * w * channels) throw new RangeError(`upsampleNearest: ${pixels.length} bytes for ${h}x${w}x${channels}`);
  if (!Number.isInteger(factor) || factor < 1) throw new RangeError(`upsampleNearest: factor must be a positive integer, got ${factor}`);
  const W = w * factor;
  const out = new Uint8Array(h * factor * W * channels);
  for (let y = 0; y < h * factor; y++) {
    const sy = Math.floor(y / factor);
    for (let x = 0; x < W; x++) {
      const s = (sy * w + Math.floor(x / factor)) * channels;
      out.set(pixels.subarray(s, s + channels), (y * W + x) * channels);
    }
  }
  return out;
}

/**
 * An attention heat map over its image: (1 − alpha)·image + alpha·heat per channel, rounded, for
 * two RGB buffers of the same size (alpha in [0, 1]).
 */
export function overlayRgb(image: Uint8Array, heat: Uint8Array, alpha = 0.6): Uint8Array {
  if (image.length !== heat.length) throw new RangeError(`overlayRgb: ${image.length} and ${heat.length} bytes`);
  if (!(alpha >= 0 && alpha <= 1)) throw new RangeError(`overlayRgb: alpha must be in [0, 1], got ${alpha}`);
  const out = new Uint8Array(image.length);
  for (let i = 0; i < image.length; i++) out[i] = Math.round((1 - alpha) * image[i] + alpha * heat[i]);
  return out;
}
