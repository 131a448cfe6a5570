/**
 * Cross-entropy family: the soft-target cross-entropy of DINO's loss, fused.
 *
 * Math (per row r, z_j = logits_j / τ, τ > 0, T = Σ_j target_j)
 *   forward   loss_r = −Σ_j target_j · log_softmax(z)_j = T · (m + log S) − Σ_j target_j z_j
 *             with m = max z, S = Σ_j exp(z_j − m); computed as T·log S − Σ_j target_j (z_j − m)
 *             so both terms are ≥ 0 for non-negative targets (no cancellation).
 *   backward  ∂loss_r/∂logits_j = g_r · (softmax(z)_j · T − target_j) / τ
 *             (targets usually sum to 1, so T = 1, but T is carried: nothing assumes it).
 *   No gradient flows to `target`: in DINO it is the teacher's output, a constant (the op,
 *   engine/ops/cross-entropy.ts, records only `logits` as its input).
 *
 * Kernels
 * - forward: one row kernel (the row layouts of kernels/common.ts): pass 1 the row max M of the
 *   logits and the sum of exp((l − M)/τ) (online, `rowMaxSumExpWgsl`), pass 2 Σ target·(l − M)/τ
 *   and Σ target.
 *   It writes the loss [rows] and saves per row (M, log S, T) for the backward.
 * - backward: elementwise (one invocation per logit, no reduction left to do thanks to the saved
 *   row statistics), the same kernel for both layouts.
 * Inputs are read through `dense()`; the output shape is logits.shape without its last dim.
 */
import { Uniforms } from '../engine/device.js';
import { fmt, ShapeError } from '../engine/shape.js';
import type { Tensor } from '../engine/tensor.js';
import { grid1d, linearIndexWgsl, type RowConsts, rowConsts, rowGrid, rowKernelSource, rowMaxSumExpWgsl, rowSuffix, rowSumsWgsl } from './common.js';
import { dense, release } from './elementwise.js';

/** Options of the cross-entropy op (engine/ops/cross-entropy.ts). */
export interface CrossEntropyOptions {
  /** Temperature of the student logits (DINO: 0.1). */
  temperature?: number;
}

/** Saved statistics per row: (max logit M, log S, Σ target). */
const STATS = 3;
const WG = 256;

/**
 * WGSL of the forward kernel. Bindings: L (loss, out), S (row stats, out), TG (target), Z (logits).
 * Pure function of the row constants.
 */
export function crossEntropyForwardSource(k: RowConsts): string {
  const decls = `struct U { rows: u32, D: u32, inv_tau: f32, pad: u32, }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> L: array<f32>;
@group(0) @binding(2) var<storage, read_write> S: array<f32>;
@group(0) @binding(3) var<storage, read> TG: array<T>;
@group(0) @binding(4) var<storage, read> Z: array<T>;`;
  const body = `
  let base = row * DV;
  ${rowMaxSumExpWgsl('m', 's', (j) => `Z[base + ${j}]`, 'u.inv_tau')}
  let log_s = log(s);
  ${rowSumsWgsl({ tz: 'TG[base + j] * ((Z[base + j] - m) * u.inv_tau)', tt: 'TG[base + j]' })}
  if (lid == 0u) {
    L[row] = tt * log_s - tz;
    S[${STATS}u * row] = m;
    S[${STATS}u * row + 1u] = log_s;
    S[${STATS}u * row + 2u] = tt;
  }`;
  return rowKernelSource(k, decls, body);
}

/** WGSL of the backward kernel: DZ (out) from Z (logits), T (target), S (row stats), G (upstream [rows]). */
export function crossEntropyBackwardSource(): string {
  return /* wgsl */ `
struct U { n: u32, D: u32, inv_tau: f32, pad: u32, }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> DZ: array<f32>;
@group(0) @binding(2) var<storage, read> Z: array<f32>;
@group(0) @binding(3) var<storage, read> T: array<f32>;
@group(0) @binding(4) var<storage, read> S: array<f32>;
@group(0) @binding(5) var<storage, read> G: array<f32>;
${linearIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= u.n) { return; }
  let row = i / u.D;
  let m = S[${STATS}u * row];
  let log_s = S[${STATS}u * row + 1u];
  let tt = S[${STATS}u * row + 2u];
  let p = exp((Z[i] - m) * u.inv_tau - log_s);
  DZ[i] = G[row] * (p * tt - T[i]) * u.inv_tau;
}`;
}

