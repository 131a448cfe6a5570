/**
 * Reading a DINO trainer's state back to float64 for the step references (step-reference.ts):
 * parameters of both arenas, the gathered gradients, the center and AdamW's moments and step
 * counts per parameter; the tiny model those tests step and the resume tests' run. Shared by the f32 and the
 * mixed-precision step tests.
 */
import { expect } from 'vitest';
import type { ParamArena } from '../../engine/optim.js';
import type { DinoTrainer, TrainConfig } from '../../train/trainer.js';
import type { RefParams, RefState } from './step-reference.js';

export async function readArena(arena: ParamArena): Promise<RefParams> {
  const out: RefParams = new Map();
  for (const [name, t] of arena.entries()) out.set(name, { shape: [...t.shape], data: Float64Array.from(await t.toArray()) });
  return out;
}

/** The flat gradient arena after a step: the clipped (and cancelled) gradients AdamW used. */
export async function readGrads(arena: ParamArena): Promise<Map<string, Float64Array>> {
  const out = new Map<string, Float64Array>();
  for (const name of arena.names) {
    const g = arena.gradOf(name);
    out.set(name, Float64Array.from(await g.toArray()));
    g.dispose();
  }
  return out;
}

export async function readState(tr: DinoTrainer): Promise<RefState> {
  const student = await readArena(tr.studentParams);
  const teacher = await readArena(tr.teacherParams);
  const center = Float64Array.from(await tr.loss.center.toArray());
  const st = tr.optimizer.state();
  const mFlat = await st.m.toArray();
  const vFlat = await st.v.toArray();
  st.m.dispose();
  st.v.dispose();
  const m = new Map<string, Float64Array>();
  const v = new Map<string, Float64Array>();
  const steps = new Map<string, number>();
  let off = 0;
  tr.studentParams.entries().forEach(([name, t], i) => {
    m.set(name, Float64Array.from(mFlat.subarray(off, off + t.size)));
    v.set(name, Float64Array.from(vFlat.subarray(off, off + t.size)));
    steps.set(name, st.paramSteps[i]);
    off += t.size;
  });
  return { student, teacher, center, m, v, steps };
}

/** A step that must not have happened: parameters, center and AdamW state exactly as before. */
export function expectStateUnchanged(before: RefState, after: RefState): void {
  for (const part of ['student', 'teacher'] as const) {
    for (const [name, t] of before[part]) expect(after[part].get(name)!.data, `${part} ${name}`).toEqual(t.data);
  }
  expect(after.center, 'center').toEqual(before.center);
  for (const [name, m] of before.m) {
    expect(after.m.get(name), `m of ${name}`).toEqual(m);
    expect(after.v.get(name), `v of ${name}`).toEqual(before.v.get(name));
    expect(after.steps.get(name), `step count of ${name}`).toBe(before.steps.get(name));
  }
}

/** The tiny model of the step tests (one block, K = 16, 12 px global and 8 px local crops). */
export const TINY: Partial<TrainConfig> = {
  arch: 'custom',
  embedDim: 8,
  depth: 1,
  numHeads: 2,
  patchSize: 4,
  dropPathRate: 0,
  outDim: 16,
  headHidden: 16,
  headBottleneck: 8,
  normLastLayer: true,
  epochs: 2,
  // The peak lr is lr·batch/256 (linear scaling rule): 0.01 for batch 2, no warm-up.
  batchSize: 2,
  lr: (0.01 * 256) / 2,
  minLr: 1e-6,
  warmupEpochs: 0,
  weightDecay: 0.2,
  weightDecayEnd: 0.4,
  momentumTeacher: 0.9,
  // Small enough that the largest gradients are clipped and the smallest are not (asserted).
  clipGrad: 0.05,
  freezeLastLayer: 1,
  studentTemp: 0.1,
  teacherTemp: 0.07,
  warmupTeacherTemp: 0.04,
  warmupTeacherTempEpochs: 2,
  centerMomentum: 0.9,
  // Global crops 12 px (3×3 patches, the stored pos_embed), local crops 8 px (2×2: resized pos_embed).
  globalSize: 12,
  localSize: 8,
  localCrops: 2,
  seed: 5,
};

/** The run of the resume tests (24 synthetic 32 px images, batch 4 → 6 iterations per epoch, 2 epochs). */
export const RESUME_RUN: Partial<TrainConfig> = {
  arch: 'custom',
  embedDim: 16,
  depth: 2,
  numHeads: 2,
  patchSize: 4,
  dropPathRate: 0.2,
  outDim: 32,
  headHidden: 32,
  headBottleneck: 16,
  epochs: 2,
  batchSize: 4,
  lr: 5e-3,
  warmupEpochs: 1,
  freezeLastLayer: 1,
  globalSize: 16,
  localSize: 8,
  localCrops: 2,
  seed: 11,
};
