/**
 * Elementwise family: unary and binary ops with NumPy broadcasting over arbitrary strides (views
 * are read in place), scalar variants, fill, copy (also what `dense()` uses), a strided scatter
 * copy, the fused backward kernels of the unary ops, and the float64 references of all of them.
 *
 * One table per arity names every op once: its WGSL expression, its float64 reference and, for
 * the differentiable ones, the float64 derivative. Having a derivative is what makes an op
 * differentiable: engine/ops/elementwise.ts must give each such op a gradient rule (its tables are
 * typed by `DifferentiableUnaryOp` / `DifferentiableBinaryOp`), and the tests check every rule
 * against these derivatives and against finite differences of the references.
 *
 * Math (forward → derivative)
 *   exp: y = eˣ → y         log: ln x → 1/x            sqrt: √x → 1/(2y)
 *   pow: xᵖ → p·xᵖ⁻¹        relu: max(x, 0) → [x > 0]  tanh: → 1 − y²
 *   gelu (exact): x·Φ(x) → Φ(x) + x·φ(x)
 *   silu: x·σ(x) → σ(x)·(1 + x·(1 − σ(x)))               σ(x) = 1/(1 + e⁻ˣ)
 *   swiglu (binary): silu(a)·b → (b·silu'(a), silu(a))   DINOv2/v3's SwiGLU gate in one pass
 * Φ is computed through erfc with a Chebyshev fit of fractional error < 1.2e-7 (Numerical
 * Recipes' erfcc), so GELU keeps its relative accuracy far into the negative tail.
 * σ is evaluated as 1/(1 + e) or e/(1 + e) with e = e^−|x| ≤ 1, never overflowing, and 1 − σ(x)
 * as σ(−x), never by cancellation: silu keeps its relative accuracy in the negative tail (down to
 * e^x's underflow near x = −87, where it is −0) and its derivative is exactly 1 and 0 in the far
 * tails (no ∞·0 = NaN, as the direct x/(1 + e⁻ˣ) and its quotient rule would give).
 *
 * Kernel shapes: `strided` (rank ≤ 6, shapes and strides in the uniform block, inputs may be views
 * with stride 0 on broadcast dims), `flat` (every operand contiguous with the output's shape: no
 * index arithmetic) or `flat4` (flat with a multiple of 4 elements: each invocation loads and
 * stores one vec4 per operand and applies the op to its 4 components; on lavapipe every storage
 * access costs a per-lane sequence, so a vec4 access costs about what a scalar one does: ~3× the
 * throughput of `flat`, bench/lab/row-probe.ts (figures: bench/lab/memory-bound.md)). One pipeline per (op, arity, shape kind, rank):
 * shapes never enter the source. Outputs are new contiguous tensors.
 */
import { Uniforms } from '../engine/device.js';
import { broadcastShapes, broadcastStrides, contiguousStrides, fmt, isContiguous, sameShape, type Shape, ShapeError } from '../engine/shape.js';
import type { Tensor } from '../engine/tensor.js';
import { grid1d, linearIndexWgsl, memoSource } from './common.js';
import { elementBytes, halfNames, halfStorage, halfSuffix } from './f16.js';

const WG = 256;
export const MAX_RANK = 6;

/** Float64 reference of a unary op (`p` is the scalar uniform: the exponent, the scalar operand). */
type Ref1 = (x: number, p: number) => number;
/** Float64 reference of a binary op. */
type Ref2 = (a: number, b: number) => number;

/** A unary op: WGSL expression of `x` and the scalar uniform `p`, float64 reference, derivative. */
interface UnaryKernel {
  readonly wgsl: string;
  readonly ref: Ref1;
  /** dy/dx in float64: present exactly for the differentiable ops. */
  readonly deriv?: Ref1;
}

/** A binary op: WGSL expression of `a`, `b` and `p`, float64 reference, partial derivatives. */
interface BinaryKernel {
  readonly wgsl: string;
  readonly ref?: Ref2;
  /** [∂/∂a, ∂/∂b] in float64: present exactly for the differentiable ops. */
  readonly partials?: readonly [Ref2, Ref2];
}

