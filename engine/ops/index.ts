/**
 * The differentiable ops, one place: each launches the kernel of its family (kernels/*.ts) and
 * records its gradient rule. Tensor methods and the engine's functional API both call these.
 *
 * Two tiers (as tinygrad and llm.c do): primitives carry gradient rules composed of other kernels
 * (elementwise, reductions, views), and fused ops (matmul + bias + activation, softmax with
 * temperature and center, layernorm, attention, cross-entropy) ship a forward/backward kernel pair.
 */
import { record } from '../autograd.js';
import { broadcastShapes, broadcastStrides, contiguousStrides, fmt, inferReshape, normAxis, sameShape, type Shape, ShapeError } from '../shape.js';
import type { SoftmaxOptions, Tensor } from '../tensor.js';
import { checkTensor } from '../tensor.js';
import { copyRaw, fillInPlace, makeElementwiseOps, stridedCopy } from '../../kernels/elementwise.js';
import { argmax as argmaxK, max as maxK, mean as meanK, sum as sumK, sumTo } from '../../kernels/reduce.js';
import * as mm from '../../kernels/matmul.js';
import * as sm from '../../kernels/softmax.js';
import * as ln from '../../kernels/layernorm.js';
import * as at from '../../kernels/attention.js';
import * as ce from '../../kernels/cross-entropy.js';
import * as cv from '../../kernels/conv2d.js';

const ew = makeElementwiseOps(sumTo);

// -------------------------------------------------------------------------------------------------
// Elementwise

export const add = ew.add;
export const sub = ew.sub;
export const mul = ew.mul;
export const div = ew.div;
export const neg = ew.neg;
export const exp = ew.exp;
export const log = ew.log;
export const sqrt = ew.sqrt;
export const relu = ew.relu;
export const gelu = ew.gelu;
export const tanh = ew.tanh;
export const pow = ew.pow;
export const rsub = ew.rsub;

/** Writes `value` into every element of `t` in place (not differentiable). */
export function fill(t: Tensor, value: number): Tensor {
  return fillInPlace(t, value);
}

// -------------------------------------------------------------------------------------------------
// Reductions

export const sum = sumK;
export const mean = meanK;
export const max = maxK;
export const argmax = argmaxK;
export { sumTo };

// -------------------------------------------------------------------------------------------------
// Views and copies

/** A contiguous copy (new storage) that gradients flow through. */
export function copy(x: Tensor): Tensor {
  checkTensor(x, 'copy');
  const y = copyRaw(x);
  return record(y, 'copy', [x], (g) => [g]);
}

/** `x` itself as a new handle when already contiguous, else a contiguous copy. */
export function contiguous(x: Tensor): Tensor {
  checkTensor(x, 'contiguous');
  if (x.isContiguous) {
    const v = x.view(x.shape, x.strides, x.offset);
    return record(v, 'contiguous', [x], (g) => [g]);
  }
  return copy(x);
}

export function reshape(x: Tensor, shape: Shape): Tensor {
  checkTensor(x, 'reshape');
  const target = inferReshape(x.shape, shape);
  const src = x.isContiguous ? x : copyRaw(x);
  const y = src.view(target, contiguousStrides(target), 0);
  if (src !== x) src.dispose();
  return record(y, 'reshape', [x], (g) => [reshape(g, x.shape)]);
}

export function permute(x: Tensor, perm: readonly number[]): Tensor {
  checkTensor(x, 'permute');
  if (perm.length !== x.rank) throw new ShapeError(`permute: ${perm.length} axes given for a tensor ${fmt(x.shape)}`);
  const p = perm.map((a) => normAxis(a, x.rank, 'permute axis'));
  if (new Set(p).size !== p.length) throw new ShapeError(`permute: axes [${perm.join(', ')}] repeat`);
  const y = x.view(
    p.map((a) => x.shape[a]),
    p.map((a) => x.strides[a]),
    x.offset,
  );
  const inv: number[] = [];
  p.forEach((a, i) => (inv[a] = i));
  return record(y, 'permute', [x], (g) => [permute(g, inv)]);
}

