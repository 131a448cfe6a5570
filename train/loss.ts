/**
 * The DINO loss (main_dino.DINOLoss) with teacher centering and sharpening.
 *
 *   teacher: q_i = softmax((t_i − c) / τt) for the 2 global crops i (no gradient)
 *   student: log p_v = log_softmax(s_v / τs) for every crop v
 *   L = 1/n_terms · Σ_i Σ_{v ≠ i} mean_b( −Σ_k q_i[b,k] · log p_v[b,k] ),   n_terms = 2(V − 1)
 *   after the loss: c ← m·c + (1 − m)·mean_rows(t)   (m = 0.9, from the raw teacher outputs)
 *
 * Cross-entropy is linear in its target, so the pairs that share a student crop v are summed into
 * one target first: T_0 = q_1, T_1 = q_0 and T_v = q_0 + q_1 for the local crops (v ≥ 2). Then
 * L = Σ_rows CE(T, s) / (B · n_terms) is one fused cross-entropy over all student rows: the same
 * value as the official double loop, in one dispatch instead of 2(V − 1).
 *
 * Rows are crop-major, as MultiCropWrapper produces them: [crop0 × B; crop1 × B; ...].
 *
 * `centering: 'sinkhorn_knopp'` replaces centering + softmax by DINOv2's Sinkhorn-Knopp teacher
 * (dinov2/loss/dino_clstoken_loss.py, sinkhorn_knopp_teacher): Q = exp(t / τt) over the N = 2B
 * teacher rows, then 3 times: divide each prototype's column by its sum over the rows and by K,
 * divide each row by its sum over the prototypes and by N; finally Q·N, so every row sums to 1.
 * It spreads the batch evenly over the prototypes (no uniform collapse) while each row stays
 * sharp. The center is then not updated (DINOv2 does not use it with Sinkhorn-Knopp).
 */
import type { Engine } from '../engine/engine.js';
import type { Tensor } from '../engine/tensor.js';
import * as ops from '../engine/ops/index.js';
import { fmt, ShapeError } from '../engine/shape.js';
import { lerpInPlace } from '../engine/optim.js';

export interface DinoLossConfig {
  outDim: number;
  /** Number of crops V (2 global + local). */
  ncrops: number;
  /** τs (0.1). */
  studentTemp: number;
  /** Center momentum (0.9). */
  centerMomentum: number;
  /** 'center' (DINO: EMA centering, default) or 'sinkhorn_knopp' (DINOv2). */
  centering?: 'center' | 'sinkhorn_knopp';
  /** Sinkhorn-Knopp iterations (DINOv2: 3). */
  sinkhornIterations?: number;
}

export class DinoLoss {
  /** The center c [1, K]: state, saved in checkpoints. */
  readonly center: Tensor;
  /**
   * Mean entropy (nats) of the teacher's sharpened distribution in the last `forward`: a scalar
   * tensor of that step's scope. Collapse shows as ln K (uniform) or 0 (one prototype).
   */
  lastTeacherEntropy: Tensor | null = null;
  /**
   * Entropy (nats) of the batch-mean teacher distribution in the last `forward` (a scalar tensor of
   * that step's scope). With {@link lastTeacherEntropy} it tells the two collapses apart (the DINO paper's 'Avoiding collapse'):
   * both near 0 = every image on one prototype; both near ln K = uniform targets; healthy training
   * has a low per-image entropy and a high marginal one.
   */
  lastTeacherMarginalEntropy: Tensor | null = null;

  constructor(
    readonly engine: Engine,
    readonly cfg: DinoLossConfig,
  ) {
    this.center = engine.keep(engine.zeros([1, cfg.outDim], { label: 'center' }));
  }

  /**
   * The loss of one step. `student` [V·B, K] (requires grad), `teacher` [2·B, K] (its graph is
   * ignored), teacher temperature τt of this epoch. Updates the center afterwards.
   */
  forward(student: Tensor, teacher: Tensor, teacherTemp: number): Tensor {
    const { ncrops: V, outDim: K } = this.cfg;
    if (student.rank !== 2 || student.shape[1] !== K || student.shape[0] % V !== 0) {
      throw new ShapeError(`DINO loss: student output ${fmt(student.shape)} is not [${V}·B, ${K}]`);
    }
    const B = student.shape[0] / V;
    if (teacher.rank !== 2 || teacher.shape[0] !== 2 * B || teacher.shape[1] !== K) {
      throw new ShapeError(`DINO loss: teacher output ${fmt(teacher.shape)} is not [2·${B}, ${K}] for student ${fmt(student.shape)}`);
    }
    if (V < 2) throw new Error('DINO loss: needs at least the 2 global crops');
    const e = this.engine;
    const target = e.noGrad(() => {
      const q =
        this.cfg.centering === 'sinkhorn_knopp'
          ? sinkhornKnopp(teacher.detach(), teacherTemp, this.cfg.sinkhornIterations ?? 3)
          : ops.softmax(teacher.detach(), -1, { temperature: teacherTemp, center: this.center }); // [2B, K]
      this.lastTeacherEntropy = q.mul(q.add(1e-30).log()).sum(-1).mean().neg();
      const marginal = q.mean(0);
      this.lastTeacherMarginalEntropy = marginal.mul(marginal.add(1e-30).log()).sum().neg();
      const q0 = q.slice(0, 0, B);
      const q1 = q.slice(0, B, 2 * B);
      const parts = [q1, q0];
      if (V > 2) {
        const both = q0.add(q1);
        for (let v = 2; v < V; v++) parts.push(both);
      }
      return ops.concat(parts, 0); // [V·B, K]
    });
    const nTerms = 2 * (V - 1);
    const loss = ops.softCrossEntropy(target, student, { temperature: this.cfg.studentTemp }).sum().mul(1 / (B * nTerms));
    if (this.cfg.centering !== 'sinkhorn_knopp') this.updateCenter(teacher);
    return loss;
  }

