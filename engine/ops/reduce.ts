/**
 * Reductions with their gradients: sum, mean and max over one axis or over all elements, argmax
 * (no gradient), and `sumTo` (undoes broadcasting; no gradient). Kernels: kernels/reduce.ts.
 *
 * Gradients (R = the number of elements reduced into each output)
 *   sum  → g broadcast back over the reduced axis
 *   mean → g / R broadcast back
 *   max  → g routed to every element equal to its maximum (ties each receive the full gradient)
 */
import { record } from '../autograd.js';
import { contiguousStrides, normAxis, type Shape } from '../shape.js';
import { checkTensor, type Tensor } from '../tensor.js';
import { binaryRaw, unaryRaw } from '../../kernels/elementwise.js';
import { argmaxRaw, expandRaw, reduceAllRaw, reduceAxisRaw, sumTo } from '../../kernels/reduce.js';

export { sumTo };

/** The gradient's view shape: the reduced tensor with its axis (or every axis) restored as size 1. */
function keptShape(shape: Shape, axis: number | undefined): number[] {
  return axis === undefined ? shape.map(() => 1) : shape.map((s, i) => (i === axis ? 1 : s));
}

/** Sum over `dim` (or over every element when it is omitted). */
export function sum(x: Tensor, dim?: number, keepDim = false): Tensor {
  checkTensor(x, 'sum');
  const axis = dim === undefined ? undefined : normAxis(dim, x.rank, 'sum dim');
  const y = axis === undefined ? reduceAllRaw('sum', x, keepDim) : reduceAxisRaw('sum', x, axis, keepDim);
  return record(y, {
    name: 'sum',
    inputs: [x],
    backward: (g) => {
      const gk = g.view(keptShape(x.shape, axis), contiguousStrides(keptShape(x.shape, axis)), g.offset);
      const gx = expandRaw(gk, x.shape);
      gk.dispose();
      return [gx];
    },
  });
}

/** Mean over `dim` (or over every element when it is omitted). */
export function mean(x: Tensor, dim?: number, keepDim = false): Tensor {
  checkTensor(x, 'mean');
  const axis = dim === undefined ? undefined : normAxis(dim, x.rank, 'mean dim');
  const R = axis === undefined ? x.size : x.shape[axis];
  const s = axis === undefined ? reduceAllRaw('sum', x, keepDim) : reduceAxisRaw('sum', x, axis, keepDim);
  const y = unaryRaw('mulScalar', s, 1 / R);
  s.dispose();
  return record(y, {
    name: 'mean',
    inputs: [x],
    backward: (g) => {
      const gk = g.view(keptShape(x.shape, axis), contiguousStrides(keptShape(x.shape, axis)), g.offset);
      const ge = expandRaw(gk, x.shape);
      gk.dispose();
      const gx = unaryRaw('mulScalar', ge, 1 / R);
      ge.dispose();
      return [gx];
    },
  });
}

/** Maximum over `dim` (or over every element when it is omitted). */
export function max(x: Tensor, dim?: number, keepDim = false): Tensor {
  checkTensor(x, 'max');
  const axis = dim === undefined ? undefined : normAxis(dim, x.rank, 'max dim');
  const y = axis === undefined ? reduceAllRaw('max', x, keepDim) : reduceAxisRaw('max', x, axis, keepDim);
  return record(y, {
    name: 'max',
    inputs: [x],
    backward: (g) => {
      const ks = keptShape(x.shape, axis);
      const yk = y.view(ks, contiguousStrides(ks), y.offset);
      const gk = g.view(ks, contiguousStrides(ks), g.offset);
      const mask = binaryRaw('eq', x, yk);
      const gx = binaryRaw('mul', mask, gk);
      mask.dispose();
      yk.dispose();
      gk.dispose();
      return [gx];
    },
  });
}

/** Indices of the maxima along `dim` (or over every element), as f32 values. No gradient. */
export function argmax(x: Tensor, dim?: number, keepDim = false): Tensor {
  checkTensor(x, 'argmax');
  return argmaxRaw(x, dim, keepDim);
}
