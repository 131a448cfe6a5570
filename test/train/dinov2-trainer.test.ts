/**
 * The DINOv2 trainer (train/dinov2-trainer.ts) against the float64 reference of one whole step
 * (dinov2-step-reference.ts): masked student and unmasked teacher forwards with mask_token,
 * registers and LayerScale; DINO local + swapped global + KoLeo + iBOT; backward; per-sub-model
 * global-norm clipping; AdamW over the parameter groups (layer-wise lr decay, patch-embed ×0.2, wd
 * multipliers, last-layer lr 0 during the first epoch); teacher EMA; both centers.
 *
 * Two steps per configuration (iteration 0: last layer at lr 0; iteration 1: trained), for
 *   A: centering, iBOT head shared with the DINO head;
 *   B: Sinkhorn-Knopp, a separate iBOT head.
 *
 * Tolerances, as trainer.test.ts (the trainer in f32, the reference in f64 with Richardson
 * finite-difference gradients):
 *   loss terms       rtol 1e-5
 *   gradients        the trainer's clipped gradients vs the reference's: max|err| ≤ 1e-4·max|g|
 *                    per tensor (observed ≤ 1e-5 with the reference's finite-difference step 3e-6;
 *                    the head's are scaled by its clip coefficient, so one bad norm shows in all)
 *   optimizer, EMA   vs float64 AdamW + EMA of the trainer's own gradients, with its group's lr
 *                    and wd multipliers: |err| ≤ 1e-6·|p| + 1e-5·lr_eff
 *   whole chain      vs float64 AdamW of the reference gradients, each element allowed the spread
 *                    of the update over gradients within the gradient tolerance (Adam's 1/√v)
 *   centers          rtol 1e-4, atol 1e-6
 */
import { describe, expect, it } from 'vitest';

import type { ParamArena } from '../../engine/optim.js';
import type { MaskBatch } from '../../train/dinov2/masking.js';
import { SyntheticShapes } from '../../train/data/synthetic.js';
import { DinoV2Trainer, type DinoV2Config } from '../../train/dinov2-trainer.js';
import { NonFiniteLossError } from '../../train/trainer.js';
import { expectClose, getEngine, randn } from '../helpers.js';
import { adamwElement, type RefParams } from './step-reference.js';
import { v2ReferenceStep, type V2Crops, type V2Hyper, type V2RefConfig, type V2State } from './dinov2-step-reference.js';

/** A MaskBatch from per-image lists of masked patches (as collate builds it). */
function masksFromLists(lists: number[][], hw: number): MaskBatch {
  const images = lists.length;
  const masks = new Uint8Array(images * hw);
  lists.forEach((l, i) => l.forEach((p) => (masks[i * hw + p] = 1)));
  const counts = Int32Array.from(lists, (l) => l.length);
  const idx: number[] = [];
  masks.forEach((m, i) => m && idx.push(i));
  return {
    images,
    numPatches: hw,
    masks,
    maskIndices: Int32Array.from(idx),
    maskWeights: Float32Array.from(idx, (i) => 1 / counts[Math.floor(i / hw)]),
    counts,
    targets: Int32Array.from(counts),
    upperbound: 0,
  };
}

async function readArena(arena: ParamArena, into: RefParams): Promise<void> {
  for (const [name, t] of arena.entries()) into.set(name, { shape: [...t.shape], data: Float64Array.from(await t.toArray()) });
}

async function readState(tr: DinoV2Trainer): Promise<V2State> {
  const student: RefParams = new Map();
  const teacher: RefParams = new Map();
  const m = new Map<string, Float64Array>();
  const v = new Map<string, Float64Array>();
  const steps = new Map<string, number>();
  const opt = tr.optimizer;
  await readArena(opt.student, student);
  await readArena(opt.teacher, teacher);
  const st = opt.state();
  const mFlat = await st.m.toArray();
  const vFlat = await st.v.toArray();
  st.m.dispose();
  st.v.dispose();
  let off = 0;
  opt.student.entries().forEach(([name, t], i) => {
    m.set(name, Float64Array.from(mFlat.subarray(off, off + t.size)));
    v.set(name, Float64Array.from(vFlat.subarray(off, off + t.size)));
    steps.set(name, st.paramSteps[i]);
    off += t.size;
  });
  return {
    student,
    teacher,
    dinoCenter: Float64Array.from(await tr.dinoTargets.center.toArray()),
    ibotCenter: Float64Array.from(await tr.ibotTargets.center.toArray()),
    m,
    v,
    steps,
  };
}