  /** c ← m·c + (1 − m)·mean over rows of the raw teacher outputs. */
  updateCenter(teacher: Tensor): void {
    this.engine.noGrad(() => {
      const batchCenter = teacher.detach().mean(0); // [K]
      lerpInPlace(this.center, batchCenter, this.cfg.centerMomentum);
      batchCenter.dispose();
    });
  }

  dispose(): void {
    this.center.dispose();
  }
}

/**
 * DINOv2's Sinkhorn-Knopp teacher targets for logits [N, K] at temperature τ: rows sum to 1 and,
 * at convergence, every prototype receives N/K of the mass.
 *
 * Computed in the log domain, with ℓ = log Q (each step the official's division, as a subtraction):
 *   ℓ ← t/τ; 3 times: ℓ −= logsumexp over rows (per prototype) + log K;
 *                      ℓ −= logsumexp over prototypes (per row) + log N;   Q = exp(ℓ + log N)
 * The same values as the official's exp-then-divide (its initial division by ΣQ is a common
 * factor the first normalisation cancels), but no sum can underflow to 0 or overflow: in float32,
 * exp(t/τ) of logits spread beyond ~87·τ (|logit| > 1.7 at τ = 0.04, reachable once DINOv2's
 * trainable weight_g grows) gave 0/0 and NaN targets for the whole batch.
 */
export function sinkhornKnopp(logits: Tensor, temperature: number, iterations = 3): Tensor {
  const [N, K] = logits.shape;
  const logSumExp = (x: Tensor, dim: number): Tensor => {
    const m = x.max(dim, true);
    return x.sub(m).exp().sum(dim, true).log().add(m);
  };
  let l = logits.mul(1 / temperature);
  for (let i = 0; i < iterations; i++) {
    l = l.sub(logSumExp(l, 0).add(Math.log(K))); // each prototype's total → 1/K
    l = l.sub(logSumExp(l, 1).add(Math.log(N))); // each row's total → 1/N
  }
  return l.add(Math.log(N)).exp();
}

/** Float64 reference of Sinkhorn-Knopp (DINOv2's order), rows [N, K] row-major. */
export function sinkhornKnoppRef(logits: ArrayLike<number>, N: number, K: number, temperature: number, iterations = 3): Float64Array {
  let m = -Infinity;
  for (let i = 0; i < N * K; i++) m = Math.max(m, logits[i] / temperature);
  const q = new Float64Array(N * K);
  for (let i = 0; i < N * K; i++) q[i] = Math.exp(logits[i] / temperature - m);
  for (let it = 0; it < iterations; it++) {
    for (let k = 0; k < K; k++) {
      let s = 0;
      for (let r = 0; r < N; r++) s += q[r * K + k];
      for (let r = 0; r < N; r++) q[r * K + k] /= s * K;
    }
    for (let r = 0; r < N; r++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += q[r * K + k];
      for (let k = 0; k < K; k++) q[r * K + k] /= s * N;
    }
  }
  for (let i = 0; i < N * K; i++) q[i] *= N;
  return q;
}

/** Float64 reference of the official double loop (for tests). Rows crop-major. */
export function dinoLossRef(
  student: ArrayLike<number>,
  teacher: ArrayLike<number>,
  center: ArrayLike<number>,
  V: number,
  B: number,
  K: number,
  studentTemp: number,
  teacherTemp: number,
): { loss: number; newCenterDelta: Float64Array } {
  const softmax = (row: number[], sub: ArrayLike<number> | null, tau: number, log: boolean) => {
    const z = row.map((x, k) => (x - (sub ? sub[k] : 0)) / tau);
    const m = Math.max(...z);
    const lse = m + Math.log(z.reduce((s, x) => s + Math.exp(x - m), 0));
    return z.map((x) => (log ? x - lse : Math.exp(x - lse)));
  };
  const row = (a: ArrayLike<number>, r: number) => Array.from({ length: K }, (_, k) => a[r * K + k]);
  let total = 0;
  let n = 0;
  for (let iq = 0; iq < 2; iq++) {
    for (let v = 0; v < V; v++) {
      if (v === iq) continue;
      let mean = 0;
      for (let b = 0; b < B; b++) {
        const q = softmax(row(teacher, iq * B + b), center, teacherTemp, false);
        const lp = softmax(row(student, v * B + b), null, studentTemp, true);
        mean += -q.reduce((s, x, k) => s + x * lp[k], 0) / B;
      }
      total += mean;
      n++;
    }
  }
  const delta = new Float64Array(K);
  for (let r = 0; r < 2 * B; r++) for (let k = 0; k < K; k++) delta[k] += teacher[r * K + k] / (2 * B);
  return { loss: total / n, newCenterDelta: delta };
}
