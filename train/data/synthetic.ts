/**
 * SyntheticShapes: the embedded default dataset. Every image is drawn procedurally from
 * (seed, split, index), so nothing is downloaded and any sample can be regenerated on demand.
 *
 * Two styles share the ten shape classes, the placement, the masks and the noise:
 *
 * 'confetti' (the default, what `webdino train` learns from):
 *   1. background: colour confetti, cells of max(1, round(S/32)) pixels, each a colour drawn
 *      independently from the one HSV distribution below: maximally colour-varied and cluttered,
 *      yet the same in distribution for every image and every crop of it;
 *   2. the object: a shape class at a random centre and size (`scale` 60–90 % of S), upright within
 *      ±`rotation` (9°) degrees, solid white (235);
 *   3. per-pixel noise (σ 2–9 levels per channel).
 *   Why: DINO learns whatever the crops of one image share. In the 'scene' style that is first the
 *   image's palette (background blend, object colour) and the object's rotation, which no DINO
 *   augmentation removes, so a 15-minute CPU run learned those and not the shapes
 *   (bench/lab/dino-learning-probes.md). Here the only thing two crops share is the object, while
 *   the confetti (different in every crop after resampling) keeps random-init features far from
 *   the labels. (With white-or-black objects the teacher split the data into exactly those two
 *   prototypes and stayed there: one shared bit is enough for a shortcut.) The object's area shows
 *   in the mean brightness, so mean colour is not quite blind to the class (a disc is brighter
 *   than a ring): nearest class mean of mean RGB scores 30 % (chance 10 %; 'scene' stays under 25 %).
 *
 * 'scene' (the first version of this dataset; `clutter` applies to it only):
 *   1. background: a bilinear blend of four random corner colours plus a low-frequency colour wave;
 *   2. 2..6 distractors behind the object: small ellipse blobs (semi-axes 3–9 % of S) and thin line segments
 *      (15–45 % of S), random colours, partly transparent;
 *   3. the object: one of ten SHAPE classes at a random centre, size (its circumscribed circle has a
 *      diameter of `scale` = 30–70 % of S), any rotation, with per-class structural parameters (ring
 *      thickness, star inner radius, bar count, ...) and a fill that is solid, a two-colour linear
 *      gradient or speckled;
 *   4. with probability 0.3 a thin line in front of the object (it occludes, and the mask says so);
 *   5. per-pixel noise (σ 2–9 levels per channel).
 *   Every colour (background, distractors, object) comes from the same distribution for every class,
 *   so colour statistics carry no class information; only shape and structure do. The object colour
 *   is redrawn (same rule for every class) until it differs from the background at its centre, so
 *   the object stays visible.
 *
 * Anti-aliasing: every primitive is a signed distance function d(x, y) in pixels (negative inside),
 * evaluated at pixel centres; coverage = clamp(0.5 − d, 0, 1), i.e. the area of a one-pixel box
 * filter cut by a straight edge at distance d, exact for edges and close for corners. Unions and
 * differences of primitives use min / max of their distances, which is exact near edges.
 *
 * Mask: a pixel belongs to the object when its visible coverage (object coverage × (1 − occluder
 * coverage)) is >= 0.5. Stripes and checkerboard masks cover the bars / filled cells only.
 *
 * Determinism: sample i of (seed, split) is a pure function of those three numbers (integer hashing
 * seeds an engine Rng per sample). Labels are balanced exactly: indices are grouped in blocks of
 * `numClasses`, and each block holds every class once, in a seeded random order. Across JavaScript
 * engines the libm functions (sin, cos, sqrt is exact) may differ in the last bit, which can move a
 * rare pixel by one level; within one engine the bytes are identical.
 */

import { Rng } from '../../engine/random.js';
import { encodePng } from '../../models/io/image.js';
import { checkIndex, type Dataset, type Sample } from './dataset.js';

/** The ten shape classes, in label order. */
export const SHAPE_CLASSES = [
  'disc',
  'ring',
  'square_outline',
  'triangle',
  'cross',
  'star',
  'stripes',
  'checkerboard',
  'crescent',
  'arrow',
] as const;

/** One of {@link SHAPE_CLASSES}. */
export type ShapeClass = (typeof SHAPE_CLASSES)[number];

/** How the images look: see the file header. */
export type SyntheticStyle = 'confetti' | 'scene';

/** 'train' or 'val' (held out: different per-sample seeds). */
export type SyntheticSplit = 'train' | 'val';