/**
 * Per-row −Σ target · log_softmax(logits / τ) over the last axis: the loss (shape logits.shape[:-1])
 * and the row statistics the backward reads ([rows, 3]). target and logits have the same shape.
 */
export function softCrossEntropyForwardRaw(target: Tensor, logits: Tensor, tau: number): { loss: Tensor; stats: Tensor } {
  const op = 'softCrossEntropy';
  const D = logits.shape[logits.rank - 1];
  const outShape = logits.shape.slice(0, -1);
  const rows = outShape.reduce((a, b) => a * b, 1);
  const e = logits.engine;
  const dev = e.device;
  const loss = e.empty(outShape, { label: op });
  const stats = e.empty([rows, STATS], { label: `${op}_stats` });
  if (rows > 0) {
    if (D === 0) throw new ShapeError(`${op}: logits ${fmt(logits.shape)} have rows of length 0`);
    const td = dense(target);
    const ld = dense(logits);
    const k = rowConsts(dev, rows, D);
    dev.dispatch(dev.kernel(`${op}${rowSuffix(k)}`, crossEntropyForwardSource(k)), {
      uniforms: new Uniforms(4).u32(rows, D).f32(1 / tau).u32(0).bytes(),
      buffers: [loss.buffer, stats.buffer, td.buffer, ld.buffer],
      workgroups: rowGrid(k, rows),
    });
    release(td, target);
    release(ld, logits);
  }
  return { loss, stats };
}

/** ∂L/∂logits from the saved row statistics and the upstream gradient g ([rows]). */
export function softCrossEntropyBackwardRaw(target: Tensor, logits: Tensor, stats: Tensor, g: Tensor, tau: number): Tensor {
  const D = logits.shape[logits.rank - 1];
  const rows = logits.shape.slice(0, -1).reduce((a, b) => a * b, 1);
  const e = logits.engine;
  const dev = e.device;
  const dz = e.empty(logits.shape, { label: 'softCrossEntropy_grad' });
  const n = rows * D;
  if (n > 0) {
    const td = dense(target);
    const ld = dense(logits);
    const gd = dense(g);
    dev.dispatch(dev.kernel('softCrossEntropy_bwd', crossEntropyBackwardSource()), {
      uniforms: new Uniforms(4).u32(n, D).f32(1 / tau).u32(0).bytes(),
      buffers: [dz.buffer, ld.buffer, td.buffer, stats.buffer, gd.buffer],
      workgroups: grid1d(n, WG),
    });
    release(td, target);
    release(ld, logits);
    release(gd, g);
  }
  return dz;
}

// -------------------------------------------------------------------------------------------------
// Float64 references (row-major data, rows of length D)

function refRow(logits: ArrayLike<number>, D: number, tau: number, r: number): Float64Array {
  // log_softmax(logits_r / τ) in float64
  const z = new Float64Array(D);
  let m = -Infinity;
  for (let j = 0; j < D; j++) {
    z[j] = logits[r * D + j] / tau;
    m = Math.max(m, z[j]);
  }
  let s = 0;
  for (let j = 0; j < D; j++) s += Math.exp(z[j] - m);
  const lse = m + Math.log(s);
  for (let j = 0; j < D; j++) z[j] -= lse;
  return z;
}

/** Float64 per-row −Σ_j target_j · log_softmax(logits / τ)_j. */
export function softCrossEntropyRef(target: ArrayLike<number>, logits: ArrayLike<number>, D: number, temperature = 1): Float64Array {
  const rows = logits.length / D;
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    const ls = refRow(logits, D, temperature, r);
    let acc = 0;
    for (let j = 0; j < D; j++) acc -= target[r * D + j] * ls[j];
    out[r] = acc;
  }
  return out;
}

/** Float64 VJP to the logits: g_r (softmax_j · Σ target − target_j) / τ. */
export function softCrossEntropyVjpRef(
  target: ArrayLike<number>,
  logits: ArrayLike<number>,
  D: number,
  g: ArrayLike<number>,
  temperature = 1,
): Float64Array {
  const rows = logits.length / D;
  const out = new Float64Array(logits.length);
  for (let r = 0; r < rows; r++) {
    const ls = refRow(logits, D, temperature, r);
    let tt = 0;
    for (let j = 0; j < D; j++) tt += target[r * D + j];
    for (let j = 0; j < D; j++) out[r * D + j] = (g[r] * (Math.exp(ls[j]) * tt - target[r * D + j])) / temperature;
  }
  return out;
}
