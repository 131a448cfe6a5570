/**
 * 2-D convolution (NCHW, PyTorch weight layout, groups = 1) and 2-D max pooling: forward and
 * backward WGSL kernels, launch geometry, and float64 references of the same math. The autograd
 * glue is engine/ops/conv2d.ts; max pooling's backward reads the argmax indices its forward saved.
 *
 * Shapes and math
 *   x [B, Cin, H, W], w [Cout, Cin, kh, kw], bias [Cout], stride (sh, sw), zero padding (ph, pw)
 *   Ho = ⌊(H + 2ph − kh) / sh⌋ + 1,  Wo = ⌊(W + 2pw − kw) / sw⌋ + 1
 *   y[b, co, oy, ox] = bias[co] + Σ_{ci, ky, kx} w[co, ci, ky, kx] · x[b, ci, oy·sh − ph + ky, ox·sw − pw + kx]
 *   (x outside [0, H) × [0, W) reads as 0: the zero padding is never materialised.)
 * Derivatives (g = ∂L/∂y)
 *   dx[b, ci, iy, ix] = Σ_{co, ky, kx : oy = (iy + ph − ky)/sh ∈ ℕ ∩ [0, Ho), ox likewise} g[b, co, oy, ox] · w[co, ci, ky, kx]
 *   dw[co, ci, ky, kx] = Σ_{b, oy, ox} g[b, co, oy, ox] · x[b, ci, oy·sh − ph + ky, ox·sw − pw + kx]
 *   dbias[co]          = Σ_{b, oy, ox} g[b, co, oy, ox]
 * Max pooling: y[b, c, oy, ox] = max over the window (padding = −∞);
 *   dx[b, c, e] = Σ_{windows o of plane (b, c) whose argmax is e} g[b, c, o]
 *
 * Kernels (all barrier-free, no atomics, no workgroup memory: what CPU Vulkan runs fastest, and
 * correct on GPUs too, so both variant families use them)
 * - forward: an implicit GEMM. One invocation computes FWD_TC output channels × 4 consecutive
 *   output pixels of one image (a vec4 accumulator per channel), looping over K = Cin·kh·kw.
 *   Neighbouring invocations take neighbouring pixel blocks, so the weight loads are the same
 *   address across a SIMD group. Without padding the window never leaves the image (that follows
 *   from the Ho formula), so that variant has no bounds checks at all.
 * - dx: a gather (transposed convolution), no atomics. One invocation computes 4 or 8 input
 *   channels × 4 input pixels of one row that share a column phase (ix = c + m·sw, 4 consecutive
 *   m): they see the same taps from 4 consecutive output columns, so each (tap, co) step is 8
 *   weight loads + 4 contiguous gradient loads for 32 FMAs. Only taps with ky ≡ iy + ph (mod sh) (kx likewise)
 *   are visited, so stride-s layers do 1/s² of the naive loop (a patch embedding, stride =
 *   kernel, visits exactly one tap per pixel).
 * - dw: one invocation computes a DW_TC (Cout) × 4 (K) block of dw, summing over B·Ho·Wo with
 *   incrementally advanced (b, oy, ox) (no divisions in the loop). When that gives too few
 *   invocations (a small weight, a large image: the ResNet stem) the sum is split into S chunks
 *   written to [S, Cout, K] and reduced by the reduction kernel afterwards.
 * - dbias: two axis reductions of g (over Ho·Wo, then over B).
 * - max pool: one invocation per output element; the forward also writes the plane-relative
 *   index iy·W + ix of the maximum (as an f32 integer, exact below 2²⁴), and the backward is a
 *   gather: each input element sums g over the windows that contain it and whose saved argmax is
 *   that element. Ties go to the first maximum in row-major window order.
 *   Padding counts as −∞ (never selected); padding ≤ kernel/2 as in PyTorch, so every window
 *   holds at least one real element.
 *
 * Invariants
 * - Shapes, strides and paddings are uniforms; the sources depend only on the compile-time
 *   constants (channel block, padded or not, bias or not), so there are a handful of pipelines.
 * - Accumulation is in f32 in a fixed order (no atomics): results are deterministic.
 * - Inputs may be views: they are made contiguous first (`dense`), as is the upstream gradient.
 */
import { Uniforms } from '../engine/device.js';
import { fmt, type Shape, ShapeError } from '../engine/shape.js';
import type { Tensor } from '../engine/tensor.js';
import { bind, grid1d, linearIndexWgsl } from './common.js';
import { dense, denseAligned, release } from './elementwise.js';
import { reduceAxisRaw } from './reduce.js';

/** Options of the conv2d op (engine/ops/conv2d.ts); a number applies to both axes. */
export interface Conv2dOptions {
  stride?: number | [number, number];
  padding?: number | [number, number];
}

