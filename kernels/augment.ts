/**
 * Image augmentation kernels: crop + antialiased bicubic resize (PIL semantics), horizontal flip,
 * colour jitter (brightness, contrast, saturation, hue in any order), grayscale, Gaussian blur,
 * solarization and normalisation, batched over many crops of many images of different sizes;
 * and a float64 CPU reference of every step. Decoding happens on the CPU (models/io/image.ts);
 * the parameters of every crop are drawn on the CPU (train/augment.ts) and passed in a small
 * storage buffer, so the kernels are deterministic functions of (pixels, parameters).
 *
 * Data layout
 * - Source pixels: every image of the batch packed into one u32 buffer, one u32 per pixel (R, G, B
 *   in the low three bytes, the fourth byte 0), row-major, images back to back. One 4-byte load per
 *   filter tap and WGSL's `unpack4x8unorm` gives x/255 exactly; 4 bytes per pixel is a third of an
 *   f32-per-channel upload (what matters when the CPU writes the batch every step) and avoids the
 *   straddling words of packed 3-byte RGB.
 * - Crop parameters: an array of `Crop` structs of CROP_WORDS 4-byte words (see `encodeCrops`).
 * - Intermediates: vec4<f32> per pixel (rgb, 4th lane unused) so one invocation moves a pixel with
 *   one load/store. Output: f32 [K, 3, S, S] (NCHW) for the K crops of one size S.
 *
 * Pipeline of one group of K crops of size S (7 dispatches, all barrier-free; an invocation owns
 * one output pixel, all three channels, and loops over its filter taps):
 *   1 resample_h   T[row, x]  = Σ_t w(t) · img[y0 + row, x0 + t]     rows of the crop box, S columns
 *   2 resample_v   R[y, x]    = Σ_t w(t) · T[t, x]                   (flip folded into 1: column S−1−x)
 *   3 contrast_rows  per (crop, row): Σ_x gray(ops before contrast applied to R[y, x])
 *   4 contrast_mean  per crop: mean = Σ rows / S²  (the grayscale mean contrast blends towards)
 *   5 colour       C = grayscale?(op_n(...op_1(R)))                 jitter ops in the sampled order
 *   6 blur_h       R = Σ_t g(t) · C[y, clamp(x + t)]
 *   7 blur_v_out   out = normalise(solarize?(Σ_t g(t) · R[clamp(y + t), x]))
 * The resampling passes give each invocation RB = 4 pixels that share one set of filter weights
 * (4 rows of a column in 1, 4 columns of a row in 2): the weights cost as much as the loads
 * (bench/lab/kernel-notes.md). Steps 3-4 are skipped when no crop has contrast, step 5 is a
 * copy when no crop has colour ops or grayscale. Per-crop choices are made with `select`, not
 * branches (CPU Vulkan drivers run both sides of a divergent branch); hue, the one expensive op,
 * is evaluated once per pixel at its place in the order.
 *
 * Math
 * - Resampling (PIL's ImagingResample, which torchvision's RandomResizedCrop and Resize use on PIL
 *   images): the box of width w is resized to `outW` columns; scale = w / outW, fs = max(scale, 1)
 *   (the filter is widened by the scale factor when downsampling: antialiasing), support = 2·fs,
 *   for output column xv: center = (xv + 0.5)·scale, taps t ∈ [max(⌊center − support + 0.5⌋, 0),
 *   min(⌊center + support + 0.5⌋, w)), weights k((t − center + 0.5)/fs) normalised to sum 1, with
 *   PIL's bicubic k(x) = (a+2)|x|³ − (a+3)|x|² + 1 for |x| < 1, a(|x|³ − 5|x|² + 8|x| − 4) for
 *   1 ≤ |x| < 2, 0 beyond; a = −0.5. Taps never leave the box (torchvision crops first, then
 *   resizes the cropped image). Horizontal pass first, then vertical, each clamped to [0, 1] (PIL
 *   clips to 0..255 after each pass). Differences from PIL: PIL rounds to 8 bits after each pass and
 *   uses 22-bit fixed-point weights; we stay in f32 (within one 8-bit level of PIL, see the tests).
 * - Colour (torchvision's ColorJitter formulas in float, clamped to [0, 1] after each op; DINO runs
 *   them on PIL images, which also rounds to 8 bits after each op and does hue in 8-bit HSV):
 *   brightness f: clamp(f·x); contrast f: clamp(f·x + (1−f)·m), m = mean over the crop of gray(x);
 *   saturation f: clamp(f·x + (1−f)·gray(x)); hue h: rgb → hsv (hexcone), H ← (H + h) mod 1,
 *   hsv → rgb; gray(x) = 0.299 r + 0.587 g + 0.114 b (ITU-R 601-2, what PIL's convert('L') uses;
 *   torchvision's tensor path uses 0.2989). Grayscale writes gray(x) to all three channels.
 * - Blur: a true Gaussian of std σ (output-crop pixels), g(t) = exp(−t²/2σ²) for |t| ≤ r =
 *   ⌈3σ⌉, normalised, edges replicated (the kernel forms g(t) by the recurrence
 *   g(t+1) = g(t)·e^{−(2t+1)/2σ²}: two exp per pixel instead of one per tap). PIL's GaussianBlur (what DINO calls) approximates the same
 *   variance with three box filters, so it is not exactly this kernel.
 * - Solarize: x ≥ 0.5 → 1 − x. PIL inverts 8-bit values ≥ 128; for a value already rounded to
 *   8 bits that is x·255 ≥ 127.5, i.e. x ≥ 0.5, which is the threshold continuous values need.
 * - Normalise: (x − mean_c) / std_c per channel.
 *
 * Invariants: no workgroup memory, no barriers; every crop is independent; the kernels read only
 * inside the crop's box, so images of any size share one buffer; pipelines are shape-free (shapes
 * and per-crop values live in the uniform block and the parameter buffer). Not differentiable (data
 * augmentation has no gradient).
 */