export function slice(x: Tensor, dim: number, start: number, end: number): Tensor {
  checkTensor(x, 'slice');
  const d = normAxis(dim, x.rank, 'slice dim');
  const n = x.shape[d];
  const s = start < 0 ? start + n : start;
  const e = end < 0 ? end + n : Math.min(end, n);
  if (!(0 <= s && s <= e && e <= n)) throw new ShapeError(`slice: [${start}, ${end}) is out of range for dim ${dim} of ${fmt(x.shape)}`);
  const shape = x.shape.map((v, i) => (i === d ? e - s : v));
  const y = x.view(shape, x.strides, x.offset + s * x.strides[d]);
  return record(y, 'slice', [x], (g) => {
    // Scatter g into zeros of x's shape.
    const gx = x.engine.zeros(x.shape, { label: 'slice_grad' });
    const region = gx.view(shape, gx.strides, s * gx.strides[d]);
    const gc = g.isContiguous ? g : copyRaw(g);
    copyInto(region, gc);
    region.dispose();
    if (gc !== g) gc.dispose();
    return [gx];
  });
}

/**
 * `x` broadcast to `shape` (NumPy rules) as a view with stride 0 on the broadcast dimensions; the
 * gradient sums back over them.
 */
export function expand(x: Tensor, shape: Shape): Tensor {
  checkTensor(x, 'expand');
  const target = broadcastShapes(x.shape, shape, 'expand');
  if (!sameShape(target, shape)) throw new ShapeError(`expand: ${fmt(x.shape)} cannot be expanded to ${fmt(shape)}`);
  const y = x.view(shape, broadcastStrides(x.shape, x.strides, shape), x.offset);
  return record(y, 'expand', [x], (g) => [sumTo(g, x.shape)]);
}

/** Concatenates tensors along `dim` (differentiable). */
export function concat(xs: readonly Tensor[], dim = 0): Tensor {
  if (xs.length === 0) throw new ShapeError('concat: no tensors');
  const r = xs[0].rank;
  const d = normAxis(dim, r, 'concat dim');
  for (const t of xs) {
    checkTensor(t, 'concat');
    if (t.rank !== r || t.shape.some((v, i) => i !== d && v !== xs[0].shape[i])) {
      throw new ShapeError(`concat: shapes ${xs.map((x) => fmt(x.shape)).join(', ')} differ outside dim ${dim}`);
    }
  }
  const total = xs.reduce((a, t) => a + t.shape[d], 0);
  const shape = xs[0].shape.map((v, i) => (i === d ? total : v));
  const e = xs[0].engine;
  const out = e.empty(shape, { label: 'concat' });
  let off = 0;
  const starts: number[] = [];
  for (const t of xs) {
    starts.push(off);
    const region = out.view(t.shape, out.strides, off * out.strides[d]);
    copyInto(region, t);
    region.dispose();
    off += t.shape[d];
  }
  return record(out, 'concat', xs, (g) => xs.map((t, i) => (t.requiresGrad ? copyRaw(g.slice(d, starts[i], starts[i] + t.shape[d])) : null)));
}

/**
 * Copies `src` into the (possibly strided) view `dst` in place. Both must have the same shape.
 * Implemented as a strided gather into a temporary, then a scatter when `dst` is not contiguous.
 */
export function copyInto(dst: Tensor, src: Tensor): void {
  if (dst.shape.length !== src.shape.length || dst.shape.some((v, i) => v !== src.shape[i])) {
    throw new ShapeError(`copyInto: shapes ${fmt(dst.shape)} and ${fmt(src.shape)} differ`);
  }
  stridedCopy(dst, src);
}

// -------------------------------------------------------------------------------------------------
// Fused ops (kernels/ families)

