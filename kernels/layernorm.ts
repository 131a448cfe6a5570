/**
 * Normalisation family: LayerNorm over the last dimension (optional affine weight and bias) and
 * L2 normalisation (torch.nn.functional.normalize), forward and backward kernels and their float64
 * references.
 *
 * LayerNorm (per row of D elements; biased variance, as PyTorch)
 *   forward   μ = Σx/D,  σ² = Σ(x − μ)²/D,  r = 1/√(σ² + eps),  x̂ = (x − μ)·r,  y = x̂·w + b
 *   backward  ĝ = g ⊙ w
 *             dx = r · (ĝ − mean(ĝ) − x̂ · mean(ĝ ⊙ x̂))
 *             dw = Σ_rows g ⊙ x̂,   db = Σ_rows g
 *   Saved: μ and r per row (two [rows] buffers written by the forward), x, w.
 *   Accuracy: two passes (never E[x²] − μ²), and both passes work on x − K with K = the row's
 *   first element (exact in f32 for data clustered around a large mean), so rows with |μ| ≫ σ keep
 *   their digits: the mean is K + Σ(x − K)/D and x − μ is formed as (x − K) − Σ(x − K)/D.
 *
 * L2 normalisation (per row)
 *   forward   n = ‖x‖₂,  y = x / max(n, eps)
 *   backward  n > eps:  dx = (g − y·(y·g)) / n       (∂y_j/∂x_k = (δ_jk − y_j y_k)/n)
 *             n ≤ eps:  dx = g / eps                 (y = x/eps is linear)
 *   Saved: y (the output) and n per row.
 *
 * Kernels: row kernels in the layouts of kernels/common.ts (one invocation, subgroup or workgroup
 * per row; vec4 rows when D % 4 == 0); the LayerNorm parameter gradients are column sums computed by an
 * elementwise-style kernel over (row chunk, column) pairs, then summed over the chunks.
 * Rows are independent; inputs are read through `denseAligned()` (aligned views bound in place); outputs are new contiguous tensors;
 * parameter gradients are returned as new tensors (autograd accumulates them with +=).
 */
import { type BufferBinding, Uniforms } from '../engine/device.js';
import type { Tensor } from '../engine/tensor.js';
import { bind, grid1d, linearIndexWgsl, type RowConsts, rowCacheWgsl, rowConsts, rowGrid, rowKernelSource, rowLoopSumsWgsl, rowLoopWgsl, rowSuffix } from './common.js';
import { denseAligned, release } from './elementwise.js';
import { reduceAxisRaw } from './reduce.js';

/** Rows summed by one invocation of the parameter-gradient kernel before the cross-chunk sum. */
const PARAM_CHUNK = 64;
const WG = 256;

/** A storage binding of f32 (per-row scalars), or of T (row data, per-column parameters) with `ty`. */
function storage(binding: number, name: string, write = false, ty: 'f32' | 'T' = 'f32'): string {
  return `@group(0) @binding(${binding}) var<storage, ${write ? 'read_write' : 'read'}> ${name}: array<${ty}>;`;
}

/**
 * WGSL of the LayerNorm forward. Bindings: Y, MEAN, RSTD (outputs), X, then W and B when present.
 * Pure function of (row constants, hasWeight, hasBias).
 */
export function layerNormForwardSource(kc: RowConsts, hasWeight: boolean, hasBias: boolean): string {
  let b = 5;
  const decls = `struct U { rows: u32, D: u32, eps: f32, pad: u32, }
@group(0) @binding(0) var<uniform> u: U;
${storage(1, 'Y', true, 'T')}
${storage(2, 'MEAN', true)}
${storage(3, 'RSTD', true)}
${storage(4, 'X', false, 'T')}
${hasWeight ? storage(b++, 'W', false, 'T') : ''}
${hasBias ? storage(b++, 'B', false, 'T') : ''}`;
  const affine = `${hasWeight ? ' * W[j]' : ''}${hasBias ? ' + B[j]' : ''}`;
  // x − K, from the register cache after the first pass when the row is short.
  const xk = kc.cache ? 'xs[t]' : '(X[base + j] - k)';
  const body = `
  let base = row * DV;
  let k = ${kc.vec === 4 ? 'X[base].x' : 'X[base]'};
  ${rowCacheWgsl(kc, 'xs')}
  ${rowLoopSumsWgsl(kc, { s1: xk }, kc.cache ? 'xs[t] = X[base + j] - k;' : '')}
  let m1 = s1 / f32(u.D);
  ${rowLoopSumsWgsl(kc, { s2: 'd * d' }, `let d = ${xk} - m1;`)}
  let rstd = inverseSqrt(s2 / f32(u.D) + u.eps);
  ${rowLoopWgsl(kc, `Y[base + j] = (${xk} - m1) * rstd${affine};`)}
  if (lid == 0u) {
    MEAN[row] = k + m1;
    RSTD[row] = rstd;
  }`;
  return rowKernelSource(kc, decls, body);
}