import { Uniforms } from '../engine/device.js';
import type { Engine } from '../engine/engine.js';
import type { Tensor } from '../engine/tensor.js';
import { grid1d, linearIndexWgsl } from './common.js';

const WG = 64;
/** Rows (horizontal pass) or columns (vertical pass) per resampling invocation: they share the filter weights. */
const RB = 4;

/** An 8-bit RGB image, row-major, 3 bytes per pixel (the shape of models/io/image.ts `RgbImage`). */
export interface ImageLike {
  width: number;
  height: number;
  data: Uint8Array;
}

/** The colour-jitter ops, numbered as torchvision's ColorJitter numbers them in `fn_idx`. */
export const COLOUR_OPS = { brightness: 0, contrast: 1, saturation: 2, hue: 3 } as const;
/** One colour-jitter op (0 brightness, 1 contrast, 2 saturation, 3 hue). */
export type ColourOp = 0 | 1 | 2 | 3;

/** ImageNet channel means (torchvision / DINO `Normalize`). */
export const IMAGENET_MEAN: readonly [number, number, number] = [0.485, 0.456, 0.406];
/** ImageNet channel standard deviations. */
export const IMAGENET_STD: readonly [number, number, number] = [0.229, 0.224, 0.225];

/** Per-channel normalisation (x − mean) / std. */
export interface Normalisation {
  mean: readonly [number, number, number];
  std: readonly [number, number, number];
}

/** ImageNet normalisation. */
export const IMAGENET_NORM: Normalisation = { mean: IMAGENET_MEAN, std: IMAGENET_STD };

/**
 * Everything one crop does, fully determined (drawn on the CPU). The crop is the S×S window at
 * (ox, oy) of the box resized to outW×outH; RandomResizedCrop uses outW = outH = S, ox = oy = 0;
 * the eval transform resizes the whole image and takes the centre window.
 */
export interface CropParams {
  /** Index of the source image in the batch. */
  image: number;
  /** The box in the source image: left, top, width, height (integers, inside the image). */
  box: readonly [number, number, number, number];
  /** The size the box is resized to (columns, rows). */
  outW: number;
  outH: number;
  /** Offset of the S×S window inside the resized box. */
  ox: number;
  oy: number;
  /** Mirror the window horizontally. */
  flip: boolean;
  /** Colour-jitter ops in the order applied (empty: no jitter). */
  ops: readonly ColourOp[];
  /** Factors of the ops (brightness, contrast, saturation multiply; hue is a shift in turns). */
  brightness: number;
  contrast: number;
  saturation: number;
  hue: number;
  /** Replace by the 3-channel grayscale image (after the jitter). */
  grayscale: boolean;
  /** Gaussian blur std in output pixels; 0 = no blur. */
  sigma: number;
  /** Solarize after the blur. */
  solarize: boolean;
}

/** A crop that only resizes `box` of `image` to S×S (no flip, no colour, no blur). */
export function plainCrop(image: number, box: readonly [number, number, number, number], S: number): CropParams {
  return {
    image, box, outW: S, outH: S, ox: 0, oy: 0, flip: false, ops: [],
    brightness: 1, contrast: 1, saturation: 1, hue: 0, grayscale: false, sigma: 0, solarize: false,
  };
}

/** Blur radius in taps for std σ: ⌈3σ⌉ (0 when σ = 0). Shared by the kernel parameters and the reference. */
export function blurRadius(sigma: number): number {
  return sigma > 0 ? Math.ceil(3 * Math.fround(sigma)) : 0;
}

// -------------------------------------------------------------------------------------------------
// WGSL

/** Words of one `Crop` struct in the parameter buffer. */
export const CROP_WORDS = 24;

const CROP_STRUCT = /* wgsl */ `
struct Crop {
  src: u32, srcW: u32, x0: u32, y0: u32,      // first pixel of the image, its width; box corner
  bw: u32, bh: u32, outW: u32, outH: u32,     // box size; size the box is resized to
  ox: u32, oy: u32, flip: u32, tRow: u32,     // window offset; mirror; first row in T
  ops: u32, gray: u32, blurR: u32, solar: u32, // ops: count in bits 0-2, op j in bits 4+2j..5+2j
  bright: f32, contrast: f32, sat: f32, hue: f32,
  sigma: f32, pad0: f32, pad1: f32, pad2: f32,
}`;

// n: invocations of the launch; K crops of S×S; maxBH: the tallest box; mean/std: normalisation;
// k0: the chunk's first row of the output.
const UNIFORMS = /* wgsl */ `
struct U { n: u32, K: u32, S: u32, maxBH: u32, m0: f32, m1: f32, m2: f32, s0: f32, s1: f32, s2: f32, k0: u32, }
@group(0) @binding(0) var<uniform> u: U;`;