/** Options of {@link SyntheticShapes}. */
export interface SyntheticShapesOptions {
  /** Which split (default 'train'). */
  split?: SyntheticSplit;
  /** Image side in pixels (default 64; 16..512). Images are square RGB. */
  size?: number;
  /** Number of samples (default 5000 for 'train', 1000 for 'val'). */
  length?: number;
  /** Dataset seed, an integer in [0, 2^32) (default 0). */
  seed?: number;
  /** Image style (default 'confetti'); see the file header. */
  style?: SyntheticStyle;
  /**
   * Object size range as a fraction of the side: diameter of its circumscribed circle (default
   * [0.6, 0.9] for 'confetti', [0.3, 0.7] for 'scene').
   */
  scale?: readonly [number, number];
  /** Largest object rotation away from upright, in degrees, in [0, 180] (default 9 for 'confetti', 180 for 'scene'). */
  rotation?: number;
  /**
   * 'scene' only. Clutter level in [0, 1] (default 1): scales the colour differences across the
   * background (corner blend and wave) and the number of distractors. 1 draws exactly the images above.
   */
  clutter?: number;
}

/** Split salts: any two different constants give disjoint sample seeds. */
const SPLIT_SALT: Record<SyntheticSplit, number> = { train: 0x7a1d, val: 0x5e11 };
const PURPOSE_SAMPLE = 1;
const PURPOSE_LABELS = 2;

/**
 * The embedded synthetic shapes dataset (see the file header). `getSync(i)` draws sample i; nothing
 * is cached (a 64×64 sample takes well under a millisecond).
 */
export class SyntheticShapes implements Dataset {
  readonly numClasses = SHAPE_CLASSES.length;
  readonly classNames: readonly string[] = SHAPE_CLASSES;
  readonly length: number;
  readonly split: SyntheticSplit;
  readonly size: number;
  readonly seed: number;
  readonly style: SyntheticStyle;
  readonly scale: readonly [number, number];
  readonly rotation: number;
  readonly clutter: number;
  /** Scratch canvas, reused between samples (generation is synchronous). */
  private readonly canvas: Canvas;

  constructor(options: SyntheticShapesOptions = {}) {
    this.split = options.split ?? 'train';
    if (!(this.split in SPLIT_SALT)) throw new Error(`SyntheticShapes: split must be 'train' or 'val', got ${String(this.split)}`);
    this.size = options.size ?? 64;
    if (!Number.isInteger(this.size) || this.size < 16 || this.size > 512) {
      throw new RangeError(`SyntheticShapes: size must be an integer in [16, 512], got ${this.size}`);
    }
    this.length = options.length ?? (this.split === 'train' ? 5000 : 1000);
    if (!Number.isInteger(this.length) || this.length < 0) throw new RangeError(`SyntheticShapes: invalid length ${this.length}`);
    this.seed = options.seed ?? 0;
    if (!Number.isInteger(this.seed) || this.seed < 0 || this.seed >= 2 ** 32) {
      throw new RangeError(`SyntheticShapes: seed must be an integer in [0, 2^32), got ${this.seed}`);
    }
    this.style = options.style ?? 'confetti';
    if (this.style !== 'confetti' && this.style !== 'scene') {
      throw new Error(`SyntheticShapes: style must be 'confetti' or 'scene', got ${String(this.style)}`);
    }
    const scene = this.style === 'scene';
    this.scale = options.scale ?? (scene ? [0.3, 0.7] : [0.6, 0.9]);
    const [lo, hi] = this.scale;
    if (!(lo > 0 && lo <= hi && hi <= 0.95)) throw new RangeError(`SyntheticShapes: scale must satisfy 0 < lo <= hi <= 0.95, got [${lo}, ${hi}]`);
    this.rotation = options.rotation ?? (scene ? 180 : 9);
    if (!(this.rotation >= 0 && this.rotation <= 180)) throw new RangeError(`SyntheticShapes: rotation must be in [0, 180] degrees, got ${this.rotation}`);
    if (!scene && options.clutter !== undefined) throw new Error("SyntheticShapes: clutter applies to style 'scene' only");
    this.clutter = options.clutter ?? 1;
    if (!(this.clutter >= 0 && this.clutter <= 1)) throw new RangeError(`SyntheticShapes: clutter must be in [0, 1], got ${this.clutter}`);
    this.canvas = new Canvas(this.size);
  }

  /** The label of sample `index` (cheap: no drawing). */
  labelOf(index: number): number {
    checkIndex(index, this.length, 'SyntheticShapes.labelOf');
    const k = this.numClasses;
    const block = Math.floor(index / k);
    const order = new Rng(hashWords(this.seed, SPLIT_SALT[this.split], PURPOSE_LABELS, block));
    // Fisher–Yates over the block's k labels; only the entry at index % k is needed, but the
    // whole (tiny) permutation keeps the rule obvious.
    const perm = Array.from({ length: k }, (_, i) => i);
    for (let i = k - 1; i > 0; i--) {
      const j = order.int(i + 1);
      [perm[i], perm[j]] = [perm[j]!, perm[i]!];
    }
    return perm[index % k]!;
  }

  /** Draws sample `index`: image, label and object mask. */
  getSync(index: number): Sample {
    const label = this.labelOf(index);
    const rng = new Rng(hashWords(this.seed, SPLIT_SALT[this.split], PURPOSE_SAMPLE, index));
    return drawSample(this.canvas, rng, SHAPE_CLASSES[label]!, label, this);
  }

