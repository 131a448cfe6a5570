/**
 * Hostile inputs to training and its data (reliability sweep of December 2026, see
 * shared/reference/reliability-2026-12.md): each test reproduces one failure of the sweep and fails
 * on the code before its fix. Hangs are caught by the test timeout, never by timing assertions.
 *
 * - F2: a dataset with no full readable batch made training spin forever.
 * - F21: a FIFO named *.jpg in an ImageFolder blocked the reader forever.
 * - F24: one unreadable image made the HTML report fail after training had skipped it.
 * - F25: a failing periodic evaluation aborted training before any checkpoint.
 * - F15: resume trusted the checkpoint's metadata (missing RNG state, negative iteration, K = 1e8).
 * - F26: sizes the machine cannot hold were allocated until the process crashed.
 * - F5d: architecture metadata trusted before the tensor shapes were compared.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { encodePng } from '../../models/io/image.js';
import { parseSafetensorsWithMetadata, writeSafetensors } from '../../models/io/safetensors.js';
import { buildBackbone, parseBackboneWeights } from '../../models/backbone.js';
import { readBytes } from '../../models/io/node-files.js';
import { readCheckpointMeta } from '../../train/checkpoint.js';
import { type Dataset, SampleReadError } from '../../train/data/dataset.js';
import { openImageFolder } from '../../train/data/image-folder-node.js';
import { DataLoader, NoBatchError } from '../../train/data/loader.js';
import { SyntheticShapes } from '../../train/data/synthetic.js';
import { runTraining } from '../../train/run-node.js';
import { DinoTrainer, resolveConfig, type TrainConfig } from '../../train/trainer.js';
import { estimateTrainingBytes, parameterCount, validateTrainConfig } from '../../train/validate.js';
import { getEngine } from '../helpers.js';

const TINY: Partial<TrainConfig> = {
  arch: 'custom',
  embedDim: 8,
  depth: 1,
  numHeads: 2,
  patchSize: 4,
  outDim: 16,
  headHidden: 16,
  headBottleneck: 8,
  epochs: 1,
  batchSize: 2,
  globalSize: 12,
  localSize: 8,
  localCrops: 1,
  seed: 3,
};

/** A dataset whose images cannot be read except the ones listed. */
function brokenDataset(length: number, readable: ReadonlySet<number>): Dataset {
  const good = new SyntheticShapes({ size: 16, length, seed: 1 });
  return {
    length,
    numClasses: good.numClasses,
    classNames: good.classNames,
    async get(i: number) {
      if (!readable.has(i)) throw new SampleReadError(`img${i}.jpg`, 'corrupt JPEG');
      return good.get(i);
    },
    describe: (i: number) => `img${i}.jpg`,
  } as Dataset;
}

const tmp = () => mkdtempSync(join(tmpdir(), 'webdino-hostile-'));

describe('F2: no full batch of readable images', () => {
  it('the loader throws NoBatchError instead of yielding empty epochs forever', async () => {
    const loader = new DataLoader(brokenDataset(12, new Set([3])), { batchSize: 4, onWarning: () => {} });
    const pass = async () => {
      for await (const b of loader.batches()) void b;
    };
    await expect(pass()).rejects.toThrow(NoBatchError);
    await expect(pass()).rejects.toThrow(/1 of the 12 samples are readable, 11 are not \(first unreadable: img\d+\.jpg: corrupt JPEG\)/);
  });

  it('training stops with that error (it used to spin at 100 % CPU)', async () => {
    const wd = await getEngine();
    const out = tmp();
    const logs: string[] = [];
    await expect(
      runTraining(wd, { config: TINY, dataset: brokenDataset(8, new Set()), outDir: out, report: false, onLog: (l) => logs.push(l) }),
    ).rejects.toThrow(/no full batch of 2/);
    expect(logs.join('\n')).toMatch(/skipped 8 unreadable samples/);
  }, 60_000);
});

describe('F21: a FIFO named like an image', () => {
  it('is not read: listed as a non-regular file and left out, with a warning; reading one directly fails at once', async () => {
    const root = tmp();
    for (const c of ['a', 'b']) {
      mkdirSync(join(root, c));
      for (let i = 0; i < 2; i++) writeFileSync(join(root, c, `${i}.png`), encodePng(8, 8, new Uint8Array(8 * 8 * 3).fill(40 * i), 3));
    }
    execFileSync('mkfifo', [join(root, 'a', 'pipe.jpg')]);
    const warnings: string[] = [];
    const folder = openImageFolder(root, { onWarning: (m) => warnings.push(m), workers: 0 });
    try {
      expect(folder.length).toBe(4);
      expect(warnings.join('\n')).toMatch(/ignored 1 entry that are not regular files .*pipe\.jpg/);
      const loader = new DataLoader(folder, { batchSize: 2, onWarning: () => {} });
      let n = 0;
      for await (const b of loader.batches()) n += b.samples.length;
      expect(n).toBe(4);
    } finally {
      await folder.close();
    }
    await expect(readBytes(join(root, 'a', 'pipe.jpg'))).rejects.toThrow(/is a FIFO \(named pipe\), not a regular file/);
  }, 30_000);
});