const COMMON = /* wgsl */ `${UNIFORMS}
${CROP_STRUCT}
${linearIndexWgsl(WG)}
// PIL's bicubic filter, a = -0.5 (support 2), branch-free.
fn bicubic(x: f32) -> f32 {
  let a = -0.5;
  let t = abs(x);
  let inner = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0;
  let outer = (((t - 5.0) * t + 8.0) * t - 4.0) * a;
  return select(select(0.0, outer, t < 2.0), inner, t < 1.0);
}
// PIL's tap window of output coordinate xv when an axis of inSize is resized to outSize:
// (first tap, end tap, center, 1/filterscale).
struct Taps { lo: u32, hi: u32, center: f32, ss: f32, }
fn taps(xv: u32, inSize: u32, outSize: u32) -> Taps {
  let scale = f32(inSize) / f32(outSize);
  let fs = max(scale, 1.0);
  let support = 2.0 * fs;
  let center = (f32(xv) + 0.5) * scale;
  let lo = u32(max(floor(center - support + 0.5), 0.0));
  let hi = u32(min(floor(center + support + 0.5), f32(inSize)));
  return Taps(lo, hi, center, 1.0 / fs);
}
const LUMA = vec3<f32>(0.299, 0.587, 0.114);
fn gray(p: vec3<f32>) -> f32 { return dot(p, LUMA); }
// torchvision's adjust_hue: rgb -> hsv (hexcone), h <- (h + shift) mod 1, hsv -> rgb. Written with
// selects instead of branches (CPU Vulkan drivers evaluate both sides of divergent branches).
fn adjust_hue(p: vec3<f32>, shift: f32) -> vec3<f32> {
  let maxc = max(p.r, max(p.g, p.b));
  let minc = min(p.r, min(p.g, p.b));
  let eqc = maxc == minc;
  let cr = maxc - minc;
  let s = cr / select(maxc, 1.0, eqc);
  let rgbc = (vec3<f32>(maxc) - p) / select(cr, 1.0, eqc); // (rc, gc, bc)
  let hr = rgbc.b - rgbc.g;
  let hg = 2.0 + rgbc.r - rgbc.b;
  let hb = 4.0 + rgbc.g - rgbc.r;
  var h = select(select(hb, hg, maxc == p.g), hr, maxc == p.r);
  h = fract(h / 6.0 + 1.0);
  h = h + shift;
  h = h - floor(h);
  let v = maxc;
  let h6 = h * 6.0;
  let fi = floor(h6);
  let f = h6 - fi;
  let i = u32(fi) % 6u;
  let pp = clamp(v * (1.0 - s), 0.0, 1.0);
  let q = clamp(v * (1.0 - s * f), 0.0, 1.0);
  let t = clamp(v * (1.0 - s * (1.0 - f)), 0.0, 1.0);
  // sextant i: (v,t,p) (q,v,p) (p,v,t) (p,q,v) (t,p,v) (v,p,q)
  let r = select(select(select(v, t, i == 4u), pp, i == 2u || i == 3u), q, i == 1u);
  let g = select(select(select(pp, q, i == 3u), v, i == 1u || i == 2u), t, i == 0u);
  let b = select(select(select(q, v, i == 3u || i == 4u), t, i == 2u), pp, i < 2u);
  return vec3<f32>(select(r, v, i == 0u || i == 5u), g, b);
}
fn n_ops(c: Crop) -> u32 { return c.ops & 7u; }
fn op_at(c: Crop, j: u32) -> u32 { return (c.ops >> (4u + 2u * j)) & 3u; }
// Brightness, contrast or saturation (op 0, 1, 2) as one blend clamp(f·p + (1 − f)·base) with
// base = 0, the crop mean or gray(p); hue (op 3) is applied by the caller.
fn blend_op(p: vec3<f32>, op: u32, c: Crop, mean: f32) -> vec3<f32> {
  let f = select(select(c.sat, c.contrast, op == 1u), c.bright, op == 0u);
  let base = select(select(gray(p), mean, op == 1u), 0.0, op == 0u);
  return clamp(f * p + (1.0 - f) * base, vec3<f32>(0.0), vec3<f32>(1.0));
}
// Ops j in [j0, j1) of the crop's colour jitter. Hue occurs at most once, so it is applied outside
// the loop (one hue evaluation per pixel instead of one per op slot).
fn colour_ops(p0: vec3<f32>, c: Crop, j0: u32, j1: u32, mean: f32) -> vec3<f32> {
  var p = p0;
  var hue_at = j1;
  for (var j = j0; j < j1; j++) { if (op_at(c, j) == 3u) { hue_at = j; } }
  for (var j = j0; j < hue_at; j++) { p = blend_op(p, op_at(c, j), c, mean); }
  if (hue_at < j1) {
    p = adjust_hue(p, c.hue);
    for (var j = hue_at + 1u; j < j1; j++) { p = blend_op(p, op_at(c, j), c, mean); }
  }
  return p;
}
// Gaussian weights g(t) = exp(-t²/2σ²) by recurrence: g(t+1) = g(t)·e^{-(2t+1)a}, a = 1/2σ².
struct Gauss { g: f32, ratio: f32, q2: f32, }
fn gauss_start(c: Crop) -> Gauss {
  let a = 0.5 / (c.sigma * c.sigma);
  return Gauss(1.0, exp(-a), exp(-2.0 * a));
}
fn gauss_next(s: Gauss) -> Gauss { return Gauss(s.g * s.ratio, s.ratio * s.q2, s.q2); }`;

const MAIN = `@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= u.n) { return; }`;