const WG = 64;
/** Output channels per forward invocation (each a vec4 of 4 pixels): 8 → 32 accumulators (measured: bench/lab/kernel-notes.md). */
const FWD_TC = 8;
/** Input channels per dx invocation (a multiple of 4), times 4 pixels: 8, or 4 when Cin < 8 (8 would waste work at Cin = 3). */
const dxChannels = (Cin: number): number => (Cin >= 8 ? 8 : 4);
/** Output channels per dw invocation (each a vec4 over 4 consecutive k = (ci, ky, kx)) (measured: bench/lab/kernel-notes.md). */
const DW_TC = 8;
/** dw: split the B·Ho·Wo sum when fewer invocations than this would run ... */
const DW_TARGET_INVOCATIONS = 16384;
/** ... but never into chunks shorter than this (a chunk must amortise its partial-sum write). */
const DW_MIN_CHUNK = 256;
/** Argmax indices are stored as f32 integers: exact below 2²⁴. */
const MAX_PLANE = 1 << 24;

// -------------------------------------------------------------------------------------------------
// Geometry

/** Everything the kernels and references need about one convolution or pooling window. */
export interface ConvGeometry {
  B: number;
  Cin: number;
  H: number;
  W: number;
  /** Output channels (= Cin for pooling). */
  Cout: number;
  kh: number;
  kw: number;
  sh: number;
  sw: number;
  ph: number;
  pw: number;
  Ho: number;
  Wo: number;
}

function pair(v: number | readonly [number, number] | undefined, dflt: number, what: string, op: string, min: number): [number, number] {
  const p: [number, number] = v === undefined ? [dflt, dflt] : typeof v === 'number' ? [v, v] : [v[0], v[1]];
  if (p.length !== 2 || !p.every((d) => Number.isInteger(d) && d >= min)) {
    throw new ShapeError(`${op}: ${what} must be an integer ≥ ${min} or a pair of them, got ${JSON.stringify(v)}`);
  }
  return p;
}

/** Output size of one spatial axis; throws when the kernel does not fit the padded input. */
function outSize(n: number, k: number, s: number, p: number, axis: string, op: string, xShape: Shape): number {
  if (n + 2 * p < k) {
    throw new ShapeError(
      `${op}: kernel ${axis} ${k} is larger than the padded input ${axis} ${n} + 2·${p} = ${n + 2 * p} (input ${fmt(xShape)})`,
    );
  }
  return Math.floor((n + 2 * p - k) / s) + 1;
}

/** Validates a convolution's shapes and options and returns its geometry. */
export function conv2dGeometry(xShape: Shape, wShape: Shape, opts: Conv2dOptions = {}): ConvGeometry {
  const op = 'conv2d';
  if (xShape.length !== 4) throw new ShapeError(`${op}: input must be [B, Cin, H, W] (NCHW), got ${fmt(xShape)}`);
  if (wShape.length !== 4) throw new ShapeError(`${op}: weight must be [Cout, Cin, kh, kw], got ${fmt(wShape)}`);
  const [B, Cin, H, W] = xShape;
  const [Cout, wCin, kh, kw] = wShape;
  if (wCin !== Cin) {
    throw new ShapeError(
      `${op}: input ${fmt(xShape)} has ${Cin} channels but weight ${fmt(wShape)} expects ${wCin} ` +
        `(weight layout [Cout, Cin, kh, kw]; only groups = 1 is supported)`,
    );
  }
  if (kh < 1 || kw < 1) throw new ShapeError(`${op}: empty kernel in weight ${fmt(wShape)}`);
  const [sh, sw] = pair(opts.stride, 1, 'stride', op, 1);
  const [ph, pw] = pair(opts.padding, 0, 'padding', op, 0);
  const Ho = outSize(H, kh, sh, ph, 'height', op, xShape);
  const Wo = outSize(W, kw, sw, pw, 'width', op, xShape);
  return { B, Cin, H, W, Cout, kh, kw, sh, sw, ph, pw, Ho, Wo };
}

/** The uniform block shared by the convolution kernels (first 13 fields, in this order). */
function geometryUniforms(g: ConvGeometry): Uniforms {
  return new Uniforms(24).u32(g.B, g.Cin, g.H, g.W, g.Cout, g.Ho, g.Wo, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw);
}
const GEOMETRY_FIELDS = `B: u32, Cin: u32, H: u32, W: u32, Cout: u32, Ho: u32, Wo: u32,
  kh: u32, kw: u32, sh: u32, sw: u32, ph: u32, pw: u32,`;

const padded = (g: ConvGeometry): boolean => g.ph > 0 || g.pw > 0;

// -------------------------------------------------------------------------------------------------
// WGSL sources (pure functions of their compile-time constants)

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
const lanes = (f: (j: number) => string): string => range(4).map(f).join('\n');

/**
 * Forward: y = conv(x, w) + bias. Invocation = (pixel block of 4, channel block of `tc`, image),
 * pixel blocks fastest. `isPadded` adds the bounds checks of zero padding.
 */
