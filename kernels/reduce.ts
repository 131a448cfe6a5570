/**
 * Reduction family: sum, max and argmax over one axis or over all elements; `expandRaw`, the
 * broadcast back (the backward of a sum); and `sumTo`, the reduction that undoes broadcasting in
 * backward passes.
 *
 * Layout: the input (made contiguous) is read as (outer, R, inner) around the reduced axis; one
 * invocation produces one output element, looping over R with stride `inner` (neighbouring
 * invocations read neighbouring addresses when inner > 1). No workgroup memory and no barriers, the
 * shape CPU Vulkan drivers run fastest. A reduction over all elements of a large tensor runs in
 * passes of at most CHUNK elements per invocation, so no invocation loops over millions.
 *
 * The gradients (engine/ops/reduce.ts) are composed of these kernels and the elementwise ones:
 * sum → g broadcast back; mean → g / R broadcast back; max → g routed to every element equal to
 * the maximum (ties each receive the full gradient); argmax has none.
 */
import { Uniforms } from '../engine/device.js';
import { broadcastStrides, contiguousStrides, fmt, normAxis, type Shape, ShapeError } from '../engine/shape.js';
import type { Tensor } from '../engine/tensor.js';
import { requireF32 } from './f16.js';
import { grid1d, linearIndexWgsl } from './common.js';
import { castRaw, copyRaw, dense, fillInPlace, release } from './elementwise.js';

const WG = 64;
const CHUNK = 1024;

export type ReduceOp = 'sum' | 'max' | 'argmax';

export function reduceSource(op: ReduceOp): string {
  const init = op === 'sum' ? '0.0' : '-3.402823e38';
  const body =
    op === 'sum'
      ? 'acc += v;'
      : op === 'max'
        ? 'acc = max(acc, v);'
        : 'if (v > acc || (r == 0u)) { acc = v; best = r; }';
  const result = op === 'argmax' ? 'f32(best)' : 'acc';
  return /* wgsl */ `
struct U { n: u32, R: u32, inner: u32, }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> Y: array<f32>;
@group(0) @binding(2) var<storage, read> X: array<f32>;
${linearIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= u.n) { return; }
  let o = i / u.inner;
  let j = i % u.inner;
  var base = o * u.R * u.inner + j;
  var acc: f32 = ${init};
  var best: u32 = 0u;
  for (var r = 0u; r < u.R; r++) {
    let v = X[base + r * u.inner];
    ${body}
  }
  Y[i] = ${result};
}`;
}

/** Reduces a contiguous tensor viewed as (outer, R, inner); returns shape (outer, inner) flattened into `outShape`. */
function launchReduce(op: ReduceOp, x: Tensor, outer: number, R: number, inner: number, outShape: Shape): Tensor {
  const e = x.engine;
  const out = e.empty(outShape, { label: op });
  const n = outer * inner;
  if (n === 0) return out;
  if (R === 0) {
    if (op !== 'sum') throw new ShapeError(`${op} of an empty axis (tensor ${fmt(x.shape)})`);
    return fillInPlace(out, 0);
  }
  const kernel = e.device.kernel(`reduce_${op}`, reduceSource(op));
  e.device.dispatch(kernel, {
    uniforms: new Uniforms(4).u32(n, R, inner).bytes(),
    buffers: [out.buffer, x.buffer],
    workgroups: grid1d(n, WG),
  });
  return out;
}

/** Reduces along `axis`; keepDim keeps a size-1 axis. */
export function reduceAxisRaw(op: ReduceOp, x: Tensor, axis: number, keepDim: boolean): Tensor {
  requireF32('reduceAxisRaw', x);
  const a = normAxis(axis, x.rank, `${op} dim`);
  const d = dense(x);
  const shape = x.shape;
  const outer = shape.slice(0, a).reduce((p, q) => p * q, 1);
  const R = shape[a];
  const inner = shape.slice(a + 1).reduce((p, q) => p * q, 1);
  const outShape = keepDim ? shape.map((s, i) => (i === a ? 1 : s)) : shape.filter((_, i) => i !== a);
  const out = launchReduce(op, d, outer, R, inner, outShape);
  release(d, x);
  return out;
}