/** The stages of the crop pipeline, in dispatch order (see the file header). */
export type AugmentStage = 'resample_h' | 'resample_v' | 'contrast_rows' | 'contrast_mean' | 'colour' | 'blur_h' | 'blur_v_out';

/**
 * WGSL of one stage. Bindings: the output first (read_write), then the crop parameters P, then
 * the stage's input(s). Pure function of the stage: shapes are uniforms.
 */
export function augmentSource(stage: AugmentStage): string {
  const P = '@group(0) @binding(2) var<storage, read> P: array<Crop>;';
  switch (stage) {
    case 'resample_h':
      // i over (crop k, block of RB box rows, column x): the RB rows share the column's weights.
      // Blocks past the crop's box height exit; rows past it in the last block are not stored.
      return /* wgsl */ `${COMMON}
@group(0) @binding(1) var<storage, read_write> T: array<vec4<f32>>;
${P}
@group(0) @binding(3) var<storage, read> IMG: array<u32>;
${MAIN}
  let S = u.S;
  let x = i % S;
  let rest = i / S;
  let nb = (u.maxBH + ${RB - 1}u) / ${RB}u;
  let r0 = (rest % nb) * ${RB}u;
  let k = rest / nb;
  let c = P[k];
  if (r0 >= c.bh) { return; }
  let xs = select(x, S - 1u - x, c.flip != 0u);
  let tp = taps(c.ox + xs, c.bw, c.outW);
  var row: array<u32, ${RB}>;
  var acc: array<vec3<f32>, ${RB}>;
  for (var j = 0u; j < ${RB}u; j++) {
    row[j] = c.src + (c.y0 + min(r0 + j, c.bh - 1u)) * c.srcW + c.x0;
    acc[j] = vec3<f32>(0.0);
  }
  var ww = 0.0;
  for (var t = tp.lo; t < tp.hi; t++) {
    let w = bicubic((f32(t) - tp.center + 0.5) * tp.ss);
    for (var j = 0u; j < ${RB}u; j++) { acc[j] += w * unpack4x8unorm(IMG[row[j] + t]).xyz; }
    ww += w;
  }
  for (var j = 0u; j < ${RB}u; j++) {
    if (r0 + j < c.bh) { T[(c.tRow + r0 + j) * S + x] = vec4<f32>(clamp(acc[j] / ww, vec3<f32>(0.0), vec3<f32>(1.0)), 0.0); }
  }
}`;
    case 'resample_v':
      // i over (crop k, row y, block of RB columns): the RB columns share the row's weights.
      return /* wgsl */ `${COMMON}
@group(0) @binding(1) var<storage, read_write> R: array<vec4<f32>>;
${P}
@group(0) @binding(3) var<storage, read> T: array<vec4<f32>>;
${MAIN}
  let S = u.S;
  let nbx = (S + ${RB - 1}u) / ${RB}u;
  let x0 = (i % nbx) * ${RB}u;
  let y = (i / nbx) % S;
  let k = i / (nbx * S);
  let c = P[k];
  let tp = taps(c.oy + y, c.bh, c.outH);
  var col: array<u32, ${RB}>;
  var acc: array<vec3<f32>, ${RB}>;
  for (var j = 0u; j < ${RB}u; j++) {
    col[j] = min(x0 + j, S - 1u);
    acc[j] = vec3<f32>(0.0);
  }
  var ww = 0.0;
  for (var t = tp.lo; t < tp.hi; t++) {
    let w = bicubic((f32(t) - tp.center + 0.5) * tp.ss);
    let base = (c.tRow + t) * S;
    for (var j = 0u; j < ${RB}u; j++) { acc[j] += w * T[base + col[j]].xyz; }
    ww += w;
  }
  let out = (k * S + y) * S;
  for (var j = 0u; j < ${RB}u; j++) {
    if (x0 + j < S) { R[out + x0 + j] = vec4<f32>(clamp(acc[j] / ww, vec3<f32>(0.0), vec3<f32>(1.0)), 0.0); }
  }
}`;
    case 'contrast_rows':
      // i over (crop k, row y): the row's sum of gray(x) after the ops that precede contrast.
      return /* wgsl */ `${COMMON}
@group(0) @binding(1) var<storage, read_write> ROWS: array<f32>;
${P}
@group(0) @binding(3) var<storage, read> R: array<vec4<f32>>;
${MAIN}
  let k = i / u.S;
  let c = P[k];
  let n = n_ops(c);
  var before = 0u;
  loop {
    if (before >= n || op_at(c, before) == 1u) { break; }
    before++;
  }
  var acc = 0.0;
  if (before < n) {
    let base = i * u.S;
    for (var x = 0u; x < u.S; x++) {
      var p = R[base + x].xyz;
      p = colour_ops(p, c, 0u, before, 0.0);
      acc += gray(p);
    }
  }
  ROWS[i] = acc;
}`;
    case 'contrast_mean':
      return /* wgsl */ `${COMMON}
@group(0) @binding(1) var<storage, read_write> MEAN: array<f32>;
${P}
@group(0) @binding(3) var<storage, read> ROWS: array<f32>;
${MAIN}
  _ = P[i].ops; // P is bound for every stage (the layout is derived from the shader)
  var acc = 0.0;
  for (var y = 0u; y < u.S; y++) { acc += ROWS[i * u.S + y]; }
  MEAN[i] = acc / f32(u.S * u.S);
}`;
    case 'colour':
      return /* wgsl */ `${COMMON}
@group(0) @binding(1) var<storage, read_write> C: array<vec4<f32>>;
${P}
@group(0) @binding(3) var<storage, read> R: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> MEAN: array<f32>;
${MAIN}
  let k = i / (u.S * u.S);
  let c = P[k];
  let mean = MEAN[k];
  var p = R[i].xyz;
  p = colour_ops(p, c, 0u, n_ops(c), mean);
  if (c.gray != 0u) { p = vec3<f32>(gray(p)); }
  C[i] = vec4<f32>(p, 0.0);
}`;
    case 'blur_h':
      return /* wgsl */ `${COMMON}
@group(0) @binding(1) var<storage, read_write> OUT: array<vec4<f32>>;
${P}
@group(0) @binding(3) var<storage, read> IN: array<vec4<f32>>;
${MAIN}
  let c = P[i / (u.S * u.S)];
  let r = i32(c.blurR);
  if (r == 0) { OUT[i] = IN[i]; return; }
  let x = i32(i % u.S);
  let base = i - u32(x);
  let last = i32(u.S) - 1;
  var acc = IN[i];
  var ws = 1.0;
  var g = gauss_start(c);
  for (var t = 1; t <= r; t++) {
    g = gauss_next(g);
    acc += g.g * (IN[base + u32(clamp(x - t, 0, last))] + IN[base + u32(clamp(x + t, 0, last))]);
    ws += 2.0 * g.g;
  }
  OUT[i] = acc / ws;
}`;
    case 'blur_v_out':
      return /* wgsl */ `${COMMON}
@group(0) @binding(1) var<storage, read_write> Y: array<f32>;
${P}
@group(0) @binding(3) var<storage, read> IN: array<vec4<f32>>;
${MAIN}
  let S = u.S;
  let x = i % S;
  let y = i32((i / S) % S);
  let k = i / (S * S);
  let c = P[k];
  let r = i32(c.blurR);
  let plane = k * S * S;
  var p: vec3<f32>;
  if (r == 0) {
    p = IN[i].xyz;
  } else {
    let last = i32(S) - 1;
    var acc = IN[i].xyz;
    var ws = 1.0;
    var g = gauss_start(c);
    for (var t = 1; t <= r; t++) {
      g = gauss_next(g);
      acc += g.g * (IN[plane + u32(clamp(y - t, 0, last)) * S + x].xyz + IN[plane + u32(clamp(y + t, 0, last)) * S + x].xyz);
      ws += 2.0 * g.g;
    }
    p = acc / ws;
  }
  if (c.solar != 0u) { p = select(p, 1.0 - p, p >= vec3<f32>(0.5)); }
  let o = (u.k0 + k) * 3u * S * S + u32(y) * S + x;
  Y[o] = (p.r - u.m0) / u.s0;
  Y[o + S * S] = (p.g - u.m1) / u.s1;
  Y[o + 2u * S * S] = (p.b - u.m2) / u.s2;
}`;
  }
}

