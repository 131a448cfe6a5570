/**
 * The DINOv2 recipe's pieces against float64 references (train/dinov2/*):
 * - the iBOT patch loss: value and gradient vs the float64 forward_masked; the weights reproduce
 *   the official unmasked form (mean over 2B images of per-image means, unmasked images 0);
 * - teacher targets: centering (softmax with center, EMA over the rows) and Sinkhorn-Knopp with
 *   N = the masked-patch count (also for logits spread far beyond 87·τ); entropies;
 * - KoLeo: value, neighbours and gradient (both points of each pair) vs float64, the float64 VJP vs
 *   finite differences, duplicate rows (finite, −log(ε(√D + 1))), a single row;
 * - the loss assembly vs an independent float64 transcription of forward_backward's loop
 *   (swapped global targets, 16 + 2 terms / 18, KoLeo per crop, iBOT), and its gradient by finite
 *   differences; loss weights and the logged halves;
 * - per-sub-model clipping by global norm vs clip_grad_norm_;
 * - parameter groups: the ViT-S multiplier table, weight-decay and last-layer rules, fusion;
 * - the per-iteration schedules and the √-batch lr rule.
 * Shapes are not multiples of any tile (rows 13, 37; K 19, 53; D 11, 37).
 */
import { describe, expect, it } from 'vitest';

import type { Engine } from '../../engine/engine.js';
import { Rng } from '../../engine/random.js';
import type { Tensor } from '../../engine/tensor.js';
import { sinkhornKnoppRef } from '../../train/loss.js';
import { clipGradNorm, clipGradNormRef } from '../../train/dinov2/clip.js';
import { ibotPatchLoss, ibotPatchLossRef, ibotPatchLossVjpRef } from '../../train/dinov2/ibot-loss.js';
import { KOLEO_EPS, koleoLoss, koleoRef, koleoVjpRef } from '../../train/dinov2/koleo.js';
import { dinov2Loss, loggedLosses } from '../../train/dinov2/loss.js';
import { collateMasks, MaskingGenerator } from '../../train/dinov2/masking.js';
import { backboneLayerId, dinov2ParamGroups, fuseParamGroups, lrMultiplier, paramGroupKey, wdMultiplier } from '../../train/dinov2/param-groups.js';
import { CosineSchedule, dinov2Schedules, sqrtScaledLr } from '../../train/dinov2/schedules.js';
import { centeredTargetsRef, centerUpdateRef, TeacherTargets } from '../../train/dinov2/teacher-targets.js';
import { expectClose, finiteDiff, getEngine, randn, randu } from '../helpers.js';