describe('F24 and F25: one bad input does not fail what follows', () => {
  it('the report skips an unreadable picture, a failing evaluation is logged and training goes on', async () => {
    const wd = await getEngine();
    const out = tmp();
    const logs: string[] = [];
    // Index 0 is the first picture of the report (reportImageIndices starts at 0).
    const ds = brokenDataset(10, new Set([1, 2, 3, 4, 5, 6, 7, 8, 9]));
    let evals = 0;
    const r = await runTraining(wd, {
      config: TINY,
      dataset: ds,
      outDir: out,
      maxIterations: 3,
      evalEvery: 1,
      evaluate: async () => {
        evals++;
        throw new Error('extractFeatures: no batches');
      },
      onLog: (l) => logs.push(l),
    });
    try {
      expect(r.iterations).toBe(3);
      expect(evals).toBeGreaterThanOrEqual(2);
      expect(existsSync(join(out, 'checkpoint.safetensors'))).toBe(true);
      expect(logs.join('\n')).toMatch(/evaluation at iteration 1 failed \(training goes on\): extractFeatures: no batches/);
      expect(readFileSync(join(out, 'metrics.jsonl'), 'utf8')).toMatch(/"type":"eval","iteration":1,"error":"extractFeatures: no batches"/);
      expect(r.report).not.toBeNull();
      expect(logs.join('\n')).not.toMatch(/report could not be written/);
    } finally {
      r.trainer.dispose();
    }
  }, 120_000);
});

describe('F15: resume checks the checkpoint metadata before anything', () => {
  it('refuses a missing RNG state, a negative iteration, a huge K, and tensors that contradict the config, naming the field', async () => {
    const wd = await getEngine();
    const tr = new DinoTrainer(wd, TINY);
    tr.setItersPerEpoch(4);
    const { checkpointBytes } = await import('../../train/checkpoint.js');
    const bytes = await checkpointBytes(tr, 4, { loader: { epoch: 0, index: 0 } });
    tr.dispose();
    expect(readCheckpointMeta(bytes).iteration).toBe(0);
    const { tensors, metadata } = parseSafetensorsWithMetadata(bytes);
    const meta = JSON.parse(metadata.webdino!) as Record<string, unknown>;
    const remake = (m: Record<string, unknown>, t = tensors) => writeSafetensors(Object.fromEntries(t), { webdino: JSON.stringify(m) });
    const { augRng: _drop, ...noRng } = meta;
    expect(() => readCheckpointMeta(remake(noRng))).toThrow(/augRng is not a generator state/);
    expect(() => readCheckpointMeta(remake({ ...meta, iteration: -100 }))).toThrow(/iteration -100 is not an integer >= 0/);
    expect(() => readCheckpointMeta(remake({ ...meta, config: { ...(meta.config as object), outDim: 1e8 } }))).toThrow(/outDim = 100000000 is not an integer in/);
    expect(() => readCheckpointMeta(remake({ ...meta, config: { ...(meta.config as object), depth: 1000000 } }))).toThrow(/depth = 1000000/);
    expect(() => readCheckpointMeta(remake({ ...meta, config: { ...(meta.config as object), embedDim: 4096, numHeads: 64 } }))).toThrow(
      /student\.backbone\.cls_token is \[1, 1, 8\], the config needs \[1, 1, 4096\]/,
    );
    expect(() => readCheckpointMeta(new TextEncoder().encode('not json at all'))).toThrow();
  }, 60_000);
});

describe('F26: memory estimated before anything is allocated', () => {
  it('counts exactly the parameters DinoTrainer builds', async () => {
    const wd = await getEngine();
    for (const cfg of [TINY, { ...TINY, embedDim: 12, depth: 2, numHeads: 3, patchSize: 3, globalSize: 13, outDim: 30 }]) {
      const tr = new DinoTrainer(wd, cfg);
      const { backbone, head } = parameterCount(tr.config);
      expect(backbone).toBe(tr.student.backbone.numParameters());
      expect(head).toBe(tr.student.head.numParameters());
      tr.dispose();
    }
  });

  it('refuses, with figures, a configuration above the limit, and invalid configurations, before building', async () => {
    const wd = await getEngine();
    const huge = { ...TINY, embedDim: 4096, depth: 64, numHeads: 64, patchSize: 8, globalSize: 32, localSize: 16 };
    expect(estimateTrainingBytes(resolveConfig(huge))).toBeGreaterThan(200e9);
    await expect(
      runTraining(wd, { config: huge, dataset: new SyntheticShapes({ size: 16, length: 8 }), outDir: tmp(), report: false, memoryLimit: 24e9 }),
    ).rejects.toThrow(/needs about \d+(\.\d)? GB .* more than the 24\.0 GB available/);
    expect(() => validateTrainConfig(resolveConfig({ ...TINY, numHeads: 3 }))).toThrow(/embedDim 8 is not divisible by numHeads 3/);
    expect(() => new DinoTrainer(wd, { ...TINY, batchSize: 0 })).toThrow(/batchSize = 0/);
  });
});

describe('F5d: architecture metadata against the tensors', () => {
  it('a teacher_backbone file claiming dim 4096 × depth 48 is refused from its shapes, before building', async () => {
    const wd = await getEngine();
    const tr = new DinoTrainer(wd, TINY);
    const sd = await tr.teacherBackbone.stateDict();
    tr.dispose();
    const lie = { arch: 'custom', embed_dim: 4096, depth: 48, num_heads: 16, patch_size: 4 };
    const bytes = writeSafetensors(Object.fromEntries(sd), { webdino_arch: JSON.stringify(lie) });
    const weights = parseBackboneWeights(bytes);
    const before = wd.memory().liveBytes;
    expect(() => buildBackbone(wd, weights, {}, 'lie.safetensors')).toThrow(
      /lie\.safetensors: the architecture custom\/4 \(dim 4096, depth 48, 16 heads\) has [\d,]+ parameters, but the file holds [\d,]+ values \(its tensors say dim 8, depth 1, patch 4\): refusing to build it/,
    );
    expect(wd.memory().liveBytes).toBe(before);
  });
});
