/**
 * The gather family: index selection along one dimension, and its adjoint, the scatter-add.
 *
 * Math, for x viewed as (O, R, I) around the selected dimension (O = the product of the dimensions
 * before it, R = its length, I = the product of those after it) and host indices idx[0 … M):
 *   forward   y[o, j, i] = x[o, idx[j], i]                                    y: (O, M, I)
 *   backward  dx[o, r, i] = Σ_{j : idx[j] = r} dy[o, j, i]                     dx: (O, R, I)
 *             (a row selected twice receives both gradient rows; a row never selected gets 0)
 *
 * The backward is written as a gather too, so it needs no atomics and its sums have a fixed order:
 * an {@link IndexPlan} inverts idx on the host once (CSR form: for each source row r the list of
 * the j with idx[j] = r, ascending, at lists[offsets[r] … offsets[r + 1])), and invocation
 * (o, r, i) adds its rows in that order. Equal inputs therefore give equal bits, which exact resume
 * relies on.
 *
 * Indices are host values (the masks of DINOv2's iBOT are drawn on the CPU), uploaded as u32 in an
 * index buffer (an {@link IndexPlan}); the backward uploads the inverse for its one dispatch. Kernels are one invocation per output
 * element, shapes in uniforms: one pipeline each.
 */
import { Uniforms } from '../engine/device.js';
import type { Engine } from '../engine/engine.js';
import { fmt, ShapeError } from '../engine/shape.js';
import type { Tensor } from '../engine/tensor.js';
import { grid1d, linearIndexWgsl } from './common.js';
import { dense, release } from './elementwise.js';

const WG = 256;

/** WGSL of the forward: Y[o, j, i] = X[o, IDX[j], i]. */
export function indexSelectSource(): string {
  return /* wgsl */ `
struct U { n: u32, M: u32, R: u32, I: u32, }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> Y: array<f32>;
@group(0) @binding(2) var<storage, read> X: array<f32>;
@group(0) @binding(3) var<storage, read> IDX: array<u32>;
${linearIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = linear_index(gid, nwg);
  if (e >= u.n) { return; }
  let i = e % u.I;
  let oj = e / u.I;
  let j = oj % u.M;
  let o = oj / u.M;
  Y[e] = X[(o * u.R + IDX[j]) * u.I + i];
}`;
}

/** WGSL of the backward: DX[o, r, i] = Σ_{q ∈ [OFF[r], OFF[r+1])} DY[o, LIST[q], i], in list order. */
export function indexAddSource(): string {
  return /* wgsl */ `
struct U { n: u32, M: u32, R: u32, I: u32, }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> DX: array<f32>;
@group(0) @binding(2) var<storage, read> DY: array<f32>;
@group(0) @binding(3) var<storage, read> OFF: array<u32>;
@group(0) @binding(4) var<storage, read> LIST: array<u32>;
${linearIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = linear_index(gid, nwg);
  if (e >= u.n) { return; }
  let i = e % u.I;
  let orr = e / u.I;
  let r = orr % u.R;
  let o = orr / u.R;
  var acc = 0.0;
  for (var q = OFF[r]; q < OFF[r + 1u]; q++) {
    acc += DY[(o * u.M + LIST[q]) * u.I + i];
  }
  DX[e] = acc;
}`;
}

/** Uploads u32 values into a (f32-typed) storage tensor of the same length. */
function uploadU32(engine: Engine, values: Uint32Array, label: string): Tensor {
  const t = engine.empty([Math.max(values.length, 1)], { label });
  if (values.length) engine.device.write(t.buffer, 0, values);
  return t;
}

/** The inverse of idx over R source rows (CSR, see the header). */
export function invertIndices(idx: ArrayLike<number>, R: number): { offsets: Uint32Array; lists: Uint32Array } {
  const offsets = new Uint32Array(R + 1);
  for (let j = 0; j < idx.length; j++) offsets[idx[j] + 1]++;
  for (let r = 0; r < R; r++) offsets[r + 1] += offsets[r];
  const fill = offsets.slice(0, R);
  const lists = new Uint32Array(idx.length);
  for (let j = 0; j < idx.length; j++) lists[fill[idx[j]]++] = j;
  return { offsets, lists };
}

/**
 * Host indices into R rows, checked and uploaded once (u32). Owns one GPU tensor, `idx`: the op
 * saves it with its gradient node, which frees it. The backward's inverse is built, used and freed
 * by {@link indexAddRaw}.
 */