/**
 * WGSL of the fused LayerNorm input-gradient kernel: DX (out) from X, G, MEAN, RSTD and W (when
 * present). Pure function of (row constants, hasWeight).
 */
export function layerNormBackwardSource(kc: RowConsts, hasWeight: boolean): string {
  const decls = `struct U { rows: u32, D: u32, pad0: u32, pad1: u32, }
@group(0) @binding(0) var<uniform> u: U;
${storage(1, 'DX', true, 'T')}
${storage(2, 'X', false, 'T')}
${storage(3, 'G', false, 'T')}
${storage(4, 'MEAN')}
${storage(5, 'RSTD')}
${hasWeight ? storage(6, 'W', false, 'T') : ''}`;
  const load = `let xh = (X[base + j] - mean) * rstd; let gh = G[base + j]${hasWeight ? ' * W[j]' : ''};`;
  // x̂ and ĝ, from the register cache in the second pass when the row is short.
  const again = kc.cache ? 'let xh = xhs[t]; let gh = ghs[t];' : load;
  const body = `
  let base = row * DV;
  let mean = MEAN[row];
  let rstd = RSTD[row];
  ${rowCacheWgsl(kc, 'xhs')}
  ${rowCacheWgsl(kc, 'ghs')}
  ${rowLoopSumsWgsl(kc, { sg: 'gh', sgx: 'gh * xh' }, kc.cache ? `${load} xhs[t] = xh; ghs[t] = gh;` : load)}
  let mg = sg / f32(u.D);
  let mgx = sgx / f32(u.D);
  ${rowLoopWgsl(kc, `${again} DX[base + j] = rstd * (gh - mg - xh * mgx);`)}`;
  return rowKernelSource(kc, decls, body);
}

/**
 * WGSL of the LayerNorm parameter-gradient kernel: for chunk c and column j (i = c·D + j < n),
 * P[i] = Σ_{r in chunk c} g[r, j]·x̂[r, j] and P[n + i] = Σ g[r, j] (P is [2, chunks, D]). One
 * invocation per (c, j): neighbouring invocations read neighbouring columns.
 */
export function layerNormParamGradSource(): string {
  return /* wgsl */ `
struct U { n: u32, D: u32, rows: u32, chunk: u32, }
@group(0) @binding(0) var<uniform> u: U;
${storage(1, 'P', true)}
${storage(2, 'X')}
${storage(3, 'G')}
${storage(4, 'MEAN')}
${storage(5, 'RSTD')}
${linearIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= u.n) { return; }
  let c = i / u.D;
  let j = i % u.D;
  let r0 = c * u.chunk;
  let r1 = min(r0 + u.chunk, u.rows);
  var dw: f32 = 0.0;
  var db: f32 = 0.0;
  for (var r = r0; r < r1; r++) {
    let g = G[r * u.D + j];
    dw += g * (X[r * u.D + j] - MEAN[r]) * RSTD[r];
    db += g;
  }
  P[i] = dw;
  P[u.n + i] = db;
}`;
}

/** Rows and row length of a tensor normalised over its last dimension. */
function rowsOf(x: Tensor): { rows: number; D: number } {
  const D = x.shape[x.rank - 1];
  return { rows: D === 0 ? 0 : x.size / D, D };
}

/**
 * LayerNorm forward: y (new, contiguous, x's shape) and the row statistics μ and r = 1/√(σ² + eps)
 * ([rows] each) that the backward reads. weight and bias ([D]) are optional.
 */