/** Φ(x), the standard normal CDF, in float64. */
const ncdf64 = (x: number) => 0.5 * erfc64(-x / Math.SQRT2);
/** σ(x) = 1/(1 + e⁻ˣ) in float64, without overflow for either sign. */
const sigmoid64 = (x: number) => (x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x)));
const silu64 = (x: number) => x * sigmoid64(x);
/** d silu/dx = σ(x)(1 + x·σ(−x)), with 1 − σ(x) = σ(−x). */
const siluGrad64 = (x: number) => sigmoid64(x) * (1 + x * sigmoid64(-x));

const UNARY_OPS = {
  copy: { wgsl: 'x', ref: (x) => x, deriv: () => 1 },
  fill: { wgsl: 'p', ref: (_x, p) => p },
  neg: { wgsl: '-x', ref: (x) => -x, deriv: () => -1 },
  exp: { wgsl: 'exp(x)', ref: Math.exp, deriv: Math.exp },
  log: { wgsl: 'log(x)', ref: Math.log, deriv: (x) => 1 / x },
  sqrt: { wgsl: 'sqrt(x)', ref: Math.sqrt, deriv: (x) => 0.5 / Math.sqrt(x) },
  relu: { wgsl: 'max(x, 0.0)', ref: (x) => Math.max(x, 0), deriv: (x) => (x > 0 ? 1 : 0) },
  gelu: { wgsl: 'gelu(x)', ref: (x) => x * ncdf64(x), deriv: (x) => ncdf64(x) + (x * Math.exp(-0.5 * x * x)) / Math.sqrt(2 * Math.PI) },
  tanh: { wgsl: 'tanh(clamp(x, -15.0, 15.0))', ref: Math.tanh, deriv: (x) => 1 - Math.tanh(x) ** 2 },
  silu: { wgsl: 'x * sigmoid(x)', ref: silu64, deriv: siluGrad64 },
  pow: { wgsl: 'powp(x, p)', ref: (x, p) => Math.pow(x, p), deriv: (x, p) => p * Math.pow(x, p - 1) },
  addScalar: { wgsl: 'x + p', ref: (x, p) => x + p, deriv: () => 1 },
  mulScalar: { wgsl: 'x * p', ref: (x, p) => x * p, deriv: (_x, p) => p },
  rsubScalar: { wgsl: 'p - x', ref: (x, p) => p - x, deriv: () => -1 },
  rdivScalar: { wgsl: 'p / x', ref: (x, p) => p / x },
} as const satisfies Record<string, UnaryKernel>;

const BINARY_OPS = {
  add: { wgsl: 'a + b', ref: (a, b) => a + b, partials: [() => 1, () => 1] },
  sub: { wgsl: 'a - b', ref: (a, b) => a - b, partials: [() => 1, () => -1] },
  mul: { wgsl: 'a * b', ref: (a, b) => a * b, partials: [(_a, b) => b, (a) => a] },
  div: { wgsl: 'a / b', ref: (a, b) => a / b, partials: [(_a, b) => 1 / b, (a, b) => -a / (b * b)] },
  eq: { wgsl: 'select(0.0, 1.0, a == b)', ref: (a, b) => (a === b ? 1 : 0) },
  swiglu: { wgsl: 'a * sigmoid(a) * b', ref: (a, b) => silu64(a) * b, partials: [(a, b) => b * siluGrad64(a), (a) => silu64(a)] },
  // The backward kernels of unary ops, a = x and b = the upstream gradient:
  reluBackward: { wgsl: 'select(0.0, b, a > 0.0)' },
  geluBackward: { wgsl: 'b * gelu_grad(a)' },
  powBackward: { wgsl: 'b * p * powp(a, p - 1.0)' },
  siluBackward: { wgsl: 'b * silu_grad(a)' },
  // ... and a = y (the forward output), b = the upstream gradient:
  tanhBackward: { wgsl: 'b * (1.0 - a * a)' },
  sqrtBackward: { wgsl: 'b * 0.5 / a' },
} as const satisfies Record<string, BinaryKernel>;

/** The unary ops, each entry typed by whether it has a derivative (`deriv` then is not optional). */
export const UNARY: { readonly [K in keyof typeof UNARY_OPS]: (typeof UNARY_OPS)[K] extends { deriv: Ref1 } ? Required<UnaryKernel> : UnaryKernel } =
  UNARY_OPS;