  /** Same as getSync. */
  async get(index: number): Promise<Sample> {
    return this.getSync(index);
  }

  /** `synthetic/<split>[index]`. */
  describe(index: number): string {
    checkIndex(index, this.length, 'SyntheticShapes.describe');
    return `synthetic/${this.split}[${index}]`;
  }

  /** The first `perClass` samples of every class, class-major (row c = class c), for grids. */
  examplesByClass(perClass: number): Sample[] {
    const rows: Sample[][] = Array.from({ length: this.numClasses }, () => []);
    let need = perClass * this.numClasses;
    for (let i = 0; i < this.length && need > 0; i++) {
      const row = rows[this.labelOf(i)]!;
      if (row.length < perClass) {
        row.push(this.getSync(i));
        need--;
      }
    }
    return rows.flat();
  }
}

// ----------------------------------------------------------------------------------------------
// Hashing (seeds per sample)
// ----------------------------------------------------------------------------------------------

/** MurmurHash3-style 32-bit hash of a few u32 words (a seed mixer, not for security). */
export function hashWords(...words: number[]): number {
  let h = 0x2545f491;
  for (const w of words) {
    let k = Math.imul(w >>> 0, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  h ^= words.length * 4;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

// ----------------------------------------------------------------------------------------------
// Signed distance functions (pixels; negative inside)
// ----------------------------------------------------------------------------------------------

/** Signed distance in pixels from pixel-centre coordinates (x, y); negative inside. */
type Sdf = (x: number, y: number) => number;

/** Euclidean length of (x, y) (Math.hypot is several times slower in V8 and guards overflow we never hit). */
function len(x: number, y: number): number {
  return Math.sqrt(x * x + y * y);
}

/** Signed distance to an axis-aligned box of half-sizes (hx, hy) centred at the origin. */
function sdBox(u: number, v: number, hx: number, hy: number): number {
  const qx = Math.abs(u) - hx;
  const qy = Math.abs(v) - hy;
  const ox = qx > 0 ? qx : 0;
  const oy = qy > 0 ? qy : 0;
  const inside = Math.min(Math.max(qx, qy), 0);
  return Math.sqrt(ox * ox + oy * oy) + inside;
}

/**
 * Lifts a distance f(u, v) defined in the object's unit frame (circumradius 1) to pixels: the pixel
 * offset from the centre is rotated by −theta and divided by R, and the distance multiplied by R.
 */
function inUnitFrame(cx: number, cy: number, R: number, theta: number, f: (u: number, v: number) => number): Sdf {
  const c = Math.cos(theta) / R;
  const s = Math.sin(theta) / R;
  return (x, y) => {
    const dx = x - cx;
    const dy = y - cy;
    return f(c * dx + s * dy, -s * dx + c * dy) * R;
  };
}

/**
 * Signed distance to a simple polygon given by unit-frame vertices (u_k, v_k), placed like
 * inUnitFrame. Distance = min over edges of the distance to the segment; inside by the even–odd
 * crossing rule on a ray towards +x.
 */
function polygon(cx: number, cy: number, R: number, theta: number, us: number[], vs: number[]): Sdf {
  const n = us.length;
  const c = Math.cos(theta) * R;
  const s = Math.sin(theta) * R;
  const xs = new Float64Array(n);
  const ys = new Float64Array(n);
  for (let k = 0; k < n; k++) {
    xs[k] = cx + c * us[k]! - s * vs[k]!;
    ys[k] = cy + s * us[k]! + c * vs[k]!;
  }
  // Edge k runs from vertex k to vertex k+1; 1/|e|^2 precomputed.
  const ex = new Float64Array(n);
  const ey = new Float64Array(n);
  const inv = new Float64Array(n);
  for (let k = 0; k < n; k++) {
    const k1 = (k + 1) % n;
    ex[k] = xs[k1]! - xs[k]!;
    ey[k] = ys[k1]! - ys[k]!;
    inv[k] = 1 / (ex[k]! * ex[k]! + ey[k]! * ey[k]!);
  }
  return (x, y) => {
    let d2 = Infinity;
    let inside = false;
    for (let k = 0; k < n; k++) {
      const wx = x - xs[k]!;
      const wy = y - ys[k]!;
      const exk = ex[k]!;
      const eyk = ey[k]!;
      let t = (wx * exk + wy * eyk) * inv[k]!;
      t = t < 0 ? 0 : t > 1 ? 1 : t;
      const bx = wx - exk * t;
      const by = wy - eyk * t;
      const dd = bx * bx + by * by;
      if (dd < d2) d2 = dd;
      // The edge straddles the horizontal line through y: does it cross the ray to the right?
      if (ys[k]! > y !== ys[(k + 1) % n]! > y && x < xs[k]! + (wy * exk) / eyk) inside = !inside;
    }
    const d = Math.sqrt(d2);
    return inside ? -d : d;
  };
}

/** Scales unit-frame vertices so the farthest one lies on the unit circle. */
function normaliseToUnitCircle(us: number[], vs: number[]): void {
  let r = 0;
  for (let k = 0; k < us.length; k++) r = Math.max(r, Math.hypot(us[k]!, vs[k]!));
  for (let k = 0; k < us.length; k++) {
    us[k]! /= r;
    vs[k]! /= r;
  }
}

/**
 * The object of class `cls`, centred at (cx, cy) with circumradius R pixels and rotation theta, with
 * its structural parameters drawn from rng. Every shape lies inside the circle of radius R.
 */
function shapeSdf(cls: ShapeClass, cx: number, cy: number, R: number, theta: number, rng: Rng): Sdf {
  const H = Math.SQRT1_2; // half-side of a square inscribed in the unit circle
  switch (cls) {
    case 'disc':
      return (x, y) => len(x - cx, y - cy) - R;
    case 'ring': {
      const t = rng.range(0.22, 0.4); // band thickness / R
      const mid = 1 - t / 2;
      return (x, y) => (Math.abs(len(x - cx, y - cy) / R - mid) - t / 2) * R;
    }
    case 'square_outline': {
      const t = rng.range(0.16, 0.28); // frame thickness / R
      return inUnitFrame(cx, cy, R, theta, (u, v) => Math.max(sdBox(u, v, H, H), -sdBox(u, v, H - t, H - t)));
    }
    case 'triangle': {
      const us: number[] = [];
      const vs: number[] = [];
      for (let k = 0; k < 3; k++) {
        // Equilateral, each vertex jittered a little along its angle and radius (intra-class variety).
        const a = -Math.PI / 2 + (2 * Math.PI * k) / 3 + rng.range(-0.2, 0.2);
        const r = rng.range(0.85, 1);
        us.push(r * Math.cos(a));
        vs.push(r * Math.sin(a));
      }
      normaliseToUnitCircle(us, vs);
      return polygon(cx, cy, R, theta, us, vs);
    }
    case 'cross': {
      const w = rng.range(0.22, 0.36); // arm half-width / arm half-length
      const a = 1 / Math.hypot(1, w); // arm half-length, so the arm corners touch the unit circle
      const b = w * a;
      return inUnitFrame(cx, cy, R, theta, (u, v) => Math.min(sdBox(u, v, a, b), sdBox(u, v, b, a)));
    }
    case 'star': {
      const inner = rng.range(0.38, 0.5);
      const us: number[] = [];
      const vs: number[] = [];
      for (let k = 0; k < 10; k++) {
        const a = -Math.PI / 2 + (Math.PI * k) / 5;
        const r = k % 2 === 0 ? 1 : inner;
        us.push(r * Math.cos(a));
        vs.push(r * Math.sin(a));
      }
      return polygon(cx, cy, R, theta, us, vs);
    }
    case 'stripes': {
      // n parallel bars filling a square patch; keep bars at least ~2 px wide.
      const duty = rng.range(0.45, 0.6);
      const n = fitCount(rng.int(3) + 3, 2 * H * R * duty, 2);
      const P = (2 * H) / n;
      const half = (duty * P) / 2;
      return inUnitFrame(cx, cy, R, theta, (u, v) => {
        const t = u + H - P * Math.floor((u + H) / P);
        return Math.max(sdBox(u, v, H, H), Math.abs(t - P / 2) - half);
      });
    }
    case 'checkerboard': {
      // n × n cells, cell (0, 0) filled; cells at least ~2 px.
      const n = fitCount(rng.int(3) + 3, 2 * H * R, 2);
      const c = (2 * H) / n;
      return inUnitFrame(cx, cy, R, theta, (u, v) => {
        const a = (u + H) / c;
        const b = (v + H) / c;
        const e = Math.min(Math.abs(a - Math.round(a)), Math.abs(b - Math.round(b))) * c;
        const filled = ((Math.floor(a) + Math.floor(b)) & 1) === 0;
        return Math.max(sdBox(u, v, H, H), filled ? -e : e);
      });
    }
    case 'crescent': {
      const r2 = rng.range(0.72, 0.86); // radius of the bite
      const o = rng.range(0.38, 0.55); // its offset: thickest part 1 + o − r2 ∈ [0.52, 0.83]
      return inUnitFrame(cx, cy, R, theta, (u, v) => Math.max(len(u, v) - 1, r2 - len(u - o, v)));
    }
    case 'arrow': {
      const sw = rng.range(0.14, 0.22); // shaft half-width
      const hw = rng.range(0.45, 0.6); // head half-width
      const hx = rng.range(-0.05, 0.25); // where the head starts
      const us = [-1, hx, hx, 1, hx, hx, -1];
      const vs = [-sw, -sw, -hw, 0, hw, sw, sw];
      normaliseToUnitCircle(us, vs);
      return polygon(cx, cy, R, theta, us, vs);
    }
  }
}

/** Largest count <= n (and >= 2) such that extent / count >= minPixels. */
function fitCount(n: number, extent: number, minPixels: number): number {
  while (n > 2 && extent / n < minPixels) n--;
  return n;
}

/** A thin segment from (x0, y0) to (x1, y1) with half-width hw pixels. */
function segment(x0: number, y0: number, x1: number, y1: number, hw: number): Sdf {
  const ex = x1 - x0;
  const ey = y1 - y0;
  const inv = 1 / (ex * ex + ey * ey);
  return (x, y) => {
    const wx = x - x0;
    const wy = y - y0;
    let t = (wx * ex + wy * ey) * inv;
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    return len(wx - ex * t, wy - ey * t) - hw;
  };
}

/**
 * A rotated ellipse with semi-axes a, b pixels. Distance approximated by the first-order estimate
 * f / |∇f| with f = k0 (k0 − 1), k0 = |(u/a, v/b)| (exact on the boundary, good within a pixel).
 */
function ellipse(cx: number, cy: number, a: number, b: number, theta: number): Sdf {
  const c = Math.cos(theta);
  const s = Math.sin(theta);
  return (x, y) => {
    const dx = x - cx;
    const dy = y - cy;
    const u = c * dx + s * dy;
    const v = -s * dx + c * dy;
    const k0 = len(u / a, v / b);
    const k1 = len(u / (a * a), v / (b * b));
    return k1 > 0 ? (k0 * (k0 - 1)) / k1 : -Math.min(a, b);
  };
}

// ----------------------------------------------------------------------------------------------
// Colours and fills
// ----------------------------------------------------------------------------------------------

type Rgb = [number, number, number];

/** A colour from the one distribution used for everything: HSV with s ∈ [0.1, 1], v ∈ [0.15, 1]. */
function randomColour(rng: Rng): Rgb {
  const h = rng.uniform() * 6;
  const s = rng.range(0.1, 1);
  const v = rng.range(0.15, 1) * 255;
  const i = Math.floor(h);
  const f = h - i;
  const p = v * (1 - s);
  const q = v * (1 - s * f);
  const t = v * (1 - s * (1 - f));
  switch (i % 6) {
    case 0: return [v, t, p];
    case 1: return [q, v, p];
    case 2: return [p, v, t];
    case 3: return [p, q, v];
    case 4: return [t, p, v];
    default: return [v, p, q];
  }
}

function colourDistance(a: Rgb, b: Rgb): number {
  return Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]);
}

/** How a painted primitive is coloured: one colour, a linear gradient, or speckled. */
interface Fill {
  c0: Rgb;
  /** Gradient end colour (gradient fills only). */
  c1: Rgb;
  kind: 'solid' | 'gradient' | 'speckle';
  /** Gradient: t = clamp(g0 + gx * x + gy * y, 0, 1). */
  g0: number;
  gx: number;
  gy: number;
  /** Speckle amplitude (levels) and hash seed. */
  amp: number;
  seed: number;
}

function solid(c: Rgb): Fill {
  return { c0: c, c1: c, kind: 'solid', g0: 0, gx: 0, gy: 0, amp: 0, seed: 0 };
}

/** Uniform in [-1, 1) from a hash of (x, y, seed), for speckle textures and pixel noise. */
function hashNoise(x: number, y: number, seed: number): number {
  let h = Math.imul(x, 0x27d4eb2d) ^ Math.imul(y, 0x165667b1) ^ seed;
  h = Math.imul(h ^ (h >>> 15), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) / 2147483648 - 1;
}

// ----------------------------------------------------------------------------------------------
// Canvas
// ----------------------------------------------------------------------------------------------

/** Where a primitive can be non-zero: centre and half-extents in pixels. */
interface Box {
  cx: number;
  cy: number;
  rx: number;
  ry: number;
}

/** An S×S float RGB canvas (levels 0..255) with coverage-based painting. */
class Canvas {
  readonly rgb: Float32Array;
  /** Coverage of the object, then of the occluder (scratch). */
  readonly cover: Float32Array;
  readonly front: Float32Array;

  constructor(readonly S: number) {
    this.rgb = new Float32Array(S * S * 3);
    this.cover = new Float32Array(S * S);
    this.front = new Float32Array(S * S);
  }

  /**
   * Blends `fill` with weight alpha · coverage(sdf) over the pixels of the box centred at (cx, cy)
   * with half-extents (rx, ry) plus one pixel (clipped to the image); the sdf must be positive
   * outside that box. When `coverOut` is given, the coverage is also written there.
   */
  paint(sdf: Sdf, box: Box, fill: Fill, alpha: number, coverOut?: Float32Array): void {
    const S = this.S;
    const x0 = Math.max(0, Math.floor(box.cx - box.rx - 1));
    const x1 = Math.min(S, Math.ceil(box.cx + box.rx + 1));
    const y0 = Math.max(0, Math.floor(box.cy - box.ry - 1));
    const y1 = Math.min(S, Math.ceil(box.cy + box.ry + 1));
    const rgb = this.rgb;
    for (let y = y0; y < y1; y++) {
      for (let x = x0; x < x1; x++) {
        let a = 0.5 - sdf(x + 0.5, y + 0.5);
        if (a <= 0) continue;
        if (a > 1) a = 1;
        const p = y * S + x;
        if (coverOut) coverOut[p] = a;
        a *= alpha;
        let r = fill.c0[0];
        let g = fill.c0[1];
        let b = fill.c0[2];
        if (fill.kind === 'gradient') {
          let t = fill.g0 + fill.gx * x + fill.gy * y;
          t = t < 0 ? 0 : t > 1 ? 1 : t;
          r += (fill.c1[0] - r) * t;
          g += (fill.c1[1] - g) * t;
          b += (fill.c1[2] - b) * t;
        } else if (fill.kind === 'speckle') {
          const n = fill.amp * hashNoise(x, y, fill.seed);
          r += n;
          g += n;
          b += n;
        }
        const o = 3 * p;
        rgb[o] = rgb[o]! + (r - rgb[o]!) * a;
        rgb[o + 1] = rgb[o + 1]! + (g - rgb[o + 1]!) * a;
        rgb[o + 2] = rgb[o + 2]! + (b - rgb[o + 2]!) * a;
      }
    }
  }
}

/**
 * Smooth background: bilinear corner colours + a colour wave amp·sin(kx·x + ky·y + psi). Returns the
 * colour at a point (used to pick a visible object colour).
 */
function drawBackground(cv: Canvas, rng: Rng, clutter: number): (x: number, y: number) => Rgb {
  const S = cv.S;
  const c00 = randomColour(rng);
  // Lower clutter pulls the other corners towards c00 (the same draws, so clutter 1 is unchanged).
  const toward = (c: Rgb): Rgb => (clutter === 1 ? c : [0, 1, 2].map((ch) => c00[ch]! + (c[ch]! - c00[ch]!) * clutter) as Rgb);
  const c10 = toward(randomColour(rng));
  const c01 = toward(randomColour(rng));
  const c11 = toward(randomColour(rng));
  const phi = rng.range(0, 2 * Math.PI);
  const freq = (2 * Math.PI * rng.range(0.3, 1.5)) / S; // 0.3..1.5 periods per image
  const kx = freq * Math.cos(phi);
  const ky = freq * Math.sin(phi);
  const psi = rng.range(0, 2 * Math.PI);
  const amp: Rgb = [rng.range(-35, 35) * clutter, rng.range(-35, 35) * clutter, rng.range(-35, 35) * clutter];
  const at = (x: number, y: number): Rgb => {
    const u = x / S;
    const v = y / S;
    const w = Math.sin(kx * x + ky * y + psi);
    const out: Rgb = [0, 0, 0];
    for (let ch = 0; ch < 3; ch++) {
      const top = c00[ch] + (c10[ch] - c00[ch]) * u;
      const bottom = c01[ch] + (c11[ch] - c01[ch]) * u;
      out[ch] = top + (bottom - top) * v + amp[ch] * w;
    }
    return out;
  };
  // The same function, evaluated separably: sin(a + b) = sin a cos b + cos a sin b with
  // a = kx·x + psi, b = ky·y; the bilinear term is linear in v per column.
  const sa = new Float64Array(S);
  const ca = new Float64Array(S);
  for (let x = 0; x < S; x++) {
    sa[x] = Math.sin(kx * (x + 0.5) + psi);
    ca[x] = Math.cos(kx * (x + 0.5) + psi);
  }
  const rgb = cv.rgb;
  for (let y = 0; y < S; y++) {
    const sb = Math.sin(ky * (y + 0.5));
    const cb = Math.cos(ky * (y + 0.5));
    const v = (y + 0.5) / S;
    const l0 = c00[0] + (c01[0] - c00[0]) * v; // value at u = 0, per channel
    const l1 = c00[1] + (c01[1] - c00[1]) * v;
    const l2 = c00[2] + (c01[2] - c00[2]) * v;
    const d0 = (c10[0] + (c11[0] - c10[0]) * v - l0) / S; // change per pixel along x
    const d1 = (c10[1] + (c11[1] - c10[1]) * v - l1) / S;
    const d2 = (c10[2] + (c11[2] - c10[2]) * v - l2) / S;
    let o = 3 * y * S;
    for (let x = 0; x < S; x++, o += 3) {
      const w = sa[x]! * cb + ca[x]! * sb;
      const xc = x + 0.5;
      rgb[o] = l0 + d0 * xc + amp[0] * w;
      rgb[o + 1] = l1 + d1 * xc + amp[1] * w;
      rgb[o + 2] = l2 + d2 * xc + amp[2] * w;
    }
  }
  return at;
}

/** A random thin line and its bounding box. */
function randomLine(S: number, rng: Rng): { sdf: Sdf; box: Box } {
  const cx = rng.range(0, S);
  const cy = rng.range(0, S);
  const half = (rng.range(0.15, 0.45) * S) / 2;
  const a = rng.range(0, Math.PI);
  const hw = rng.range(0.4, 1.1) * Math.max(1, S / 64);
  const dx = half * Math.cos(a);
  const dy = half * Math.sin(a);
  return { sdf: segment(cx - dx, cy - dy, cx + dx, cy + dy, hw), box: { cx, cy, rx: Math.abs(dx) + hw, ry: Math.abs(dy) + hw } };
}

/** Distractors: small ellipse blobs and thin lines, none of them a class shape. */
function drawDistractors(cv: Canvas, rng: Rng, clutter: number): void {
  const S = cv.S;
  const count = 2 + rng.int(5);
  const painted = Math.round(count * clutter);
  for (let i = 0; i < count; i++) {
    const alpha = rng.range(0.6, 1);
    const colour = randomColour(rng);
    if (rng.uniform() < 0.5) {
      const a = rng.range(0.03, 0.09) * S;
      const b = a * rng.range(0.35, 1);
      const cx = rng.range(0, S);
      const cy = rng.range(0, S);
      const rot = rng.range(0, Math.PI);
      if (i < painted) cv.paint(ellipse(cx, cy, a, b, rot), { cx, cy, rx: a, ry: a }, solid(colour), alpha);
    } else {
      const line = randomLine(S, rng);
      if (i < painted) cv.paint(line.sdf, line.box, solid(colour), alpha);
    }
  }
}

/** What drawSample needs to know of the dataset. */
interface DrawOptions {
  readonly style: SyntheticStyle;
  readonly scale: readonly [number, number];
  readonly rotation: number;
  readonly clutter: number;
}

/** Colour confetti: square cells of max(1, round(S/32)) pixels, each an independent randomColour. */
function drawConfetti(cv: Canvas, rng: Rng): void {
  const S = cv.S;
  const cell = Math.max(1, Math.round(S / 32));
  const rgb = cv.rgb;
  for (let y0 = 0; y0 < S; y0 += cell) {
    for (let x0 = 0; x0 < S; x0 += cell) {
      const c = randomColour(rng);
      for (let y = y0; y < Math.min(S, y0 + cell); y++) {
        for (let x = x0; x < Math.min(S, x0 + cell); x++) {
          const o = 3 * (y * S + x);
          rgb[o] = c[0];
          rgb[o + 1] = c[1];
          rgb[o + 2] = c[2];
        }
      }
    }
  }
}

/** Draws one whole sample on the canvas and returns it as bytes. */
function drawSample(cv: Canvas, rng: Rng, cls: ShapeClass, label: number, o: DrawOptions): Sample {
  const S = cv.S;
  const scene = o.style === 'scene';
  cv.cover.fill(0);
  cv.front.fill(0);
  let background: ((x: number, y: number) => Rgb) | null = null;
  if (scene) {
    background = drawBackground(cv, rng, o.clutter);
    drawDistractors(cv, rng, o.clutter);
  } else {
    drawConfetti(cv, rng);
  }

  // Placement: the circumscribed circle (plus the anti-aliasing half pixel) stays inside the image.
  const R = (rng.range(o.scale[0], o.scale[1]) * S) / 2;
  const cx = rng.range(R + 1, S - R - 1);
  const cy = rng.range(R + 1, S - R - 1);
  // One draw u ∈ [0, 2π) either way; a full turn uses it as is (the 'scene' images are unchanged).
  const u = rng.range(0, 2 * Math.PI);
  const theta = o.rotation >= 180 ? u : (u / Math.PI - 1) * ((o.rotation * Math.PI) / 180);
  const sdf = shapeSdf(cls, cx, cy, R, theta, rng);

  if (!scene) {
    cv.paint(sdf, { cx, cy, rx: R, ry: R }, solid([235, 235, 235]), 1, cv.cover);
    return finishSample(cv, rng, label);
  }

  // Object colour: redraw until it stands out from the background at the centre (same rule for
  // every class; keep the best of 12 draws).
  const bg = background!(cx, cy);
  let c0 = randomColour(rng);
  for (let tries = 0; tries < 12 && colourDistance(c0, bg) < 100; tries++) {
    const c = randomColour(rng);
    if (colourDistance(c, bg) > colourDistance(c0, bg)) c0 = c;
  }
  const kindDraw = rng.uniform();
  let fill: Fill;
  if (kindDraw < 0.55) {
    fill = solid(c0);
  } else if (kindDraw < 0.85) {
    let c1 = randomColour(rng);
    for (let tries = 0; tries < 12 && colourDistance(c1, bg) < 70; tries++) c1 = randomColour(rng);
    const dir = rng.range(0, 2 * Math.PI);
    const gx = Math.cos(dir) / (2 * R);
    const gy = Math.sin(dir) / (2 * R);
    fill = { ...solid(c0), kind: 'gradient', c1, gx, gy, g0: 0.5 - gx * cx - gy * cy };
  } else {
    fill = { ...solid(c0), kind: 'speckle', amp: rng.range(20, 45), seed: rng.nextU32() | 0 };
  }
  cv.paint(sdf, { cx, cy, rx: R, ry: R }, fill, 1, cv.cover);

  if (rng.uniform() < 0.3) {
    const line = randomLine(S, rng);
    cv.paint(line.sdf, line.box, solid(randomColour(rng)), 1, cv.front);
  }
  return finishSample(cv, rng, label);
}

/** Pixel noise, quantisation to bytes and the object mask of the painted canvas. */
function finishSample(cv: Canvas, rng: Rng, label: number): Sample {
  const S = cv.S;
  // Noise, quantisation and the mask. One 32-bit hash per value gives two 16-bit uniforms; their
  // sum is triangular on [0, 2^17) with standard deviation 2^16/√6. Uint8ClampedArray stores
  // clamp(round-half-even(v)), the quantisation (and much faster than Math.round + clamp).
  const sigma = rng.range(2, 9);
  const noiseSeed = rng.nextU32() | 0;
  const k = (sigma * Math.sqrt(6)) / 65536;
  const N = 3 * S * S;
  const quantised = new Uint8ClampedArray(N);
  const rgb = cv.rgb;
  for (let o = 0; o < N; o++) {
    let h = Math.imul(o ^ noiseSeed, 0x9e3779b1);
    h = Math.imul(h ^ (h >>> 15), 0x85ebca6b);
    h ^= h >>> 13;
    quantised[o] = rgb[o]! + k * ((h & 0xffff) + ((h >> 16) & 0xffff) - 65536);
  }
  const data = new Uint8Array(quantised.buffer);
  const mask = new Uint8Array(S * S);
  const cover = cv.cover;
  const front = cv.front;
  for (let p = 0; p < S * S; p++) mask[p] = cover[p]! * (1 - front[p]!) >= 0.5 ? 1 : 0;
  return { image: { width: S, height: S, data }, label, mask };
}

// ----------------------------------------------------------------------------------------------
// Looking at samples
// ----------------------------------------------------------------------------------------------

/** Options of {@link renderSampleGrid}. */
export interface SampleGridOptions {
  /** Samples per row (default 10). */
  cols?: number;
  /** Integer upscaling factor, nearest neighbour (default 2). */
  zoom?: number;
  /** Draw each sample's mask (white on black) to the right of the image (default false). */
  masks?: boolean;
  /** Gap between cells in pixels (default 2, filled with mid grey). */
  gap?: number;
}

/**
 * A PNG with the given samples in a grid, row-major (for a person to look at). Samples may differ in
 * size; each cell is as large as the largest sample.
 */
export function renderSampleGrid(samples: readonly Sample[], options: SampleGridOptions = {}): Uint8Array {
  if (samples.length === 0) throw new RangeError('renderSampleGrid: no samples');
  const cols = Math.min(options.cols ?? 10, samples.length);
  const zoom = options.zoom ?? 2;
  const gap = options.gap ?? 2;
  const withMasks = options.masks ?? false;
  const cw = Math.max(...samples.map((s) => s.image.width)) * zoom;
  const ch = Math.max(...samples.map((s) => s.image.height)) * zoom;
  const cellW = withMasks ? 2 * cw + 1 : cw;
  const rows = Math.ceil(samples.length / cols);
  const W = cols * cellW + (cols + 1) * gap;
  const Hh = rows * ch + (rows + 1) * gap;
  const out = new Uint8Array(W * Hh * 3).fill(128);
  samples.forEach((s, i) => {
    const ox = gap + (i % cols) * (cellW + gap);
    const oy = gap + Math.floor(i / cols) * (ch + gap);
    const { width, height, data } = s.image;
    for (let y = 0; y < height * zoom; y++) {
      for (let x = 0; x < width * zoom; x++) {
        const src = 3 * (Math.floor(y / zoom) * width + Math.floor(x / zoom));
        const dst = 3 * ((oy + y) * W + ox + x);
        out[dst] = data[src]!;
        out[dst + 1] = data[src + 1]!;
        out[dst + 2] = data[src + 2]!;
        if (withMasks && s.mask) {
          const m = s.mask[Math.floor(y / zoom) * width + Math.floor(x / zoom)]! ? 255 : 0;
          const mdst = 3 * ((oy + y) * W + ox + cw + 1 + x);
          out[mdst] = out[mdst + 1] = out[mdst + 2] = m;
        }
      }
    }
  });
  return encodePng(W, Hh, out, 3);
}
