/**
 * Mixed-precision DINO training (TrainConfig.precision 'f16', `webdino train --precision f16`):
 *
 * - one f16 step of a tiny ViT against the float64 reference of step-reference.ts (the trainer's
 *   float64 step test, test/train/trainer.test.ts, with f16 tolerances): loss, the clipped
 *   gradients, and AdamW + EMA applied to the trainer's own gradients (tight: they are f32);
 * - the parameters' gradients stay f32 in the arena while the Linear layers' activations and their
 *   gradients are f16 (the dtype of what the step records);
 * - overflow: a loss scale too large for f16 gradients skips the whole step (student, teacher,
 *   center, AdamW moments and step counts unchanged, the iteration counted), halves the scale,
 *   and the next step trains;
 * - the guards against f16's known NaNs: logits whose value / τ would overflow f16 (> 65504·τ, at
 *   τ = 0.04 and K = 65536) give a finite loss equal to the f32 run's, because the head hands
 *   f32 logits to the loss; KoLeo on duplicated images (log of a zero distance) stays finite;
 * - a run logs loss_scale and skipped on every step line of metrics.jsonl; interrupted and resumed
 *   it gives the same losses BITWISE as an uninterrupted one (the checkpoint holds the scaler's
 *   state: with the scale reset to its initial value the resumed losses differ, checked);
 * - the f32 path has no loss scaler and its step result no loss scale (its losses are unchanged:
 *   trainer.test.ts and resume.test.ts compare them to the float64 reference and bitwise).
 *
 * Tolerances (f16 keeps 11 significant bits: relative rounding 2⁻¹¹ ≈ 4.9e-4 per stored value).
 * Every Linear rounds its input and weight to f16 and stores its output in f16, and the gradient
 * of each f16 activation is stored in f16 too; through one block and a 3-layer head that is a few
 * roundings in a row, amplified by the temperatures (×1/0.1 on the student, ×1/0.04–0.07 on the
 * teacher) and by the head's l2-normalisation of a small bottleneck vector (‖z‖ ≈ 1e-2). Measured:
 * loss within 1e-4 relative, gradients within ~1e-2 of each tensor's largest (printed). Bounds:
 * loss 2e-3, gradients 5e-2 of scale (a gradient off by a clipping factor or a missing 1/S
 * unscaling is off by far more).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import type { Engine } from '../../engine/engine.js';
import { roundF16 } from '../../engine/half.js';
import { parseSafetensorsWithMetadata, writeSafetensors } from '../../models/io/safetensors.js';
import { readCheckpointMeta } from '../../train/checkpoint.js';
import { SyntheticShapes } from '../../train/data/synthetic.js';
import { runTraining, type RunOptions } from '../../train/run-node.js';
import { DinoTrainer, type TrainConfig } from '../../train/trainer.js';
import { expectClose, getEngine, randn } from '../helpers.js';
import { expectStateUnchanged, readGrads, readState, RESUME_RUN, TINY as TINY_F32 } from './trainer-state.js';
import { adamwElement, decays, referenceStep, type RefCrops, type RefHyper } from './step-reference.js';


/** max |got − want| / max |want| over a tensor. */
function scaledError(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let scale = 0;
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    scale = Math.max(scale, Math.abs(want[i]));
    worst = Math.max(worst, Math.abs(got[i] - want[i]));
  }
  return scale === 0 ? (worst === 0 ? 0 : Infinity) : worst / scale;
}

/** The tiny model of trainer.test.ts, at mixed precision. */
const TINY: Partial<TrainConfig> = { ...TINY_F32, precision: 'f16' };

function tinyCrops(c: TrainConfig, B: number, seed: number): RefCrops {
  return {
    B,
    globals: randn(2 * B * 3 * c.globalSize ** 2, seed),
    globalSize: c.globalSize,
    locals: randn(c.localCrops * B * 3 * c.localSize ** 2, seed + 100),
    localSize: c.localSize,
    localCrops: c.localCrops,
  };
}