/** Reduces every element to one; keepDim gives shape [1, 1, ...]. */
export function reduceAllRaw(op: 'sum' | 'max', x: Tensor, keepDim: boolean): Tensor {
  requireF32('reduceAllRaw', x);
  const outShape = keepDim ? x.shape.map(() => 1) : [];
  let cur = dense(x);
  let n = x.size;
  // Passes of CHUNK elements per invocation until one value remains.
  while (n > CHUNK) {
    const rows = Math.ceil(n / CHUNK);
    if (rows * CHUNK !== n) {
      // Pad the tail with the identity of the op so every row has CHUNK elements.
      const padded = x.engine.empty([rows * CHUNK], { label: `${op}_pad` });
      fillInPlace(padded, op === 'sum' ? 0 : -3.4028234663852886e38);
      x.engine.device.copy(cur.buffer, 0, padded.buffer, 0, n * 4);
      if (cur !== x) cur.dispose();
      cur = padded;
    }
    const next = launchReduce(op, cur, rows, CHUNK, 1, [rows]);
    if (cur !== x) cur.dispose();
    cur = next;
    n = rows;
  }
  const out = launchReduce(op, cur, 1, n, 1, outShape);
  if (cur !== x) cur.dispose();
  return out;
}

/** argmax along `dim` (indices as f32) or over all elements. */
export function argmaxRaw(x: Tensor, dim?: number, keepDim = false): Tensor {
  requireF32('argmaxRaw', x);
  if (dim === undefined) {
    const flat = dense(x);
    const v = flat.view([1, x.size], [x.size, 1], 0);
    const out = reduceAxisRaw('argmax', v, 1, false);
    v.dispose();
    release(flat, x);
    return keepDim ? reshapeRaw(out, x.shape.map(() => 1)) : reshapeRaw(out, []);
  }
  return reduceAxisRaw('argmax', x, dim, keepDim);
}

function reshapeRaw(t: Tensor, shape: Shape): Tensor {
  const v = t.view(shape, contiguousStrides(shape), 0);
  t.dispose();
  return v;
}

/** `g` (shape `small`, or `small` with the reduced axis removed) broadcast to `shape`, copied. */
export function expandRaw(g: Tensor, shape: Shape): Tensor {
  const v = g.view(shape, broadcastStrides(g.shape, g.strides, shape), g.offset);
  const out = copyRaw(v);
  v.dispose();
  return out;
}

/** Sums `g` over broadcast dimensions so it has `shape` (undoes NumPy broadcasting); always a new tensor. */
export function sumTo(g: Tensor, shape: Shape): Tensor {
  // An f16 gradient (mixed-precision training: a bias read by an f16 matmul) is summed in f32,
  // and the sum stays f32 (autograd gives it its input's dtype).
  if (g.dtype === 'f16') {
    const g32 = castRaw(g, 'f32');
    const s = sumTo(g32, shape);
    g32.dispose();
    return s;
  }
  const lead = g.rank - shape.length;
  if (lead < 0) throw new ShapeError(`sumTo: ${fmt(g.shape)} cannot be reduced to ${fmt(shape)}`);
  let cur = g;
  // Reduce leading dims (collapse them into one and sum).
  if (lead > 0) {
    const rest = g.shape.slice(lead);
    const d = dense(g);
    const collapsed = [g.shape.slice(0, lead).reduce((a, b) => a * b, 1), ...rest];
    const lv = d.view(collapsed, contiguousStrides(collapsed), 0);
    cur = reduceAxisRaw('sum', lv, 0, false);
    lv.dispose();
    release(d, g);
  }
  for (let i = 0; i < shape.length; i++) {
    if (shape[i] === 1 && cur.shape[i] !== 1) {
      const next = reduceAxisRaw('sum', cur, i, true);
      if (cur !== g) cur.dispose();
      cur = next;
    } else if (shape[i] !== cur.shape[i]) {
      throw new ShapeError(`sumTo: ${fmt(g.shape)} cannot be reduced to ${fmt(shape)}`);
    }
  }
  return cur === g ? copyRaw(g) : cur;
}

// -------------------------------------------------------------------------------------------------
// Float64 references

/** Reference reduction of a row-major array along `axis` (keepDim-free output order). */
export function reduceRef(data: ArrayLike<number>, shape: Shape, axis: number, op: ReduceOp | 'mean'): Float64Array {
  const outer = shape.slice(0, axis).reduce((p, q) => p * q, 1);
  const R = shape[axis];
  const inner = shape.slice(axis + 1).reduce((p, q) => p * q, 1);
  const out = new Float64Array(outer * inner);
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < inner; j++) {
      let acc = op === 'max' || op === 'argmax' ? -Infinity : 0;
      let best = 0;
      for (let r = 0; r < R; r++) {
        const v = data[(o * R + r) * inner + j];
        if (op === 'sum' || op === 'mean') acc += v;
        else if (v > acc) {
          acc = v;
          best = r;
        }
      }
      out[o * inner + j] = op === 'argmax' ? best : op === 'mean' ? acc / R : acc;
    }
  }
  return out;
}
