/**
 * Softmax and log-softmax over the last dimension, with a temperature and DINO's center, and their
 * gradients (kernels and math: kernels/softmax.ts). Gradients flow to x and to the center (when it
 * requires one). Saved for the backward: the output y (the caller's tensor) and τ; nothing else.
 */
import { record } from '../autograd.js';
import { fmt, normAxis, ShapeError } from '../shape.js';
import { checkTensor, type Tensor } from '../tensor.js';
import { softmaxBackwardRaw, softmaxCenterGradRaw, softmaxForwardRaw, type SoftmaxOptions } from '../../kernels/softmax.js';

export type { SoftmaxOptions };

/** softmax((x − center) / temperature) over `dim` (only the last dimension is supported: -1). */
export function softmax(x: Tensor, dim = -1, opts: SoftmaxOptions = {}): Tensor {
  return softmaxOp(x, dim, opts, false);
}

/** log-softmax((x − center) / temperature) over `dim` (only the last dimension is supported: -1). */
export function logSoftmax(x: Tensor, dim = -1, opts: SoftmaxOptions = {}): Tensor {
  return softmaxOp(x, dim, opts, true);
}

function softmaxOp(x: Tensor, dim: number, opts: SoftmaxOptions, log: boolean): Tensor {
  const op = log ? 'logSoftmax' : 'softmax';
  checkTensor(x, op);
  const d = normAxis(dim, x.rank, `${op} dim`);
  if (d !== x.rank - 1) throw new ShapeError(`${op}: only the last dimension is supported (got dim ${dim} of ${fmt(x.shape)}); permute first`);
  const tau = opts.temperature ?? 1;
  checkTemperature(op, tau);
  const center = opts.center ?? null;
  if (center) checkCenter(x, center, op);
  const y = softmaxForwardRaw(x, center, tau, log);
  return record(y, {
    name: op,
    inputs: [x, center],
    backward: (g) => {
      const dx = softmaxBackwardRaw(y, g, tau, log);
      const dc = center?.requiresGrad ? softmaxCenterGradRaw(dx, center.shape) : null;
      if (!x.requiresGrad) {
        dx.dispose();
        return [null, dc];
      }
      return [dx, dc];
    },
  });
}

/** Validates τ: a finite positive number. */
export function checkTemperature(op: string, tau: number): void {
  if (typeof tau !== 'number' || !Number.isFinite(tau) || tau <= 0) {
    throw new RangeError(`${op}: temperature must be a finite number > 0, got ${tau}`);
  }
}

/** The center must be a live tensor of D elements, shaped [D] or [1, ..., 1, D]. */
function checkCenter(x: Tensor, center: Tensor, op: string): void {
  checkTensor(center, `${op} center`);
  const D = x.shape[x.rank - 1];
  const lead = center.shape.slice(0, -1);
  if (center.rank < 1 || center.shape[center.rank - 1] !== D || lead.some((d) => d !== 1)) {
    throw new ShapeError(
      `${op}: center ${fmt(center.shape)} does not match the last dimension of x ${fmt(x.shape)} (expected [${D}] or [1, ${D}])`,
    );
  }
}