async function readGrads(tr: DinoV2Trainer): Promise<Map<string, Float64Array>> {
  const out = new Map<string, Float64Array>();
  for (const name of tr.optimizer.student.names) {
    const t = tr.optimizer.student.gradOf(name);
    out.set(name, Float64Array.from(await t.toArray()));
    t.dispose();
  }
  return out;
}

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

const B = 2;
const TINY: Partial<DinoV2Config> = {
  arch: 'custom',
  embedDim: 8,
  depth: 2,
  numHeads: 2,
  patchSize: 4,
  numRegisterTokens: 1,
  // LayerScale well away from DINOv2's 1e-5 init so every block weight has a sizeable gradient.
  layerScale: 0.5,
  dropPathRate: 0,
  outDim: 16,
  headHidden: 16,
  headBottleneck: 8,
  headLayers: 3,
  ibotOutDim: 12,
  ibotHeadHidden: 12,
  ibotHeadBottleneck: 6,
  epochs: 2,
  epochLength: 1, // iteration 0 is epoch 0 (last layer frozen), iteration 1 epoch 1
  batchSize: B,
  // peak lr = base·√(2/1024) = 0.01
  baseLr: 0.01 * Math.sqrt(512),
  minLr: 1e-6,
  warmupEpochs: 0,
  weightDecay: 0.2,
  weightDecayEnd: 0.4,
  momentumTeacher: 0.9,
  finalMomentumTeacher: 1,
  teacherTemp: 0.07,
  warmupTeacherTemp: 0.04,
  warmupTeacherTempEpochs: 2,
  // Small enough that the backbone is clipped; the heads' norms are printed.
  clipGrad: 0.3,
  freezeLastLayerEpochs: 1,
  // global crops 12 px (3×3 patches), local 8 px (2×2: resized position embedding)
  globalSize: 12,
  localSize: 8,
  localCrops: 2,
  seed: 3,
};

/** Two float64 reference steps per case: 166-186 s each measured on two cores shared with other runs. */
const STEP_REFERENCE_TIMEOUT_MS = 600_000;

