/**
 * The DINO trainer against a float64 reference and its failure modes:
 *
 * - one whole step (forward of student and teacher, DINO loss, backward, per-tensor clipping,
 *   freeze_last_layer, AdamW with per-tensor step counts, teacher EMA, center) of a tiny ViT equals
 *   the float64 reference of step-reference.ts, for a step in epoch 0 (last layer frozen) and one
 *   in epoch 1 (last layer trained, its own bias correction t = 1 while the rest is at t = 2);
 *   and the same with DINOv2's KoLeo term added (koleoWeight 0.1, the gradient through the
 *   backbone by finite differences of the float64 loss);
 * - a non-finite loss throws NonFiniteLossError and changes nothing: parameters, teacher, center,
 *   optimizer state, iteration (the center check caught the loss updating the center before the
 *   finiteness check; the trainer now restores it); in a run, the last checkpoint on disk stays
 *   byte-identical;
 * - the schedules have epochs × itersPerEpoch values and the steps use them in order;
 * - 20 training steps in scopes leave the live GPU memory unchanged after the first one.
 *
 * How the step is compared (tolerances)
 * The trainer computes in f32, the reference in f64 with finite-difference gradients (Richardson,
 * error ≲ 2e-6 of each tensor's scale). The checks are split so each one is tight:
 *   loss            rtol 1e-5 (f32 forward through ~10 reductions of ≤ 48 terms; 7e-8 observed)
 *   gradients       the trainer's clipped, cancelled gradients (the flat gradient arena after the
 *                   step) vs the reference's: max|err| ≤ 1e-4·max|g| per tensor. Observed 1e-6
 *                   to 6e-6 (f32 rounding, amplified by the temperatures: logits ×1/0.04, ×1/0.1,
 *                   and by the head's l2-normalisation of a small bottleneck vector), so 1e-4 is a
 *                   15× margin; a 1 % change of the clip value already fails it.
 *   optimizer/EMA   params, m, v and teacher vs the float64 AdamW + EMA applied to the trainer's
 *                   OWN gradients: |err| ≤ 1e-6·|p| + 1e-5·lr (f32 rounding of p and of the update;
 *                   for m and v 1e-6 of the terms, which may cancel)
 *   whole chain     params vs the float64 AdamW of the REFERENCE gradients. Adam divides by √v, so
 *                   an element with |g| near the f32 noise floor may get any update in [−lr, lr]
 *                   (e.g. the key bias of attention, whose true gradient is exactly 0 because
 *                   softmax is shift-invariant; PyTorch does the same). Each element is allowed
 *                   the spread of the AdamW update over gradients within the gradient tolerance,
 *                   which is ~0 for all but 6–8 % of the elements (counted and bounded).
 *   center          rtol 1e-4, atol 1e-6 (mean of f32 teacher outputs in [−1, 1])
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import type { Engine } from '../../engine/engine.js';
import { checkpointBytes, readCheckpointMeta } from '../../train/checkpoint.js';
import { SyntheticShapes } from '../../train/data/synthetic.js';
import { runTraining } from '../../train/run-node.js';
import { dinoSchedules } from '../../train/schedules.js';
import { DinoTrainer, NonFiniteLossError, type TrainConfig } from '../../train/trainer.js';
import { expectClose, getEngine, randn } from '../helpers.js';
import { expectStateUnchanged, readGrads, readState, TINY } from './trainer-state.js';
import {
  adamwElement,
  decays,
  referenceStep,
  type RefCrops,
  type RefHyper,
  type RefModelConfig,
} from './step-reference.js';

const tmpRoots: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'webdino-trainer-'));
  tmpRoots.push(d);
  return d;
}
afterAll(() => {
  for (const d of tmpRoots) rmSync(d, { recursive: true, force: true });
});

// -------------------------------------------------------------------------------------------------
// Reading the trainer's state


/** max over the tensor of |got − want|, relative to max|want|; throws with details above `rtol`. */
function expectScaled(got: ArrayLike<number>, want: ArrayLike<number>, rtol: number, what: string): number {
  let scale = 0;
  let worst = 0;
  let at = 0;
  for (let i = 0; i < want.length; i++) {
    scale = Math.max(scale, Math.abs(want[i]));
    const e = Math.abs(got[i] - want[i]);
    if (!(e <= worst)) {
      worst = e;
      at = i;
    }
  }
  if (!(worst <= rtol * scale)) throw new Error(`${what}: max |err| ${worst} at ${at} (got ${got[at]}, want ${want[at]}) > ${rtol} × ${scale}`);
  return scale === 0 ? 0 : worst / scale;
}

