/**
 * DINOv2's total loss, assembled as dinov2/train/ssl_meta_arch.py:forward_backward does, as a pure
 * function of the student's outputs, the teacher's targets and the masks.
 *
 * With n_g = 2 global crops, n_l local crops, B images, τs = 0.1,
 * CE(q, s) = −Σ_k q_k · log softmax(s/τs)_k, and the teacher CLS targets q_A, q_B of the 2 global crops:
 *
 *   n_terms  = n_global_terms + n_local_terms = n_g(n_g − 1) + max(n_g·n_l, 1)       (18 for 2 + 8)
 *   L_local  = Σ_{v local} Σ_{t ∈ {A, B}} mean_b CE(q_t, s_v) / n_terms
 *   L_global = 2 · mean over the 2B rows of CE([q_B; q_A], [s_A; s_B]) / n_terms    (the swap:
 *              the teacher's crop B is the target of the student's crop A and vice versa)
 *   L_koleo  = w_koleo · (KoLeo(x_A) + KoLeo(x_B))  on the student's global CLS backbone outputs
 *   L_ibot   = 2 · ½ · iBOT(masked patches)          (loss_scales · ibot_loss_scale = 1)
 *   total    = w_dino·(L_local + L_global) + L_koleo + w_ibot·L_ibot
 *
 * Defaults: w_dino = 1, w_koleo = 0.1, w_ibot = 1 (ssl_default_config.yaml). L_dino equals DINO
 * v1's mean over the 18 (teacher, student) pairs. Without local crops the official n_local_terms is
 * max(0, 1) = 1, so L_global = 2·mean/3, not the mean: kept as the official.
 *
 * Logged values (loss_dict): dino_local_crops_loss = L_local, dino_global_crops_loss = L_global,
 * koleo_loss = L_koleo / 2, ibot_loss = L_ibot / 2 (the official halves these two "to display the
 * same losses as before"). Their sum is what the official checks for NaN and logs as total_loss.
 *
 * Implementation: CE is linear in the target, so the pairs that share a student crop are one fused
 * cross-entropy: the local rows take q_A + q_B, the global rows take the swapped q. Then
 *   L_local  = Σ_{local rows} CE(q_A + q_B, s) / (B · n_terms)
 *   L_global = Σ_{global rows} CE(q_swapped, s) / (B · n_terms)      (2 · (1/2B) = 1/B)
 * Rows are crop-major: [crop0 × B; crop1 × B; …] for the global and the local crops alike.
 */
import * as ops from '../../engine/ops/index.js';
import { fmt, ShapeError } from '../../engine/shape.js';
import type { Tensor } from '../../engine/tensor.js';
import { ibotPatchLoss, zeroLoss } from './ibot-loss.js';
import { koleoLoss } from './koleo.js';

/** The loss weights of the default config. */
export interface DinoV2LossWeights {
  /** dino.loss_weight (1.0). */
  dino: number;
  /** dino.koleo_loss_weight (0.1); 0 disables KoLeo. */
  koleo: number;
  /** ibot.loss_weight (1.0); 0 disables iBOT. */
  ibot: number;
}

export const DINOV2_LOSS_WEIGHTS: DinoV2LossWeights = { dino: 1, koleo: 0.1, ibot: 1 };

/** What the student produced this step. */
export interface StudentOutputs {
  /** DINO head logits of the 2 global crops' CLS tokens (2B, K), crop-major. */
  globalCls: Tensor;
  /** DINO head logits of the local crops' CLS tokens (n_l·B, K), or null without local crops. */
  localCls: Tensor | null;
  /** iBOT head logits (shared or separate head) of the masked patches (M, K'), null when M = 0. */
  maskedPatches: Tensor | null;
  /** Backbone CLS outputs of the 2 global crops after the final norm, before any head (2B, D). */
  globalClsFeatures: Tensor;
}

/** The teacher's targets this step (no gradient). */
export interface TeacherOutputs {
  /** Targets of the 2 global crops in crop order [q_A; q_B] (2B, K): NOT swapped (swapped here). */
  cls: Tensor;
  /** Targets of the masked patches (M, K'), same rows as the student's; null when M = 0. */
  maskedPatches: Tensor | null;
}

/** The masks of the step, as the loss needs them. */
export interface MaskWeights {
  /** Per masked patch 1/(masked patches of its image), (M) on the GPU; null when M = 0. */
  weights: Tensor | null;
  /** Global crops n = 2B (the iBOT loss divides by it). */
  images: number;
}