/** The binary ops, each entry typed by whether it has partial derivatives (then also a reference). */
export const BINARY: {
  readonly [K in keyof typeof BINARY_OPS]: (typeof BINARY_OPS)[K] extends { partials: readonly unknown[] } ? Required<BinaryKernel> : BinaryKernel;
} = BINARY_OPS;

export type UnaryOp = keyof typeof UNARY;
export type BinaryOp = keyof typeof BINARY;
/** The unary ops with a derivative; each has a gradient rule in engine/ops/elementwise.ts. */
export type DifferentiableUnaryOp = { [K in UnaryOp]: (typeof UNARY)[K] extends Required<UnaryKernel> ? K : never }[UnaryOp];
/** The binary ops with partial derivatives; each has a gradient rule in engine/ops/elementwise.ts. */
export type DifferentiableBinaryOp = { [K in BinaryOp]: (typeof BINARY)[K] extends Required<BinaryKernel> ? K : never }[BinaryOp];

/** WGSL helpers shared by kernels: erfc_, ncdf (Φ), gelu, gelu_grad, sigmoid, silu_grad, powp. */
export const MATH_WGSL = /* wgsl */ `
// erfc(z) with fractional error < 1.2e-7 (Chebyshev fit, Numerical Recipes' erfcc).
fn erfc_(z: f32) -> f32 {
  let az = abs(z);
  let t = 1.0 / (1.0 + 0.5 * az);
  let r = t * exp(-az * az - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
          t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
          t * (-0.82215223 + t * 0.17087277)))))))));
  return select(2.0 - r, r, z >= 0.0);
}
// Φ(x), the standard normal CDF.
fn ncdf(x: f32) -> f32 { return 0.5 * erfc_(-x * 0.70710678118654752); }
fn gelu(x: f32) -> f32 { return x * ncdf(x); }
fn gelu_grad(x: f32) -> f32 { return ncdf(x) + x * 0.39894228040143268 * exp(-0.5 * x * x); }
// σ(x) from e = e^-|x| ≤ 1 (no overflow); silu'(x) = σ(x)·(1 + x·σ(-x)) (1 − σ without cancellation).
fn sigmoid(x: f32) -> f32 { let e = exp(-abs(x)); let r = 1.0 / (1.0 + e); return select(e * r, r, x >= 0.0); }
fn silu_grad(x: f32) -> f32 { return sigmoid(x) * (1.0 + x * sigmoid(-x)); }
// x^p with the sign rules of a real power for integer p (WGSL's pow is undefined for x < 0).
fn powp(x: f32, p: f32) -> f32 {
  if (p == 2.0) { return x * x; }
  if (p == 1.0) { return x; }
  if (p == 0.0) { return 1.0; }
  let m = pow(abs(x), p);
  let pi = round(p);
  if (x < 0.0 && pi == p) { return select(m, -m, (i32(pi) & 1) != 0); }
  return m;
}
`;

function params(rank: number, prefix: string): string {
  return Array.from({ length: rank }, (_, i) => `${prefix}${i}: i32,`).join(' ');
}

/**
 * How an operand of a vec4 kernel maps the output's element i (out contiguous, n elements) to its
 * own element: 'flat' i; 'inner' i mod inner (broadcast over leading dims: a bias [D] or a position
 * embedding [1, N, D] against [B, N, D]); 'outer' ⌊i / inner⌋ (broadcast over trailing dims: a
 * per-sample scale [B, 1, 1] against [B, N, D]). Plus the operand's element offset.
 */
export type Vec4Mode = 'flat' | 'inner' | 'outer';

/**
 * WGSL of the vec4 kernel: n4 = n/4 invocations, one vec4 of the output each; each operand is
 * loaded per its Vec4Mode ('outer': one f32, the same for the vec4's 4 components since inner is a
 * multiple of 4) and the op applied per component through `op(x, b, p)`. Pure function of (op
 * expression, arity, modes).
 */