// -------------------------------------------------------------------------------------------------
// One step against the float64 reference


// KoLeo (koleoWeight > 0) adds the regulariser of train/dinov2/koleo.ts on the global crops' CLS
// outputs; with 3 images per crop the nearest neighbour is a real choice (with 2 it is the other row).
describe.each([
  ['cpu', 0],
  ['gpu', 0],
  ['cpu', 0.1],
] as const)('one DINO step equals the float64 reference (%s kernel variants, KoLeo weight %s)', (variants, koleoWeight) => {
  it('epoch 0 (last layer frozen), then epoch 1 (last layer trained)', async () => {
    const wd = await getEngine(variants);
    const tr = new DinoTrainer(wd, { ...TINY, koleoWeight });
    const c = tr.config;
    tr.setItersPerEpoch(1); // iteration 0 is epoch 0, iteration 1 is epoch 1
    const model: RefModelConfig = c;
    const trainable = new Set(tr.studentParams.entries().filter(([, t]) => t.requiresGrad).map(([n]) => n));
    expect(trainable.has('head.last_layer.weight_g')).toBe(false);
    const nTrainable = tr.studentParams.entries().reduce((a, [n, t]) => a + (trainable.has(n) ? t.size : 0), 0);
    expect(nTrainable).toBeLessThan(5000);
    const sched = dinoSchedules({ ...c, itersPerEpoch: 1 });
    const B = koleoWeight > 0 ? 3 : 2;
    try {
      for (const it of [0, 1]) {
        const crops: RefCrops = {
          B,
          globals: randn(2 * B * 3 * c.globalSize ** 2, 100 + it),
          globalSize: c.globalSize,
          locals: randn(c.localCrops * B * 3 * c.localSize ** 2, 200 + it),
          localSize: c.localSize,
          localCrops: c.localCrops,
        };
        const before = await readState(tr);
        const r = await wd.scope(() =>
          tr.step(
            wd.tensor(crops.globals, [2 * B, 3, c.globalSize, c.globalSize]),
            wd.tensor(crops.locals!, [c.localCrops * B, 3, c.localSize, c.localSize]),
          ),
        );
        // The step used this iteration's scheduled values.
        expect(r.iteration).toBe(it);
        expect(r.epoch).toBe(it);
        expect([r.lr, r.weightDecay, r.momentum, r.teacherTemp]).toEqual([sched.lr[it], sched.wd[it], sched.momentum[it], sched.teacherTemp[it]]);
        const frozen = it < c.freezeLastLayer;
        const h: RefHyper = {
          lr: r.lr,
          weightDecay: r.weightDecay,
          momentum: r.momentum,
          teacherTemp: r.teacherTemp,
          studentTemp: c.studentTemp,
          centerMomentum: c.centerMomentum,
          clipGrad: c.clipGrad,
          freezeLastLayer: frozen,
          koleoWeight,
        };
        // The reference starts from the trainer's state before this step (so each step is checked on its own).
        const ref = referenceStep(before, model, crops, h, (n) => trainable.has(n));
        const after = await readState(tr);
        const gpuGrads = await readGrads(tr.studentParams);

        expectClose([r.loss], [ref.loss], 1e-5, 0, `step ${it}: loss`);
        expectClose(after.center, ref.state.center, 1e-4, 1e-6, `step ${it}: center`);
        // Clipping really happened for some tensors and not for others.
        expect(ref.clippedNames.length, `step ${it}: clipped tensors`).toBeGreaterThan(0);
        expect(ref.clippedNames.length, `step ${it}: clipped tensors`).toBeLessThan(ref.grads.size);

        let worstGrad = 0;
        for (const name of trainable) {
          const want = ref.clipped.get(name);
          if (!want) {
            // Cancelled (frozen last layer): zero gradient, no update at all, step count unchanged.
            expect(name).toContain('last_layer');
            expect(gpuGrads.get(name)!.every((x) => x === 0), `${name}: cancelled gradient`).toBe(true);
            expect(after.student.get(name)!.data, `${name}: frozen`).toEqual(before.student.get(name)!.data);
            expect(after.steps.get(name)).toBe(before.steps.get(name));
            continue;
          }
          worstGrad = Math.max(worstGrad, expectScaled(gpuGrads.get(name)!, want, 1e-4, `step ${it}: clipped gradient of ${name}`));
        }
        expect([...ref.clipped.keys()].some((n) => n.includes('last_layer'))).toBe(!frozen);

        // AdamW, step counts and the EMA on the trainer's own gradients: tight.
        const { lr, weightDecay, momentum } = h;
        let ambiguous = 0;
        let total = 0;
        for (const [name, p0] of before.student) {
          const p1 = after.student.get(name)!.data;
          const t0 = before.teacher.get(name)!.data;
          const t1 = after.teacher.get(name)!.data;
          const active = ref.clipped.has(name);
          expect(after.steps.get(name), `${name}: step count`).toBe(before.steps.get(name)! + (active ? 1 : 0));
          const t = after.steps.get(name)!;
          const wdk = decays(name, p0.shape) ? weightDecay : 0;
          const g = gpuGrads.get(name)!;
          const gRef = ref.clipped.get(name);
          const gScale = gRef ? gRef.reduce((a, x) => Math.max(a, Math.abs(x)), 0) : 0;
          for (let i = 0; i < p0.data.length; i++) {
            let want = p0.data[i];
            if (active) {
              const [p, m, v] = adamwElement(p0.data[i], g[i], before.m.get(name)![i], before.v.get(name)![i], t, lr, wdk);
              want = p;
              // f32 rounding relative to the terms (β₁m and (1−β₁)g may cancel).
              const m0 = before.m.get(name)![i];
              const v0 = before.v.get(name)![i];
              expect(Math.abs(after.m.get(name)![i] - m), `${name}[${i}]: m`).toBeLessThanOrEqual(1e-6 * (0.9 * Math.abs(m0) + 0.1 * Math.abs(g[i])) + 1e-30);
              expect(Math.abs(after.v.get(name)![i] - v), `${name}[${i}]: v`).toBeLessThanOrEqual(1e-6 * v0 + 1e-6 * v + 1e-30);
              // The whole float64 chain: AdamW of the reference gradient, with the spread of the
              // update over gradients within the gradient tolerance.
              const update = (gg: number) => adamwElement(p0.data[i], gg, before.m.get(name)![i], before.v.get(name)![i], t, lr, wdk)[0];
              const pRef = update(gRef![i]);
              const delta = 1e-4 * gScale;
              let spread = 0;
              for (const f of [-1, -0.5, 0.5, 1]) spread = Math.max(spread, Math.abs(update(gRef![i] + f * delta) - pRef));
              if (spread > 0.01 * lr) ambiguous++;
              total++;
              const tol = 1e-6 * Math.abs(pRef) + 1e-5 * lr + spread;
              if (!(Math.abs(p1[i] - pRef) <= tol)) throw new Error(`step ${it}: ${name}[${i}] is ${p1[i]}, float64 chain gives ${pRef} (tol ${tol})`);
            }
            if (!(Math.abs(p1[i] - want) <= 1e-6 * Math.abs(want) + 1e-5 * lr)) throw new Error(`step ${it}: ${name}[${i}] is ${p1[i]}, AdamW of its gradient gives ${want}`);
            const tWant = momentum * t0[i] + (1 - momentum) * p1[i];
            if (!(Math.abs(t1[i] - tWant) <= 1e-6 * Math.abs(tWant) + 1e-9)) throw new Error(`step ${it}: teacher ${name}[${i}] is ${t1[i]}, EMA gives ${tWant}`);
          }
        }
        // Elements whose update is not determined at the gradient tolerance (spread > lr/100) are a
        // minority: the patch rows of pos_embed and parts of qkv, whose gradients are 1e-4 of their
        // tensor's largest (the CLS row dominates). 112/1920 and 162/2048 with these seeds.
        expect(ambiguous, `step ${it}: ambiguous elements of ${total}`).toBeLessThan(0.1 * total);
        console.log(`${variants} step ${it}: loss ${r.loss} (ref ${ref.loss}), worst gradient error ${worstGrad.toExponential(2)} of scale, clipped ${ref.clippedNames.length}/${ref.grads.size} tensors, ${ambiguous}/${total} sign-ambiguous elements`);
      }
    } finally {
      tr.dispose();
    }
  });
});