// -------------------------------------------------------------------------------------------------
// Upload and dispatch

/** A batch of images on the GPU: one u32 (RGBX) per pixel, images back to back. */
export interface PackedImages {
  /** The pixel buffer (a tensor of as many 4-byte elements as pixels; the bits are u32). */
  pixels: Tensor;
  /** First pixel of each image. */
  offsets: number[];
  widths: number[];
  heights: number[];
}

function checkImage(img: ImageLike, i: number): void {
  const { width: w, height: h } = img;
  if (!Number.isInteger(w) || !Number.isInteger(h) || w < 1 || h < 1) {
    throw new RangeError(`augment: image ${i} has invalid size ${w}x${h}`);
  }
  if (img.data.length !== w * h * 3) {
    throw new RangeError(`augment: image ${i} (${w}x${h}) needs ${w * h * 3} RGB bytes, got ${img.data.length}`);
  }
}

/** Packs RGB images into RGBX u32 words (little-endian: R is the low byte, as unpack4x8unorm reads it). */
export function packImages(images: readonly ImageLike[]): { words: Uint32Array; offsets: number[] } {
  const offsets: number[] = [];
  let total = 0;
  images.forEach((img, i) => {
    checkImage(img, i);
    offsets.push(total);
    total += img.width * img.height;
  });
  const words = new Uint32Array(Math.max(total, 1));
  images.forEach((img, i) => {
    const d = img.data;
    const o = offsets[i];
    const n = img.width * img.height;
    for (let p = 0; p < n; p++) words[o + p] = d[3 * p] | (d[3 * p + 1] << 8) | (d[3 * p + 2] << 16);
  });
  return { words, offsets };
}

/** Uploads a batch of RGB images into one GPU buffer (dispose `pixels` when done). */
export function uploadImages(engine: Engine, images: readonly ImageLike[]): PackedImages {
  const { words, offsets } = packImages(images);
  const limit = engine.device.limits.maxStorageBufferBindingSize;
  if (words.byteLength > limit) {
    throw new RangeError(`augment: the batch has ${words.length} pixels (${words.byteLength} bytes), over the device's ${limit}-byte storage binding limit; use smaller batches`);
  }
  const pixels = engine.empty([words.length], { label: 'augment-pixels' });
  engine.device.write(pixels.buffer, 0, words);
  return { pixels, offsets, widths: images.map((i) => i.width), heights: images.map((i) => i.height) };
}