export function layerNormForwardRaw(x: Tensor, weight: Tensor | null, bias: Tensor | null, eps: number): { y: Tensor; mean: Tensor; rstd: Tensor } {
  const op = 'layerNorm';
  const { rows, D } = rowsOf(x);
  const e = x.engine;
  const dev = e.device;
  const y = e.empty(x.shape, { label: op });
  const mean = e.empty([rows], { label: `${op}_mean` });
  const rstd = e.empty([rows], { label: `${op}_rstd` });
  if (rows > 0) {
    // Parameters are usually aligned arena views: bound in place, never copied.
    const xd = denseAligned(x);
    const wd = weight ? denseAligned(weight) : null;
    const bd = bias ? denseAligned(bias) : null;
    const k = rowConsts(dev, rows, D, true);
    const kernel = dev.kernel(`${op}${rowSuffix(k)}${wd ? '_w' : ''}${bd ? '_b' : ''}`, layerNormForwardSource(k, !!wd, !!bd));
    const buffers: (GPUBuffer | BufferBinding)[] = [y.buffer, mean.buffer, rstd.buffer, bind(xd)];
    if (wd) buffers.push(bind(wd));
    if (bd) buffers.push(bind(bd));
    dev.dispatch(kernel, { uniforms: new Uniforms(4).u32(rows, D).f32(eps).u32(0).bytes(), buffers, workgroups: rowGrid(k, rows) });
    release(xd, x);
    if (wd && weight) release(wd, weight);
    if (bd && bias) release(bd, bias);
  }
  return { y, mean, rstd };
}

/** ∂L/∂x of LayerNorm from x, the weight, the saved row statistics and the upstream gradient g. */
export function layerNormBackwardRaw(x: Tensor, weight: Tensor | null, mean: Tensor, rstd: Tensor, g: Tensor): Tensor {
  const { rows, D } = rowsOf(x);
  const e = x.engine;
  const dev = e.device;
  const dx = e.empty(x.shape, { label: 'layerNorm_grad' });
  if (rows === 0) return dx;
  const xd = denseAligned(x);
  const gd = denseAligned(g);
  const wd = weight ? denseAligned(weight) : null;
  const k = rowConsts(dev, rows, D, true);
  const buffers: (GPUBuffer | BufferBinding)[] = [dx.buffer, bind(xd), bind(gd), mean.buffer, rstd.buffer];
  if (wd) buffers.push(bind(wd));
  dev.dispatch(dev.kernel(`layerNorm_bwd${rowSuffix(k)}${wd ? '_w' : ''}`, layerNormBackwardSource(k, !!wd)), {
    uniforms: new Uniforms(4).u32(rows, D, 0, 0).bytes(),
    buffers,
    workgroups: rowGrid(k, rows),
  });
  release(xd, x);
  release(gd, g);
  if (wd && weight) release(wd, weight);
  return dx;
}

/**
 * [dw, db] = [Σ_rows g ⊙ x̂, Σ_rows g], each of shape [D]: the chunk partials of both go into one
 * [2, chunks, D] buffer and one reduction over the chunks finishes both (two dispatches in all;
 * one when the rows fit in one chunk).
 */
export function layerNormParamGradRaw(x: Tensor, mean: Tensor, rstd: Tensor, g: Tensor): [Tensor, Tensor] {
  const { rows, D } = rowsOf(x);
  const e = x.engine;
  const dev = e.device;
  if (rows === 0) return [e.zeros([D]), e.zeros([D])];
  const chunks = Math.ceil(rows / PARAM_CHUNK);
  const partial = e.empty([2, chunks, D], { label: 'layerNorm_dwdb_partial' });
  const xd = denseAligned(x);
  const gd = denseAligned(g);
  const n = chunks * D;
  dev.dispatch(dev.kernel('layerNorm_param_grad', layerNormParamGradSource()), {
    uniforms: new Uniforms(4).u32(n, D, rows, PARAM_CHUNK).bytes(),
    buffers: [partial.buffer, bind(xd), bind(gd), mean.buffer, rstd.buffer],
    workgroups: grid1d(n, WG),
  });
  release(xd, x);
  release(gd, g);
  const both = chunks === 1 ? partial.view([2, D], [D, 1], 0) : reduceAxisRaw('sum', partial, 1, false); // [2, D]
  partial.dispose();
  const dw = both.view([D], [1], 0);
  const db = both.view([D], [1], D);
  both.dispose();
  return [dw, db];
}