function step(wd: Engine, tr: DinoTrainer, crops: RefCrops) {
  const c = tr.config;
  return wd.scope(() =>
    tr.step(
      wd.tensor(crops.globals, [2 * crops.B, 3, c.globalSize, c.globalSize]),
      crops.locals ? wd.tensor(crops.locals, [c.localCrops * crops.B, 3, c.localSize, c.localSize]) : null,
    ),
  );
}

describe('one f16 (mixed-precision) DINO step against the float64 reference', () => {
  it('epoch 0 (last layer frozen), then epoch 1: loss, clipped gradients, AdamW and EMA', async () => {
    const wd = await getEngine();
    if (!wd.device.features.shaderF16) throw new Error('this adapter has no shader-f16: mixed precision cannot be tested here');
    const tr = new DinoTrainer(wd, TINY);
    const c = tr.config;
    tr.setItersPerEpoch(1);
    // A scale whose f16 gradients neither overflow nor underflow at this size (the overflow test
    // below starts from too large a one); a power of two, so unscaling is exact.
    tr.lossScaler!.loadState({ scale: 2 ** 3, goodSteps: 0 });
    const trainable = new Set(tr.studentParams.entries().filter(([, t]) => t.requiresGrad).map(([n]) => n));
    try {
      for (const it of [0, 1]) {
        const crops = tinyCrops(c, 2, 100 + it);
        const before = await readState(tr);
        const r = await step(wd, tr, crops);
        expect(r.skipped).toBe(false);
        expect(r.lossScale).toBe(2 ** 3);
        const h: RefHyper = {
          lr: r.lr,
          weightDecay: r.weightDecay,
          momentum: r.momentum,
          teacherTemp: r.teacherTemp,
          studentTemp: c.studentTemp,
          centerMomentum: c.centerMomentum,
          clipGrad: c.clipGrad,
          freezeLastLayer: it < c.freezeLastLayer,
        };
        const ref = referenceStep(before, c, crops, h, (n) => trainable.has(n));
        const after = await readState(tr);
        const grads = await readGrads(tr.studentParams);
        const lossErr = Math.abs(r.loss - ref.loss) / Math.abs(ref.loss);
        expect(lossErr, `step ${it}: loss ${r.loss} vs ${ref.loss}`).toBeLessThan(2e-3);
        expectClose(after.center, ref.state.center, 2e-2, 2e-3, `step ${it}: center`);
        let worst = 0;
        for (const name of trainable) {
          const want = ref.clipped.get(name);
          if (!want) {
            expect(grads.get(name)!.every((x) => x === 0), `${name}: cancelled`).toBe(true);
            continue;
          }
          const err = scaledError(grads.get(name)!, want);
          expect(err, `step ${it}: gradient of ${name}`).toBeLessThan(5e-2);
          worst = Math.max(worst, err);
        }
        // AdamW on the trainer's own (f32, unscaled) gradients and the EMA: as tight as at f32.
        for (const [name, p0] of before.student) {
          const active = ref.clipped.has(name);
          const p1 = after.student.get(name)!.data;
          const t = after.steps.get(name)!;
          expect(t, `${name}: step count`).toBe(before.steps.get(name)! + (active ? 1 : 0));
          const wdk = decays(name, p0.shape) ? h.weightDecay : 0;
          const g = grads.get(name)!;
          for (let i = 0; i < p0.data.length; i++) {
            const want = active ? adamwElement(p0.data[i], g[i], before.m.get(name)![i], before.v.get(name)![i], t, h.lr, wdk)[0] : p0.data[i];
            if (!(Math.abs(p1[i] - want) <= 1e-6 * Math.abs(want) + 1e-5 * h.lr)) throw new Error(`step ${it}: ${name}[${i}] is ${p1[i]}, AdamW of its gradient gives ${want}`);
            const tWant = h.momentum * before.teacher.get(name)!.data[i] + (1 - h.momentum) * p1[i];
            const t1 = after.teacher.get(name)!.data[i];
            if (!(Math.abs(t1 - tWant) <= 1e-6 * Math.abs(tWant) + 1e-9)) throw new Error(`step ${it}: teacher ${name}[${i}] is ${t1}, EMA gives ${tWant}`);
          }
        }
        console.log(`f16 step ${it}: loss ${r.loss} (float64 ${ref.loss}, rel err ${lossErr.toExponential(2)}), worst gradient error ${worst.toExponential(2)} of scale`);
      }
    } finally {
      tr.dispose();
    }
  });
});