export function conv2dForwardSource(tc: number, isPadded: boolean, hasBias: boolean): string {
  const xload = (j: number): string =>
    isPadded
      ? `let ix${j} = ix0_${j} + i32(kx); let ok${j} = rok${j} && u32(ix${j}) < u.W;
        let x${j} = select(0.0, X[select(0u, u32(rb${j} + ix${j}), ok${j})], ok${j});`
      : `let x${j} = X[u32(rb${j} + ix0_${j} + i32(kx))];`;
  return /* wgsl */ `
struct U { ${GEOMETRY_FIELDS} pixBlocks: u32, coBlocks: u32, n: u32, }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> Y: array<f32>;
@group(0) @binding(2) var<storage, read> X: array<f32>;
@group(0) @binding(3) var<storage, read> Wt: array<f32>;
${hasBias ? '@group(0) @binding(4) var<storage, read> Bias: array<f32>;' : ''}
${linearIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= u.n) { return; }
  let pb = i % u.pixBlocks;
  let r = i / u.pixBlocks;
  let co0 = (r % u.coBlocks) * ${tc}u;
  let b = r / u.coBlocks;
  let HoWo = u.Ho * u.Wo;
  let K = u.Cin * u.kh * u.kw;
  let p0 = pb * 4u;
  // Top-left input corner of each pixel's window (clamped pixels past the end are computed, not written).
${lanes(
  (j) => `  let q${j} = min(p0 + ${j}u, HoWo - 1u);
  let iy0_${j} = i32((q${j} / u.Wo) * u.sh) - i32(u.ph);
  let ix0_${j} = i32((q${j} % u.Wo) * u.sw) - i32(u.pw);`,
)}
${range(tc)
  .map((c) => `  let wr${c} = min(co0 + ${c}u, u.Cout - 1u) * K;\n  var acc${c} = vec4<f32>(0.0);`)
  .join('\n')}
  var k = 0u;
  for (var ci = 0u; ci < u.Cin; ci++) {
    let plane = i32((b * u.Cin + ci) * u.H * u.W);
    for (var ky = 0u; ky < u.kh; ky++) {
${lanes(
  (j) => `      let iy${j} = iy0_${j} + i32(ky);
      let rb${j} = plane + iy${j} * i32(u.W);${isPadded ? `\n      let rok${j} = u32(iy${j}) < u.H;` : ''}`,
)}
      for (var kx = 0u; kx < u.kw; kx++) {
${lanes((j) => `        ${xload(j)}`)}
        let xv = vec4<f32>(x0, x1, x2, x3);
${range(tc)
  .map((c) => `        acc${c} = fma(vec4<f32>(Wt[wr${c} + k]), xv, acc${c});`)
  .join('\n')}
        k++;
      }
    }
  }
${range(tc)
  .map(
    (c) => `  if (co0 + ${c}u < u.Cout) {
    let bv = ${hasBias ? `Bias[co0 + ${c}u]` : '0.0'};
    let base = (b * u.Cout + co0 + ${c}u) * HoWo + p0;
${lanes((j) => `    if (p0 + ${j}u < HoWo) { Y[base + ${j}u] = acc${c}[${j}] + bv; }`)}
  }`,
  )
  .join('\n')}
}`;
}

/**
 * dx (transposed convolution as a gather). Invocation = (4 input pixels of one row that share a
 * column phase: ix = c + m·sw for 4 consecutive m, block of `tci` input channels (a multiple of
 * 4), image); the pixels are fastest. Pixels of one phase see the same taps, from 4 consecutive
 * output columns, so each (tap, co) step loads `tci` weights and 4 contiguous upstream gradients
 * for 4·tci FMAs. Only taps
 * whose output position is an integer are visited (ky ≡ iy + ph mod sh, kx likewise).
 */
