/**
 * Reading a DINO trainer's state back to float64 for the step references (step-reference.ts):
 * parameters of both arenas, the gathered gradients, the center and AdamW's moments and step
 * counts per parameter. Shared by the f32 and the mixed-precision step tests.
 */
import type { ParamArena } from '../../engine/optim.js';
import type { DinoTrainer } from '../../train/trainer.js';
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