describe.each([
  { name: 'A: centering, shared head', centering: 'center' as const, ibotSeparateHead: false },
  { name: 'B: Sinkhorn-Knopp, separate iBOT head', centering: 'sinkhorn_knopp' as const, ibotSeparateHead: true },
])('one DINOv2 step equals the float64 reference ($name)', ({ centering, ibotSeparateHead }) => {
  it('iteration 0 (last layer at lr 0), then iteration 1', async () => {
    const wd = await getEngine();
    const tr = new DinoV2Trainer(wd, { ...TINY, centering, ibotSeparateHead });
    const c = tr.config;
    const ref: V2RefConfig = { ...c };
    expect(tr.student.namedParameters().every(([, t]) => t.requiresGrad)).toBe(true); // weight_g too
    expect(tr.student.namedParameters().map(([n]) => n)).toContain('backbone.mask_token');
    // One arena per model: AdamW and the EMA are one dispatch each (the groups are multipliers).
    expect([tr.optimizer.student.numChunks, tr.optimizer.teacher.numChunks]).toEqual([1, 1]);
    const hw = (c.globalSize / c.patchSize) ** 2;
    const maskLists = [
      [[], [0, 1, 3, 4], [], [8]],
      [[2, 5], [], [0, 1, 2], []],
    ];
    try {
      for (const it of [0, 1]) {
        const masks = masksFromLists(maskLists[it], hw);
        const crops: V2Crops = {
          B,
          globals: randn(2 * B * 3 * c.globalSize ** 2, 100 + it),
          globalSize: c.globalSize,
          locals: randn(c.localCrops * B * 3 * c.localSize ** 2, 200 + it),
          localSize: c.localSize,
          localCrops: c.localCrops,
          masks: masks.masks,
        };
        const before = await readState(tr);
        const r = await wd.scope(() =>
          tr.step(wd.tensor(crops.globals, [2 * B, 3, c.globalSize, c.globalSize]), wd.tensor(crops.locals!, [c.localCrops * B, 3, c.localSize, c.localSize]), masks),
        );
        const s = tr.schedules;
        expect([r.lr, r.lastLayerLr, r.weightDecay, r.momentum, r.teacherTemp]).toEqual([s.lr.at(it), s.lastLayerLr.at(it), s.wd.at(it), s.momentum.at(it), s.teacherTemp.at(it)]);
        expect(r.lastLayerLr === 0).toBe(it === 0);
        expect(r.teacherTemp).toBeCloseTo(it === 0 ? 0.04 : 0.07, 12);
        expect(r.maskedPatches).toBe(masks.maskIndices.length);
        const h: V2Hyper = {
          lr: r.lr,
          lastLayerLr: r.lastLayerLr,
          weightDecay: r.weightDecay,
          momentum: r.momentum,
          teacherTemp: r.teacherTemp,
          studentTemp: c.studentTemp,
          centerMomentum: c.centerMomentum,
          centering,
          clipGrad: c.clipGrad,
          layerwiseDecay: c.layerwiseDecay,
          patchEmbedLrMult: c.patchEmbedLrMult,
          lossWeights: c.lossWeights,
          // h = 1e-5 leaves a Richardson error of 7e-5 of the scale in dino_head.mlp.4.bias (the head
          // l2-normalises a bottleneck of norm ~1e-3, so L''''' is large there); 3e-6 gives 4e-6.
          fdStep: 3e-6,
        };
        const want = v2ReferenceStep(before, ref, crops, h);
        const after = await readState(tr);
        const grads = await readGrads(tr);

        expectClose([r.loss], [want.loss.total], 1e-5, 0, `step ${it}: total loss`);
        expectClose(
          [r.losses.dino_local_crops_loss, r.losses.dino_global_crops_loss, r.losses.koleo_loss, r.losses.ibot_loss],
          [want.loss.local, want.loss.global, want.loss.koleo / 2, want.loss.ibot / 2],
          1e-5,
          1e-8,
          `step ${it}: logged terms`,
        );
        expect(want.loss.ibot).toBeGreaterThan(0);
        expect(want.loss.koleo).toBeGreaterThan(0);
        expectClose(after.dinoCenter, want.state.dinoCenter, 1e-4, 1e-6, `step ${it}: DINO center`);
        expectClose(after.ibotCenter, want.state.ibotCenter, 1e-4, 1e-6, `step ${it}: iBOT center`);
        if (centering === 'center') expect(after.ibotCenter.some((x) => x !== 0)).toBe(true);
        // Clipping happened for the backbone (norm above the threshold).
        expect(want.norms.get('backbone')!).toBeGreaterThan(c.clipGrad);

        let worstGrad = 0;
        for (const [name, g] of want.clipped) worstGrad = Math.max(worstGrad, expectScaled(grads.get(name)!, g, 1e-4, `step ${it}: clipped gradient of ${name}`));

        let ambiguous = 0;
        let total = 0;
        for (const [name, p0] of before.student) {
          const grp = tr.optimizer.groupOf(name);
          const lrEff = (grp.key.isLastLayer ? h.lastLayerLr : h.lr) * grp.key.lrMultiplier;
          const wdEff = h.weightDecay * grp.key.wdMultiplier;
          const p1 = after.student.get(name)!.data;
          const t0 = before.teacher.get(name)!.data;
          const t1 = after.teacher.get(name)!.data;
          const t = after.steps.get(name)!;
          expect(t, `${name}: step count`).toBe(before.steps.get(name)! + 1); // every parameter steps, the frozen last layer too
          expect(t).toBe(want.state.steps.get(name));
          const g = grads.get(name)!;
          const gRef = want.clipped.get(name)!;
          const gScale = gRef.reduce((a, x) => Math.max(a, Math.abs(x)), 0);
          for (let i = 0; i < p0.data.length; i++) {
            const m0 = before.m.get(name)![i];
            const v0 = before.v.get(name)![i];
            const [pw, mw, vw] = adamwElement(p0.data[i], g[i], m0, v0, t, lrEff, wdEff);
            expect(Math.abs(after.m.get(name)![i] - mw), `${name}[${i}]: m`).toBeLessThanOrEqual(1e-6 * (0.9 * Math.abs(m0) + 0.1 * Math.abs(g[i])) + 1e-30);
            expect(Math.abs(after.v.get(name)![i] - vw), `${name}[${i}]: v`).toBeLessThanOrEqual(1e-6 * v0 + 1e-6 * vw + 1e-30);
            if (!(Math.abs(p1[i] - pw) <= 1e-6 * Math.abs(pw) + 1e-5 * lrEff)) throw new Error(`step ${it}: ${name}[${i}] is ${p1[i]}, AdamW of its gradient gives ${pw} (lr ${lrEff}, wd ${wdEff})`);
            if (lrEff === 0) expect(p1[i]).toBe(p0.data[i]);
            // The whole float64 chain, with the spread of the update within the gradient tolerance.
            const update = (gg: number) => adamwElement(p0.data[i], gg, m0, v0, t, lrEff, wdEff)[0];
            const pRef = want.state.student.get(name)!.data[i];
            const delta = 1e-4 * gScale;
            let spread = 0;
            for (const f of [-1, -0.5, 0.5, 1]) spread = Math.max(spread, Math.abs(update(gRef[i] + f * delta) - update(gRef[i])));
            if (spread > 0.01 * lrEff) ambiguous++;
            total++;
            const tol = 1e-6 * Math.abs(pRef) + 1e-5 * lrEff + spread;
            if (!(Math.abs(p1[i] - pRef) <= tol)) throw new Error(`step ${it}: ${name}[${i}] is ${p1[i]}, float64 chain gives ${pRef} (tol ${tol})`);
            const tWant = r.momentum * t0[i] + (1 - r.momentum) * p1[i];
            if (!(Math.abs(t1[i] - tWant) <= 1e-6 * Math.abs(tWant) + 1e-9)) throw new Error(`step ${it}: teacher ${name}[${i}] is ${t1[i]}, EMA gives ${tWant}`);
          }
        }
        expect(ambiguous, `step ${it}: ambiguous elements of ${total}`).toBeLessThan(0.1 * total);
        console.log(
          `${centering}${ibotSeparateHead ? ' + separate iBOT head' : ''} step ${it}: loss ${r.loss} (ref ${want.loss.total}), terms ${JSON.stringify(r.losses)}, ` +
            `norms ${JSON.stringify(Object.fromEntries(want.norms))}, worst gradient error ${worstGrad.toExponential(2)}, ${ambiguous}/${total} ambiguous, ` +
            `entropy cls ${r.teacherEntropy.cls.toFixed(3)} patch ${r.teacherEntropy.patch.toFixed(3)}`,
        );
      }
    } finally {
      tr.dispose();
    }
  }, STEP_REFERENCE_TIMEOUT_MS);
});