// -------------------------------------------------------------------------------------------------
// Failure modes, schedules, memory

/** A small run configuration on 32 px synthetic images (depth 2, so block 1 has drop path). */
const SMALL: Partial<TrainConfig> = {
  arch: 'custom',
  embedDim: 16,
  depth: 2,
  numHeads: 2,
  patchSize: 4,
  dropPathRate: 0.2,
  outDim: 32,
  headHidden: 32,
  headBottleneck: 16,
  epochs: 1,
  batchSize: 4,
  warmupEpochs: 0,
  globalSize: 16,
  localSize: 8,
  localCrops: 2,
  seed: 1,
};

function syntheticImages(n: number) {
  const ds = new SyntheticShapes({ size: 32, length: n, seed: 3 });
  return Array.from({ length: n }, (_, i) => ds.getSync(i).image);
}

/** Crops of the SMALL config for B images (normal values, like normalised pixels). */
function smallCrops(wd: Engine, B: number, seed: number, poison = false) {
  const c = SMALL as TrainConfig;
  const g = randn(2 * B * 3 * c.globalSize ** 2, seed);
  if (poison) g[17] = NaN;
  return {
    globals: wd.tensor(g, [2 * B, 3, c.globalSize, c.globalSize]),
    locals: wd.tensor(randn(c.localCrops * B * 3 * c.localSize ** 2, seed + 1), [c.localCrops * B, 3, c.localSize, c.localSize]),
  };
}

