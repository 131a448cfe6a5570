/**
 * DINOv2's iBOT patch loss on the masked patches (dinov2/loss/ibot_patch_loss.py, forward_masked).
 *
 *   L = −(1/n) · Σ_{p masked} w_p · Σ_k t_{p,k} · log softmax(s_p/τs)_k        (τs = 0.1)
 *
 * - s_p: the student head's logits of masked patch p (its input saw mask_token there);
 * - t_p: the teacher targets of the same patch (the teacher saw the unmasked crop), rows sum to 1;
 * - w_p = 1/(masked patches in p's image) (collate's masks_weight), so each masked image
 *   contributes the mean over its masked patches;
 * - n = the number of global crops 2B (student_masks_flat.shape[0]): unmasked images contribute
 *   0 but still count, so L is the mean over all 2B images of each image's mean.
 * Float32 throughout (the official casts to float32 for this loss).
 *
 * Gradient: ∂L/∂s_p = (w_p/n) · (softmax(s_p/τs)·Σ_k t_p,k − t_p)/τs (the fused cross-entropy
 * kernel's backward), nothing to the targets.
 *
 * A batch with no masked patch (M = 0) has no rows: the loss is an exact 0 with no graph; no weight
 * is ever 1/0 because weights exist only for masked patches.
 */
import type { Engine } from '../../engine/engine.js';
import * as ops from '../../engine/ops/index.js';
import { fmt, ShapeError } from '../../engine/shape.js';
import type { Tensor } from '../../engine/tensor.js';

/**
 * The iBOT loss of the masked rows: `student` (M, K) logits, `targets` (M, K), `weights` (M) the
 * per-patch weights, `images` n = 2B. Returns a scalar (with a graph to `student`).
 */
export function ibotPatchLoss(student: Tensor, targets: Tensor, weights: Tensor, images: number, studentTemp = 0.1): Tensor {
  const [M, K] = student.shape;
  if (student.rank !== 2 || targets.rank !== 2 || targets.shape[0] !== M || targets.shape[1] !== K) {
    throw new ShapeError(`iBOT loss: student ${fmt(student.shape)} and targets ${fmt(targets.shape)} differ`);
  }
  if (weights.rank !== 1 || weights.shape[0] !== M) throw new ShapeError(`iBOT loss: weights ${fmt(weights.shape)} are not (${M})`);
  if (!(Number.isInteger(images) && images > 0)) throw new Error(`iBOT loss: ${images} images`);
  const ce = ops.softCrossEntropy(targets, student, { temperature: studentTemp }); // (M) = −Σ t·log p
  return ce.mul(weights).sum().mul(1 / images);
}

/** The loss of a batch without masked patches: 0 (no graph). */
export function zeroLoss(engine: Engine): Tensor {
  return engine.zeros([], { label: 'ibot-loss-empty' });
}

/** Float64 reference of the loss (rows (M, K) row-major). */
export function ibotPatchLossRef(
  student: ArrayLike<number>,
  targets: ArrayLike<number>,
  weights: ArrayLike<number>,
  M: number,
  K: number,
  images: number,
  studentTemp = 0.1,
): number {
  let total = 0;
  for (let p = 0; p < M; p++) {
    const lp = logSoftmaxRow(student, p, K, studentTemp);
    let ce = 0;
    for (let k = 0; k < K; k++) ce -= targets[p * K + k] * lp[k];
    total += weights[p] * ce;
  }
  return total / images;
}

/** Float64 ∂L/∂student of the reference. */
export function ibotPatchLossVjpRef(
  student: ArrayLike<number>,
  targets: ArrayLike<number>,
  weights: ArrayLike<number>,
  M: number,
  K: number,
  images: number,
  studentTemp = 0.1,
): Float64Array {
  const g = new Float64Array(M * K);
  for (let p = 0; p < M; p++) {
    const lp = logSoftmaxRow(student, p, K, studentTemp);
    let tSum = 0;
    for (let k = 0; k < K; k++) tSum += targets[p * K + k];
    const c = weights[p] / images / studentTemp;
    for (let k = 0; k < K; k++) g[p * K + k] = c * (Math.exp(lp[k]) * tSum - targets[p * K + k]);
  }
  return g;
}

function logSoftmaxRow(x: ArrayLike<number>, r: number, K: number, temp: number): Float64Array {
  let m = -Infinity;
  for (let k = 0; k < K; k++) m = Math.max(m, x[r * K + k] / temp);
  let s = 0;
  for (let k = 0; k < K; k++) s += Math.exp(x[r * K + k] / temp - m);
  const lse = m + Math.log(s);
  return Float64Array.from({ length: K }, (_, k) => x[r * K + k] / temp - lse);
}