function checkCrop(c: CropParams, packed: PackedImages, S: number, k: number): void {
  const W = packed.widths[c.image];
  const H = packed.heights[c.image];
  if (W === undefined) throw new RangeError(`augment: crop ${k} refers to image ${c.image}, the batch has ${packed.widths.length}`);
  const [x0, y0, bw, bh] = c.box;
  const ints = [x0, y0, bw, bh, c.outW, c.outH, c.ox, c.oy];
  if (!ints.every((v) => Number.isInteger(v) && v >= 0) || bw < 1 || bh < 1 || x0 + bw > W || y0 + bh > H) {
    throw new RangeError(`augment: crop ${k} box [${c.box.join(', ')}] is not inside image ${c.image} (${W}x${H})`);
  }
  if (c.ox + S > c.outW || c.oy + S > c.outH) {
    throw new RangeError(`augment: crop ${k} window ${S}x${S} at (${c.ox}, ${c.oy}) exceeds the resized size ${c.outW}x${c.outH}`);
  }
  if (c.ops.length > 4) throw new RangeError(`augment: crop ${k} has ${c.ops.length} colour ops (at most 4)`);
  if (!(c.sigma >= 0)) throw new RangeError(`augment: crop ${k} blur sigma ${c.sigma} must be >= 0`);
}

/**
 * The parameter buffer of K crops (CROP_WORDS words each) and the rows of the horizontal-pass
 * intermediate (Σ box heights) and tallest box.
 */
export function encodeCrops(crops: readonly CropParams[], packed: PackedImages, S: number): { bytes: ArrayBuffer; tRows: number; maxBH: number } {
  const bytes = new ArrayBuffer(Math.max(crops.length, 1) * CROP_WORDS * 4);
  const v = new DataView(bytes);
  let tRows = 0;
  let maxBH = 0;
  crops.forEach((c, k) => {
    checkCrop(c, packed, S, k);
    const [x0, y0, bw, bh] = c.box;
    const opsWord = c.ops.reduce((w, op, j) => w | ((op & 3) << (4 + 2 * j)), c.ops.length);
    const u32s = [packed.offsets[c.image], packed.widths[c.image], x0, y0, bw, bh, c.outW, c.outH,
      c.ox, c.oy, c.flip ? 1 : 0, tRows, opsWord, c.grayscale ? 1 : 0, blurRadius(c.sigma), c.solarize ? 1 : 0];
    const f32s = [c.brightness, c.contrast, c.saturation, c.hue, c.sigma, 0, 0, 0];
    const base = k * CROP_WORDS * 4;
    u32s.forEach((x, j) => v.setUint32(base + 4 * j, x, true));
    f32s.forEach((x, j) => v.setFloat32(base + 4 * (16 + j), x, true));
    tRows += bh;
    maxBH = Math.max(maxBH, bh);
  });
  return { bytes, tRows, maxBH };
}

/** Options of `cropBatchRaw`. */
export interface CropBatchOptions {
  /** Normalisation of the output (ImageNet). */
  norm?: Normalisation;
  /**
   * Largest intermediate buffer in bytes (default: the device's storage binding limit). Crops run
   * in chunks whose intermediates fit; a smaller value bounds the temporary memory.
   */
  maxChunkBytes?: number;
}

/**
 * Runs the crop pipeline for K crops of one size S over uploaded images: returns a new tensor
 * [K, 3, S, S] (f32, normalised, NCHW), row k from `crops[k]`. Crops are processed in chunks whose
 * intermediates (the horizontal pass: Σ box heights × S pixels; the S×S images: 16 bytes per
 * pixel) fit `maxChunkBytes`. Temporaries are released before it returns; the work is recorded,
 * not awaited.
 */
export function cropBatchRaw(engine: Engine, packed: PackedImages, crops: readonly CropParams[], S: number, opts: CropBatchOptions = {}): Tensor {
  if (!Number.isInteger(S) || S < 1) throw new RangeError(`augment: crop size must be a positive integer, got ${S}`);
  const K = crops.length;
  const limit = engine.device.limits.maxStorageBufferBindingSize;
  if (K * 3 * S * S * 4 > limit) {
    throw new RangeError(`augment: ${K} crops of ${S}x${S} (${K * 3 * S * S * 4} bytes) exceed the device's ${limit}-byte storage binding limit; use smaller batches`);
  }
  crops.forEach((c, k) => checkCrop(c, packed, S, k)); // before anything is allocated
  const out = engine.empty([K, 3, S, S], { label: 'augment-crops' });
  const maxBytes = Math.min(opts.maxChunkBytes ?? limit, limit);
  let start = 0;
  while (start < K) {
    // The longest run of crops from `start` whose intermediates fit.
    let end = start;
    let rows = 0;
    while (end < K && (end + 1 - start) * S * S * 16 <= maxBytes && (rows + crops[end].box[3]) * S * 16 <= maxBytes) rows += crops[end++].box[3];
    if (end === start) {
      out.dispose();
      throw new RangeError(`augment: crop ${start} (box height ${crops[start].box[3]}, size ${S}) needs more than ${maxBytes} bytes of intermediates`);
    }
    cropChunk(engine, packed, crops.slice(start, end), S, start, out, opts.norm ?? IMAGENET_NORM);
    start = end;
  }
  return out;
}

