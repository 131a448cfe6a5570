/**
 * DINOv2 runs: exact resume, the checkpoint's metadata checks, and the teacher export.
 *
 * Exact resume, as test/train/resume.test.ts for DINO and for the same reason BITWISE (a step is a
 * fixed sequence of deterministic dispatches, so any difference means some state was not
 * restored): a run interrupted by `maxIterations` and resumed twice gives the same losses as an
 * uninterrupted one, the same final checkpoint (every tensor, the metadata) and the same teacher
 * export. The run exercises every piece of state: 24 images, batch 4, epochs of the data's 6
 * iterations (epochLength taken from the data and recorded), 2 epochs = 12 iterations, stops at 4
 * (mid-epoch) and 6 (the epoch boundary, where the last layer's lr leaves 0); drop path 0.3 on
 * every block (batch subsets), a register, LayerScale, a separate iBOT head, both centers, masks.
 * Controls: the same resume with another mask or drop-path generator state gives another loss.
 *
 * Through the command: `webdino train --recipe dinov2` on an ImageFolder of 24 PNGs, interrupted by
 * --max-iterations and continued with `--resume` (the recipe comes from the checkpoint), ends with
 * the same metrics (images/s aside), checkpoint and teacher export as an uninterrupted command;
 * a recipe that differs from the run's, and DINOv2 options without --recipe dinov2, are refused.
 *
 * The teacher export (official DINOv2 key layout): its keys and shapes are the official
 * state_dict's for that architecture (models/io/dino-arch.ts dinoStateDictShapes), and
 * `webdino embed` loads it and gives the teacher's own CLS features, at the training size and at
 * another size (position-embedding resize as in training).
 *
 * Metadata checks (shared with DINO's readCheckpointMeta through readTrainingMeta): a DINO reader
 * refuses a DINOv2 checkpoint as another recipe's; bad fields, a bad config and tensors that do not
 * match the config are refused before anything is built.
 */
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { inferDinoArch, dinoStateDictShapes } from '../../models/io/dino-arch.js';
import { parseNpy, writeNpy } from '../../models/io/npy.js';
import { parseSafetensorsWithMetadata, writeSafetensors } from '../../models/io/safetensors.js';
import { readCheckpointMeta } from '../../train/checkpoint.js';
import { readDinoV2CheckpointMeta } from '../../train/dinov2/checkpoint.js';
import { SyntheticShapes } from '../../train/data/synthetic.js';
import type { DinoV2Config } from '../../train/dinov2-trainer.js';
import { runTraining, type RunCommonOptions } from '../../train/run-node.js';
import type { DinoV2Trainer } from '../../train/dinov2-trainer.js';
import { imageFolder } from '../hostile/cli-process.js';
import { webdino } from '../bin/harness.js';
import { expectClose, getEngine, randn } from '../helpers.js';

const tmpRoots: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'webdino-v2-resume-'));
  tmpRoots.push(d);
  return d;
}
afterAll(() => {
  for (const d of tmpRoots) rmSync(d, { recursive: true, force: true });
});

const CONFIG: Partial<DinoV2Config> = {
  arch: 'custom',
  embedDim: 16,
  depth: 2,
  numHeads: 2,
  patchSize: 4,
  numRegisterTokens: 1,
  layerScale: 0.1,
  dropPathRate: 0.3,
  dropPathUniform: true,
  outDim: 32,
  headHidden: 32,
  headBottleneck: 16,
  ibotSeparateHead: true,
  ibotOutDim: 24,
  ibotHeadHidden: 24,
  ibotHeadBottleneck: 12,
  epochs: 2,
  batchSize: 4,
  baseLr: 0.08,
  warmupEpochs: 1,
  warmupTeacherTempEpochs: 1,
  freezeLastLayerEpochs: 1,
  globalSize: 16,
  localSize: 8,
  localCrops: 2,
  seed: 11,
};

const dataset = () => new SyntheticShapes({ size: 32, length: 24, seed: 2 });

