/**
 * `webdino report`: redraws RUN/report.html of an existing run folder (tiny DINO run, 2 steps),
 * with the run's configuration, its teacher's pictures and its metrics; clear usage errors for a
 * folder that is not a run.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SyntheticShapes } from '../../train/data/synthetic.js';
import { runTraining } from '../../train/run-node.js';
import { getEngine } from '../helpers.js';
import { webdino } from './cli.js';

let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'webdino-report-cli-'));
  const wd = await getEngine();
  const r = await runTraining(wd, {
    config: {
      arch: 'custom', embedDim: 32, depth: 2, numHeads: 2, patchSize: 8, outDim: 64, headHidden: 64, headBottleneck: 32,
      epochs: 1, batchSize: 8, warmupEpochs: 0, globalSize: 32, localSize: 16, localCrops: 2, seed: 5,
    },
    dataset: new SyntheticShapes({ split: 'train', size: 48, length: 24 }),
    outDir: dir,
    maxIterations: 2,
    report: false,
  });
  r.trainer.dispose();
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('webdino report', () => {
  it('writes report.html of a run folder: config, curves and 2 pictured images', async () => {
    const path = join(dir, 'report.html');
    if (existsSync(path)) unlinkSync(path);
    const r = await webdino('report', '--run', dir, '--images', '2');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toContain(path);
    const html = readFileSync(path, 'utf8');
    expect(html).toContain('webdino training report');
    expect(html).toMatch(/embedDim[\s\S]{0,200}32/); // the checkpoint's configuration
    expect(html).toContain('<svg'); // the curves
    // Per pictured image: the input, one map per head (2) and the PCA picture.
    expect((html.match(/data:image\/png;base64,/g) ?? []).length).toBe(2 * (1 + 2 + 1));
  });

  it('says what is missing when the folder is not a run', async () => {
    const empty = mkdtempSync(join(tmpdir(), 'webdino-not-a-run-'));
    try {
      const r = await webdino('report', '--run', empty);
      expect(r.code).toBe(2);
      expect(r.err).toMatch(/not a run folder: it has no metrics\.jsonl/);
      expect(existsSync(join(empty, 'report.html'))).toBe(false);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });
});