export function elementwiseVec4Source(expr: string, arity: 0 | 1 | 2, modeA: Vec4Mode = 'flat', modeB: Vec4Mode = 'flat'): string {
  const decl = (binding: number, name: string, mode: Vec4Mode) =>
    `@group(0) @binding(${binding}) var<storage, read> ${name}: array<${mode === 'outer' ? 'f32' : 'vec4<f32>'}>;`;
  // Offsets and `inner` are in the binding's units: vec4 for 'flat'/'inner', f32 for 'outer'.
  const load = (name: string, mode: Vec4Mode, o: 'A' | 'B') =>
    mode === 'flat'
      ? `${name}[u.off${o} + i]`
      : mode === 'inner'
        ? `${name}[u.off${o} + i % u.inner${o}]`
        : `vec4<f32>(${name}[u.off${o} + (4u * i) / u.inner${o}])`;
  const inputs = [arity >= 1 ? decl(2, 'A', modeA) : '', arity === 2 ? decl(3, 'B', modeB) : ''].join('\n');
  const xa = arity === 0 ? 'vec4<f32>(0.0)' : load('A', modeA, 'A');
  const xb = arity === 2 ? load('B', modeB, 'B') : 'vec4<f32>(0.0)';
  return /* wgsl */ `
struct U { n: u32, offA: u32, offB: u32, p: f32, innerA: u32, innerB: u32, }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> Y: array<vec4<f32>>;
${inputs}
${MATH_WGSL}
fn op(x: f32, b: f32, p: f32) -> f32 {
  let a = x;
  return ${expr};
}
${linearIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= u.n) { return; }
  let x = ${xa};
  let b = ${xb};
  Y[i] = vec4<f32>(op(x.x, b.x, u.p), op(x.y, b.y, u.p), op(x.z, b.z, u.p), op(x.w, b.w, u.p));
}`;
}

/**
 * The Vec4Mode of operand `t` broadcast to `out` (n elements), with its offset and `inner` in the
 * units of its binding; null when the vec4 kernel cannot read it (another broadcast pattern, or
 * offsets/extents that are not multiples of 4).
 */
function vec4Mode(t: Tensor, out: Shape): { mode: Vec4Mode; off: number; inner: number } | null {
  const st = broadcastStrides(t.shape, t.strides, out);
  const r = out.length;
  // Dims [k, r) contiguous among themselves and [0, k) broadcast: 'inner'; the reverse: 'outer'.
  const contiguousRange = (lo: number, hi: number) => {
    let expect = 1;
    for (let d = hi - 1; d >= lo; d--) {
      if (out[d] !== 1 && st[d] !== expect) return false;
      expect *= out[d];
    }
    return true;
  };
  const broadcastRange = (lo: number, hi: number) => st.slice(lo, hi).every((s, i) => s === 0 || out[lo + i] === 1);
  const size = (lo: number, hi: number) => out.slice(lo, hi).reduce((a, b) => a * b, 1);
  if (t.offset % 4 !== 0) return null;
  for (let k = 0; k <= r; k++) {
    if (broadcastRange(0, k) && contiguousRange(k, r)) {
      const inner = size(k, r);
      if (inner % 4 !== 0) continue;
      return { mode: inner === size(0, r) ? 'flat' : 'inner', off: t.offset / 4, inner: inner / 4 };
    }
  }
  for (let k = r; k >= 0; k--) {
    if (contiguousRange(0, k) && broadcastRange(k, r)) {
      const inner = size(k, r);
      if (inner % 4 !== 0) continue;
      return { mode: 'outer', off: t.offset, inner };
    }
  }
  return null;
}

