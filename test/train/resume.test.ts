/**
 * Exact resume: a run interrupted by `maxIterations` and continued with `resume: true` (a new
 * trainer, restored from checkpoint.safetensors) gives the same losses as an uninterrupted run,
 * BITWISE, and ends with the same checkpoint and teacher export, byte for byte.
 *
 * Why bitwise and not a tolerance: the GPU work of a step is a fixed sequence of dispatches whose
 * every output element is computed by one invocation in a fixed order (no atomics, no
 * order-dependent reductions), so equal inputs give equal bits; the checkpoint stores every piece
 * of state exactly (f32 parameters, AdamW moments and per-tensor step counts, the center, the
 * augmentation and drop-path generator states, the loader position). A difference in the last bit
 * therefore means some state was not restored, and the test should say so rather than hide it
 * under a tolerance.
 *
 * The run: 24 synthetic 32 px images, batch 4 → 6 iterations per epoch, 2 epochs = 12 iterations,
 * warm-up of 1 epoch, last layer frozen in epoch 0, drop path 0.2 on block 1 of 2. The interrupted
 * run stops at iteration 4 (mid-epoch), resumes to 6 (the epoch boundary), then resumes to the end:
 * both kinds of loader positions and the freeze_last_layer switch are crossed after a restore.
 * A control resumes from a checkpoint whose drop-path generator state was altered and checks that
 * the loss changes (the drop-path state really matters to this comparison).
 */
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { parseSafetensorsWithMetadata, writeSafetensors } from '../../models/io/safetensors.js';
import { readCheckpointMeta } from '../../train/checkpoint.js';
import { SyntheticShapes } from '../../train/data/synthetic.js';
import { runTraining, type RunOptions } from '../../train/run-node.js';
import { CPU_GREY_IMAGE_CONFIG, type TrainConfig } from '../../train/trainer.js';
import { getEngine } from '../helpers.js';
import { RESUME_RUN } from './trainer-state.js';

const tmpRoots: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'webdino-resume-'));
  tmpRoots.push(d);
  return d;
}
afterAll(() => {
  for (const d of tmpRoots) rmSync(d, { recursive: true, force: true });
});



const dataset = () => new SyntheticShapes({ size: 32, length: 24, seed: 2 });

/** Runs (or resumes) in `outDir`; returns the losses by iteration and the log lines. */
async function run(outDir: string, extra: Partial<RunOptions> = {}, config: Partial<TrainConfig> = RESUME_RUN): Promise<{ losses: Map<number, number>; log: string[]; iterations: number }> {
  const wd = await getEngine();
  const losses = new Map<number, number>();
  const log: string[] = [];
  const r = await runTraining(wd, {
    config,
    dataset: dataset(),
    outDir,
    checkpointEvery: 4,
    onStep: (s) => {
      expect(losses.has(s.iteration), `iteration ${s.iteration} ran twice`).toBe(false);
      losses.set(s.iteration, s.loss);
    },
    onLog: (l) => log.push(l),
    ...extra,
  });
  const iterations = r.iterations;
  r.trainer.dispose();
  return { losses, log, iterations };
}

/** The step lines of metrics.jsonl. */
function stepLines(dir: string): { iteration: number; loss: number }[] {
  return readFileSync(join(dir, 'metrics.jsonl'), 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as { type: string; iteration: number; loss: number })
    .filter((o) => o.type === 'step');
}

