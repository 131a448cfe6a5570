/**
 * Index selection with its gradient (kernels and math: kernels/gather.ts):
 * `indexSelect(x, dim, idx)` takes the rows idx[0 … M) of x along `dim` (torch.index_select with
 * host indices); the gradient scatter-adds back into zeros of x's shape (rows picked twice receive
 * both). Saved for the backward: the uploaded indices (the inverse is built from the host copy).
 */
import { record } from '../autograd.js';
import { fmt, normAxis, ShapeError } from '../shape.js';
import { checkTensor, type Tensor } from '../tensor.js';
import { indexAddRaw, IndexPlan, indexSelectRaw } from '../../kernels/gather.js';

/** x's rows `idx` along `dim` (host integers in [0, x.shape[dim]), repeats allowed, at least one). */
export function indexSelect(x: Tensor, dim: number, idx: ArrayLike<number>): Tensor {
  const op = 'indexSelect';
  checkTensor(x, op);
  if (x.rank < 1) throw new ShapeError(`${op}: x ${fmt(x.shape)} needs at least one dimension`);
  const d = normAxis(dim, x.rank, `${op} dim`);
  if (idx.length === 0) throw new ShapeError(`${op}: no indices`);
  const plan = new IndexPlan(x.engine, idx, x.shape[d]);
  const y = indexSelectRaw(x, d, plan);
  const xShape = [...x.shape];
  return record(y, { name: op, inputs: [x], saved: [plan.idx], backward: (g) => [indexAddRaw(g, xShape, d, plan)] });
}