/** WGSL of one elementwise kernel. Pure function of (op expression, arity, layout). */
export function elementwiseSource(expr: string, arity: 0 | 1 | 2, flat: boolean, rank = MAX_RANK): string {
  const R = MAX_RANK;
  // Only the trailing `rank` dimensions are decomposed (leading ones are 1): the rank is a
  // compile-time constant, so a rank-3 view costs 3 divisions per element, not 6.
  const used = Math.max(1, Math.min(rank, R));
  const inputs =
    arity === 2
      ? `@group(0) @binding(2) var<storage, read> A: array<f32>;
         @group(0) @binding(3) var<storage, read> B: array<f32>;`
      : arity === 1
        ? `@group(0) @binding(2) var<storage, read> A: array<f32>;`
        : '';
  // Index decomposition: output index i → per-operand element offsets through the strides.
  const decompose = flat
    ? `let ia = i; ${arity === 2 ? 'let ib = i;' : ''}`
    : `var rem = i32(i); var ia = u.offA; ${arity === 2 ? 'var ib = u.offB;' : ''}
       ${Array.from({ length: used }, (_, k) => {
         const d = R - 1 - k;
         return `{ let c = rem % u.d${d}; rem = rem / u.d${d}; ia += c * u.sa${d}; ${arity === 2 ? `ib += c * u.sb${d};` : ''} }`;
       }).join('\n       ')}`;
  return /* wgsl */ `
struct U { n: u32, offA: i32, offB: i32, p: f32, ${params(R, 'd')} ${params(R, 'sa')} ${params(R, 'sb')} }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> Y: array<f32>;
${inputs}
${MATH_WGSL}
${linearIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= u.n) { return; }
  ${decompose}
  let p = u.p;
  let x = ${arity === 0 ? '0.0' : 'A[u32(ia)]'};
  let a = x;
  ${arity === 2 ? 'let b = B[u32(ib)];' : ''}
  Y[i] = ${expr};
}`;
}

/** The builders as the launchers call them: each source built once (see `memoSource`). */
const vec4SourceOnce = memoSource(elementwiseVec4Source);
const stridedSourceOnce = memoSource(elementwiseSource);

function padTo(v: readonly number[], fillWith: number): number[] {
  return [...Array(MAX_RANK - v.length).fill(fillWith), ...v];
}

function launch(op: string, expr: string, out: Tensor, a: Tensor, b: Tensor | null, p: number): void {
  const n = out.size;
  if (n === 0) return;
  if (out.rank > MAX_RANK) throw new ShapeError(`${op}: tensors of rank > ${MAX_RANK} are not supported (${fmt(out.shape)})`);
  const aIsFlat = a.isContiguous && sameShape(a.shape, out.shape);
  const bIsFlat = !b || (b.isContiguous && sameShape(b.shape, out.shape));
  const flat = aIsFlat && bIsFlat;
  const arity = op === 'fill' ? 0 : b ? 2 : 1;
  const dev = out.engine.device;
  // The vec4 kernel: the output (new, or contiguous for fill) starts at element 0; each operand flat
  // or broadcast along leading or trailing dims (Vec4Mode) at offsets that are multiples of 4.
  const ma = arity >= 1 ? vec4Mode(a, out.shape) : { mode: 'flat' as const, off: 0, inner: 1 };
  const mb = b ? vec4Mode(b, out.shape) : { mode: 'flat' as const, off: 0, inner: 1 };
  // f16 operands: the same kernel with those bindings in f16 (kernels/f16.ts); math stays f32.
  const halves = halfNames({ Y: out, A: arity >= 1 ? a : null, B: b });
  const half = (src: string) => halfStorage(src, halves);
  const hs = halfSuffix(halves);
  if (n % 4 === 0 && out.offset === 0 && ma && mb) {
    const modes = `_${ma.mode}_${mb.mode}`;
    dev.dispatch(dev.kernel(`${op}_v4${modes === '_flat_flat' ? '' : modes}${hs}`, half(vec4SourceOnce(expr, arity, ma.mode, mb.mode))), {
      uniforms: new Uniforms(8).u32(n / 4, ma.off, mb.off).f32(p).u32(ma.inner, mb.inner).bytes(),
      buffers: arity === 2 ? [out.buffer, a.buffer, b!.buffer] : arity === 1 ? [out.buffer, a.buffer] : [out.buffer],
      workgroups: grid1d(n / 4, WG),
    });
    return;
  }
  const rank = flat ? MAX_RANK : out.rank;
  const kernel = dev.kernel(`${op}${flat ? '' : '_strided'}${hs}`, half(stridedSourceOnce(expr, arity, flat, rank)));
  const u = new Uniforms(4 + 3 * MAX_RANK).u32(n).i32(a.offset, b ? b.offset : 0).f32(p);
  const dims = padTo(out.shape, 1);
  const sa = padTo(broadcastStrides(a.shape, a.strides, out.shape), 0);
  const sb = b ? padTo(broadcastStrides(b.shape, b.strides, out.shape), 0) : Array(MAX_RANK).fill(0);
  u.i32(...dims, ...sa, ...sb);
  dev.dispatch(kernel, {
    uniforms: u.bytes(),
    buffers: arity === 2 ? [out.buffer, a.buffer, b!.buffer] : arity === 1 ? [out.buffer, a.buffer] : [out.buffer],
    workgroups: grid1d(n, WG),
  });
}