export class IndexPlan {
  readonly M: number;
  /** The indices: a host copy and the GPU upload. */
  readonly host: Uint32Array;
  readonly idx: Tensor;

  constructor(
    readonly engine: Engine,
    indices: ArrayLike<number>,
    readonly R: number,
  ) {
    const M = (this.M = indices.length);
    const u = (this.host = new Uint32Array(M));
    for (let j = 0; j < M; j++) {
      const v = indices[j];
      if (!(Number.isInteger(v) && v >= 0 && v < R)) throw new RangeError(`indexSelect: index ${v} at position ${j} is outside [0, ${R})`);
      u[j] = v;
    }
    this.idx = uploadU32(engine, u, 'index-select-idx');
  }
}

/** (O, R, I) around `dim` of a shape. */
export function aroundDim(shape: readonly number[], dim: number): { O: number; R: number; I: number } {
  const prod = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);
  return { O: prod(shape.slice(0, dim)), R: shape[dim], I: prod(shape.slice(dim + 1)) };
}

/** y = x with dimension `dim` replaced by the rows plan.idx selects (x read densely). */
export function indexSelectRaw(x: Tensor, dim: number, plan: IndexPlan): Tensor {
  const { O, R, I } = aroundDim(x.shape, dim);
  if (R !== plan.R) throw new ShapeError(`indexSelect: the plan indexes ${plan.R} rows, x ${fmt(x.shape)} has ${R} along dim ${dim}`);
  const shape = [...x.shape];
  shape[dim] = plan.M;
  const e = x.engine;
  const y = e.empty(shape, { label: 'indexSelect' });
  const n = O * plan.M * I;
  if (n > 0) {
    const xd = dense(x);
    e.device.dispatch(e.device.kernel('index_select', indexSelectSource()), {
      uniforms: new Uniforms(4).u32(n, plan.M, R, I).bytes(),
      buffers: [y.buffer, xd.buffer, plan.idx.buffer],
      workgroups: grid1d(n, WG),
    });
    release(xd, x);
  }
  return y;
}

/** dx (x's shape, `xShape`) from dy: the scatter-add of the selected rows (see the header). */
export function indexAddRaw(dy: Tensor, xShape: readonly number[], dim: number, plan: IndexPlan): Tensor {
  const { O, R, I } = aroundDim(xShape, dim);
  const e = dy.engine;
  const dx = e.empty(xShape, { label: 'indexSelect_grad' });
  const n = O * R * I;
  if (n > 0) {
    const inv = invertIndices(plan.host, R);
    const offsets = uploadU32(e, inv.offsets, 'index-select-offsets');
    const lists = uploadU32(e, inv.lists, 'index-select-lists');
    const gd = dense(dy);
    e.device.dispatch(e.device.kernel('index_add', indexAddSource()), {
      uniforms: new Uniforms(4).u32(n, plan.M, R, I).bytes(),
      buffers: [dx.buffer, gd.buffer, offsets.buffer, lists.buffer],
      workgroups: grid1d(n, WG),
    });
    release(gd, dy);
    offsets.dispose();
    lists.dispose();
  }
  return dx;
}

// -------------------------------------------------------------------------------------------------
// Float64 references (row-major data)

/** y[o, j, i] = x[o, idx[j], i] for x of `shape`. */
export function indexSelectRef(x: ArrayLike<number>, shape: readonly number[], dim: number, idx: ArrayLike<number>): Float64Array {
  const { O, R, I } = aroundDim(shape, dim);
  const M = idx.length;
  const y = new Float64Array(O * M * I);
  for (let o = 0; o < O; o++) for (let j = 0; j < M; j++) for (let i = 0; i < I; i++) y[(o * M + j) * I + i] = x[(o * R + idx[j]) * I + i];
  return y;
}

/** dx[o, r, i] = Σ_{j: idx[j] = r} dy[o, j, i], for x of `shape`. */
export function indexAddRef(dy: ArrayLike<number>, shape: readonly number[], dim: number, idx: ArrayLike<number>): Float64Array {
  const { O, R, I } = aroundDim(shape, dim);
  const M = idx.length;
  const dx = new Float64Array(O * R * I);
  for (let o = 0; o < O; o++) for (let j = 0; j < M; j++) for (let i = 0; i < I; i++) dx[(o * R + idx[j]) * I + i] += dy[(o * M + j) * I + i];
  return dx;
}
