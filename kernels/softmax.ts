/**
 * Softmax family: softmax and log-softmax over the last axis with a temperature τ and an optional
 * center c of shape [D] broadcast over the rows (DINO's teacher centering), fused forward and
 * backward kernels, and their float64 references.
 *
 * Math (per row, z_j = (x_j − c_j) / τ, τ > 0)
 *   forward      softmax:      y_j = exp(z_j − m) / S,       m = max_k z_k,  S = Σ_k exp(z_k − m)
 *                log-softmax:  y_j = z_j − m − log S
 *   backward     softmax:      dx_j = y_j (g_j − Σ_k g_k y_k) / τ
 *                log-softmax:  dx_j = (g_j − exp(y_j) Σ_k g_k) / τ
 *                center:       dc_j = −Σ_rows dx_j      (z depends on x − c)
 *
 * Numerical invariants
 * - The row maximum is subtracted before dividing by τ: the kernel forms (x_j − c_j) − M with
 *   M = max_k (x_k − c_k) (the argmax of z, since τ > 0) and only then multiplies by 1/τ, so
 *   exp never sees a positive argument (no Inf, no NaN) even at τ = 0.04 with |x| = 1000, and the
 *   element at the maximum is exact. The remaining f32 error of y_j is ≈ |z_j − m|·2⁻²³, small
 *   wherever y_j is not negligible.
 * - Two passes over the row: an online max and sum (kernels/common.ts `rowMaxSumExpWgsl`: 4
 *   elements per step, one rescale of the running sum per step, sums blocked so K = 65 536-long
 *   rows stay accurate to ~1e-7 relative), then the write. The exps are the cost on a CPU driver
 *   (~2.25 per element here, measured with bench/lab/row-probe.ts).
 * - Rows are independent; the input is read through `dense()` (views are copied first); the output
 *   is a new contiguous tensor. The backward saves only the output y (and τ).
 *
 * Layouts: the row layouts of kernels/common.ts (`rowKernelSource`: one invocation, one subgroup or
 * one 256-lane workgroup per row), chosen by the device's `rowLayout`; rows are read as vec4 when
 * D % 4 == 0. The forward reads the row twice: a row of 256 KiB stays in the core's cache between
 * the passes in the one-workgroup-per-row layouts.
 */
import { Uniforms } from '../engine/device.js';
import { contiguousStrides, type Shape } from '../engine/shape.js';
import type { Tensor } from '../engine/tensor.js';
import { type RowConsts, rowConsts, rowForEachWgsl, rowGrid, rowKernelSource, rowMaxSumExpWgsl, rowSuffix, rowSumsWgsl, memoSource } from './common.js';
import { dense, release, unaryRaw } from './elementwise.js';
import { halfNames, halfStorage, halfSuffix, requireF32 } from './f16.js';
import { reduceAxisRaw } from './reduce.js';

/** Options of softmax and log-softmax (engine/ops/softmax.ts). */
export interface SoftmaxOptions {
  /** Divide the logits by this temperature first (default 1). */
  temperature?: number;
  /** Subtract this tensor (broadcast over the rows, shape [D]) before dividing: DINO's centering. */
  center?: Tensor;
}

const UNIFORM_DECL = 'struct U { rows: u32, D: u32, inv_tau: f32, pad: u32, }\n@group(0) @binding(0) var<uniform> u: U;';

/**
 * WGSL of the forward kernel. Bindings: Y (out), X, and C (the center) when `center`.
 * Pure function of (row constants, log, center).
 */
export function softmaxForwardSource(k: RowConsts, log: boolean, center: boolean): string {
  const decls = `${UNIFORM_DECL}
@group(0) @binding(1) var<storage, read_write> Y: array<T>;
@group(0) @binding(2) var<storage, read> X: array<T>;
${center ? '@group(0) @binding(3) var<storage, read> C: array<T>;' : ''}
// x_j − c_j: the shifted logit before the temperature.
fn shifted(base: u32, j: u32) -> T { return X[base + j]${center ? ' - C[j]' : ''}; }`;
  const write = log
    ? `let log_s = log(s);${rowForEachWgsl('Y[base + j] = (shifted(base, j) - m) * u.inv_tau - log_s;')}`
    : `let inv_s = 1.0 / s;${rowForEachWgsl('Y[base + j] = exp((shifted(base, j) - m) * u.inv_tau) * inv_s;')}`;
  const body = `
  let base = row * DV;
  ${rowMaxSumExpWgsl('m', 's', (j) => `shifted(base, ${j})`, 'u.inv_tau')}
  ${write}`;
  return rowKernelSource(k, decls, body);
}