/** A new contiguous tensor: the unary op applied to every element of `x` (any view). */
export function unaryRaw(op: UnaryOp, x: Tensor, p = 0): Tensor {
  const out = x.engine.empty(x.shape, { label: op, dtype: x.dtype });
  launch(op, UNARY[op].wgsl, out, x, null, p);
  return out;
}

/** A new contiguous tensor: the binary op of `a` and `b` broadcast to a common shape (any views). */
export function binaryRaw(op: BinaryOp, a: Tensor, b: Tensor, p = 0): Tensor {
  if (a.engine !== b.engine) throw new Error(`${op}: tensors belong to different engines`);
  const shape = broadcastShapes(a.shape, b.shape, op);
  const out = a.engine.empty(shape, { label: op, dtype: resultDtype(a, b) });
  launch(op, BINARY[op].wgsl, out, a, b, p);
  return out;
}

/** The dtype of a binary op's result: f16 when both operands are f16, else f32 (as PyTorch promotes). */
export function resultDtype(a: Tensor, b: Tensor): Tensor['dtype'] {
  return a.dtype === 'f16' && b.dtype === 'f16' ? 'f16' : 'f32';
}

/** `x` converted to `dtype`: a new contiguous tensor (the copy kernel with an f16 input or output). */
export function castRaw(x: Tensor, dtype: Tensor['dtype']): Tensor {
  const out = x.engine.empty(x.shape, { label: `cast_${dtype}`, dtype });
  launch('copy', UNARY.copy.wgsl, out, x, null, 0);
  return out;
}

/** Writes `value` into every element of the contiguous tensor `t` (in place); returns `t`. */
export function fillInPlace(t: Tensor, value: number): Tensor {
  if (!t.isContiguous) throw new Error('fill: the tensor must be contiguous');
  launch('fill', UNARY.fill.wgsl, t, t, null, value);
  return t;
}

/** A contiguous copy of any view. */
export function copyRaw(x: Tensor): Tensor {
  return unaryRaw('copy', x);
}

/** WGSL of the strided scatter-copy: Y[offY + Σ c·sy] = X[offX + Σ c·sx]. */
function scatterSource(rank: number): string {
  const R = MAX_RANK;
  const used = Math.max(1, Math.min(rank, R));
  return /* wgsl */ `
struct U { n: u32, offY: i32, offX: i32, pad: u32, ${params(R, 'd')} ${params(R, 'sy')} ${params(R, 'sx')} }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> Y: array<f32>;
@group(0) @binding(2) var<storage, read> X: array<f32>;
${linearIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= u.n) { return; }
  var rem = i32(i); var iy = u.offY; var ix = u.offX;
  ${Array.from({ length: used }, (_, k) => {
    const d = R - 1 - k;
    return `{ let c = rem % u.d${d}; rem = rem / u.d${d}; iy += c * u.sy${d}; ix += c * u.sx${d}; }`;
  }).join('\n  ')}
  Y[u32(iy)] = X[u32(ix)];
}`;
}

const scatterSourceOnce = memoSource(scatterSource);