/** Rows of probabilities (N, K): softmax of random logits at temperature τ, float64. */
function probsRef(N: number, K: number, seed: number, tau = 0.5): Float64Array {
  const z = randn(N * K, seed);
  return centeredTargetsRef(z, N, K, new Float64Array(K), tau);
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

/** max|got − want| ≤ rtol·max|want| (errors relative to the tensor's scale). */
function expectScaled(got: ArrayLike<number>, want: ArrayLike<number>, rtol: number, what: string): void {
  expect(got.length, `${what}: length`).toBe(want.length);
  const scale = maxAbs(want);
  let worst = 0;
  let at = 0;
  for (let i = 0; i < want.length; i++) {
    const e = Math.abs(got[i] - want[i]);
    if (!(e <= worst)) {
      worst = e;
      at = i;
    }
  }
  if (!(worst <= rtol * scale)) throw new Error(`${what}: |err| ${worst} at ${at} (got ${got[at]}, want ${want[at]}) > ${rtol} × ${scale}`);
}

/**
 * Runs fn on leaf tensors made from `inputs`, back-propagates its scalar, returns the value, the
 * values of the `extra` scalars fn returns with it, and the gradients.
 */
async function valueAndGrads(
  wd: Engine,
  inputs: { data: ArrayLike<number>; shape: number[] }[],
  fn: (xs: Tensor[]) => Tensor | { y: Tensor; extra: Tensor[] },
): Promise<{ value: number; extra: number[]; grads: Float32Array[] }> {
  return wd.scope(async () => {
    const xs = inputs.map((i) => wd.tensor(Float32Array.from(i.data), i.shape, { requiresGrad: true }));
    const out = fn(xs);
    const { y, extra } = 'y' in out ? out : { y: out, extra: [] };
    const value = await y.item();
    const extraValues = await Promise.all(extra.map((t) => t.item()));
    y.backward();
    const grads = await Promise.all(xs.map((x) => (x.grad ? x.grad.toArray() : Promise.resolve(new Float32Array(x.size)))));
    for (const x of xs) x.zeroGrad();
    return { value, extra: extraValues, grads };
  });
}

// -------------------------------------------------------------------------------------------------

describe('iBOT patch loss (forward_masked)', () => {
  const K = 53;
  const N = 16; // 4×4 patches
  const images = 10;
  const masks = collateMasks(new MaskingGenerator(4, 4), images, new Rng(4));
  const M = masks.maskIndices.length;

  it('value and gradient equal the float64 reference; unmasked images count in 2B', async () => {
    expect(masks.counts.some((c) => c === 0)).toBe(true); // images without a masked patch
    expect(M).toBeGreaterThan(8);
    const wd = await getEngine();
    const s = randn(M * K, 5, 2);
    const t = probsRef(M, K, 6, 0.07);
    const { value, grads } = await valueAndGrads(wd, [{ data: s, shape: [M, K] }], ([x]) =>
      ibotPatchLoss(x, wd.tensor(Float32Array.from(t), [M, K]), wd.tensor(masks.maskWeights, [M]), images, 0.1),
    );
    const want = ibotPatchLossRef(s, t, masks.maskWeights, M, K, images, 0.1);
    expectClose([value], [want], 1e-5, 0, 'iBOT loss');
    const g = ibotPatchLossVjpRef(s, t, masks.maskWeights, M, K, images, 0.1);
    expectScaled(grads[0], g, 1e-5, 'iBOT gradient');
    // The float64 gradient itself, by finite differences of the float64 loss.
    expectScaled(g, finiteDiff((x) => ibotPatchLossRef(x, t, masks.maskWeights, M, K, images, 0.1), s, 1e-6), 1e-6, 'iBOT VJP vs finite differences');

    // The official unmasked form (forward): per image Σ_n CE·m / max(Σ m, 1), then the mean over
    // all 2B images. Unmasked images give 0/1 = 0 and still count.
    let perImageMeans = 0;
    for (let i = 0; i < images; i++) {
      let sum = 0;
      masks.maskIndices.forEach((flat, j) => {
        if (Math.floor(flat / N) !== i) return;
        sum += ibotPatchLossRef(s.subarray(j * K, (j + 1) * K), t.subarray(j * K, (j + 1) * K), [1], 1, K, 1, 0.1);
      });
      perImageMeans += sum / Math.max(masks.counts[i], 1);
    }
    expectClose([value], [perImageMeans / images], 1e-5, 0, 'iBOT loss vs the unmasked form');
  });
});

describe('teacher targets (centering, Sinkhorn-Knopp)', () => {
  it('centering: softmax((t − c)/τ) with the current center, then the EMA over the rows', async () => {
    const wd = await getEngine();
    const N = 13;
    const K = 19;
    const tt = new TeacherTargets(wd, { outDim: K, centering: 'center' });
    try {
      let center: Float64Array = new Float64Array(K);
      for (const step of [0, 1]) {
        const z = randn(N * K, 10 + step, 3);
        const out = await wd.scope(async () => {
          const logits = wd.tensor(z, [N, K]);
          const q = tt.targets(logits, 0.04);
          const r = { probs: await q.probs.toArray(), entropy: await q.entropy.item(), marginal: await q.marginalEntropy.item() };
          tt.updateCenter(logits);
          return r;
        });
        const want = centeredTargetsRef(z, N, K, center, 0.04);
        expectClose(out.probs, want, 1e-4, 1e-6, `step ${step}: targets`);
        let ent = 0;
        const mean = new Float64Array(K);
        for (let i = 0; i < N * K; i++) {
          ent -= (want[i] * Math.log(want[i] + 1e-300)) / N;
          mean[i % K] += want[i] / N;
        }
        expectClose([out.entropy], [ent], 1e-3, 1e-5, `step ${step}: entropy`);
        expectClose([out.marginal], [-mean.reduce((a, p) => a + p * Math.log(p + 1e-300), 0)], 1e-4, 1e-5, `step ${step}: marginal entropy`);
        center = centerUpdateRef(center, z, N, K, 0.9);
        expectClose(await tt.center.toArray(), center, 1e-5, 1e-6, `step ${step}: center`);
      }
      // No rows (a batch without masked patches): the center is left as it is.
      const before = await tt.center.toArray();
      tt.updateCenter(null);
      expect(await tt.center.toArray()).toEqual(before);
    } finally {
      tt.dispose();
    }
  });

  it('Sinkhorn-Knopp over the N = M masked rows; the center is never touched', async () => {
    const wd = await getEngine();
    const M = 37;
    const K = 19;
    const tt = new TeacherTargets(wd, { outDim: K, centering: 'sinkhorn_knopp' });
    try {
      // Teacher logits are cosine similarities (unit bottleneck · unit prototypes, weight_g = 1 at start).
      const z = randu(M * K, 12, -1, 1);
      const q = await wd.scope(async () => {
        const logits = wd.tensor(z, [M, K]);
        const r = await tt.targets(logits, 0.07).probs.toArray();
        tt.updateCenter(logits);
        return r;
      });
      expectClose(q, sinkhornKnoppRef(z, M, K, 0.07), 1e-4, 1e-6, 'Sinkhorn-Knopp targets');
      expect(Array.from(await tt.center.toArray()).every((c) => c === 0)).toBe(true);
      // Logits spread far beyond 87·τ (a grown weight_g): exp(t/τ) would underflow whole columns
      // and rows to 0 in float32 (0/0: NaN targets); the log-domain form stays exact.
      const wide = randn(M * K, 13, 6); // spread/τ ≈ 500
      const qw = await wd.scope(() => tt.targets(wd.tensor(wide, [M, K]), 0.07).probs.toArray());
      expect(qw.every(Number.isFinite)).toBe(true);
      expectClose(qw, sinkhornKnoppRef(wide, M, K, 0.07), 1e-3, 1e-6, 'Sinkhorn-Knopp targets of wide logits');
    } finally {
      tt.dispose();
    }
  });
});

describe('KoLeo (koleo_loss.py)', () => {
  it('value and gradient equal the float64 reference (both points of each pair); the VJP matches finite differences', async () => {
    const wd = await getEngine();
    const n = 13;
    const D = 37;
    const x = randn(n * D, 20, 3);
    const ref = koleoRef(x, n, D);
    // Some row is the neighbour of several others, so the "both points" path is exercised.
    expect(new Set(ref.nn).size).toBeLessThan(n);
    const { value, grads } = await valueAndGrads(wd, [{ data: x, shape: [n, D] }], ([t]) => koleoLoss(t));
    expectClose([value], [ref.loss], 1e-5, 0, 'KoLeo loss');
    const g = koleoVjpRef(x, n, D, ref.nn);
    expectScaled(grads[0], g, 1e-4, 'KoLeo gradient');
    expectScaled(g, finiteDiff((y) => koleoRef(y, n, D).loss, x, 1e-6), 1e-6, 'KoLeo VJP vs finite differences');
    // The gradient without the neighbour's share is clearly different (the test can tell).
    const selfOnly = koleoVjpRef(x, n, D, ref.nn).map((v, i) => v * (ref.nn.includes(Math.floor(i / D)) ? 0 : 1));
    expect(() => expectScaled(grads[0], selfOnly, 1e-2, 'self-only')).toThrow();
  });

  it('duplicate rows give a clear finite value (−log(ε(√D + 1)) per duplicate) and a finite gradient', async () => {
    const wd = await getEngine();
    const n = 9;
    const D = 11;
    const x = randn(n * D, 21);
    // Rows 0, 1, 2 identical (the same image three times).
    x.copyWithin(D, 0, D);
    x.copyWithin(2 * D, 0, D);
    const ref = koleoRef(x, n, D);
    const dup = -Math.log(KOLEO_EPS * (Math.sqrt(D) + 1));
    expect(ref.nn[0]).toBe(1); // ties go to the lowest index
    expect(ref.nn[1]).toBe(0);
    expect(ref.nn[2]).toBe(0);
    expect(ref.dist[0]).toBeCloseTo(KOLEO_EPS * Math.sqrt(D), 20);
    const { value, grads } = await valueAndGrads(wd, [{ data: x, shape: [n, D] }], ([t]) => koleoLoss(t));
    expect(Number.isFinite(value)).toBe(true);
    expect(value).toBeGreaterThan((3 * dup - 6 * Math.log(2 + 1e-7)) / n); // three terms of ≈ 17; the others ≥ −log 2 (d ≤ 2)
    expectClose([value], [ref.loss], 1e-5, 0, 'KoLeo with duplicates');
    expect(grads[0].every(Number.isFinite)).toBe(true);
    const g = koleoVjpRef(x, n, D, ref.nn);
    // Rows 0 and 1 are each other's neighbours: their pair contributions cancel. Row 2's neighbour
    // is row 0 but row 0's is row 1, so rows 0 and 2 get ±a·ε·1 projected: large (≈ 1/ε) and finite.
    expectScaled(grads[0], g, 1e-4, 'KoLeo gradient with duplicates');
    console.log(`duplicates: loss ${value} (ref ${ref.loss}), max |grad| ${maxAbs(g).toExponential(2)}`);

    // The same direction at another scale (2.5 × a row): equal after normalisation in float64, equal
    // up to float32 rounding here (d ≈ 1e-7 instead of ε√D): a large, finite term.
    const y = Float32Array.from(x);
    for (let k = 0; k < D; k++) y[5 * D + k] = 2.5 * y[7 * D + k];
    const scaled = await valueAndGrads(wd, [{ data: y, shape: [n, D] }], ([t]) => koleoLoss(t));
    expect(Number.isFinite(scaled.value)).toBe(true);
    expect(scaled.value).toBeGreaterThan(value + (2 * 14) / n);
    expect(scaled.grads[0].every(Number.isFinite)).toBe(true);
  });

  it('a single row is its own neighbour (d = ε√D), as the official', async () => {
    const wd = await getEngine();
    const D = 7;
    const x = randn(D, 22);
    const v = await wd.scope(() => koleoLoss(wd.tensor(x, [1, D])).item());
    expectClose([v], [-Math.log(KOLEO_EPS * Math.sqrt(D) + KOLEO_EPS)], 1e-5, 0, 'one row');
  });
});

// -------------------------------------------------------------------------------------------------
// The assembly, against a transcription of forward_backward's loops

/** CE(q, s) = −Σ q·log softmax(s/τ) of one row pair. */
function ce(q: ArrayLike<number>, qOff: number, s: ArrayLike<number>, sOff: number, K: number, tau: number): number {
  let m = -Infinity;
  for (let k = 0; k < K; k++) m = Math.max(m, s[sOff + k] / tau);
  let z = 0;
  for (let k = 0; k < K; k++) z += Math.exp(s[sOff + k] / tau - m);
  const lse = m + Math.log(z);
  let out = 0;
  for (let k = 0; k < K; k++) out -= q[qOff + k] * (s[sOff + k] / tau - lse);
  return out;
}

interface AssemblyInputs {
  B: number;
  nl: number;
  K: number;
  D: number;
  M: number;
  images: number;
  globalS: Float64Array; // (2B, K)
  localS: Float64Array; // (nl·B, K)
  maskedS: Float64Array; // (M, K)
  feats: Float64Array; // (2B, D)
  qCls: Float64Array; // (2B, K) crop order A, B
  qPatch: Float64Array; // (M, K)
  weights: Float32Array;
}

/** ssl_meta_arch.forward_backward's loss, literally: lists of chunks, the swapped teacher list. */
function officialLoss(a: AssemblyInputs, w = { dino: 1, koleo: 0.1, ibot: 1 }): { total: number; local: number; global: number; koleo: number; ibot: number } {
  const { B, nl, K, D, M } = a;
  const tau = 0.1;
  const nGlobalTerms = 2;
  const nLocalTerms = Math.max(nl * 2, 1);
  // teacher_dino_softmaxed_centered_list = [q_B, q_A] (cat(chunk[1], chunk[0]) then view(2, B, K))
  const tList = [a.qCls.subarray(B * K, 2 * B * K), a.qCls.subarray(0, B * K)];
  let local = 0;
  for (let v = 0; v < nl; v++) {
    for (const t of tList) {
      let mean = 0;
      for (let b = 0; b < B; b++) mean += ce(t, b * K, a.localS, (v * B + b) * K, K, tau) / B;
      local += mean;
    }
  }
  local /= nGlobalTerms + nLocalTerms;
  // global: one student tensor (2B rows) against the flattened swapped list, mean over 2B rows, × 2
  const swapped = new Float64Array(2 * B * K);
  swapped.set(tList[0]);
  swapped.set(tList[1], B * K);
  let gmean = 0;
  for (let r = 0; r < 2 * B; r++) gmean += ce(swapped, r * K, a.globalS, r * K, K, tau) / (2 * B);
  const global = (gmean * 2) / (nGlobalTerms + nLocalTerms);
  const koleo = w.koleo * (koleoRef(a.feats.subarray(0, B * D), B, D).loss + koleoRef(a.feats.subarray(B * D), B, D).loss);
  const ibot = M > 0 ? ibotPatchLossRef(a.maskedS, a.qPatch, a.weights, M, K, a.images, tau) * 2 * 0.5 : 0;
  return { total: w.dino * local + w.dino * global + koleo + w.ibot * ibot, local, global, koleo, ibot };
}

function assemblyInputs(B: number, nl: number, K: number, D: number, seed: number): AssemblyInputs {
  const masks = collateMasks(new MaskingGenerator(3, 3), 2 * B, new Rng(seed));
  const M = masks.maskIndices.length;
  return {
    B,
    nl,
    K,
    D,
    M,
    images: 2 * B,
    globalS: Float64Array.from(randn(2 * B * K, seed + 1, 2)),
    localS: Float64Array.from(randn(nl * B * K, seed + 2, 2)),
    maskedS: Float64Array.from(randn(M * K, seed + 3, 2)),
    feats: Float64Array.from(randn(2 * B * D, seed + 4)),
    qCls: probsRef(2 * B, K, seed + 5, 0.3),
    qPatch: probsRef(M, K, seed + 6, 0.3),
    weights: masks.maskWeights,
  };
}

describe('DINOv2 loss assembly (forward_backward)', () => {
  async function run(wd: Engine, a: AssemblyInputs, weights?: { dino: number; koleo: number; ibot: number }) {
    const shapes = [
      { data: a.globalS, shape: [2 * a.B, a.K] },
      { data: a.localS, shape: [a.nl * a.B, a.K] },
      { data: a.maskedS, shape: [a.M, a.K] },
      { data: a.feats, shape: [2 * a.B, a.D] },
    ];
    const r = await valueAndGrads(wd, shapes, ([g, l, m, f]) => {
      const terms = dinov2Loss(
        { globalCls: g, localCls: a.nl > 0 ? l : null, maskedPatches: m, globalClsFeatures: f },
        { cls: wd.tensor(Float32Array.from(a.qCls), [2 * a.B, a.K]), maskedPatches: wd.tensor(Float32Array.from(a.qPatch), [a.M, a.K]) },
        { weights: wd.tensor(a.weights, [a.M]), images: a.images },
        { localCrops: a.nl, weights },
      );
      return { y: terms.total, extra: [terms.dinoLocal, terms.dinoGlobal, terms.koleo, terms.ibot] };
    });
    const [dinoLocal, dinoGlobal, koleo, ibot] = r.extra;
    const parts = { dinoLocal, dinoGlobal, koleo, ibot };
    return { ...r, parts };
  }

  it('equals the official loop (2 global + 2 local crops): terms, total, gradient', async () => {
    const wd = await getEngine();
    const a = assemblyInputs(3, 2, 19, 11, 30);
    const want = officialLoss(a);
    const got = await run(wd, a);
    expectClose([got.value], [want.total], 1e-5, 0, 'total');
    expectClose([got.parts.dinoLocal, got.parts.dinoGlobal, got.parts.koleo, got.parts.ibot], [want.local, want.global, want.koleo, want.ibot], 1e-5, 1e-7, 'terms');
    expect(loggedLosses({ dinoLocal: 1, dinoGlobal: 2, koleo: 3, ibot: 4 })).toEqual({ dino_local_crops_loss: 1, dino_global_crops_loss: 2, koleo_loss: 1.5, ibot_loss: 2 });
    // Gradient w.r.t. every student input, by finite differences of the float64 transcription.
    const fields = ['globalS', 'localS', 'maskedS', 'feats'] as const;
    fields.forEach((f, i) => {
      const fd = finiteDiff((x) => officialLoss({ ...a, [f]: x }).total, a[f], 1e-6);
      expectScaled(got.grads[i], fd, 2e-4, `gradient w.r.t. ${f}`);
    });
  });

  it('without local crops the official divides by 2 + max(0, 1) = 3; weights 0 drop KoLeo and iBOT', async () => {
    const wd = await getEngine();
    const a = assemblyInputs(2, 0, 19, 11, 40);
    const got = await run(wd, a);
    const want = officialLoss(a);
    expectClose([got.value], [want.total], 1e-5, 0, 'total without local crops');
    expect(got.parts.dinoLocal).toBe(0);
    const w = { dino: 0.5, koleo: 0, ibot: 0 };
    const off = await run(wd, assemblyInputs(2, 1, 19, 11, 41), w);
    expectClose([off.value], [officialLoss(assemblyInputs(2, 1, 19, 11, 41), w).total], 1e-5, 0, 'KoLeo and iBOT off');
    expect(off.grads[2].every((x) => x === 0)).toBe(true); // no iBOT gradient
    expect(off.grads[3].every((x) => x === 0)).toBe(true); // no KoLeo gradient
  });
});

describe('clipping by global norm per sub-model (clip_grad_norm_)', () => {
  it('scales every gradient of the set by min(max/(‖g‖ + 1e-6), 1)', async () => {
    const wd = await getEngine();
    const shapes = [[13, 7], [29], [3, 5, 2]];
    for (const maxNorm of [0.5, 1e3]) {
      await wd.scope(async () => {
        const ps = shapes.map((s, i) => wd.keep(wd.randn(s, { seed: 50 + i, requiresGrad: true })));
        const ws = shapes.map((s, i) => wd.randn(s, { seed: 60 + i }));
        ps.map((p, i) => p.mul(ws[i]).sum()).reduce((a, b) => a.add(b)).backward();
        const grads = await Promise.all(ps.map((p) => p.grad!.toArray()));
        const norm = await clipGradNorm(ps, maxNorm)!.item();
        const ref = clipGradNormRef(grads, maxNorm);
        expectClose([norm], [ref.norm], 1e-5, 0, 'norm');
        for (let i = 0; i < ps.length; i++) expectClose(await ps[i].grad!.toArray(), ref.clipped[i], 1e-5, 1e-7, `clipped gradient ${i}`);
        if (maxNorm > ref.norm) for (let i = 0; i < ps.length; i++) expect(await ps[i].grad!.toArray()).toEqual(grads[i]);
        for (const p of ps) p.dispose();
      });
    }
  });
});

// -------------------------------------------------------------------------------------------------
// Parameter groups and schedules (CPU only)

/** The official state_dict names of a ViT-S/14 with registers, and a DINO head. */
function vitSNames(): string[] {
  const names = ['cls_token', 'pos_embed', 'register_tokens', 'mask_token', 'patch_embed.proj.weight', 'patch_embed.proj.bias'];
  for (let i = 0; i < 12; i++) {
    for (const n of ['norm1.weight', 'norm1.bias', 'attn.qkv.weight', 'attn.qkv.bias', 'attn.proj.weight', 'attn.proj.bias', 'ls1.gamma', 'norm2.weight', 'norm2.bias', 'mlp.fc1.weight', 'mlp.fc1.bias', 'mlp.fc2.weight', 'mlp.fc2.bias', 'ls2.gamma']) {
      names.push(`blocks.${i}.${n}`);
    }
  }
  names.push('norm.weight', 'norm.bias');
  return names;
}

const HEAD_NAMES = ['mlp.0.weight', 'mlp.0.bias', 'mlp.2.weight', 'mlp.2.bias', 'mlp.4.weight', 'mlp.4.bias', 'last_layer.weight_g', 'last_layer.weight_v'];

describe('parameter groups (param_groups.py)', () => {
  const opts = { numLayers: 12, layerwiseDecay: 0.9, patchEmbedLrMult: 0.2 };

  it('the ViT-S lr multiplier table', () => {
    const lr = (n: string) => lrMultiplier('backbone', n, opts);
    expect(lr('blocks.11.attn.qkv.weight')).toBeCloseTo(0.9, 12);
    expect(lr('blocks.0.mlp.fc1.bias')).toBeCloseTo(0.9 ** 12, 12);
    expect(lr('blocks.0.mlp.fc1.bias').toFixed(4)).toBe('0.2824');
    for (const n of ['cls_token', 'pos_embed', 'register_tokens', 'mask_token']) {
      expect(lr(n)).toBeCloseTo(0.9 ** 13, 12);
      expect(lr(n).toFixed(4)).toBe('0.2542');
    }
    expect(lr('patch_embed.proj.weight')).toBeCloseTo(0.2 * 0.9 ** 13, 12);
    expect(lr('patch_embed.proj.bias').toFixed(4)).toBe('0.0508');
    expect(lr('norm.weight')).toBe(1);
    for (let i = 0; i < 12; i++) expect(lr(`blocks.${i}.ls2.gamma`)).toBeCloseTo(0.9 ** (12 - i), 12);
    for (const n of HEAD_NAMES) {
      expect(lrMultiplier('dino_head', n, opts)).toBe(1);
      expect(lrMultiplier('ibot_head', n, opts)).toBe(1);
    }
    // vitl14/vitg14: layerwise_decay 1.0, only the patch embedding is scaled.
    expect(lrMultiplier('backbone', 'blocks.0.attn.qkv.weight', { ...opts, layerwiseDecay: 1 })).toBe(1);
    expect(lrMultiplier('backbone', 'patch_embed.proj.weight', { ...opts, layerwiseDecay: 1 })).toBeCloseTo(0.2, 15);
    // FSDP block chunks: blocks.<chunk>.<global index>
    expect(backboneLayerId('blocks.2.7.attn.qkv.weight', 12, true)).toBe(8);
  });

  it('weight decay: 0 for biases, norms and LayerScale gammas; tokens, matrices and weight_g are decayed', () => {
    for (const n of ['blocks.3.attn.qkv.bias', 'blocks.3.norm1.weight', 'blocks.3.norm2.bias', 'norm.weight', 'blocks.3.ls1.gamma', 'patch_embed.proj.bias', 'mlp.0.bias']) expect(wdMultiplier(n), n).toBe(0);
    for (const n of ['cls_token', 'pos_embed', 'mask_token', 'register_tokens', 'patch_embed.proj.weight', 'blocks.3.mlp.fc2.weight', 'mlp.4.weight', 'last_layer.weight_g', 'last_layer.weight_v']) expect(wdMultiplier(n), n).toBe(1);
    expect(paramGroupKey('dino_head', 'last_layer.weight_g', opts).isLastLayer).toBe(true);
    expect(paramGroupKey('dino_head', 'mlp.4.weight', opts).isLastLayer).toBe(false);
  });

  it('fusion: per sub-model, by equal (lr, wd, last layer), in order of appearance', () => {
    const names = [...vitSNames().map((n) => `backbone.${n}`), ...HEAD_NAMES.map((n) => `dino_head.${n}`), ...HEAD_NAMES.map((n) => `ibot_head.${n}`)];
    const groups = dinov2ParamGroups(names, opts);
    // backbone: tokens, patch weight, patch bias, 12 × (decayed, not decayed), norm = 28; each head 3.
    expect(groups.length).toBe(28 + 3 + 3);
    expect(groups[0].names).toEqual(['backbone.cls_token', 'backbone.pos_embed', 'backbone.register_tokens', 'backbone.mask_token']);
    expect(groups.reduce((a, g) => a + g.names.length, 0)).toBe(names.length);
    const last = groups.filter((g) => g.key.isLastLayer);
    expect(last.map((g) => g.names)).toEqual([
      ['dino_head.last_layer.weight_g', 'dino_head.last_layer.weight_v'],
      ['ibot_head.last_layer.weight_g', 'ibot_head.last_layer.weight_v'],
    ]);
    expect(fuseParamGroups([])).toEqual([]);
    expect(() => dinov2ParamGroups(['head.mlp.0.weight'], opts)).toThrow(/outside/);
  });
});

describe('schedules (CosineScheduler, build_schedulers)', () => {
  /** utils.CosineScheduler, transcribed. */
  function cosineRef(base: number, final: number, total: number, warmup = 0, start = 0, freeze = 0): number[] {
    const w = warmup === 1 ? [start] : Array.from({ length: warmup }, (_, i) => start + ((base - start) * i) / (warmup - 1));
    const T = total - warmup - freeze;
    return [...new Array(freeze).fill(0), ...w, ...Array.from({ length: T }, (_, i) => final + 0.5 * (base - final) * (1 + Math.cos((Math.PI * i) / T)))];
  }

  it('warm-up, cosine, freeze and past-the-end values', () => {
    for (const [b, f, t, w, s, z] of [
      [1, 0.1, 50, 10, 0, 0],
      [0.04, 0.4, 37, 0, 0, 0],
      [0.07, 0.07, 30, 30, 0.04, 0],
      [2, 1, 20, 5, 0.5, 3],
      [3, 1, 4, 1, 0.25, 0],
    ]) {
      const c = new CosineSchedule(b, f, t, w, s, z);
      expectClose(c.values, cosineRef(b, f, t, w, s, z), 1e-14, 1e-15, `CosineScheduler(${b}, ${f}, ${t}, ${w}, ${s}, ${z})`);
      expect(c.at(t)).toBe(f);
      expect(c.at(t + 1000)).toBe(f);
    }
  });

  it('DINOv2 schedules per iteration, epoch = epochLength iterations', () => {
    const L = 7;
    const s = dinov2Schedules({
      epochs: 5,
      epochLength: L,
      lr: 0.002,
      minLr: 1e-6,
      warmupEpochs: 2,
      weightDecay: 0.04,
      weightDecayEnd: 0.4,
      momentumTeacher: 0.992,
      finalMomentumTeacher: 1,
      teacherTemp: 0.07,
      warmupTeacherTemp: 0.04,
      warmupTeacherTempEpochs: 3,
      freezeLastLayerEpochs: 1,
    });
    expect(s.lr.values.length).toBe(35);
    expect(s.lr.at(0)).toBe(0);
    expect(s.lr.at(2 * L - 1)).toBeCloseTo(0.002, 15); // the warm-up ends on the peak
    expect(s.wd.at(0)).toBeCloseTo(0.04, 15);
    expect(s.momentum.at(0)).toBeCloseTo(0.992, 15);
    expect(s.momentum.at(35)).toBe(1);
    // τt: 0.04 → 0.07 linearly over 3 epochs, then 0.07 for ever (past the end of its schedule).
    expect(s.teacherTemp.at(0)).toBe(0.04);
    expect(s.teacherTemp.at(3 * L - 1)).toBeCloseTo(0.07, 15);
    expect(s.teacherTemp.at(3 * L + 5)).toBe(0.07);
    expect(s.teacherTemp.at(L)).toBeCloseTo(0.04 + (0.03 * L) / (3 * L - 1), 15);
    // last layer: 0 for the first epoch, then the lr schedule.
    for (let i = 0; i < 35; i++) expect(s.lastLayerLr.at(i)).toBe(i < L ? 0 : s.lr.at(i));
  });

  it('lr = base_lr · √(batch/1024)', () => {
    expect(sqrtScaledLr(0.004, 1024)).toBe(0.004);
    expect(sqrtScaledLr(0.004, 256)).toBeCloseTo(0.002, 15);
    expect(sqrtScaledLr(0.004, 64)).toBeCloseTo(0.001, 15);
  });
});