export interface DinoV2LossOptions {
  /** Local crops per image n_l. */
  localCrops: number;
  studentTemp?: number;
  weights?: Partial<DinoV2LossWeights>;
}

/** The loss terms of one step (scalar tensors). */
export interface DinoV2LossTerms {
  /** What is back-propagated. */
  total: Tensor;
  dinoLocal: Tensor;
  dinoGlobal: Tensor;
  /** w_koleo · Σ over the 2 crops (0 when disabled). */
  koleo: Tensor;
  /** 2·½·iBOT (0 when disabled or M = 0). */
  ibot: Tensor;
}

/** The official loss_dict of a step, from the terms (host numbers). */
export function loggedLosses(t: { dinoLocal: number; dinoGlobal: number; koleo: number; ibot: number }): Record<string, number> {
  return { dino_local_crops_loss: t.dinoLocal, dino_global_crops_loss: t.dinoGlobal, koleo_loss: t.koleo / 2, ibot_loss: t.ibot / 2 };
}

/** Loss-term counts of the official normalisation. */
export function lossTermCounts(localCrops: number, globalCrops = 2): { global: number; local: number } {
  return { global: (globalCrops - 1) * globalCrops, local: Math.max(localCrops * globalCrops, 1) };
}

/** DINOv2's total loss (see the header). */
export function dinov2Loss(s: StudentOutputs, t: TeacherOutputs, masks: MaskWeights, opts: DinoV2LossOptions): DinoV2LossTerms {
  const w = { ...DINOV2_LOSS_WEIGHTS, ...opts.weights };
  const tauS = opts.studentTemp ?? 0.1;
  const [twoB, K] = s.globalCls.shape;
  const B = twoB / 2;
  if (s.globalCls.rank !== 2 || !Number.isInteger(B) || B < 1) throw new ShapeError(`DINOv2 loss: global CLS logits ${fmt(s.globalCls.shape)} are not (2B, K)`);
  if (t.cls.rank !== 2 || t.cls.shape[0] !== twoB || t.cls.shape[1] !== K) {
    throw new ShapeError(`DINOv2 loss: teacher targets ${fmt(t.cls.shape)} do not match the student's ${fmt(s.globalCls.shape)}`);
  }
  const nl = s.localCls ? opts.localCrops : 0;
  if (s.localCls && (s.localCls.rank !== 2 || s.localCls.shape[0] !== nl * B || s.localCls.shape[1] !== K)) {
    throw new ShapeError(`DINOv2 loss: local CLS logits ${fmt(s.localCls.shape)} are not (${nl}·${B}, ${K})`);
  }
  const e = s.globalCls.engine;
  const terms = lossTermCounts(nl);
  const norm = 1 / (B * (terms.global + terms.local));

  const { swapped, both } = e.noGrad(() => {
    const qA = t.cls.slice(0, 0, B);
    const qB = t.cls.slice(0, B, twoB);
    return { swapped: ops.concat([qB, qA], 0), both: nl > 0 ? qA.add(qB) : null };
  });
  const dinoGlobal = ops.softCrossEntropy(swapped, s.globalCls, { temperature: tauS }).sum().mul(norm);
  let dinoLocal = e.zeros([], { label: 'dino-local-empty' });
  if (s.localCls && both) {
    const target = e.noGrad(() => (nl === 1 ? both : ops.concat(Array.from({ length: nl }, () => both), 0)));
    dinoLocal = ops.softCrossEntropy(target, s.localCls, { temperature: tauS }).sum().mul(norm);
  }

  let koleo = e.zeros([], { label: 'koleo-off' });
  if (w.koleo > 0) {
    const f = s.globalClsFeatures;
    if (f.rank !== 2 || f.shape[0] !== twoB) throw new ShapeError(`DINOv2 loss: global CLS features ${fmt(f.shape)} are not (${twoB}, D)`);
    koleo = koleoLoss(f.slice(0, 0, B)).add(koleoLoss(f.slice(0, B, twoB))).mul(w.koleo);
  }

  let ibot = zeroLoss(e);
  if (w.ibot > 0 && s.maskedPatches && t.maskedPatches && masks.weights) {
    ibot = ibotPatchLoss(s.maskedPatches, t.maskedPatches, masks.weights, masks.images, tauS); // × 2 × ½
  }

  let total = dinoLocal.add(dinoGlobal).mul(w.dino);
  if (w.koleo > 0) total = total.add(koleo);
  if (w.ibot > 0) total = total.add(ibot.mul(w.ibot));
  return { total, dinoLocal, dinoGlobal, koleo, ibot };
}