export function conv2dBackwardInputSource(tci: number): string {
  const quads = range(tci / 4);
  return /* wgsl */ `
struct U { ${GEOMETRY_FIELDS} ciBlocks: u32, mBlocks: u32, n: u32, }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> DX: array<f32>;
@group(0) @binding(2) var<storage, read> DY: array<f32>;
@group(0) @binding(3) var<storage, read> Wt: array<f32>;
${linearIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= u.n) { return; }
  let mb = i % u.mBlocks;
  var r = i / u.mBlocks;
  let c = r % u.sw;
  r = r / u.sw;
  let iy = r % u.H;
  r = r / u.H;
  let ci0 = (r % u.ciBlocks) * ${tci}u;
  let b = r / u.ciBlocks;
  let ixb = c + mb * 4u * u.sw;
  if (ixb >= u.W) { return; }
  let HoWo = u.Ho * u.Wo;
  let khkw = u.kh * u.kw;
  let cs = u.Cin * khkw; // weight stride between output channels
${range(tci).map((t) => `  let w${t} = min(ci0 + ${t}u, u.Cin - 1u) * khkw;`).join('\n')}
  // Padded coordinates: tap (ky, kx) reaches pixel j from output (oy, ox0 + j), oy = (ty − ky) / sh.
  let ty = iy + u.ph;
  let tx0 = ixb + u.pw;
  let txEnd = tx0 + 3u * u.sw; // the last pixel's column (taps beyond it reach no pixel)
  let gimg = b * u.Cout * HoWo;
${lanes((j) => quads.map((q) => `  var acc${j}_${q} = vec4<f32>(0.0);`).join('\n'))}
  for (var ky = ty % u.sh; ky < u.kh && ky <= ty; ky += u.sh) {
    let oy = (ty - ky) / u.sh;
    if (oy >= u.Ho) { continue; }
    for (var kx = tx0 % u.sw; kx < u.kw && kx <= txEnd; kx += u.sw) {
      // Exact division: tx0 − kx ≡ 0 (mod sw); negative for pixels this tap does not reach.
      let oxb = (i32(tx0) - i32(kx)) / i32(u.sw);
${lanes(
  (j) => `      let ox${j} = oxb + ${j};
      let m${j} = select(0.0, 1.0, u32(ox${j}) < u.Wo);
      var g${j} = gimg + oy * u.Wo + select(0u, u32(ox${j}), u32(ox${j}) < u.Wo);`,
)}
      var wi = ky * u.kw + kx;
      for (var co = 0u; co < u.Cout; co++) {
${quads.map((q) => `        let wv${q} = vec4<f32>(${range(4).map((t) => `Wt[wi + w${4 * q + t}]`).join(', ')});`).join('\n')}
${lanes((j) => `        let d${j} = vec4<f32>(DY[g${j}] * m${j});
        g${j} += HoWo;
${quads.map((q) => `        acc${j}_${q} = fma(d${j}, wv${q}, acc${j}_${q});`).join('\n')}`)}
        wi += cs;
      }
    }
  }
${lanes(
  (j) => `  let ix${j} = ixb + ${j}u * u.sw;
  if (ix${j} < u.W) {
${range(tci).map((t) => `    if (ci0 + ${t}u < u.Cin) { DX[((b * u.Cin + ci0 + ${t}u) * u.H + iy) * u.W + ix${j}] = acc${j}_${t >> 2}[${t & 3}]; }`).join('\n')}
  }`,
)}
}`;
}

/**
 * dw partial sums: DW[s, co, k] = Σ_{n in chunk s} g[n, co] · patch[n, k] with n = (b, oy, ox) and
 * k = (ci, ky, kx). Invocation = (block of 4 k, block of `tco` co, chunk), k blocks fastest, so
 * the gradient loads are the same address across a SIMD group.
 */
export function conv2dBackwardWeightSource(isPadded: boolean, tco: number): string {
  const xload = (t: number): string =>
    isPadded
      ? `let iy${t} = oyh + dy${t}; let ix${t} = oxw + dx${t};
      let ok${t} = u32(iy${t}) < u.H && u32(ix${t}) < u.W;
      let x${t} = select(0.0, X[select(0u, u32(xb + xo${t} + iy${t} * i32(u.W) + ix${t}), ok${t})], ok${t});`
      : `let x${t} = X[u32(xb + xo${t} + (oyh + dy${t}) * i32(u.W) + oxw + dx${t})];`;
  return /* wgsl */ `
struct U { ${GEOMETRY_FIELDS} kBlocks: u32, coBlocks: u32, n: u32, chunk: u32, N: u32, }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> DW: array<f32>;
@group(0) @binding(2) var<storage, read> DY: array<f32>;
@group(0) @binding(3) var<storage, read> X: array<f32>;
${linearIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= u.n) { return; }
  let kb = (i % u.kBlocks) * 4u;
  let r = i / u.kBlocks;
  let co0 = (r % u.coBlocks) * ${tco}u;
  let s = r / u.coBlocks;
  let khkw = u.kh * u.kw;
  let K = u.Cin * khkw;
  let HoWo = u.Ho * u.Wo;
  // Each of the 4 k = (ci, ky, kx): plane offset and window offset relative to (oy·sh, ox·sw).
${lanes(
  (t) => `  let k${t} = min(kb + ${t}u, K - 1u);
  let xo${t} = i32((k${t} / khkw) * u.H * u.W);
  let dy${t} = i32((k${t} % khkw) / u.kw) - i32(u.ph);
  let dx${t} = i32(k${t} % u.kw) - i32(u.pw);`,
)}
${range(tco).map((c) => `  let g${c} = min(co0 + ${c}u, u.Cout - 1u) * HoWo;\n  var acc${c} = vec4<f32>(0.0);`).join('\n')}
  let n0 = s * u.chunk;
  let n1 = min(n0 + u.chunk, u.N);
  var b = n0 / HoWo;
  var oy = (n0 % HoWo) / u.Wo;
  var ox = n0 % u.Wo;
  for (var nn = n0; nn < n1; nn++) {
    let xb = i32(b * u.Cin * u.H * u.W);
    let gb = b * u.Cout * HoWo + oy * u.Wo + ox;
    let oyh = i32(oy * u.sh);
    let oxw = i32(ox * u.sw);
${lanes((t) => `    ${xload(t)}`)}
    let xv = vec4<f32>(x0, x1, x2, x3);
${range(tco).map((c) => `    acc${c} = fma(vec4<f32>(DY[gb + g${c}]), xv, acc${c});`).join('\n')}
    ox++;
    if (ox == u.Wo) { ox = 0u; oy++; if (oy == u.Ho) { oy = 0u; b++; } }
  }
${range(tco)
  .map(
    (c) => `  if (co0 + ${c}u < u.Cout) {
    let base = (s * u.Cout + co0 + ${c}u) * K + kb;
${lanes((t) => `    if (kb + ${t}u < K) { DW[base + ${t}u] = acc${c}[${t}]; }`)}
  }`,
  )
  .join('\n')}
}`;
}

