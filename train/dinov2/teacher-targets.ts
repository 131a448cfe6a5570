/**
 * DINOv2's teacher targets for one head's outputs, shared by the CLS (DINO) and patch (iBOT) terms:
 * dinov2/loss/dino_clstoken_loss.py and ibot_patch_loss.py implement the same two modes.
 *
 *   'center':         q = softmax((t − c)/τt), then c ← m·c + (1 − m)·mean_rows(t)   (m = 0.9)
 *   'sinkhorn_knopp': q = Sinkhorn-Knopp(exp(t/τt)) over the N rows given, 3 iterations; no center
 *
 * Rows: for DINO the 2B teacher CLS logits (N = 2B); for iBOT the M masked patch logits
 * (N = M, the official n_masked_patches). Centering reduction: the official computes the batch
 * center as Σ_rows t / rows on each GPU, all-reduces it and divides by the world size (for iBOT:
 * `sum(t.mean(1), 0)` over a [1, M, K] tensor divided by len = 1), i.e. the mean over this
 * device's rows; with one device that is mean_rows(t).
 *
 * The official applies the EMA lazily, at the next target computation (asynchronous all-reduce).
 * Here `targets` never touches the center and `updateCenter` is called by the trainer after the
 * loss was found finite: the same sequence of centers, and a non-finite step leaves the state as it
 * was. With no rows (M = 0, no masked patch in the batch) there is nothing to average and the
 * center is left unchanged (the official would divide by zero).
 *
 * Collapse signals, per head, from the targets q (N, K):
 *   entropy          −mean_rows Σ_k q log q       (ln K: uniform collapse; 0: one-hot targets)
 *   marginalEntropy  −Σ_k q̄ log q̄, q̄ = mean_rows q (near 0 with a low entropy: every row on one
 *                    prototype; healthy: low entropy, high marginal entropy)
 */
import type { Engine } from '../../engine/engine.js';
import * as ops from '../../engine/ops/index.js';
import { fmt, ShapeError } from '../../engine/shape.js';
import type { Tensor } from '../../engine/tensor.js';
import { lerpInPlace } from '../../engine/optim.js';
import { sinkhornKnopp } from '../loss.js';

export type Centering = 'center' | 'sinkhorn_knopp';

export interface TeacherTargetsConfig {
  outDim: number;
  centering: Centering;
  /** EMA momentum of the center (0.9). */
  centerMomentum?: number;
  /** Sinkhorn-Knopp iterations (3). */
  sinkhornIterations?: number;
}

/** Targets of one step (tensors of the caller's scope, no gradient). */
export interface Targets {
  /** (N, K), rows sum to 1. */
  probs: Tensor;
  /** Scalar: mean per-row entropy (nats). */
  entropy: Tensor;
  /** Scalar: entropy of the mean row (nats). */
  marginalEntropy: Tensor;
}

export class TeacherTargets {
  /** The center c [1, K] (zeros at start; unused by Sinkhorn-Knopp): state, saved in checkpoints. */
  readonly center: Tensor;
  readonly centerMomentum: number;

  constructor(
    readonly engine: Engine,
    readonly cfg: TeacherTargetsConfig,
  ) {
    this.centerMomentum = cfg.centerMomentum ?? 0.9;
    this.center = engine.keep(engine.zeros([1, cfg.outDim], { label: 'center' }));
  }

  /** q for the teacher logits (N, K) at temperature τt; does not change the center. */
  targets(logits: Tensor, teacherTemp: number): Targets {
    const K = this.cfg.outDim;
    if (logits.rank !== 2 || logits.shape[1] !== K || logits.shape[0] < 1) {
      throw new ShapeError(`teacher targets: logits ${fmt(logits.shape)} are not (N ≥ 1, ${K})`);
    }
    return this.engine.noGrad(() => {
      const t = logits.detach();
      const probs =
        this.cfg.centering === 'sinkhorn_knopp'
          ? sinkhornKnopp(t, teacherTemp, this.cfg.sinkhornIterations ?? 3)
          : ops.softmax(t, -1, { temperature: teacherTemp, center: this.center });
      const entropy = probs.mul(probs.add(1e-30).log()).sum(-1).mean().neg();
      const marginal = probs.mean(0);
      const marginalEntropy = marginal.mul(marginal.add(1e-30).log()).sum().neg();
      return { probs, entropy, marginalEntropy };
    });
  }

  /** c ← m·c + (1 − m)·mean_rows(logits) in 'center' mode; nothing for Sinkhorn-Knopp or no rows. */
  updateCenter(logits: Tensor | null): void {
    if (this.cfg.centering !== 'center' || !logits || logits.shape[0] === 0) return;
    this.engine.noGrad(() => {
      const batchCenter = logits.detach().mean(0); // (K)
      lerpInPlace(this.center, batchCenter, this.centerMomentum);
      batchCenter.dispose();
    });
  }

  dispose(): void {
    this.center.dispose();
  }
}

/** Float64 reference of the centered targets softmax((t − c)/τ), rows (N, K). */
export function centeredTargetsRef(logits: ArrayLike<number>, N: number, K: number, center: ArrayLike<number>, temp: number): Float64Array {
  const q = new Float64Array(N * K);
  for (let r = 0; r < N; r++) {
    let m = -Infinity;
    for (let k = 0; k < K; k++) m = Math.max(m, (logits[r * K + k] - center[k]) / temp);
    let s = 0;
    for (let k = 0; k < K; k++) s += q[r * K + k] = Math.exp((logits[r * K + k] - center[k]) / temp - m);
    for (let k = 0; k < K; k++) q[r * K + k] /= s;
  }
  return q;
}

/** Float64 reference of the center update m·c + (1 − m)·mean_rows(t). */
export function centerUpdateRef(center: ArrayLike<number>, logits: ArrayLike<number>, N: number, K: number, momentum: number): Float64Array {
  return Float64Array.from({ length: K }, (_, k) => {
    let mean = 0;
    for (let r = 0; r < N; r++) mean += logits[r * K + k];
    return momentum * center[k] + (1 - momentum) * (mean / N);
  });
}
