/**
 * Views and copies with their gradients: contiguous, reshape, permute, slice, expand, concat and
 * the in-place `copyInto`. A view shares its input's storage (no kernel runs); copies use the copy
 * and scatter kernels of kernels/elementwise.ts (`copy` itself is an elementwise op).
 *
 * Gradients
 *   reshape → g reshaped back       permute → g permuted by the inverse permutation
 *   slice   → g scattered into zeros of x's shape
 *   expand  → g summed over the broadcast dimensions
 *   concat  → g cut back into the pieces (a contiguous copy each)
 */
import { record } from '../autograd.js';
import { broadcastShapes, broadcastStrides, contiguousStrides, fmt, inferReshape, normAxis, reshapeStrides, sameShape, type Shape, ShapeError } from '../shape.js';
import { checkTensor, type Tensor } from '../tensor.js';
import { copyRaw, stridedCopy } from '../../kernels/elementwise.js';
import { sumTo } from '../../kernels/reduce.js';
import { copy } from './elementwise.js';

/** `x` itself as a new handle when already contiguous, else a contiguous copy. */
export function contiguous(x: Tensor): Tensor {
  checkTensor(x, 'contiguous');
  if (x.isContiguous) {
    const v = x.view(x.shape, x.strides, x.offset);
    return record(v, { name: 'contiguous', inputs: [x], backward: (g) => [g] });
  }
  return copy(x);
}

/**
 * Same elements, new shape (one dimension may be -1): a view whenever x's layout allows it (a
 * contiguous tensor always; a permuted or sliced one when the dimensions being merged or split are
 * laid out back to back, `reshapeStrides`), else a contiguous copy.
 */
export function reshape(x: Tensor, shape: Shape): Tensor {
  checkTensor(x, 'reshape');
  const target = inferReshape(x.shape, shape);
  const strides = reshapeStrides(x.shape, x.strides, target);
  let y: Tensor;
  if (strides) {
    y = x.view(target, strides, x.offset);
  } else {
    const src = copyRaw(x);
    y = src.view(target, contiguousStrides(target), 0);
    src.dispose();
  }
  return record(y, { name: 'reshape', inputs: [x], backward: (g) => [reshape(g, x.shape)] });
}

/** The dimensions reordered: axis i of the result is axis perm[i] of x. A view. */
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
  return record(y, { name: 'permute', inputs: [x], backward: (g) => [permute(g, inv)] });
}

/** Elements `start` to `end` (exclusive; negative counts from the end) along `dim`. A view. */
export function slice(x: Tensor, dim: number, start: number, end: number): Tensor {
  checkTensor(x, 'slice');
  const d = normAxis(dim, x.rank, 'slice dim');
  const n = x.shape[d];
  const s = start < 0 ? start + n : start;
  const e = end < 0 ? end + n : Math.min(end, n);
  if (!(0 <= s && s <= e && e <= n)) throw new ShapeError(`slice: [${start}, ${end}) is out of range for dim ${dim} of ${fmt(x.shape)}`);
  const shape = x.shape.map((v, i) => (i === d ? e - s : v));
  const y = x.view(shape, x.strides, x.offset + s * x.strides[d]);
  return record(y, {
    name: 'slice',
    inputs: [x],
    backward: (g) => {
      // Scatter g into zeros of x's shape.
      const gx = x.engine.zeros(x.shape, { label: 'slice_grad' });
      const region = gx.view(shape, gx.strides, s * gx.strides[d]);
      const gc = g.isContiguous ? g : copyRaw(g);
      copyInto(region, gc);
      region.dispose();
      if (gc !== g) gc.dispose();
      return [gx];
    },
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
  return record(y, { name: 'expand', inputs: [x], backward: (g) => [sumTo(g, x.shape)] });
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
  return record(out, {
    name: 'concat',
    inputs: xs,
    backward: (g) =>
      xs.map((t, i) => {
        if (!t.requiresGrad) return null;
        const piece = g.view(t.shape, g.strides, g.offset + starts[i] * g.strides[d]);
        const gt = copyRaw(piece);
        piece.dispose();
        return gt;
      }),
  });
}

/** Copies `src` into the (possibly strided) view `dst` in place. Both must have the same shape. Not differentiable. */
export function copyInto(dst: Tensor, src: Tensor): void {
  checkTensor(dst, 'copyInto');
  checkTensor(src, 'copyInto');
  if (!sameShape(dst.shape, src.shape)) throw new ShapeError(`copyInto: shapes ${fmt(dst.shape)} and ${fmt(src.shape)} differ`);
  stridedCopy(dst, src);
}