describe('resume', () => {
  it('gives the same losses as an uninterrupted run (bitwise), and the same final files', async () => {
    const a = tempDir();
    const full = await run(a);
    expect(full.iterations).toBe(12);
    expect([...full.losses.keys()]).toEqual([...Array(12).keys()]);

    const b = tempDir();
    const part1 = await run(b, { maxIterations: 4 }); // stops mid-epoch 0
    expect(readCheckpointMeta(readFileSync(join(b, 'checkpoint.safetensors'))).iteration).toBe(4);
    const part2 = await run(b, { resume: true, maxIterations: 2 }); // to the epoch boundary
    expect(part2.log.some((l) => /resuming from .* at iteration 4/.test(l))).toBe(true);
    const part3 = await run(b, { resume: true }); // to the end (epoch 1: last layer trained)
    expect(part3.log.some((l) => /at iteration 6/.test(l))).toBe(true);
    expect([...part1.losses.keys()]).toEqual([0, 1, 2, 3]);
    expect([...part2.losses.keys()]).toEqual([4, 5]);
    expect([...part3.losses.keys()]).toEqual([6, 7, 8, 9, 10, 11]);

    const resumed = new Map([...part1.losses, ...part2.losses, ...part3.losses]);
    for (let it = 0; it < 12; it++) {
      // Object.is: bitwise for finite floats (see the header for why no tolerance).
      expect(Object.is(resumed.get(it), full.losses.get(it)), `iteration ${it}: ${resumed.get(it)} vs ${full.losses.get(it)}`).toBe(true);
    }
    expect(new Set(full.losses.values()).size, 'the losses change from step to step').toBe(12);

    // The final state is identical: every tensor (student, teacher, AdamW moments, center) and the metadata.
    const ca = parseSafetensorsWithMetadata(readFileSync(join(a, 'checkpoint.safetensors')));
    const cb = parseSafetensorsWithMetadata(readFileSync(join(b, 'checkpoint.safetensors')));
    expect([...cb.tensors.keys()]).toEqual([...ca.tensors.keys()]);
    for (const [name, t] of ca.tensors) expect(Buffer.compare(Buffer.from(cb.tensors.get(name)!.data.buffer), Buffer.from(t.data.buffer)), name).toBe(0);
    expect(JSON.parse(cb.metadata.webdino)).toEqual(JSON.parse(ca.metadata.webdino));
    expect(Buffer.compare(readFileSync(join(b, 'teacher_backbone.safetensors')), readFileSync(join(a, 'teacher_backbone.safetensors')))).toBe(0);

    // metrics.jsonl of the resumed run: one line per iteration, in order, no duplicates, the same values.
    const lines = stepLines(b);
    expect(lines.map((l) => l.iteration)).toEqual([...Array(12).keys()]);
    expect(lines.map((l) => l.loss)).toEqual(stepLines(a).map((l) => l.loss));

    // Control: the same resume with another drop-path generator state gives another loss.
    const c = tempDir();
    const src = tempDir();
    await run(src, { maxIterations: 4 });
    const { tensors, metadata } = parseSafetensorsWithMetadata(readFileSync(join(src, 'checkpoint.safetensors')));
    const meta = JSON.parse(metadata.webdino) as { dropRng: (number | null)[] };
    meta.dropRng = [1, 2, 3, 4, null];
    writeFileSync(join(c, 'checkpoint.safetensors'), writeSafetensors(tensors, { webdino: JSON.stringify(meta) }));
    copyFileSync(join(src, 'metrics.jsonl'), join(c, 'metrics.jsonl'));
    const altered = await run(c, { resume: true, maxIterations: 1 });
    expect(altered.losses.get(4), 'a different drop-path state changes the loss').not.toBe(full.losses.get(4));
  });

  it('BatchNorm in the head, Sinkhorn-Knopp targets, KoLeo, the grey-image augmentation, a fixed epoch length and an evaluation at initialisation: still bitwise', async () => {
    // 5 iterations per epoch (the data gives 6 batches per pass, so the loader's passes and the
    // schedule's epochs do not line up), 2 epochs. KoLeo at 0.1 (batch 4: each
    // global crop's 4 CLS tokens). The CPU default's grey-image augmentation (brightness and
    // contrast jitter, small blur) draws more per crop from the augmentation generator.
    const config: Partial<TrainConfig> = {
      ...RESUME_RUN,
      useBnInHead: true,
      centering: 'sinkhorn_knopp',
      koleoWeight: 0.1,
      outDim: 16,
      epochLength: 5,
      augment: { ...CPU_GREY_IMAGE_CONFIG.augment },
    };
    // An evaluation hook that reads the teacher (as k-NN does) at the start and every 3 iterations.
    const evaluate = async (t: { teacher: { namedParameters(): [string, { toArray(): Promise<Float32Array> }][] } }) => {
      const [, w] = t.teacher.namedParameters()[0]!;
      return { first_weight: (await w.toArray())[0]! };
    };
    const a = tempDir();
    const full = await run(a, {}, config);
    expect(full.iterations).toBe(10);
    const e = tempDir();
    const withEval = await run(e, { evaluate, evalEvery: 3 }, config);
    for (let it = 0; it < 10; it++) expect(Object.is(withEval.losses.get(it), full.losses.get(it)), `iteration ${it} with evaluations`).toBe(true);

    const b = tempDir();
    const p1 = await run(b, { maxIterations: 7, evaluate }, config); // into the second pass of the loader
    const p2 = await run(b, { resume: true, evaluate }, config);
    expect(p2.log.some((l) => /at iteration 7/.test(l))).toBe(true);
    expect(p2.log.some((l) => /at initialisation/.test(l)), 'a resumed run does not evaluate the initialisation again').toBe(false);
    const resumed = new Map([...p1.losses, ...p2.losses]);
    for (let it = 0; it < 10; it++) expect(Object.is(resumed.get(it), full.losses.get(it)), `iteration ${it}: ${resumed.get(it)} vs ${full.losses.get(it)}`).toBe(true);
    const ca = parseSafetensorsWithMetadata(readFileSync(join(a, 'checkpoint.safetensors')));
    const cb = parseSafetensorsWithMetadata(readFileSync(join(b, 'checkpoint.safetensors')));
    // The head's BatchNorm running statistics are state too: compared with everything else.
    expect([...ca.tensors.keys()].some((k) => k.endsWith('mlp.1.running_mean'))).toBe(true);
    expect([...cb.tensors.keys()]).toEqual([...ca.tensors.keys()]);
    for (const [name, t] of ca.tensors) expect(Buffer.compare(Buffer.from(cb.tensors.get(name)!.data.buffer), Buffer.from(t.data.buffer)), name).toBe(0);
  });
});
