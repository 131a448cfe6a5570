/**
 * Dynamic loss scaling (engine/loss-scale.ts): a scaled backward then `unscale` gives exactly the
 * unscaled gradients (power-of-two scale) and the same AdamW step as the f32 run; an overflow
 * (gradients past f32's range at the scale) is detected, the step is skipped with the gradients
 * dropped and the parameters untouched, and the scale halves; `growthInterval` finite steps in a
 * row double it.
 */
import { describe, expect, it } from 'vitest';
import { AdamW, ParamArena, type Tensor } from '../../index.js';
import { DynamicLossScaler } from '../../engine/loss-scale.js';
import { getEngine, randn } from '../helpers.js';

async function setup(seed: number) {
  const wd = await getEngine();
  const arena = new ParamArena(wd);
  const w = arena.add('w', [3, 5], randn(15, seed));
  const b = arena.add('b', [5], randn(5, seed + 1));
  const x = wd.keep(wd.tensor(randn(4 * 3, seed + 2), [4, 3]));
  /** A small loss: mean of squares of x·w + b. */
  const loss = (mult = 1): Tensor => x.matmul(w).add(b).pow(2).mean().mul(mult);
  return { wd, arena, w, b, x, loss };
}

describe('DynamicLossScaler', () => {
  it('unscaled gradients and the AdamW step equal the unscaled run', async () => {
    const A = await setup(1);
    const B = await setup(1);
    const scaler = new DynamicLossScaler({ initScale: 2 ** 12 });
    const optA = new AdamW(A.arena, { lr: 1e-2, weightDecay: 0.04 });
    const optB = new AdamW(B.arena, { lr: 1e-2, weightDecay: 0.04 });
    await A.wd.scope(async () => A.loss().backward());
    await B.wd.scope(async () => scaler.scaleLoss(B.loss()).backward());
    A.arena.gatherGrads();
    const r = await scaler.unscale(B.arena);
    expect(r.step).toBe(true);
    expect(r.scale).toBe(2 ** 12);
    expect(Number.isFinite(r.gradNorm) && r.gradNorm > 0).toBe(true);
    for (const n of ['w', 'b']) expect(Array.from(await B.arena.gradOf(n).toArray())).toEqual(Array.from(await A.arena.gradOf(n).toArray()));
    optA.step();
    optB.step();
    expect(Array.from(await B.w.toArray())).toEqual(Array.from(await A.w.toArray()));
    expect(scaler.state()).toEqual({ scale: 2 ** 12, goodSteps: 1, skippedSteps: 0 });
    for (const s of [A, B]) {
      s.arena.dispose();
      s.x.dispose();
    }
    optA.dispose();
    optB.dispose();
  });

  it('an overflow skips the step (parameters untouched, gradients dropped) and halves the scale; finite runs grow it', async () => {
    const S = await setup(5);
    const scaler = new DynamicLossScaler({ initScale: 2 ** 100, growthInterval: 2 });
    const opt = new AdamW(S.arena, { lr: 1e-2, weightDecay: 0.04 });
    const before = await S.w.toArray();
    // 2¹⁰⁰ · 2¹⁰⁰ = 2²⁰⁰: past f32's range (3.4e38 ≈ 2¹²⁸), the scaled gradients are infinite.
    await S.wd.scope(async () => scaler.scaleLoss(S.loss(2 ** 100)).backward());
    const r = await scaler.unscale(S.arena);
    expect(r.step).toBe(false);
    expect(Number.isFinite(r.gradNorm)).toBe(false);
    expect(scaler.scale).toBe(2 ** 99);
    expect(scaler.skippedSteps).toBe(1);
    expect(Array.from(await S.arena.gradOf('w').toArray()).every((v) => v === 0)).toBe(true);
    expect(Array.from(await S.w.toArray())).toEqual(Array.from(before));
    // Two finite steps in a row at a sane scale: the scale doubles after the second.
    scaler.loadState({ scale: 2 ** 8, goodSteps: 0, skippedSteps: 1 });
    for (let i = 0; i < 2; i++) {
      await S.wd.scope(async () => scaler.scaleLoss(S.loss()).backward());
      const ok = await scaler.unscale(S.arena);
      expect(ok.step).toBe(true);
      opt.step();
      S.arena.zeroGrad();
    }
    expect(scaler.scale).toBe(2 ** 9);
    expect(scaler.goodSteps).toBe(0);
    expect(Array.from(await S.w.toArray())).not.toEqual(Array.from(before));
    S.arena.dispose();
    S.x.dispose();
    opt.dispose();
  });
});