/**
 * WGSL of the fused backward kernel (one dispatch): DX (out) from Y (the forward output) and G.
 * Pure function of (row constants, log).
 */
export function softmaxBackwardSource(k: RowConsts, log: boolean): string {
  const decls = `${UNIFORM_DECL}
@group(0) @binding(1) var<storage, read_write> DX: array<T>;
@group(0) @binding(2) var<storage, read> Y: array<T>;
@group(0) @binding(3) var<storage, read> G: array<T>;`;
  const body = log
    ? `
  let base = row * DV;
  ${rowSumsWgsl({ gs: 'G[base + j]' })}
  ${rowForEachWgsl('DX[base + j] = (G[base + j] - exp(Y[base + j]) * gs) * u.inv_tau;')}`
    : `
  let base = row * DV;
  ${rowSumsWgsl({ gy: 'G[base + j] * Y[base + j]' })}
  ${rowForEachWgsl('DX[base + j] = Y[base + j] * (G[base + j] - gy) * u.inv_tau;')}`;
  return rowKernelSource(k, decls, body);
}

/** The builders as the launchers call them: each source built once (see `memoSource`). */
const softmaxForwardSourceOnce = memoSource(softmaxForwardSource);
const softmaxBackwardSourceOnce = memoSource(softmaxBackwardSource);

/**
 * softmax((x − center) / τ) (or its log when `log`) over the last axis, as a new contiguous tensor.
 * `center` has D elements (shape [D] or [1, D]); x may be any view (it is read through `dense`).
 */
export function softmaxForwardRaw(x: Tensor, center: Tensor | null, tau: number, log: boolean): Tensor {
  const op = log ? 'logSoftmax' : 'softmax';
  const D = x.shape[x.rank - 1];
  const rows = D === 0 ? 0 : x.size / D;
  const e = x.engine;
  const dev = e.device;
  const y = e.empty(x.shape, { label: op, dtype: x.dtype }); // f16 in, f16 out; max and sum in f32
  if (rows > 0) {
    const xd = dense(x);
    const cd = center ? dense(center) : null;
    const k = rowConsts(dev, rows, D);
    const halves = halfNames({ Y: y, X: xd, C: cd });
    const kernel = dev.kernel(`${op}${rowSuffix(k)}${center ? '_center' : ''}${halfSuffix(halves)}`, halfStorage(softmaxForwardSourceOnce(k, log, !!center), halves));
    dev.dispatch(kernel, {
      uniforms: new Uniforms(4).u32(rows, D).f32(1 / tau).u32(0).bytes(),
      buffers: cd ? [y.buffer, xd.buffer, cd.buffer] : [y.buffer, xd.buffer],
      workgroups: rowGrid(k, rows),
    });
    release(xd, x);
    if (cd && center) release(cd, center);
  }
  return y;
}

/** dx of softmax / log-softmax from the saved output y and the upstream gradient g. */
export function softmaxBackwardRaw(y: Tensor, g: Tensor, tau: number, log: boolean): Tensor {
  requireF32('softmaxBackwardRaw', y, g);
  const D = y.shape[y.rank - 1];
  const rows = D === 0 ? 0 : y.size / D;
  const e = y.engine;
  const dev = e.device;
  const dx = e.empty(y.shape, { label: `${log ? 'logSoftmax' : 'softmax'}_grad` });
  if (rows === 0) return dx;
  const gd = dense(g);
  const k = rowConsts(dev, rows, D);
  const kernel = dev.kernel(`${log ? 'logSoftmax' : 'softmax'}_bwd${rowSuffix(k)}`, softmaxBackwardSourceOnce(k, log));
  dev.dispatch(kernel, {
    uniforms: new Uniforms(4).u32(rows, D).f32(1 / tau).u32(0).bytes(),
    buffers: [dx.buffer, y.buffer, gd.buffer],
    workgroups: rowGrid(k, rows),
  });
  release(gd, g);
  return dx;
}