/** Copies `src` into the (possibly strided) view `dst`, in place. Shapes must match. */
export function stridedCopy(dst: Tensor, src: Tensor): void {
  if (!sameShape(dst.shape, src.shape)) throw new ShapeError(`copyInto: shapes ${fmt(dst.shape)} and ${fmt(src.shape)} differ`);
  if (dst.rank > MAX_RANK) throw new ShapeError(`copyInto: rank > ${MAX_RANK} is not supported`);
  const n = dst.size;
  if (n === 0) return;
  // One buffer cannot be bound for writing and reading in one dispatch: copy the source first.
  const s = src.buffer === dst.buffer ? copyRaw(src) : src;
  const dev = dst.engine.device;
  const u = new Uniforms(4 + 3 * MAX_RANK).u32(n).i32(dst.offset, s.offset).u32(0);
  u.i32(...padTo(dst.shape, 1), ...padTo(dst.strides, 0), ...padTo(s.strides, 0));
  const halves = halfNames({ Y: dst, X: s });
  dev.dispatch(dev.kernel(`strided_copy${halfSuffix(halves)}`, halfStorage(scatterSourceOnce(dst.rank), halves)), {
    uniforms: u.bytes(),
    buffers: [dst.buffer, s.buffer],
    workgroups: grid1d(n, WG),
  });
  if (s !== src) s.dispose();
}

// -------------------------------------------------------------------------------------------------
// Dense operands for the other families (kernels that read only row-major data copy views first)

/** A contiguous tensor with offset 0: `t` itself when it already is, else a copy (free it with `release`). */
export function dense(t: Tensor): Tensor {
  return t.isContiguous ? t : copyRaw(t);
}

/**
 * A tensor whose elements are row-major and gapless from its offset, with the offset aligned for a
 * storage binding (parameters in an arena are such views): `t` itself, else a contiguous copy.
 * Bind it with `bind()` (kernels/common.ts), never with `.buffer` (which would start at element 0).
 */
export function denseAligned(t: Tensor): Tensor {
  const align = t.engine.device.limits.minStorageBufferOffsetAlignment;
  if (isContiguous(t.shape, t.strides) && (t.offset * elementBytes(t)) % align === 0) return t;
  return copyRaw(t);
}

/** Disposes `t` if it is a temporary made by `dense` / `denseAligned` from `orig`. */
export function release(t: Tensor, orig: Tensor): void {
  if (t !== orig) t.dispose();
}

// -------------------------------------------------------------------------------------------------
// Float64 references (the tables above hold the per-op ones)

/** erfc in float64: series for small |z|, continued fraction (Lentz) for large |z|. */
export function erfc64(z: number): number {
  const az = Math.abs(z);
  let r: number;
  if (az < 2.5) {
    // erf(z) = 2/√π Σ (−1)ⁿ z^(2n+1) / (n! (2n+1))
    let sum = 0;
    let term = az;
    for (let n = 0; n < 100; n++) {
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
      term *= (-az * az) / (n + 1);
    }
    r = 1 - (2 / Math.sqrt(Math.PI)) * sum;
  } else {
    // erfc(z) = e^{−z²}/√π · 1/(z + 1/2/(z + 1/(z + 3/2/(z + ...))))
    let f = az;
    let C = az;
    let D = 0;
    for (let n = 1; n < 300; n++) {
      const a = n / 2;
      D = az + a * D;
      D = D === 0 ? 1e-300 : 1 / D;
      C = az + a / C;
      const delta = C * D;
      f *= delta;
      if (Math.abs(delta - 1) < 1e-16) break;
    }
    r = Math.exp(-az * az) / Math.sqrt(Math.PI) / f;
  }
  return z >= 0 ? r : 2 - r;
}

/** Float64 broadcasting of two row-major arrays (the reference of binary ops). */
export function broadcastRef(
  a: ArrayLike<number>,
  aShape: Shape,
  b: ArrayLike<number>,
  bShape: Shape,
  f: (x: number, y: number) => number,
): { data: Float64Array; shape: number[] } {
  const shape = broadcastShapes(aShape, bShape);
  const n = shape.reduce((x, y) => x * y, 1);
  const sa = broadcastStrides(aShape, contiguousStrides(aShape), shape);
  const sb = broadcastStrides(bShape, contiguousStrides(bShape), shape);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let rem = i;
    let ia = 0;
    let ib = 0;
    for (let d = shape.length - 1; d >= 0; d--) {
      const c = rem % shape[d];
      rem = Math.floor(rem / shape[d]);
      ia += c * sa[d];
      ib += c * sb[d];
    }
    out[i] = f(a[ia], b[ib]);
  }
  return { data: out, shape };
}