// -------------------------------------------------------------------------------------------------
// L2 normalisation

/** WGSL of the l2-normalize forward: Y, NORM (outputs), X. Pure function of the row constants. */
export function l2NormalizeForwardSource(kc: RowConsts): string {
  const decls = `struct U { rows: u32, D: u32, eps: f32, pad: u32, }
@group(0) @binding(0) var<uniform> u: U;
${storage(1, 'Y', true, 'T')}
${storage(2, 'NORM', true)}
${storage(3, 'X', false, 'T')}`;
  const x = kc.cache ? 'xs[t]' : 'X[base + j]';
  const body = `
  let base = row * DV;
  ${rowCacheWgsl(kc, 'xs')}
  ${rowLoopSumsWgsl(kc, { ss: `${x} * ${x}` }, kc.cache ? 'xs[t] = X[base + j];' : '')}
  let n = sqrt(ss);
  let inv = 1.0 / max(n, u.eps);
  ${rowLoopWgsl(kc, `Y[base + j] = ${x} * inv;`)}
  if (lid == 0u) { NORM[row] = n; }`;
  return rowKernelSource(kc, decls, body);
}

/** WGSL of the fused l2-normalize backward: DX (out) from Y, G, NORM. Pure function of the row constants. */
export function l2NormalizeBackwardSource(kc: RowConsts): string {
  const decls = `struct U { rows: u32, D: u32, eps: f32, pad: u32, }
@group(0) @binding(0) var<uniform> u: U;
${storage(1, 'DX', true, 'T')}
${storage(2, 'Y', false, 'T')}
${storage(3, 'G', false, 'T')}
${storage(4, 'NORM')}`;
  const [y, g] = kc.cache ? ['ys[t]', 'gs[t]'] : ['Y[base + j]', 'G[base + j]'];
  const body = `
  let base = row * DV;
  let n = NORM[row];
  let big = n > u.eps;
  let inv = 1.0 / max(n, u.eps);
  ${rowCacheWgsl(kc, 'ys')}
  ${rowCacheWgsl(kc, 'gs')}
  ${rowLoopSumsWgsl(kc, { yg: `${y} * ${g}` }, kc.cache ? 'ys[t] = Y[base + j]; gs[t] = G[base + j];' : '')}
  ${rowLoopWgsl(kc, `DX[base + j] = select(${g}, ${g} - ${y} * yg, big) * inv;`)}`;
  return rowKernelSource(kc, decls, body);
}

/** l2-normalize forward: y = x / max(‖x‖₂, eps) per row (new, contiguous) and the row norms n ([rows]). */
export function l2NormalizeForwardRaw(x: Tensor, eps: number): { y: Tensor; norm: Tensor } {
  const op = 'l2Normalize';
  const { rows, D } = rowsOf(x);
  const e = x.engine;
  const dev = e.device;
  const y = e.empty(x.shape, { label: op });
  const norm = e.empty([rows], { label: `${op}_norm` });
  if (rows > 0) {
    const k = rowConsts(dev, rows, D, true);
    // Weights (DINO's weight-normalised last layer) are aligned arena views: bound in place.
    const xd = denseAligned(x);
    dev.dispatch(dev.kernel(`${op}${rowSuffix(k)}`, l2NormalizeForwardSource(k)), {
      uniforms: new Uniforms(4).u32(rows, D).f32(eps).u32(0).bytes(),
      buffers: [y.buffer, norm.buffer, bind(xd)],
      workgroups: rowGrid(k, rows),
    });
    release(xd, x);
  }
  return { y, norm };
}

/** ∂L/∂x of l2-normalize from the saved output y and row norms and the upstream gradient g. */
export function l2NormalizeBackwardRaw(y: Tensor, norm: Tensor, g: Tensor, eps: number): Tensor {
  const op = 'l2Normalize';
  const { rows, D } = rowsOf(y);
  const e = y.engine;
  const dev = e.device;
  const dx = e.empty(y.shape, { label: `${op}_grad` });
  if (rows > 0) {
    const k = rowConsts(dev, rows, D, true);
    const gd = denseAligned(g);
    dev.dispatch(dev.kernel(`${op}_bwd${rowSuffix(k)}`, l2NormalizeBackwardSource(k)), {
      uniforms: new Uniforms(4).u32(rows, D).f32(eps).u32(0).bytes(),
      buffers: [dx.buffer, y.buffer, bind(gd), norm.buffer],
      workgroups: rowGrid(k, rows),
    });
    release(gd, g);
  }
  return dx;
}