describe('gradient overflow', () => {
  it('skips the whole step (student, teacher, center, AdamW unchanged), halves the scale, and the next step trains', async () => {
    const wd = await getEngine();
    const tr = new DinoTrainer(wd, TINY);
    tr.setItersPerEpoch(4); // all in epoch 0
    const scaler = tr.lossScaler!;
    try {
      // A good step first, so the center and the moments are non-trivial.
      scaler.loadState({ scale: 2 ** 3, goodSteps: 0 });
      expect((await step(wd, tr, tinyCrops(tr.config, 2, 1))).skipped).toBe(false);
      expect(scaler.goodSteps).toBe(1);
      const before = await readState(tr);
      const live = wd.memory().liveBytes;
      // 2²⁴ times gradients of up to ~4e3 (the head's bottleneck, l2-normalised) is far past 65504.
      scaler.loadState({ scale: 2 ** 24, goodSteps: 7, skippedSteps: 0 });
      const r = await step(wd, tr, tinyCrops(tr.config, 2, 2));
      expect(Number.isFinite(r.loss), 'the loss itself is finite (f32)').toBe(true);
      expect(r.skipped).toBe(true);
      expect(r.lossScale).toBe(2 ** 24);
      expect(scaler.state()).toEqual({ scale: 2 ** 23, goodSteps: 0, skippedSteps: 1 });
      expect(r.iteration).toBe(1);
      expect(tr.iteration, 'a skipped step still counts as an iteration (as the schedules do)').toBe(2);
      expect(wd.memory().liveBytes, 'the skipped step freed its temporaries').toBe(live);
      const after = await readState(tr);
      expectStateUnchanged(before, after);
      // The arena's gradients were dropped: the next step starts from zero, and trains.
      scaler.loadState({ scale: 2 ** 3, goodSteps: 0, skippedSteps: 1 });
      const next = await step(wd, tr, tinyCrops(tr.config, 2, 3));
      expect(next.skipped).toBe(false);
      const moved = await readState(tr);
      expect(moved.student.get('backbone.blocks.0.mlp.fc1.weight')!.data).not.toEqual(after.student.get('backbone.blocks.0.mlp.fc1.weight')!.data);
    } finally {
      tr.dispose();
    }
  });
});