export interface MatmulOptions {
  /** Added to every row: shape [N]. */
  bias?: Tensor | null;
  /** Applied after the bias, fused into the output write. */
  activation?: 'none' | 'relu' | 'gelu';
}

/** a @ b over the last two dims, batched (broadcast) over leading ones; transposed views read in place. */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  return mm.matmul(a, b, opts);
}

/** x @ weightᵀ + bias, the linear layer with PyTorch's weight layout [out, in]. */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null, activation: MatmulOptions['activation'] = 'none'): Tensor {
  return mm.matmul(x, weight.transpose(-2, -1), { bias: bias ?? null, activation });
}

export function softmax(x: Tensor, dim = -1, opts: SoftmaxOptions = {}): Tensor {
  return sm.softmax(x, lastDim(x, dim, 'softmax'), opts, false);
}

export function logSoftmax(x: Tensor, dim = -1, opts: SoftmaxOptions = {}): Tensor {
  return sm.softmax(x, lastDim(x, dim, 'logSoftmax'), opts, true);
}

export function layerNorm(x: Tensor, weight: Tensor | null, bias: Tensor | null, eps = 1e-5): Tensor {
  return ln.layerNorm(x, weight, bias, eps);
}

export function l2Normalize(x: Tensor, eps = 1e-12): Tensor {
  return ln.l2Normalize(x, eps);
}

export interface AttentionOptions {
  /** Multiplies Q·Kᵀ; default 1/√(head dim). */
  scale?: number;
  /** Also return the attention probabilities softmax(Q·Kᵀ·scale) (no gradient flows through them). */
  returnProbs?: boolean;
}

/**
 * softmax(Q·Kᵀ·scale)·V for q, k, v of shape [B, H, N, d] (or [BH, N, d]).
 * Returns `{ out, probs? }`; `probs` has shape [..., N, N].
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): { out: Tensor; probs?: Tensor } {
  return at.attention(q, k, v, opts);
}

/**
 * Attention on a packed qkv tensor [3, ..., N, d] (e.g. ViT's permuted qkv projection): the same
 * result as `attention(qkv[0], qkv[1], qkv[2])`, with one gradient for qkv instead of three.
 */
export function attentionPacked(qkv: Tensor, opts: AttentionOptions = {}): { out: Tensor; probs?: Tensor } {
  return at.attentionPacked(qkv, opts);
}

export interface CrossEntropyOptions {
  /** Temperature of the student logits (DINO: 0.1). */
  temperature?: number;
}

/**
 * Cross-entropy between probability targets and logits at a temperature, fused:
 * per row −Σ target · log_softmax(logits / τ); returns the per-row values [rows].
 * Gradient flows to `logits` only (targets are treated as constants).
 */
export function softCrossEntropy(target: Tensor, logits: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  return ce.softCrossEntropy(target, logits, opts);
}

export interface Conv2dOptions {
  stride?: number | [number, number];
  padding?: number | [number, number];
}

/** 2-D convolution, NCHW input, weight [Cout, Cin, kh, kw], optional bias [Cout]. */
export function conv2d(x: Tensor, weight: Tensor, bias: Tensor | null = null, opts: Conv2dOptions = {}): Tensor {
  return cv.conv2d(x, weight, bias, opts);
}

/** 2-D max pooling, NCHW, −∞ padding (ResNet: {kernel: 3, stride: 2, padding: 1}). */
export function maxPool2d(x: Tensor, opts: cv.MaxPool2dOptions): Tensor {
  return cv.maxPool2d(x, opts);
}

function lastDim(x: Tensor, dim: number, op: string): number {
  const d = normAxis(dim, x.rank, `${op} dim`);
  if (d !== x.rank - 1) throw new ShapeError(`${op}: only the last dimension is supported (got dim ${dim} of ${fmt(x.shape)}); permute first`);
  return d;
}