/** Max-pool forward: Y = window max, I = plane index iy·W + ix of the (first) maximum, as f32. */
export function maxPool2dForwardSource(withIndices: boolean): string {
  return /* wgsl */ `
struct U { ${GEOMETRY_FIELDS} n: u32, }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> Y: array<f32>;
${withIndices ? '@group(0) @binding(2) var<storage, read_write> I: array<f32>;' : ''}
@group(0) @binding(${withIndices ? 3 : 2}) var<storage, read> X: array<f32>;
${linearIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= u.n) { return; }
  let HoWo = u.Ho * u.Wo;
  let plane = (i / HoWo) * u.H * u.W;
  let p = i % HoWo;
  let iy0 = i32((p / u.Wo) * u.sh) - i32(u.ph);
  let ix0 = i32((p % u.Wo) * u.sw) - i32(u.pw);
  var best = 0.0;
  var arg = 0u;
  var found = false;
  for (var ky = 0u; ky < u.kh; ky++) {
    let iy = iy0 + i32(ky);
    if (u32(iy) >= u.H) { continue; }
    for (var kx = 0u; kx < u.kw; kx++) {
      let ix = ix0 + i32(kx);
      if (u32(ix) >= u.W) { continue; }
      let q = u32(iy) * u.W + u32(ix);
      let v = X[plane + q];
      if (!found || v > best) { best = v; arg = q; found = true; }
    }
  }
  Y[i] = best;
  ${withIndices ? 'I[i] = f32(arg);' : ''}
}`;
}

/** Max-pool backward (gather): dx[e] = Σ over windows containing e whose argmax is e of g. */
export function maxPool2dBackwardSource(): string {
  return /* wgsl */ `
struct U { ${GEOMETRY_FIELDS} n: u32, }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> DX: array<f32>;
@group(0) @binding(2) var<storage, read> G: array<f32>;
@group(0) @binding(3) var<storage, read> I: array<f32>;
${linearIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= u.n) { return; }
  let HW = u.H * u.W;
  let q = i % HW;
  let obase = (i / HW) * u.Ho * u.Wo;
  let me = f32(q);
  // Windows oy with oy·sh − ph ≤ iy ≤ oy·sh − ph + kh − 1, in padded coordinates ty = iy + ph.
  let ty = q / u.W + u.ph;
  let tx = q % u.W + u.pw;
  let oy0 = select(0u, (ty - u.kh + u.sh) / u.sh, ty + 1u > u.kh);
  let ox0 = select(0u, (tx - u.kw + u.sw) / u.sw, tx + 1u > u.kw);
  let oy1 = min(ty / u.sh + 1u, u.Ho);
  let ox1 = min(tx / u.sw + 1u, u.Wo);
  var acc = 0.0;
  for (var oy = oy0; oy < oy1; oy++) {
    for (var ox = ox0; ox < ox1; ox++) {
      let o = obase + oy * u.Wo + ox;
      if (I[o] == me) { acc += G[o]; }
    }
  }
  DX[i] = acc;
}`;
}

// -------------------------------------------------------------------------------------------------
// Launchers

/**
 * The convolution y = conv(x, weight) + bias for the geometry `g` (from `conv2dGeometry`);
 * operands may be views (they are made contiguous first). Returns y [B, Cout, Ho, Wo].
 */
export function conv2dForwardRaw(x: Tensor, weight: Tensor, bias: Tensor | null, g: ConvGeometry): Tensor {
  // Parameters are usually aligned arena views: bound in place (`bind`), never copied.
  const xd = denseAligned(x);
  const wd = denseAligned(weight);
  const bd = bias ? denseAligned(bias) : null;
  const y = forwardDense(xd, wd, bd, g);
  release(xd, x);
  release(wd, weight);
  if (bd && bias) release(bd, bias);
  return y;
}