// -------------------------------------------------------------------------------------------------
// Failure modes and memory

const SMALL: Partial<DinoV2Config> = {
  arch: 'custom',
  embedDim: 16,
  depth: 2,
  numHeads: 2,
  patchSize: 4,
  numRegisterTokens: 2,
  dropPathRate: 0.1,
  outDim: 32,
  headHidden: 32,
  headBottleneck: 16,
  epochs: 2,
  epochLength: 8,
  batchSize: 4,
  warmupEpochs: 1,
  warmupTeacherTempEpochs: 1,
  globalSize: 16,
  localSize: 8,
  localCrops: 2,
  seed: 1,
};

function syntheticImages(n: number) {
  const ds = new SyntheticShapes({ size: 32, length: n, seed: 3 });
  return Array.from({ length: n }, (_, i) => ds.getSync(i).image);
}

describe('DINOv2 trainer: failure modes and memory', () => {
  it('a non-finite loss throws NonFiniteLossError and changes no state', async () => {
    const wd = await getEngine();
    const tr = new DinoV2Trainer(wd, SMALL);
    const c = tr.config;
    const crops = (seed: number, poison: boolean) => {
      const g = randn(2 * 4 * 3 * c.globalSize ** 2, seed);
      if (poison) g[17] = NaN;
      return { g: wd.tensor(g, [8, 3, c.globalSize, c.globalSize]), l: wd.tensor(randn(2 * 4 * 3 * c.localSize ** 2, seed + 1), [8, 3, c.localSize, c.localSize]) };
    };
    try {
      await wd.scope(() => {
        const x = crops(1, false);
        return tr.step(x.g, x.l, tr.drawMasks(4));
      });
      const before = await readState(tr);
      const live = wd.memory().liveBytes;
      const err = await wd
        .scope(() => {
          const x = crops(2, true);
          return tr.step(x.g, x.l, tr.drawMasks(4));
        })
        .then(
          () => null,
          (e: unknown) => e,
        );
      expect(err).toBeInstanceOf(NonFiniteLossError);
      expect((err as NonFiniteLossError).iteration).toBe(1);
      expect(tr.iteration).toBe(1);
      expect(wd.memory().liveBytes, 'the failed step freed its temporaries').toBe(live);
      const after = await readState(tr);
      for (const part of ['student', 'teacher'] as const) for (const [name, t] of before[part]) expect(after[part].get(name)!.data, `${part} ${name}`).toEqual(t.data);
      expect(after.dinoCenter).toEqual(before.dinoCenter);
      expect(after.ibotCenter).toEqual(before.ibotCenter);
      for (const [name, m] of before.m) {
        expect(after.m.get(name), `m of ${name}`).toEqual(m);
        expect(after.steps.get(name)).toBe(before.steps.get(name));
      }
      const r = await wd.scope(() => {
        const x = crops(3, false);
        return tr.step(x.g, x.l, tr.drawMasks(4));
      });
      expect(Number.isFinite(r.loss)).toBe(true);
      expect(r.iteration).toBe(1);
    } finally {
      tr.dispose();
    }
  });

  it('training steps on images (augmentation and drawn masks) leave the live GPU memory unchanged; the schedule ends', async () => {
    const wd = await getEngine();
    const start = wd.memory().liveBytes;
    const tr = new DinoV2Trainer(wd, SMALL);
    const images = syntheticImages(4);
    try {
      await wd.scope(() => tr.stepImages(images));
      const base = wd.memory().liveBytes;
      let masked = 0;
      for (let i = 1; i < tr.totalIterations; i++) {
        const r = await wd.scope(() => tr.stepImages(images));
        expect(Number.isFinite(r.loss)).toBe(true);
        expect(Object.values(r.losses).every(Number.isFinite)).toBe(true);
        expect(r.epoch).toBe(Math.floor(i / 8));
        masked += r.maskedPatches;
        expect(wd.memory().liveBytes, `after step ${i + 1}`).toBe(base);
      }
      expect(masked).toBeGreaterThan(0);
      await expect(wd.scope(() => tr.stepImages(images))).rejects.toThrow(/past the end of the schedule/);
    } finally {
      tr.dispose();
    }
    expect(wd.memory().liveBytes, 'after dispose()').toBe(start);
  });
  it('useBnInHead: the heads get BatchNorm, which uses the batch statistics in the teacher too (its backbone in eval mode)', async () => {
    const wd = await getEngine();
    const start = wd.memory().liveBytes;
    const tr = new DinoV2Trainer(wd, { ...SMALL, useBnInHead: true, ibotSeparateHead: true, ibotOutDim: 24, centering: 'sinkhorn_knopp' });
    try {
      const names = tr.teacher.namedParameters().map(([n]) => n);
      expect(names).toContain('dino_head.mlp.1.weight'); // official Sequential indices: Linear 0, BN 1, GELU 2, Linear 3
      expect(names).toContain('ibot_head.mlp.4.bias');
      expect([tr.teacher.backbone.training, tr.teacher.dinoHead.training, tr.teacher.ibotHead!.training]).toEqual([false, true, true]);
      // The teacher's first hidden layer after its BatchNorm: zero mean and unit variance over the rows
      // (weight 1, bias 0 at init); with the running statistics (0, 1) it would be the Linear's output.
      const R = 7;
      const D = tr.config.embedDim;
      const head = tr.teacher.dinoHead;
      const h = await wd.noGrad(() => wd.scope(() => head.norms[0].forward(head.layers[0].forward(wd.tensor(randn(R * D, 41, 3), [R, D]), 'none')).toArray()));
      const C = h.length / R;
      let worstMean = 0;
      let worstVar = 0;
      for (let c = 0; c < C; c++) {
        let m = 0;
        let v = 0;
        for (let r = 0; r < R; r++) m += h[r * C + c] / R;
        for (let r = 0; r < R; r++) v += (h[r * C + c] - m) ** 2 / R;
        worstMean = Math.max(worstMean, Math.abs(m));
        if (v > 1e-6) worstVar = Math.max(worstVar, Math.abs(v - 1));
      }
      expect(worstMean).toBeLessThan(1e-5);
      expect(worstVar).toBeLessThan(1e-2); // eps 1e-5 against variances of order 1e-3 at init
      const r = await wd.scope(() => tr.stepImages(syntheticImages(4)));
      expect(Number.isFinite(r.loss)).toBe(true);
      expect(r.teacherEntropy.cls).toBeLessThan(Math.log(32));
    } finally {
      tr.dispose();
    }
    expect(wd.memory().liveBytes, 'after dispose()').toBe(start);
  });
});