/** Runs (or resumes) in `outDir`; returns the losses by iteration and the log lines. */
async function run(outDir: string, extra: Partial<RunCommonOptions<DinoV2Trainer>> = {}): Promise<{ losses: Map<number, number>; log: string[]; iterations: number }> {
  const wd = await getEngine();
  const losses = new Map<number, number>();
  const log: string[] = [];
  const r = await runTraining(wd, {
    recipe: 'dinov2',
    config: CONFIG,
    dataset: dataset(),
    outDir,
    checkpointEvery: 4,
    report: false,
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

/** The step lines of metrics.jsonl without images_per_s (a wall-clock figure). */
function stepLines(dir: string): Record<string, unknown>[] {
  return readFileSync(join(dir, 'metrics.jsonl'), 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((o) => o.type === 'step')
    .map(({ images_per_s: _, ...rest }) => rest);
}

function expectSameFinalFiles(a: string, b: string): void {
  const ca = parseSafetensorsWithMetadata(readFileSync(join(a, 'checkpoint.safetensors')));
  const cb = parseSafetensorsWithMetadata(readFileSync(join(b, 'checkpoint.safetensors')));
  expect([...cb.tensors.keys()]).toEqual([...ca.tensors.keys()]);
  for (const [name, t] of ca.tensors) expect(Buffer.compare(Buffer.from(cb.tensors.get(name)!.data.buffer), Buffer.from(t.data.buffer)), name).toBe(0);
  expect(JSON.parse(cb.metadata.webdino)).toEqual(JSON.parse(ca.metadata.webdino));
  expect(Buffer.compare(readFileSync(join(b, 'teacher_backbone.safetensors')), readFileSync(join(a, 'teacher_backbone.safetensors')))).toBe(0);
}

describe('DINOv2 resume (runTraining)', () => {
  let full: { losses: Map<number, number> };
  let fullDir: string;

  it('gives the same losses as an uninterrupted run (bitwise), and the same final files', async () => {
    fullDir = tempDir();
    full = await run(fullDir);
    expect([...full.losses.keys()]).toEqual([...Array(12).keys()]);
    const meta = readDinoV2CheckpointMeta(readFileSync(join(fullDir, 'checkpoint.safetensors')));
    expect([meta.config.epochLength, meta.itersPerEpoch], "the data's iterations per epoch, recorded").toEqual([6, 6]);

    const b = tempDir();
    const part1 = await run(b, { maxIterations: 4 });
    expect(readDinoV2CheckpointMeta(readFileSync(join(b, 'checkpoint.safetensors'))).iteration).toBe(4);
    const part2 = await run(b, { resume: true, maxIterations: 2 });
    expect(part2.log.some((l) => /resuming from .* at iteration 4/.test(l))).toBe(true);
    const part3 = await run(b, { resume: true });
    expect([...part1.losses.keys()]).toEqual([0, 1, 2, 3]);
    expect([...part2.losses.keys()]).toEqual([4, 5]);
    expect([...part3.losses.keys()]).toEqual([6, 7, 8, 9, 10, 11]);
    const resumed = new Map([...part1.losses, ...part2.losses, ...part3.losses]);
    for (let it = 0; it < 12; it++) {
      expect(Object.is(resumed.get(it), full.losses.get(it)), `iteration ${it}: ${resumed.get(it)} vs ${full.losses.get(it)}`).toBe(true);
    }
    expect(new Set(full.losses.values()).size, 'the losses change from step to step').toBe(12);
    expectSameFinalFiles(fullDir, b);
    const lines = stepLines(b);
    expect(lines.map((l) => l.iteration)).toEqual([...Array(12).keys()]);
    expect(lines).toEqual(stepLines(fullDir));
    expect(lines.every((l) => typeof l.ibot_loss === 'number' && typeof l.koleo_loss === 'number' && typeof l.masked_patches === 'number')).toBe(true);
  });

  it.each([
    { state: 'maskRng', what: 'mask' },
    { state: 'dropRng', what: 'drop-path' },
    { state: 'augRng', what: 'augmentation' },
  ])('control: another $what generator state changes the resumed loss', async ({ state }) => {
    const src = tempDir();
    await run(src, { maxIterations: 4 });
    const { tensors, metadata } = parseSafetensorsWithMetadata(readFileSync(join(src, 'checkpoint.safetensors')));
    const meta = JSON.parse(metadata.webdino) as Record<string, unknown>;
    meta[state] = [1, 2, 3, 4, null];
    const c = tempDir();
    writeFileSync(join(c, 'checkpoint.safetensors'), writeSafetensors(tensors, { webdino: JSON.stringify(meta) }));
    copyFileSync(join(src, 'metrics.jsonl'), join(c, 'metrics.jsonl'));
    const altered = await run(c, { resume: true, maxIterations: 1 });
    expect(altered.losses.get(4)).not.toBe(full.losses.get(4));
  });

  it('checkpoint metadata: the shared checks, the config, and the tensors against it', () => {
    const bytes = readFileSync(join(fullDir, 'checkpoint.safetensors'));
    expect(() => readCheckpointMeta(bytes)).toThrow(/a checkpoint of another recipe \("webdino-dinov2-checkpoint-v1"\)/);
    const { tensors, metadata } = parseSafetensorsWithMetadata(bytes);
    const meta = JSON.parse(metadata.webdino) as Record<string, unknown>;
    const rewrite = (m: Record<string, unknown>, t = tensors) => writeSafetensors(t, { webdino: JSON.stringify(m) });
    expect(() => readDinoV2CheckpointMeta(rewrite({ ...meta, iteration: -1, maskRng: [1, 2] }))).toThrow(/iteration -1 is not an integer >= 0; maskRng is not a generator state/);
    expect(() => readDinoV2CheckpointMeta(rewrite({ ...meta, config: { ...(meta.config as object), layerwiseDecay: 3 } }))).toThrow(/layerwiseDecay = 3 is not a number in \[0, 1\]/);
    expect(() => readDinoV2CheckpointMeta(rewrite({ ...meta, itersPerEpoch: 7 }))).toThrow(/itersPerEpoch 7 differs from the config's epochLength 6/);
    expect(() => readDinoV2CheckpointMeta(rewrite({ ...meta, iteration: 13 }))).toThrow(/iteration 13 is past the end of the run \(2 epochs of 6\)/);
    const noIbot = new Map([...tensors].filter(([k]) => !k.startsWith('student.ibot_head.')));
    expect(() => readDinoV2CheckpointMeta(rewrite(meta, noIbot))).toThrow(/student\.ibot_head\.last_layer\.weight_v is missing/);
    expect(() => readDinoV2CheckpointMeta(rewrite({ ...meta, config: { ...(meta.config as object), numRegisterTokens: 2 } }))).toThrow(/register_tokens is \[1, 1, 16\], the config needs \[1, 2, 16\]/);
  });

  it("the teacher export has the official DINOv2 state_dict's keys and shapes; `webdino embed` gives the teacher's features", async () => {
    const wd = await getEngine();
    const file = join(fullDir, 'teacher_backbone.safetensors');
    const { tensors, metadata } = parseSafetensorsWithMetadata(readFileSync(file));
    const arch = inferDinoArch(tensors, { family: 'dinov2', numHeads: 2, interpolation: { antialias: false, offset: 0.1 } });
    const official = dinoStateDictShapes(arch);
    expect([...tensors.keys()].sort()).toEqual([...official.keys()].sort());
    for (const [k, shape] of official) expect(tensors.get(k)!.shape, k).toEqual(shape);
    expect(tensors.has('register_tokens') && tensors.has('mask_token') && tensors.has('blocks.1.ls2.gamma')).toBe(true);
    expect(JSON.parse(metadata.webdino_arch)).toMatchObject({ family: 'dinov2', num_heads: 2, num_register_tokens: 1, interpolation: { antialias: false, offset: 0.1 } });

    // The teacher at the end of the run, rebuilt from the checkpoint, is the reference.
    const { DinoV2Trainer } = await import('../../train/dinov2-trainer.js');
    const { restoreDinoV2Checkpoint } = await import('../../train/dinov2/checkpoint.js');
    const ckpt = readFileSync(join(fullDir, 'checkpoint.safetensors'));
    const tr = new DinoV2Trainer(wd, readDinoV2CheckpointMeta(ckpt).config);
    try {
      restoreDinoV2Checkpoint(tr, ckpt);
      for (const size of [16, 24]) {
        const x = randn(3 * 3 * size * size, size);
        const dir = tempDir();
        writeFileSync(join(dir, 'x.npy'), writeNpy({ shape: [3, 3, size, size], data: x }));
        const r = await webdino('embed', '--weights', file, '--input', join(dir, 'x.npy'), '--out', join(dir, 'f.npy'), '--batch-size', '2');
        expect(r.code, r.err).toBe(0);
        expect(r.out).toMatch(/model: dinov2 16\/2 \(2 heads\), patch 4, mlp 64, 1 registers, pos_embed 4×4/);
        const got = parseNpy(readFileSync(join(dir, 'f.npy')));
        const want = await wd.scope(() => tr.teacherBackbone.forward(wd.tensor(x, [3, 3, size, size])).toArray());
        expect(got.shape).toEqual([3, 16]);
        expectClose(got.data as Float32Array, want, 1e-5, 1e-6, `embed at ${size} px`);
      }
    } finally {
      tr.dispose();
    }
  });
});

describe('DINOv2 resume (webdino train --recipe dinov2)', () => {
  let data: string;
  beforeAll(() => {
    data = imageFolder(join(tempDir(), 'images'), ['a', 'b'], 12, 24);
  });
  const TINY = ['--arch', 'custom', '--embed-dim', '16', '--depth', '2', '--heads', '2', '--patch-size', '4', '--global-size', '16', '--local-size', '8', '--local-crops', '2', '--out-dim', '32', '--batch-size', '4', '--epochs', '2', '--registers', '1', '--drop-path', '0.3', '--ibot-head', 'separate', '--ibot-out-dim', '24', '--layerscale', '0.1'];

  it('interrupted and resumed (recipe from the checkpoint) ends as the uninterrupted command; recipe mix-ups are refused', async () => {
    const a = tempDir();
    const full = await webdino('train', '--recipe', 'dinov2', '--data', data, '--out', a, ...TINY);
    expect(full.code, full.err).toBe(0);
    expect(full.out).toMatch(/done: 12 iterations/);
    const b = tempDir();
    const p1 = await webdino('train', '--recipe', 'dinov2', '--data', data, '--out', b, ...TINY, '--max-iterations', '4');
    expect(p1.code, p1.err).toBe(0);
    const wrong = await webdino('train', '--recipe', 'dino', '--data', data, '--out', b, '--resume');
    expect(wrong.code).toBe(2);
    expect(wrong.err).toMatch(/--recipe dino: the run in .* was trained with --recipe dinov2/);
    const p2 = await webdino('train', '--data', data, '--out', b, '--resume', '--max-iterations', '2');
    expect(p2.code, p2.err).toBe(0);
    const p3 = await webdino('train', '--data', data, '--out', b, '--resume', '--ibot-weight', '1');
    expect(p3.code, p3.err).toBe(0);
    expect(p3.out).toMatch(/done: 12 iterations/);
    expect(stepLines(b)).toEqual(stepLines(a));
    expectSameFinalFiles(a, b);
    const differ = await webdino('train', '--data', data, '--out', b, '--resume', '--epochs', '3', '--koleo-weight', '0.5');
    expect(differ.code).toBe(2);
    expect(differ.err).toMatch(/--koleo-weight 0\.5 \(the run has 0\.1\)/);
    const noRecipe = await webdino('train', '--data', data, '--out', tempDir(), '--ibot-weight', '2');
    expect(noRecipe.code).toBe(2);
    expect(noRecipe.err).toMatch(/--ibot-weight belongs to DINOv2's recipe: add --recipe dinov2/);
  });
});