/**
 * The backward of `conv2dForwardRaw` for the upstream gradient gy: [dx, dweight, dbias], each only
 * where `need` asks (null otherwise).
 */
export function conv2dBackwardRaw(
  x: Tensor,
  weight: Tensor,
  gy: Tensor,
  g: ConvGeometry,
  need: readonly [boolean, boolean, boolean],
): [Tensor | null, Tensor | null, Tensor | null] {
  const gd = dense(gy);
  let xs: Tensor | null = null;
  let ws: Tensor | null = null;
  const dx = need[0] ? backwardInput(gd, (ws = denseAligned(weight)), g) : null;
  const dw = need[1] ? backwardWeight(gd, (xs = denseAligned(x)), g) : null;
  const db = need[2] ? backwardBias(gd, g) : null;
  if (xs) release(xs, x);
  if (ws) release(ws, weight);
  release(gd, gy);
  return [dx, dw, db];
}

/** Forward convolution of row-major operands (x, w, bias at binding-aligned offsets; see `denseAligned`). */
function forwardDense(x: Tensor, w: Tensor, bias: Tensor | null, g: ConvGeometry): Tensor {
  const e = x.engine;
  const y = e.empty([g.B, g.Cout, g.Ho, g.Wo], { label: 'conv2d' });
  const pixBlocks = Math.ceil((g.Ho * g.Wo) / 4);
  const coBlocks = Math.ceil(g.Cout / FWD_TC);
  const n = pixBlocks * coBlocks * g.B;
  if (n === 0) return y;
  const kernel = e.device.kernel('conv2d_forward', conv2dForwardSource(FWD_TC, padded(g), bias !== null));
  e.device.dispatch(kernel, {
    uniforms: geometryUniforms(g).u32(pixBlocks, coBlocks, n).bytes(),
    buffers: bias ? [y.buffer, bind(x), bind(w), bind(bias)] : [y.buffer, bind(x), bind(w)],
    workgroups: grid1d(n, WG),
  });
  return y;
}

/** dx of a convolution from contiguous g and a row-major, aligned w. */
function backwardInput(gy: Tensor, w: Tensor, g: ConvGeometry): Tensor {
  const e = gy.engine;
  const dx = e.empty([g.B, g.Cin, g.H, g.W], { label: 'conv2d_dx' });
  const tc = dxChannels(g.Cin);
  const ciBlocks = Math.ceil(g.Cin / tc);
  const mBlocks = Math.ceil(Math.ceil(g.W / g.sw) / 4); // 4-pixel blocks per column phase
  const n = mBlocks * g.sw * g.H * ciBlocks * g.B;
  if (n === 0) return dx;
  e.device.dispatch(e.device.kernel('conv2d_backward_input', conv2dBackwardInputSource(tc)), {
    uniforms: geometryUniforms(g).u32(ciBlocks, mBlocks, n).bytes(),
    buffers: [dx.buffer, gy.buffer, bind(w)],
    workgroups: grid1d(n, WG),
  });
  return dx;
}

/** dw of a convolution from contiguous g and a row-major, aligned x, split over B·Ho·Wo when small. */
function backwardWeight(gy: Tensor, x: Tensor, g: ConvGeometry): Tensor {
  const e = gy.engine;
  const K = g.Cin * g.kh * g.kw;
  const N = g.B * g.Ho * g.Wo;
  if (N === 0) return e.zeros([g.Cout, g.Cin, g.kh, g.kw], { label: 'conv2d_dw' });
  const kBlocks = Math.ceil(K / 4);
  const coBlocks = Math.ceil(g.Cout / DW_TC);
  const blocks = kBlocks * coBlocks;
  const S = Math.max(1, Math.min(Math.ceil(DW_TARGET_INVOCATIONS / blocks), Math.floor(N / DW_MIN_CHUNK)));
  const chunk = Math.ceil(N / S);
  const splits = Math.ceil(N / chunk);
  const partial = e.empty([splits, g.Cout, g.Cin, g.kh, g.kw], { label: 'conv2d_dw' });
  const n = blocks * splits;
  e.device.dispatch(e.device.kernel('conv2d_backward_weight', conv2dBackwardWeightSource(padded(g), DW_TC)), {
    uniforms: geometryUniforms(g).u32(kBlocks, coBlocks, n, chunk, N).bytes(),
    buffers: [partial.buffer, gy.buffer, bind(x)],
    workgroups: grid1d(n, WG),
  });
  if (splits === 1) {
    const dw = partial.view([g.Cout, g.Cin, g.kh, g.kw], [K, g.kh * g.kw, g.kw, 1], 0, 'conv2d_dw');
    partial.dispose();
    return dw;
  }
  const dw = reduceAxisRaw('sum', partial, 0, false);
  partial.dispose();
  return dw;
}