describe('non-finite loss', () => {
  it('throws NonFiniteLossError and changes no state (parameters, teacher, center, AdamW, iteration)', async () => {
    const wd = await getEngine();
    const tr = new DinoTrainer(wd, SMALL);
    tr.setItersPerEpoch(4);
    try {
      // One good step first, so the center and the moments are non-trivial.
      await wd.scope(async () => {
        const { globals, locals } = smallCrops(wd, 4, 1);
        return tr.step(globals, locals);
      });
      const before = await readState(tr);
      const live = wd.memory().liveBytes;
      const err = await wd
        .scope(async () => {
          const { globals, locals } = smallCrops(wd, 4, 2, true);
          return tr.step(globals, locals);
        })
        .then(
          () => null,
          (e: unknown) => e,
        );
      expect(err).toBeInstanceOf(NonFiniteLossError);
      expect((err as NonFiniteLossError).iteration).toBe(1);
      expect(Number.isNaN((err as NonFiniteLossError).loss)).toBe(true);
      expect((err as Error).message).toMatch(/loss is NaN at iteration 1/);
      expect(tr.iteration).toBe(1);
      expect(wd.memory().liveBytes, 'the failed step freed its temporaries').toBe(live);
      expectStateUnchanged(before, await readState(tr));
      // The trainer stays usable: the next batch trains normally.
      const r = await wd.scope(async () => {
        const { globals, locals } = smallCrops(wd, 4, 3);
        return tr.step(globals, locals);
      });
      expect(Number.isFinite(r.loss)).toBe(true);
      expect(r.iteration).toBe(1);
    } finally {
      tr.dispose();
    }
  });

  it('stops a run and leaves the last checkpoint on disk byte-identical', async () => {
    const wd = await getEngine();
    const out = tempDir();
    const ckpt = join(out, 'checkpoint.safetensors');
    let saved: Uint8Array | null = null;
    const steps: number[] = [];
    const run = runTraining(wd, {
      config: SMALL,
      dataset: new SyntheticShapes({ size: 32, length: 24, seed: 3 }),
      outDir: out,
      checkpointEvery: 2,
      evalEvery: 2,
      onStep: (r) => steps.push(r.iteration),
      // The evaluation hook runs right after the checkpoint of iteration 2 is written: keep its
      // bytes, then make the student diverge (NaN weights), as a too-high lr would.
      evaluate: async (trainer) => {
        if (trainer.iteration === 2) {
          saved = new Uint8Array(readFileSync(ckpt));
          const w = trainer.studentParams.get('backbone.patch_embed.proj.weight');
          wd.device.write(w.buffer, w.offset * 4, new Float32Array(w.size).fill(NaN));
        }
        return {};
      },
    });
    const err = await run.then(
      (r) => {
        r.trainer.dispose();
        return null;
      },
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(NonFiniteLossError);
    expect((err as NonFiniteLossError).iteration).toBe(2);
    expect(steps).toEqual([0, 1]);
    expect(saved).not.toBeNull();
    const now = new Uint8Array(readFileSync(ckpt));
    expect(Buffer.compare(now, saved!), 'checkpoint bytes').toBe(0);
    expect(readCheckpointMeta(now).iteration).toBe(2);
    expect(readdirSync(out).filter((f) => f.endsWith('.tmp')), 'no temporary files').toEqual([]);
    expect(existsSync(join(out, 'teacher_backbone.safetensors')), 'no final export after the failure').toBe(false);
  });
});

describe('schedules', () => {
  it('have epochs × itersPerEpoch values (teacher temperature: one per epoch)', () => {
    for (const [epochs, ipe, warmup, ttWarmup] of [
      [3, 5, 1, 2],
      [1, 7, 0, 0],
      [4, 1, 2, 4],
      [2, 3, 5, 6], // warm-up longer than the run: truncated, never longer
    ]) {
      const s = dinoSchedules({ ...(SMALL as TrainConfig), lr: 5e-4, minLr: 1e-6, weightDecay: 0.04, weightDecayEnd: 0.4, momentumTeacher: 0.996, warmupTeacherTemp: 0.04, teacherTemp: 0.07, epochs, itersPerEpoch: ipe, warmupEpochs: warmup, warmupTeacherTempEpochs: ttWarmup });
      for (const a of [s.lr, s.wd, s.momentum]) expect(a.length, `${epochs}×${ipe}`).toBe(epochs * ipe);
      expect(s.teacherTemp.length).toBe(epochs);
      for (const a of [s.lr, s.wd, s.momentum, s.teacherTemp]) expect(a.every(Number.isFinite)).toBe(true);
    }
  });

  it('the trainer takes one value per iteration in order and stops at the end', async () => {
    const wd = await getEngine();
    const tr = new DinoTrainer(wd, { ...TINY, epochs: 2, warmupEpochs: 1 });
    const c = tr.config;
    try {
      const B = 2;
      const crops = () => ({
        g: wd.tensor(randn(2 * B * 3 * c.globalSize ** 2, 7), [2 * B, 3, c.globalSize, c.globalSize]),
        l: wd.tensor(randn(c.localCrops * B * 3 * c.localSize ** 2, 8), [c.localCrops * B, 3, c.localSize, c.localSize]),
      });
      await expect(wd.scope(() => tr.step(crops().g, crops().l))).rejects.toThrow(/setItersPerEpoch/);
      tr.setItersPerEpoch(3);
      expect(tr.totalIterations).toBe(6);
      const s = dinoSchedules({ ...c, itersPerEpoch: 3 });
      for (let it = 0; it < 6; it++) {
        const r = await wd.scope(() => {
          const x = crops();
          return tr.step(x.g, x.l);
        });
        expect([r.iteration, r.epoch]).toEqual([it, Math.floor(it / 3)]);
        expect([r.lr, r.weightDecay, r.momentum, r.teacherTemp]).toEqual([s.lr[it], s.wd[it], s.momentum[it], s.teacherTemp[r.epoch]]);
      }
      expect(s.lr[0]).toBe(0); // warm-up starts at 0, as DINO's
      await expect(wd.scope(() => tr.step(crops().g, crops().l))).rejects.toThrow(/past the end of the schedule/);
    } finally {
      tr.dispose();
    }
  });
});

describe('memory', () => {
  it('20 training steps (augmentation included) and checkpoints leave the live GPU memory unchanged', async () => {
    const wd = await getEngine();
    const start = wd.memory().liveBytes;
    const tr = new DinoTrainer(wd, SMALL);
    tr.setItersPerEpoch(25);
    const images = syntheticImages(4);
    try {
      // The first step allocates what lives as long as the trainer (gradient arena, position-embedding resize matrices).
      await wd.scope(() => tr.stepImages(images));
      const base = wd.memory().liveBytes;
      for (let i = 0; i < 20; i++) {
        const r = await wd.scope(() => tr.stepImages(images));
        expect(Number.isFinite(r.loss)).toBe(true);
        if (i % 10 === 9) await checkpointBytes(tr, 25);
        expect(wd.memory().liveBytes, `after step ${i + 2}`).toBe(base);
      }
    } finally {
      tr.dispose();
    }
    expect(wd.memory().liveBytes, 'after dispose()').toBe(start);
  });
});