describe("guards against f16's known NaNs", () => {
  it('logits / τ past the f16 range (τ = 0.04, K = 65536) give a finite loss, the f32 run’s', async () => {
    const wd = await getEngine();
    // No weight normalisation to unit prototypes: the student's weight_g = 4000 makes |logit| up
    // to 4000, which f16 stores (≤ 65504), while logit / 0.04 (up to 1e5) would be ∞ in f16.
    const config: Partial<TrainConfig> = { ...TINY, outDim: 65536, normLastLayer: false, studentTemp: 0.04, teacherTemp: 0.04, warmupTeacherTemp: 0.04, centering: 'center' };
    const losses: number[] = [];
    for (const precision of ['f32', 'f16'] as const) {
      const tr = new DinoTrainer(wd, { ...config, precision });
      tr.setItersPerEpoch(1);
      try {
        const g = tr.studentParams.get('head.last_layer.weight_g');
        wd.device.write(g.buffer, g.offset * 4, new Float32Array(g.size).fill(4000));
        const crops = tinyCrops(tr.config, 2, 7);
        const logits = await wd.scope(async () => {
          const out = wd.noGrad(() => tr.student.forward([wd.tensor(crops.globals, [4, 3, 12, 12])]));
          expect(out.dtype, 'the head hands f32 logits to the loss').toBe('f32');
          return out.toArray();
        });
        const top = logits.reduce((a, x) => Math.max(a, Math.abs(x)), 0);
        expect(roundF16(top), 'the logits themselves fit in f16').toBeLessThan(Infinity);
        expect(roundF16(top / 0.04), `max |logit| ${top} / τ in f16`).toBe(Infinity);
        const r = await step(wd, tr, crops);
        expect(Number.isFinite(r.loss), `${precision} loss ${r.loss}`).toBe(true);
        losses.push(r.loss);
      } finally {
        tr.dispose();
      }
    }
    console.log(`K = 65536, |logit| ≤ 4000 at τ 0.04: loss f32 ${losses[0]}, f16 ${losses[1]}`);
    expect(Math.abs(losses[1] - losses[0]) / Math.abs(losses[0])).toBeLessThan(1e-2);
  });

  it('KoLeo on duplicated images (the log of a zero distance) stays finite and equals the f32 run’s', async () => {
    const wd = await getEngine();
    const losses: number[] = [];
    for (const precision of ['f32', 'f16'] as const) {
      const tr = new DinoTrainer(wd, { ...TINY, koleoWeight: 0.1, precision });
      tr.setItersPerEpoch(1);
      try {
        const crops = tinyCrops(tr.config, 2, 9);
        // Image 1 of each global crop repeats image 0: their CLS outputs coincide (distance 0).
        const n = 3 * 12 * 12;
        for (const crop of [0, 1]) (crops.globals as Float32Array).copyWithin((2 * crop + 1) * n, 2 * crop * n, (2 * crop + 1) * n);
        const r = await step(wd, tr, crops);
        expect(Number.isFinite(r.loss), `${precision} loss ${r.loss}`).toBe(true);
        losses.push(r.loss);
      } finally {
        tr.dispose();
      }
    }
    console.log(`KoLeo on duplicates: loss f32 ${losses[0]}, f16 ${losses[1]}`);
    // −log(1e-8·(√8 + 1)) ≈ 17.1 per crop, ×0.1 ×2: the KoLeo term dominates and is the same in both.
    expect(losses[0]).toBeGreaterThan(3);
    expect(Math.abs(losses[1] - losses[0]) / Math.abs(losses[0])).toBeLessThan(1e-3);
  });
});

describe('the f32 path', () => {
  it('has no loss scaler, computes in f32, and its step reports no loss scale', async () => {
    const wd = await getEngine();
    const tr = new DinoTrainer(wd, { ...TINY, precision: 'f32' });
    tr.setItersPerEpoch(1);
    try {
      expect(tr.lossScaler).toBeNull();
      expect(tr.student.precision).toBe('f32');
      const r = await step(wd, tr, tinyCrops(tr.config, 2, 11));
      expect('lossScale' in r || 'skipped' in r).toBe(false);
    } finally {
      tr.dispose();
    }
  });
});

// -------------------------------------------------------------------------------------------------
// Runs: the log and an exact resume

const tmpRoots: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'webdino-f16-'));
  tmpRoots.push(d);
  return d;
}
afterAll(() => {
  for (const d of tmpRoots) rmSync(d, { recursive: true, force: true });
});

/** resume.test.ts's run (24 synthetic 32 px images, batch 4, 2 epochs of 6), in mixed precision. */
const RUN: Partial<TrainConfig> = { ...RESUME_RUN, precision: 'f16' };

async function run(outDir: string, extra: Partial<RunOptions> = {}): Promise<Map<number, number>> {
  const wd = await getEngine();
  const losses = new Map<number, number>();
  const r = await runTraining(wd, {
    config: RUN,
    dataset: new SyntheticShapes({ size: 32, length: 24, seed: 2 }),
    outDir,
    checkpointEvery: 4,
    onStep: (s) => losses.set(s.iteration, s.loss),
    ...extra,
  });
  r.trainer.dispose();
  return losses;
}

type StepLine = { type: string; iteration: number; loss: number; loss_scale: number; skipped: boolean };
function stepLines(dir: string): StepLine[] {
  return readFileSync(join(dir, 'metrics.jsonl'), 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as StepLine)
    .filter((o) => o.type === 'step');
}