/** dbias = Σ_{b, oy, ox} g: sum over Ho·Wo, then over B. */
function backwardBias(gy: Tensor, g: ConvGeometry): Tensor {
  const v = gy.view([g.B, g.Cout, g.Ho * g.Wo], [g.Cout * g.Ho * g.Wo, g.Ho * g.Wo, 1], 0);
  const perImage = reduceAxisRaw('sum', v, 2, false);
  v.dispose();
  const db = reduceAxisRaw('sum', perImage, 0, false);
  perImage.dispose();
  return db;
}

// -------------------------------------------------------------------------------------------------
// Max pooling

/** Options of `maxPool2d`; a number applies to both axes. */
export interface MaxPool2dOptions {
  kernel: number | [number, number];
  /** Default: the kernel size. */
  stride?: number | [number, number];
  /** Implicit −∞ padding on each side; at most half the kernel (as PyTorch). Default 0. */
  padding?: number | [number, number];
}

/** Validates a pooling's shape and options and returns its geometry (Cout = Cin = C). */
export function maxPool2dGeometry(xShape: Shape, opts: MaxPool2dOptions): ConvGeometry {
  const op = 'maxPool2d';
  if (xShape.length !== 4) throw new ShapeError(`${op}: input must be [B, C, H, W] (NCHW), got ${fmt(xShape)}`);
  const [B, C, H, W] = xShape;
  const [kh, kw] = pair(opts.kernel, 1, 'kernel', op, 1);
  const [sh, sw] = pair(opts.stride ?? opts.kernel, 1, 'stride', op, 1);
  const [ph, pw] = pair(opts.padding, 0, 'padding', op, 0);
  if (2 * ph > kh || 2 * pw > kw) {
    throw new ShapeError(`${op}: padding (${ph}, ${pw}) must be at most half the kernel (${kh}, ${kw})`);
  }
  if (H * W >= MAX_PLANE) throw new ShapeError(`${op}: planes of ${H}×${W} are too large (indices are exact below 2^24)`);
  const Ho = outSize(H, kh, sh, ph, 'height', op, xShape);
  const Wo = outSize(W, kw, sw, pw, 'width', op, xShape);
  return { B, Cin: C, H, W, Cout: C, kh, kw, sh, sw, ph, pw, Ho, Wo };
}

/**
 * 2-D max pooling of x (any view) for the geometry `g` (from `maxPool2dGeometry`): y, and with
 * `withIndices` the plane-relative index of every window's maximum (what the backward reads).
 */
export function maxPool2dForwardRaw(x: Tensor, g: ConvGeometry, withIndices: boolean): { y: Tensor; idx: Tensor | null } {
  const e = x.engine;
  const xd = dense(x);
  const y = e.empty([g.B, g.Cin, g.Ho, g.Wo], { label: 'maxPool2d' });
  const idx = withIndices ? e.empty(y.shape, { label: 'maxPool2d_argmax' }) : null;
  const n = y.size;
  if (n > 0) {
    e.device.dispatch(e.device.kernel('maxpool2d_forward', maxPool2dForwardSource(withIndices)), {
      uniforms: geometryUniforms(g).u32(n).bytes(),
      buffers: idx ? [y.buffer, idx.buffer, xd.buffer] : [y.buffer, xd.buffer],
      workgroups: grid1d(n, WG),
    });
  }
  release(xd, x);
  return { y, idx };
}

/** dx of max pooling from the saved window maxima `idx` and the upstream gradient gy. */
export function maxPool2dBackwardRaw(gy: Tensor, idx: Tensor, g: ConvGeometry): Tensor {
  const e = gy.engine;
  const gd = dense(gy);
  const dx = e.empty([g.B, g.Cin, g.H, g.W], { label: 'maxPool2d_dx' });
  if (dx.size > 0) {
    e.device.dispatch(e.device.kernel('maxpool2d_backward', maxPool2dBackwardSource()), {
      uniforms: geometryUniforms(g).u32(dx.size).bytes(),
      buffers: [dx.buffer, gd.buffer, idx.buffer],
      workgroups: grid1d(dx.size, WG),
    });
  }
  release(gd, gy);
  return dx;
}

// -------------------------------------------------------------------------------------------------
// Float64 references (the oracle of the conformance tests)

