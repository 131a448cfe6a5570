/**
 * Elementwise kernels: unary and binary ops with NumPy broadcasting over arbitrary strides (views
 * are read in place), scalar variants, fill and copy (which is also `contiguous()`), and the fused
 * backward kernels of the unary ops.
 *
 * Kernel shapes
 * - `strided`: rank ≤ 6, shapes and strides in the uniform block; the output is contiguous.
 *   Inputs may be views (transposed, sliced, broadcast with stride 0).
 * - `flat`: every operand contiguous from offset 0 with the output's shape: no index arithmetic.
 * One pipeline per (op, arity, flat|strided): shapes never enter the source.
 *
 * Math (forward → derivative)
 *   exp: y = eˣ → y · g         log: ln x → g / x           sqrt: √x → g / (2y)
 *   pow: xᵖ → p·xᵖ⁻¹·g           relu: max(x, 0) → g·[x > 0]
 *   tanh: → (1 − y²)·g           gelu (exact): x·Φ(x) → (Φ(x) + x·φ(x))·g
 * Φ is computed through erfc with a Chebyshev fit of fractional error < 1.2e-7 (Numerical
 * Recipes' erfcc), so GELU keeps its relative accuracy far into the negative tail.
 */
import { record } from '../engine/autograd.js';
import { Uniforms } from '../engine/device.js';
import { broadcastShapes, broadcastStrides, contiguousStrides, sameShape, type Shape, ShapeError, fmt } from '../engine/shape.js';
import { Tensor, checkTensor } from '../engine/tensor.js';
import { grid1d, linearIndexWgsl } from './common.js';

const WG = 256;
export const MAX_RANK = 6;

/** Unary ops: WGSL expression of `x` and the scalar uniform `p`. */
export const UNARY = {
  copy: 'x',
  fill: 'p',
  neg: '-x',
  exp: 'exp(x)',
  log: 'log(x)',
  sqrt: 'sqrt(x)',
  relu: 'max(x, 0.0)',
  gelu: 'gelu(x)',
  tanh: 'tanh(clamp(x, -15.0, 15.0))',
  pow: 'powp(x, p)',
  addScalar: 'x + p',
  mulScalar: 'x * p',
  rsubScalar: 'p - x',
  rdivScalar: 'p / x',
} as const;

/** Binary ops: WGSL expression of `a`, `b` and the scalar uniform `p`. */
export const BINARY = {
  add: 'a + b',
  sub: 'a - b',
  mul: 'a * b',
  div: 'a / b',
  eq: 'select(0.0, 1.0, a == b)',
  /** a = x, b = upstream gradient */
  reluBackward: 'select(0.0, b, a > 0.0)',
  geluBackward: 'b * gelu_grad(a)',
  powBackward: 'b * p * powp(a, p - 1.0)',
  /** a = y (the forward output), b = upstream gradient */
  tanhBackward: 'b * (1.0 - a * a)',
  sqrtBackward: 'b * 0.5 / a',
} as const;

export type UnaryOp = keyof typeof UNARY;
export type BinaryOp = keyof typeof BINARY;

/** WGSL helpers shared by kernels: erfc_, ncdf (Φ), gelu, gelu_grad, powp. */
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
  const rank = flat ? MAX_RANK : out.rank;
  const kernel = dev.kernel(`${op}${flat ? '' : '_strided'}`, elementwiseSource(expr, arity, flat, rank));
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

/** Runs a unary kernel (no autograd). */
export function unaryRaw(op: UnaryOp, x: Tensor, p = 0): Tensor {
  checkTensor(x, op);
  const out = x.engine.empty(x.shape, { label: op });
  launch(op, UNARY[op], out, x, null, p);
  return out;
}

/** Runs a binary kernel with broadcasting (no autograd). */
export function binaryRaw(op: BinaryOp, a: Tensor, b: Tensor, p = 0): Tensor {
  checkTensor(a, op);
  checkTensor(b, op);
  if (a.engine !== b.engine) throw new Error(`${op}: tensors belong to different engines`);
  const shape = broadcastShapes(a.shape, b.shape, op);
  const out = a.engine.empty(shape, { label: op });
  launch(op, BINARY[op], out, a, b, p);
  return out;
}