/** Records the 7 stages for one chunk of crops, writing rows k0.. of `out`. */
function cropChunk(engine: Engine, packed: PackedImages, crops: readonly CropParams[], S: number, k0: number, out: Tensor, norm: Normalisation): void {
  const K = crops.length;
  const dev = engine.device;
  const { bytes, tRows, maxBH } = encodeCrops(crops, packed, S);
  const temps: Tensor[] = [];
  const temp = (n: number, label: string): Tensor => {
    const t = engine.empty([n], { label });
    temps.push(t);
    return t;
  };
  try {
    const params = temp(bytes.byteLength / 4, 'augment-params');
    dev.write(params.buffer, 0, new Uint8Array(bytes));
    const T = temp(tRows * S * 4, 'augment-resample-h');
    const R = temp(K * S * S * 4, 'augment-rgb');
    const C = temp(K * S * S * 4, 'augment-colour');
    const rows = temp(K * S, 'augment-contrast-rows');
    const mean = temp(K, 'augment-contrast-mean');
    const run = (stage: AugmentStage, n: number, buffers: Tensor[]) => {
      const uniforms = new Uniforms(16)
        .u32(n, K, S, maxBH)
        .f32(...norm.mean, ...norm.std)
        .u32(k0)
        .bytes();
      dev.dispatch(dev.kernel(`augment_${stage}`, augmentSource(stage)), {
        uniforms,
        buffers: [buffers[0].buffer, params.buffer, ...buffers.slice(1).map((b) => b.buffer)],
        workgroups: grid1d(n, WG),
      });
    };
    const pixels = K * S * S;
    run('resample_h', K * Math.ceil(maxBH / RB) * S, [T, packed.pixels]);
    run('resample_v', K * S * Math.ceil(S / RB), [R, T]);
    if (crops.some((c) => c.ops.includes(1))) {
      run('contrast_rows', K * S, [rows, R]);
      run('contrast_mean', K, [mean, rows]);
    }
    if (crops.some((c) => c.ops.length > 0 || c.grayscale)) {
      run('colour', pixels, [C, R, mean]);
    } else {
      dev.copy(R.buffer, 0, C.buffer, 0, pixels * 16);
    }
    run('blur_h', pixels, [R, C]);
    run('blur_v_out', pixels, [out, R]);
  } finally {
    for (const t of temps) t.dispose();
  }
}

// -------------------------------------------------------------------------------------------------
// Float64 references (the same math, for tests)

/** PIL's bicubic filter (a = −0.5). */
export function bicubicRef(x: number): number {
  const a = -0.5;
  const t = Math.abs(x);
  if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
  if (t < 2) return (((t - 5) * t + 8) * t - 4) * a;
  return 0;
}

/** PIL's resampling weights of output coordinate xv (axis of inSize resized to outSize): first tap and normalised weights. */
export function resampleTapsRef(xv: number, inSize: number, outSize: number): { lo: number; w: number[] } {
  const scale = inSize / outSize;
  const fs = Math.max(scale, 1);
  const support = 2 * fs;
  const center = (xv + 0.5) * scale;
  const lo = Math.max(Math.floor(center - support + 0.5), 0);
  const hi = Math.min(Math.floor(center + support + 0.5), inSize);
  const w: number[] = [];
  for (let t = lo; t < hi; t++) w.push(bicubicRef((t - center + 0.5) / fs));
  const sum = w.reduce((s, x) => s + x, 0);
  return { lo, w: w.map((x) => (sum !== 0 ? x / sum : x)) };
}

const clamp01 = (x: number) => Math.min(Math.max(x, 0), 1);

/** Crop + bicubic resize + flip of one crop: S×S×3 values (HWC) in [0, 1]. */
export function resampleRef(img: ImageLike, c: CropParams, S: number): Float64Array {
  const [x0, y0, bw, bh] = c.box;
  // Horizontal pass over every row of the box: T[r][x][ch].
  const T = new Float64Array(bh * S * 3);
  for (let x = 0; x < S; x++) {
    const xs = c.flip ? S - 1 - x : x;
    const { lo, w } = resampleTapsRef(c.ox + xs, bw, c.outW);
    for (let r = 0; r < bh; r++) {
      for (let ch = 0; ch < 3; ch++) {
        let acc = 0;
        for (let t = 0; t < w.length; t++) acc += w[t] * img.data[((y0 + r) * img.width + x0 + lo + t) * 3 + ch] / 255;
        T[(r * S + x) * 3 + ch] = clamp01(acc);
      }
    }
  }
  const out = new Float64Array(S * S * 3);
  for (let y = 0; y < S; y++) {
    const { lo, w } = resampleTapsRef(c.oy + y, bh, c.outH);
    for (let x = 0; x < S; x++) {
      for (let ch = 0; ch < 3; ch++) {
        let acc = 0;
        for (let t = 0; t < w.length; t++) acc += w[t] * T[((lo + t) * S + x) * 3 + ch];
        out[(y * S + x) * 3 + ch] = clamp01(acc);
      }
    }
  }
  return out;
}

/** ITU-R 601-2 luma of pixel p of an HWC array. */
export function grayRef(px: Float64Array, p: number): number {
  return 0.299 * px[3 * p] + 0.587 * px[3 * p + 1] + 0.114 * px[3 * p + 2];
}

/** clamp(f·x): torchvision's adjust_brightness (blend with black). */
export function brightnessRef(px: Float64Array, f: number): Float64Array {
  return px.map((x) => clamp01(f * x));
}

/** clamp(f·x + (1−f)·m), m = the mean of the grayscale image: torchvision's adjust_contrast. */
export function contrastRef(px: Float64Array, f: number): Float64Array {
  const n = px.length / 3;
  let m = 0;
  for (let p = 0; p < n; p++) m += grayRef(px, p);
  m /= n;
  return px.map((x) => clamp01(f * x + (1 - f) * m));
}