// -------------------------------------------------------------------------------------------------
// Float64 references (row-major data, rows of length D)

/** Float64 LayerNorm: y, and the per-row mean and 1/√(σ² + eps). */
export function layerNormRef(
  x: ArrayLike<number>,
  D: number,
  weight: ArrayLike<number> | null,
  bias: ArrayLike<number> | null,
  eps: number,
): { y: Float64Array; mean: Float64Array; rstd: Float64Array } {
  const rows = D === 0 ? 0 : x.length / D;
  const y = new Float64Array(x.length);
  const mean = new Float64Array(rows);
  const rstd = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let j = 0; j < D; j++) s += x[r * D + j];
    const mu = s / D;
    let v = 0;
    for (let j = 0; j < D; j++) v += (x[r * D + j] - mu) ** 2;
    const rs = 1 / Math.sqrt(v / D + eps);
    for (let j = 0; j < D; j++) y[r * D + j] = (x[r * D + j] - mu) * rs * (weight ? weight[j] : 1) + (bias ? bias[j] : 0);
    mean[r] = mu;
    rstd[r] = rs;
  }
  return { y, mean, rstd };
}

/** Float64 VJP of LayerNorm: dx, dw = Σ_rows g·x̂, db = Σ_rows g. */
export function layerNormVjpRef(
  x: ArrayLike<number>,
  D: number,
  weight: ArrayLike<number> | null,
  eps: number,
  g: ArrayLike<number>,
): { dx: Float64Array; dw: Float64Array; db: Float64Array } {
  const { mean, rstd } = layerNormRef(x, D, weight, null, eps);
  const rows = mean.length;
  const dx = new Float64Array(x.length);
  const dw = new Float64Array(D);
  const db = new Float64Array(D);
  for (let r = 0; r < rows; r++) {
    let sg = 0;
    let sgx = 0;
    for (let j = 0; j < D; j++) {
      const xh = (x[r * D + j] - mean[r]) * rstd[r];
      const gh = g[r * D + j] * (weight ? weight[j] : 1);
      sg += gh;
      sgx += gh * xh;
      dw[j] += g[r * D + j] * xh;
      db[j] += g[r * D + j];
    }
    for (let j = 0; j < D; j++) {
      const xh = (x[r * D + j] - mean[r]) * rstd[r];
      const gh = g[r * D + j] * (weight ? weight[j] : 1);
      dx[r * D + j] = rstd[r] * (gh - sg / D - (xh * sgx) / D);
    }
  }
  return { dx, dw, db };
}

/** Float64 x / max(‖x‖₂, eps) per row. */
export function l2NormalizeRef(x: ArrayLike<number>, D: number, eps: number): Float64Array {
  const y = new Float64Array(x.length);
  for (let r = 0; r * D < x.length; r++) {
    let ss = 0;
    for (let j = 0; j < D; j++) ss += x[r * D + j] ** 2;
    const d = Math.max(Math.sqrt(ss), eps);
    for (let j = 0; j < D; j++) y[r * D + j] = x[r * D + j] / d;
  }
  return y;
}

/** Float64 VJP of l2-normalize: (g − y (y·g))/‖x‖ when ‖x‖ > eps, else g/eps. */
export function l2NormalizeVjpRef(x: ArrayLike<number>, D: number, eps: number, g: ArrayLike<number>): Float64Array {
  const y = l2NormalizeRef(x, D, eps);
  const dx = new Float64Array(x.length);
  for (let r = 0; r * D < x.length; r++) {
    let ss = 0;
    let yg = 0;
    for (let j = 0; j < D; j++) {
      ss += x[r * D + j] ** 2;
      yg += y[r * D + j] * g[r * D + j];
    }
    const n = Math.sqrt(ss);
    for (let j = 0; j < D; j++) dx[r * D + j] = n > eps ? (g[r * D + j] - y[r * D + j] * yg) / n : g[r * D + j] / eps;
  }
  return dx;
}