/** Writes `value` into every element of the contiguous tensor `t` (in place); returns `t`. */
export function fillInPlace(t: Tensor, value: number): Tensor {
  checkTensor(t, 'fill');
  if (!t.isContiguous) throw new Error('fill: the tensor must be contiguous');
  launch('fill', UNARY.fill, t, t, null, value);
  return t;
}

/** A contiguous copy of any view (no autograd). */
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

/** Copies `src` into the (possibly strided) view `dst`, in place. Shapes must match (no autograd). */
export function stridedCopy(dst: Tensor, src: Tensor): void {
  checkTensor(dst, 'copyInto');
  checkTensor(src, 'copyInto');
  if (!sameShape(dst.shape, src.shape)) throw new ShapeError(`copyInto: shapes ${fmt(dst.shape)} and ${fmt(src.shape)} differ`);
  if (dst.rank > MAX_RANK) throw new ShapeError(`copyInto: rank > ${MAX_RANK} is not supported`);
  const n = dst.size;
  if (n === 0) return;
  // One buffer cannot be bound for writing and reading in one dispatch: copy the source first.
  const s = src.buffer === dst.buffer ? copyRaw(src) : src;
  const dev = dst.engine.device;
  const u = new Uniforms(4 + 3 * MAX_RANK).u32(n).i32(dst.offset, s.offset).u32(0);
  u.i32(...padTo(dst.shape, 1), ...padTo(dst.strides, 0), ...padTo(s.strides, 0));
  dev.dispatch(dev.kernel('strided_copy', scatterSource(dst.rank)), {
    uniforms: u.bytes(),
    buffers: [dst.buffer, s.buffer],
    workgroups: grid1d(n, WG),
  });
  if (s !== src) s.dispose();
}

// -------------------------------------------------------------------------------------------------
// Differentiable ops

/** Sums `g` over the dimensions that were broadcast to reach its shape from `shape`. */
export type SumTo = (g: Tensor, shape: Shape) => Tensor;