/** The center's gradient dc = −Σ_rows dx, shaped like the center. */
export function softmaxCenterGradRaw(dx: Tensor, centerShape: Shape): Tensor {
  const D = dx.shape[dx.rank - 1];
  const rows = D === 0 ? 0 : dx.size / D;
  const flat = dx.view([rows, D], [D, 1], 0);
  const s = rows > 0 ? reduceAxisRaw('sum', flat, 0, false) : dx.engine.zeros([D]);
  flat.dispose();
  const neg = unaryRaw('neg', s);
  s.dispose();
  const dc = neg.view(centerShape, contiguousStrides(centerShape), 0);
  neg.dispose();
  return dc;
}

// -------------------------------------------------------------------------------------------------
// Float64 references (row-major data, rows of length D)

/** Options of the references: τ (default 1) and a center of length D. */
export interface SoftmaxRefOptions {
  temperature?: number;
  center?: ArrayLike<number> | null;
}

function refZ(x: ArrayLike<number>, D: number, opts: SoftmaxRefOptions, r: number): Float64Array {
  const tau = opts.temperature ?? 1;
  const z = new Float64Array(D);
  for (let j = 0; j < D; j++) z[j] = (x[r * D + j] - (opts.center ? opts.center[j] : 0)) / tau;
  return z;
}

/** Float64 log-softmax((x − c)/τ) over rows of length D. */
export function logSoftmaxRef(x: ArrayLike<number>, D: number, opts: SoftmaxRefOptions = {}): Float64Array {
  const rows = D === 0 ? 0 : x.length / D;
  const out = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    const z = refZ(x, D, opts, r);
    let m = -Infinity;
    for (let j = 0; j < D; j++) m = Math.max(m, z[j]);
    let s = 0;
    for (let j = 0; j < D; j++) s += Math.exp(z[j] - m);
    const ls = Math.log(s);
    for (let j = 0; j < D; j++) out[r * D + j] = z[j] - m - ls;
  }
  return out;
}

/** Float64 softmax((x − c)/τ) over rows of length D. */
export function softmaxRef(x: ArrayLike<number>, D: number, opts: SoftmaxRefOptions = {}): Float64Array {
  return logSoftmaxRef(x, D, opts).map(Math.exp);
}

/** Float64 VJP of softmax: dx_j = y_j (g_j − Σ g y)/τ per row; dc = −Σ_rows dx. */
export function softmaxVjpRef(
  x: ArrayLike<number>,
  D: number,
  g: ArrayLike<number>,
  opts: SoftmaxRefOptions = {},
): { dx: Float64Array; dcenter: Float64Array } {
  const tau = opts.temperature ?? 1;
  const y = softmaxRef(x, D, opts);
  const dx = new Float64Array(x.length);
  for (let r = 0; r * D < x.length; r++) {
    let gy = 0;
    for (let j = 0; j < D; j++) gy += g[r * D + j] * y[r * D + j];
    for (let j = 0; j < D; j++) dx[r * D + j] = (y[r * D + j] * (g[r * D + j] - gy)) / tau;
  }
  return { dx, dcenter: centerGradRef(dx, D) };
}

/** Float64 VJP of log-softmax: dx_j = (g_j − softmax_j Σ g)/τ per row; dc = −Σ_rows dx. */
export function logSoftmaxVjpRef(
  x: ArrayLike<number>,
  D: number,
  g: ArrayLike<number>,
  opts: SoftmaxRefOptions = {},
): { dx: Float64Array; dcenter: Float64Array } {
  const tau = opts.temperature ?? 1;
  const p = softmaxRef(x, D, opts);
  const dx = new Float64Array(x.length);
  for (let r = 0; r * D < x.length; r++) {
    let gs = 0;
    for (let j = 0; j < D; j++) gs += g[r * D + j];
    for (let j = 0; j < D; j++) dx[r * D + j] = (g[r * D + j] - p[r * D + j] * gs) / tau;
  }
  return { dx, dcenter: centerGradRef(dx, D) };
}

function centerGradRef(dx: Float64Array, D: number): Float64Array {
  const dc = new Float64Array(D);
  for (let i = 0; i < dx.length; i++) dc[i % D] -= dx[i];
  return dc;
}