/** clamp(f·x + (1−f)·gray(x)): torchvision's adjust_saturation. */
export function saturationRef(px: Float64Array, f: number): Float64Array {
  return px.map((x, i) => clamp01(f * x + (1 - f) * grayRef(px, Math.floor(i / 3))));
}

/** One pixel through torchvision's adjust_hue (rgb → hsv, shift, hsv → rgb). */
export function huePixelRef(r: number, g: number, b: number, shift: number): [number, number, number] {
  const maxc = Math.max(r, g, b);
  const minc = Math.min(r, g, b);
  const eqc = maxc === minc;
  const cr = maxc - minc;
  const s = cr / (eqc ? 1 : maxc);
  const crd = eqc ? 1 : cr;
  const rc = (maxc - r) / crd;
  const gc = (maxc - g) / crd;
  const bc = (maxc - b) / crd;
  let h = maxc === r ? bc - gc : maxc === g ? 2 + rc - bc : 4 + gc - rc;
  h = (h / 6 + 1) % 1;
  h = h + shift;
  h = h - Math.floor(h);
  const v = maxc;
  const fi = Math.floor(h * 6);
  const f = h * 6 - fi;
  const i = fi % 6;
  const p = clamp01(v * (1 - s));
  const q = clamp01(v * (1 - s * f));
  const t = clamp01(v * (1 - s * (1 - f)));
  return ([[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]] as [number, number, number][])[i];
}

/** torchvision's adjust_hue over an HWC array. */
export function hueRef(px: Float64Array, shift: number): Float64Array {
  const out = new Float64Array(px.length);
  for (let p = 0; p < px.length / 3; p++) out.set(huePixelRef(px[3 * p], px[3 * p + 1], px[3 * p + 2], shift), 3 * p);
  return out;
}

/** 3-channel grayscale (ITU-R 601-2 luma). */
export function grayscaleRef(px: Float64Array): Float64Array {
  return px.map((_, i) => grayRef(px, Math.floor(i / 3)));
}

/** The crop's colour jitter (ops in order, factors rounded to f32 as the kernel sees them) then grayscale. */
export function colourRef(px: Float64Array, c: CropParams): Float64Array {
  let y = px;
  for (const op of c.ops) {
    if (op === 0) y = brightnessRef(y, Math.fround(c.brightness));
    else if (op === 1) y = contrastRef(y, Math.fround(c.contrast));
    else if (op === 2) y = saturationRef(y, Math.fround(c.saturation));
    else y = hueRef(y, Math.fround(c.hue));
  }
  return c.grayscale ? grayscaleRef(y) : y;
}

/** Separable Gaussian blur of an S×S HWC array (radius ⌈3σ⌉, normalised weights, edges replicated). */
export function blurRef(px: Float64Array, S: number, sigma: number): Float64Array {
  const r = blurRadius(sigma);
  if (r === 0) return px.slice();
  const s = Math.fround(sigma);
  const g = Array.from({ length: 2 * r + 1 }, (_, j) => Math.exp(-((j - r) ** 2) / (2 * s * s)));
  const gs = g.reduce((a, b) => a + b, 0);
  const pass = (src: Float64Array, horizontal: boolean) => {
    const dst = new Float64Array(src.length);
    for (let y = 0; y < S; y++) {
      for (let x = 0; x < S; x++) {
        for (let ch = 0; ch < 3; ch++) {
          let acc = 0;
          for (let t = -r; t <= r; t++) {
            const xx = horizontal ? Math.min(Math.max(x + t, 0), S - 1) : x;
            const yy = horizontal ? y : Math.min(Math.max(y + t, 0), S - 1);
            acc += g[t + r] * src[(yy * S + xx) * 3 + ch];
          }
          dst[(y * S + x) * 3 + ch] = acc / gs;
        }
      }
    }
    return dst;
  };
  return pass(pass(px, true), false);
}

/** Solarize: x ≥ 0.5 → 1 − x. */
export function solarizeRef(px: Float64Array): Float64Array {
  return px.map((x) => (x >= 0.5 ? 1 - x : x));
}

/** (x − mean)/std per channel, HWC [S, S, 3] → CHW [3, S, S]. */
export function normaliseRef(px: Float64Array, S: number, norm: Normalisation = IMAGENET_NORM): Float64Array {
  const out = new Float64Array(3 * S * S);
  for (let p = 0; p < S * S; p++) {
    for (let ch = 0; ch < 3; ch++) out[ch * S * S + p] = (px[3 * p + ch] - norm.mean[ch]) / norm.std[ch];
  }
  return out;
}

/** The crop before solarize and normalise: resample + flip, colour, blur (HWC [S, S, 3] in [0, 1]). */
export function cropBeforeSolarizeRef(img: ImageLike, c: CropParams, S: number): Float64Array {
  return blurRef(colourRef(resampleRef(img, c, S), c), S, c.sigma);
}

/** One whole crop, as `cropBatchRaw` computes it: CHW [3, S, S], normalised. */
export function cropRef(img: ImageLike, c: CropParams, S: number, norm: Normalisation = IMAGENET_NORM): Float64Array {
  const x = cropBeforeSolarizeRef(img, c, S);
  return normaliseRef(c.solarize ? solarizeRef(x) : x, S, norm);
}