export function makeElementwiseOps(sumTo: SumTo) {
  const unary = (op: UnaryOp, x: Tensor, p: number, grad: ((x: Tensor, y: Tensor, g: Tensor) => Tensor) | null): Tensor => {
    const y = unaryRaw(op, x, p);
    if (grad) record(y, op, [x], (g) => [grad(x, y, g)]);
    return y;
  };
  const binary = (
    op: 'add' | 'sub' | 'mul' | 'div',
    a: Tensor,
    b: Tensor,
  ): Tensor => {
    const y = binaryRaw(op, a, b);
    return record(y, op, [a, b], (g) => {
      const ga = a.requiresGrad ? gradA(op, a, b, g) : null;
      const gb = b.requiresGrad ? gradB(op, a, b, g) : null;
      return [ga, gb];
    });
  };
  const gradA = (op: string, a: Tensor, b: Tensor, g: Tensor): Tensor => {
    let ga: Tensor;
    if (op === 'add' || op === 'sub') ga = g;
    else if (op === 'mul') ga = binaryRaw('mul', g, b);
    else ga = binaryRaw('div', g, b);
    return reduceTo(ga, a.shape, g);
  };
  const gradB = (op: string, a: Tensor, b: Tensor, g: Tensor): Tensor => {
    let gb: Tensor;
    if (op === 'add') gb = g;
    else if (op === 'sub') gb = unaryRaw('neg', g);
    else if (op === 'mul') gb = binaryRaw('mul', g, a);
    else {
      // d(a/b)/db = −a/b² · g = −(g · a / b) / b
      const t1 = binaryRaw('mul', g, a);
      const t2 = binaryRaw('div', t1, b);
      t1.dispose();
      const t3 = binaryRaw('div', t2, b);
      t2.dispose();
      gb = unaryRaw('neg', t3);
      t3.dispose();
    }
    return reduceTo(gb, b.shape, g);
  };
  /** Sums a broadcast gradient back to `shape`, disposing the intermediate (never `g`). */
  const reduceTo = (t: Tensor, shape: Shape, g: Tensor): Tensor => {
    if (sameShape(t.shape, shape)) return t;
    const r = sumTo(t, shape);
    if (t !== g) t.dispose();
    return r;
  };
  const scalarOp = (x: Tensor, v: number, op: 'add' | 'sub' | 'mul' | 'div'): Tensor => {
    switch (op) {
      case 'add':
        return unary('addScalar', x, v, (_x, _y, g) => g);
      case 'sub':
        return unary('addScalar', x, -v, (_x, _y, g) => g);
      case 'mul':
        return unary('mulScalar', x, v, (_x, _y, g) => unaryRaw('mulScalar', g, v));
      case 'div':
        return unary('mulScalar', x, 1 / v, (_x, _y, g) => unaryRaw('mulScalar', g, 1 / v));
    }
  };
  const arith =
    (op: 'add' | 'sub' | 'mul' | 'div') =>
    (a: Tensor, b: Tensor | number): Tensor =>
      typeof b === 'number' ? scalarOp(a, b, op) : binary(op, a, b);
  return {
    add: arith('add'),
    sub: arith('sub'),
    mul: arith('mul'),
    div: arith('div'),
    neg: (x: Tensor) => unary('neg', x, 0, (_x, _y, g) => unaryRaw('neg', g)),
    exp: (x: Tensor) => unary('exp', x, 0, (_x, y, g) => binaryRaw('mul', g, y)),
    log: (x: Tensor) => unary('log', x, 0, (xx, _y, g) => binaryRaw('div', g, xx)),
    sqrt: (x: Tensor) => unary('sqrt', x, 0, (_x, y, g) => binaryRaw('sqrtBackward', y, g)),
    relu: (x: Tensor) => unary('relu', x, 0, (xx, _y, g) => binaryRaw('reluBackward', xx, g)),
    gelu: (x: Tensor) => unary('gelu', x, 0, (xx, _y, g) => binaryRaw('geluBackward', xx, g)),
    tanh: (x: Tensor) => unary('tanh', x, 0, (_x, y, g) => binaryRaw('tanhBackward', y, g)),
    pow: (x: Tensor, p: number) => unary('pow', x, p, (xx, _y, g) => binaryRaw('powBackward', xx, g, p)),
    /** p − x */
    rsub: (x: Tensor, p: number) => unary('rsubScalar', x, p, (_x, _y, g) => unaryRaw('neg', g)),
  };
}

// -------------------------------------------------------------------------------------------------
// Float64 references (the oracle of the conformance tests)

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

const ncdf64 = (x: number) => 0.5 * erfc64(-x / Math.SQRT2);

/** Float64 forward references of the unary ops. */
export const unaryRef: Record<Exclude<UnaryOp, 'fill' | 'copy'> | 'copy', (x: number, p: number) => number> = {
  copy: (x) => x,
  neg: (x) => -x,
  exp: Math.exp,
  log: Math.log,
  sqrt: Math.sqrt,
  relu: (x) => Math.max(x, 0),
  gelu: (x) => x * ncdf64(x),
  tanh: Math.tanh,
  pow: (x, p) => Math.pow(x, p),
  addScalar: (x, p) => x + p,
  mulScalar: (x, p) => x * p,
  rsubScalar: (x, p) => p - x,
  rdivScalar: (x, p) => p / x,
};

/** Float64 derivatives dy/dx of the differentiable unary ops. */
export const unaryDerivRef: Partial<Record<UnaryOp, (x: number, p: number) => number>> = {
  neg: () => -1,
  exp: Math.exp,
  log: (x) => 1 / x,
  sqrt: (x) => 0.5 / Math.sqrt(x),
  relu: (x) => (x > 0 ? 1 : 0),
  gelu: (x) => ncdf64(x) + (x * Math.exp(-0.5 * x * x)) / Math.sqrt(2 * Math.PI),
  tanh: (x) => 1 - Math.tanh(x) ** 2,
  pow: (x, p) => p * Math.pow(x, p - 1),
};

export const binaryRef = {
  add: (a: number, b: number) => a + b,
  sub: (a: number, b: number) => a - b,
  mul: (a: number, b: number) => a * b,
  div: (a: number, b: number) => a / b,
};

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

export { Tensor };
