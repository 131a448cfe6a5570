/**
 * Shapes and strides: element counts, contiguous strides, broadcasting, axis normalisation, and the
 * error messages that name the shapes involved.
 */

export type Shape = readonly number[];

export class ShapeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ShapeError';
  }
}

export function fmt(shape: Shape): string {
  return `[${shape.join(', ')}]`;
}

export function numel(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function contiguousStrides(shape: Shape): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

export function isContiguous(shape: Shape, strides: Shape): boolean {
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] !== 1 && strides[i] !== acc) return false;
    acc *= shape[i];
  }
  return true;
}

export function checkShape(shape: Shape): void {
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new ShapeError(`invalid shape ${fmt(shape)}: dimensions must be non-negative integers`);
  }
}

/** Normalises a possibly negative axis for a tensor of rank `rank`. */
export function normAxis(axis: number, rank: number, what = 'axis'): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= Math.max(rank, 1)) {
    throw new ShapeError(`${what} ${axis} is out of range for a tensor of rank ${rank}`);
  }
  return a;
}

/** The broadcast shape of two shapes (NumPy rules); the error names both shapes. */
export function broadcastShapes(a: Shape, b: Shape, op = 'broadcast'): number[] {
  const n = Math.max(a.length, b.length);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new ShapeError(`${op}: shapes ${fmt(a)} and ${fmt(b)} cannot be broadcast together`);
    }
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/**
 * Strides that read a tensor of shape `shape`/`strides` as if it had the (larger) shape `target`:
 * leading dimensions are added with stride 0 and broadcast dimensions get stride 0.
 */
export function broadcastStrides(shape: Shape, strides: Shape, target: Shape): number[] {
  const out = new Array<number>(target.length).fill(0);
  const off = target.length - shape.length;
  for (let i = 0; i < shape.length; i++) out[off + i] = shape[i] === 1 && target[off + i] !== 1 ? 0 : strides[i];
  return out;
}

export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Resolves a reshape target with at most one -1. */
export function inferReshape(from: Shape, to: Shape): number[] {
  const n = numel(from);
  const out = [...to];
  const neg = out.indexOf(-1);
  if (neg >= 0) {
    if (out.indexOf(-1, neg + 1) >= 0) throw new ShapeError(`reshape ${fmt(from)} -> ${fmt(to)}: only one dimension may be -1`);
    const rest = numel(out.filter((_, i) => i !== neg));
    if (rest === 0 || n % rest !== 0) throw new ShapeError(`reshape ${fmt(from)} -> ${fmt(to)}: sizes do not divide`);
    out[neg] = n / rest;
  }
  checkShape(out);
  if (numel(out) !== n) throw new ShapeError(`reshape ${fmt(from)} -> ${fmt(to)}: ${n} elements cannot become ${numel(out)}`);
  return out;
}

/**
 * Strides under which `newShape` views the same elements, in the same row-major order, as a tensor
 * of `shape` and `strides` — or null when no strides can (the reshape must copy). Dimensions of
 * the old shape that are laid out back to back (stride[d − 1] = stride[d]·shape[d]) form chunks; a
 * new shape is a view when each chunk splits into whole new dimensions (PyTorch's `view` rule).
 */
export function reshapeStrides(shape: Shape, strides: Shape, newShape: Shape): number[] | null {
  const n = numel(shape);
  if (n !== numel(newShape)) return null;
  if (n === 0 || shape.length === 0) return contiguousStrides(newShape);
  const out = new Array<number>(newShape.length);
  let viewD = newShape.length - 1;
  let chunkStride = strides[shape.length - 1];
  let chunkNumel = 1;
  let viewNumel = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    chunkNumel *= shape[d];
    // A chunk ends at d when d is the first dim or dim d − 1 does not continue it.
    if (d === 0 || (shape[d - 1] !== 1 && strides[d - 1] !== chunkNumel * chunkStride)) {
      while (viewD >= 0 && (viewNumel < chunkNumel || newShape[viewD] === 1)) {
        out[viewD] = viewNumel * chunkStride;
        viewNumel *= newShape[viewD];
        viewD--;
      }
      if (viewNumel !== chunkNumel) return null;
      if (d > 0) {
        chunkStride = strides[d - 1];
        chunkNumel = 1;
        viewNumel = 1;
      }
    }
  }
  return viewD === -1 ? out : null;
}
