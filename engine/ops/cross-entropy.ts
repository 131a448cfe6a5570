/**
 * DINO's soft-target cross-entropy with its gradient (kernels and math: kernels/cross-entropy.ts).
 * The gradient flows to the logits only: the targets (the teacher's output) are constants.
 * Saved for the backward: target and logits (the caller's) and the row statistics (max, log Σ exp,
 * Σ target per row).
 */
import { record } from '../autograd.js';
import { fmt, sameShape, ShapeError } from '../shape.js';
import { checkTensor, type Tensor } from '../tensor.js';
import { type CrossEntropyOptions, softCrossEntropyBackwardRaw, softCrossEntropyForwardRaw } from '../../kernels/cross-entropy.js';
import { checkTemperature } from './softmax.js';

export type { CrossEntropyOptions };

/**
 * Cross-entropy between probability targets and logits at a temperature, fused:
 * per row −Σ target · log_softmax(logits / τ); returns the per-row values [rows].
 * Gradient flows to `logits` only (targets are treated as constants).
 */
export function softCrossEntropy(target: Tensor, logits: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  const op = 'softCrossEntropy';
  checkTensor(target, `${op} target`);
  checkTensor(logits, `${op} logits`);
  if (!sameShape(target.shape, logits.shape)) {
    throw new ShapeError(`${op}: target ${fmt(target.shape)} and logits ${fmt(logits.shape)} must have the same shape`);
  }
  if (logits.rank < 1) throw new ShapeError(`${op}: logits ${fmt(logits.shape)} need at least one dimension`);
  if (target.engine !== logits.engine) throw new Error(`${op}: target and logits belong to different engines`);
  const tau = opts.temperature ?? 1;
  checkTemperature(op, tau);
  const { loss, stats } = softCrossEntropyForwardRaw(target, logits, tau);
  return record(loss, {
    name: op,
    inputs: [logits],
    saved: [stats],
    backward: (g) => [softCrossEntropyBackwardRaw(target, logits, stats, g, tau)],
  });
}