describe('a mixed-precision run', () => {
  it('logs the loss scale and the skipped steps, and resumes bitwise (the checkpoint holds the scaler)', async () => {
    const a = tempDir();
    const full = await run(a);
    const lines = stepLines(a);
    expect(lines.map((l) => l.iteration)).toEqual([...Array(12).keys()]);
    // GradScaler's dynamics from 2¹⁶: this small head's gradients overflow f16 at first (the
    // l2-normalisation of a bottleneck of norm ~1e-2 makes them ~4e3 before scaling), each overflow
    // halves the scale, and a finite step keeps it (growth needs 2000 in a row).
    let scale = 2 ** 16;
    for (const l of lines) {
      expect(l.loss_scale, `iteration ${l.iteration}`).toBe(scale);
      if (l.skipped) scale /= 2;
    }
    const skipped = lines.filter((l) => l.skipped).length;
    expect(skipped, 'some steps overflowed at the initial scale').toBeGreaterThan(0);
    expect(lines.at(-1)!.skipped, 'the scale came down to one that trains').toBe(false);
    console.log(`f16 run: ${skipped} of 12 steps skipped, scale ${lines[0].loss_scale} → ${scale}`);
    const meta = readCheckpointMeta(readFileSync(join(a, 'checkpoint.safetensors')));
    let goodSteps = 0;
    for (const l of lines) goodSteps = l.skipped ? 0 : goodSteps + 1;
    expect(meta.lossScaler).toEqual({ scale, goodSteps, skippedSteps: skipped });

    const b = tempDir();
    const part1 = await run(b, { maxIterations: 4 });
    const part2 = await run(b, { resume: true });
    const resumed = new Map([...part1, ...part2]);
    for (let it = 0; it < 12; it++) {
      expect(Object.is(resumed.get(it), full.get(it)), `iteration ${it}: ${resumed.get(it)} vs ${full.get(it)}`).toBe(true);
    }
    const ca = parseSafetensorsWithMetadata(readFileSync(join(a, 'checkpoint.safetensors')));
    const cb = parseSafetensorsWithMetadata(readFileSync(join(b, 'checkpoint.safetensors')));
    for (const [name, t] of ca.tensors) expect(Buffer.compare(Buffer.from(cb.tensors.get(name)!.data.buffer), Buffer.from(t.data.buffer)), name).toBe(0);
    expect(JSON.parse(cb.metadata.webdino)).toEqual(JSON.parse(ca.metadata.webdino));
    expect(stepLines(b)).toEqual(lines.map((l) => ({ ...l, images_per_s: expect.any(Number) })));

    // Control: the checkpoint of iteration 4 with the scale reset to 2¹⁶ resumes differently,
    // so the scaler's state is part of what makes the resume exact.
    const c = tempDir();
    const src = tempDir();
    await run(src, { maxIterations: 4 });
    const saved = parseSafetensorsWithMetadata(readFileSync(join(src, 'checkpoint.safetensors')));
    const m = JSON.parse(saved.metadata.webdino) as { lossScaler: { scale: number } };
    expect(m.lossScaler.scale, 'iteration 4 runs below the initial scale').toBeLessThan(2 ** 16);
    m.lossScaler.scale = 2 ** 16;
    writeFileSync(join(c, 'checkpoint.safetensors'), writeSafetensors(saved.tensors, { webdino: JSON.stringify(m) }));
    writeFileSync(join(c, 'metrics.jsonl'), readFileSync(join(src, 'metrics.jsonl')));
    const altered = await run(c, { resume: true });
    expect(stepLines(c)[4].loss_scale).toBe(2 ** 16);
    // It skips steps that the exact resume trains, so the losses part (not at once: a skipped step
    // changes nothing, so the first steps after the resume may agree).
    expect([...altered].some(([it, l]) => !Object.is(l, full.get(it))), 'another loss scale changes the run').toBe(true);
  });
});