/** Float64 convolution of row-major arrays; returns y [B, Cout, Ho, Wo]. */
export function conv2dRef(
  x: ArrayLike<number>,
  xShape: Shape,
  w: ArrayLike<number>,
  wShape: Shape,
  bias: ArrayLike<number> | null,
  opts: Conv2dOptions = {},
): { data: Float64Array; shape: number[] } {
  const g = conv2dGeometry(xShape, wShape, opts);
  const { B, Cin, H, W, Cout, kh, kw, sh, sw, ph, pw, Ho, Wo } = g;
  const y = new Float64Array(B * Cout * Ho * Wo);
  for (let b = 0; b < B; b++)
    for (let co = 0; co < Cout; co++)
      for (let oy = 0; oy < Ho; oy++)
        for (let ox = 0; ox < Wo; ox++) {
          let s = bias ? bias[co] : 0;
          for (let ci = 0; ci < Cin; ci++)
            for (let ky = 0; ky < kh; ky++) {
              const iy = oy * sh - ph + ky;
              if (iy < 0 || iy >= H) continue;
              for (let kx = 0; kx < kw; kx++) {
                const ix = ox * sw - pw + kx;
                if (ix < 0 || ix >= W) continue;
                s += w[((co * Cin + ci) * kh + ky) * kw + kx] * x[((b * Cin + ci) * H + iy) * W + ix];
              }
            }
          y[((b * Cout + co) * Ho + oy) * Wo + ox] = s;
        }
  return { data: y, shape: [B, Cout, Ho, Wo] };
}

/**
 * Float64 vector-Jacobian product of the convolution: given gy [B, Cout, Ho, Wo], returns
 * dx = ∂⟨gy, y⟩/∂x, dw and db (scattered directly from the forward's sum, independent of the
 * gather formulation the kernels use).
 */
export function conv2dVjpRef(
  x: ArrayLike<number>,
  xShape: Shape,
  w: ArrayLike<number>,
  wShape: Shape,
  gy: ArrayLike<number>,
  opts: Conv2dOptions = {},
): { dx: Float64Array; dw: Float64Array; db: Float64Array } {
  const { B, Cin, H, W, Cout, kh, kw, sh, sw, ph, pw, Ho, Wo } = conv2dGeometry(xShape, wShape, opts);
  const dx = new Float64Array(B * Cin * H * W);
  const dw = new Float64Array(Cout * Cin * kh * kw);
  const db = new Float64Array(Cout);
  for (let b = 0; b < B; b++)
    for (let co = 0; co < Cout; co++)
      for (let oy = 0; oy < Ho; oy++)
        for (let ox = 0; ox < Wo; ox++) {
          const gv = gy[((b * Cout + co) * Ho + oy) * Wo + ox];
          db[co] += gv;
          for (let ci = 0; ci < Cin; ci++)
            for (let ky = 0; ky < kh; ky++) {
              const iy = oy * sh - ph + ky;
              if (iy < 0 || iy >= H) continue;
              for (let kx = 0; kx < kw; kx++) {
                const ix = ox * sw - pw + kx;
                if (ix < 0 || ix >= W) continue;
                const wi = ((co * Cin + ci) * kh + ky) * kw + kx;
                const xi = ((b * Cin + ci) * H + iy) * W + ix;
                dx[xi] += gv * w[wi];
                dw[wi] += gv * x[xi];
              }
            }
        }
  return { dx, dw, db };
}

/** Float64 max pooling; `indices` are plane-relative iy·W + ix of the first maximum per window. */
export function maxPool2dRef(
  x: ArrayLike<number>,
  xShape: Shape,
  opts: MaxPool2dOptions,
): { data: Float64Array; indices: Int32Array; shape: number[] } {
  const { B, Cin: C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo } = maxPool2dGeometry(xShape, opts);
  const y = new Float64Array(B * C * Ho * Wo);
  const idx = new Int32Array(y.length);
  for (let pl = 0; pl < B * C; pl++)
    for (let oy = 0; oy < Ho; oy++)
      for (let ox = 0; ox < Wo; ox++) {
        let best = -Infinity;
        let arg = -1;
        for (let ky = 0; ky < kh; ky++) {
          const iy = oy * sh - ph + ky;
          if (iy < 0 || iy >= H) continue;
          for (let kx = 0; kx < kw; kx++) {
            const ix = ox * sw - pw + kx;
            if (ix < 0 || ix >= W) continue;
            const v = x[pl * H * W + iy * W + ix];
            if (arg < 0 || v > best) {
              best = v;
              arg = iy * W + ix;
            }
          }
        }
        const o = (pl * Ho + oy) * Wo + ox;
        y[o] = best;
        idx[o] = arg;
      }
  return { data: y, indices: idx, shape: [B, C, Ho, Wo] };
}

/** Float64 VJP of max pooling: scatters each window's gradient onto its argmax. */
export function maxPool2dVjpRef(x: ArrayLike<number>, xShape: Shape, gy: ArrayLike<number>, opts: MaxPool2dOptions): Float64Array {
  const { indices, shape } = maxPool2dRef(x, xShape, opts);
  const [B, C, Ho, Wo] = shape;
  const HW = xShape[2] * xShape[3];
  const dx = new Float64Array(B * C * HW);
  for (let pl = 0; pl < B * C; pl++)
    for (let o = 0; o < Ho * Wo; o++) dx[pl * HW + indices[pl * Ho * Wo + o]] += gy[pl * Ho * Wo + o];
  return dx;
}
