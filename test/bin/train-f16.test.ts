/**
 * `webdino train --precision f16|f32`: the option (declared once, in --help, default f32, DINO's
 * recipe only), its place among the options a resumed run must keep, a tiny mixed-precision run
 * from the command line (step lines with loss_scale and skipped, the scaler in the checkpoint,
 * the same CLI output as at f32), and the progress line of a skipped step.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { checkResumeOptions, recipeConfig, train, trainConfig } from '../../bin/commands/train.js';
import { parseOptions } from '../../bin/options.js';
import { ProgressReporter } from '../../bin/progress.js';
import { readCheckpointMeta } from '../../train/checkpoint.js';
import { idxBytes } from '../../train/data/idx-node.js';
import { CPU_DEFAULT_CONFIG, resolveConfig } from '../../train/trainer.js';
import { webdino } from './harness.js';

const parse = (...args: string[]) => parseOptions(train.options, args, '/work');

const roots: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'webdino-f16-cli-'));
  roots.push(d);
  return d;
}
afterAll(() => {
  for (const d of roots) rmSync(d, { recursive: true, force: true });
});

describe('--precision', () => {
  it('sets TrainConfig.precision; f32 when not given; other values refused', () => {
    expect(trainConfig(parse('--precision', 'f16'))).toEqual({ ...CPU_DEFAULT_CONFIG, precision: 'f16' });
    expect(trainConfig(parse())).toEqual(CPU_DEFAULT_CONFIG);
    expect(resolveConfig(trainConfig(parse())).precision).toBe('f32');
    expect(resolveConfig(trainConfig(parse('--arch', 'vit_tiny', '--precision', 'f16'))).precision).toBe('f16');
    expect(() => parse('--precision', 'bf16')).toThrow(/--precision must be one of/);
  });

  it("is DINO's recipe only: --recipe dinov2 --precision f16 is a usage error that says so", () => {
    expect(() => recipeConfig(parse('--recipe', 'dinov2', '--precision', 'f16'))).toThrow(/--precision f16: mixed-precision training is DINO's recipe only/);
    expect(recipeConfig(parse('--recipe', 'dinov2', '--precision', 'f32')).recipe).toBe('dinov2');
  });

  it('a resumed run keeps its precision (a run from before the option is f32)', () => {
    const f32 = resolveConfig(CPU_DEFAULT_CONFIG);
    const { precision: _, ...older } = f32;
    expect(checkResumeOptions(parse('--precision', 'f32'), older as typeof f32, 156)).toEqual([]);
    expect(() => checkResumeOptions(parse('--precision', 'f16'), older as typeof f32, 156)).toThrow(/--precision f16 \(the run has f32\)/);
    expect(checkResumeOptions(parse('--precision', 'f16'), { ...f32, precision: 'f16' }, 156)).toEqual([]);
  });

  it('is listed in --help with its choices and default', async () => {
    const r = await webdino('train', '--help');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/--precision <p>/);
    expect(r.out).toMatch(/f16: mixed-precision training/);
    expect(r.out).toMatch(/f32; a resumed run's own/);
  });
});

/** 24 grey 20×20 images of 2 classes, train split only (no held-out evaluation: fast). */
function writeIdxTrain(dir: string): void {
  const n = 24;
  const S = 20;
  const pixels = new Uint8Array(n * S * S);
  const labels = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    labels[i] = i % 2;
    for (let p = 0; p < S * S; p++) pixels[i * S * S + p] = (p * 37 + i * 101) % 256 > (i % 2 ? 60 : 190) ? 220 : 20;
  }
  writeFileSync(join(dir, 'train-images-idx3-ubyte'), idxBytes([n, S, S], pixels));
  writeFileSync(join(dir, 'train-labels-idx1-ubyte'), idxBytes([n], labels));
}

const TINY = ['--embed-dim', '16', '--depth', '1', '--heads', '2', '--out-dim', '32', '--batch-size', '12', '--epochs', '2', '--epoch-length', '0', '--local-crops', '2', '--seed', '3'];

describe('webdino train --precision f16', () => {
  it('trains, logs loss_scale and skipped per step, saves the scaler; --resume keeps the precision', async () => {
    const data = tempDir();
    writeIdxTrain(data);
    const out = tempDir();
    const r = await webdino('train', '--data', data, '--out', out, '--precision', 'f16', ...TINY, '--max-iterations', '3');
    expect(r.err).not.toMatch(/Error/);
    expect(r.code).toBe(0);
    const steps = readFileSync(join(out, 'metrics.jsonl'), 'utf8')
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.type === 'step');
    expect(steps.map((s) => s.iteration)).toEqual([0, 1, 2]);
    for (const s of steps) {
      expect(typeof s.loss_scale).toBe('number');
      expect(typeof s.skipped).toBe('boolean');
      expect(Number.isFinite(s.loss)).toBe(true);
    }
    expect(steps[0].loss_scale).toBe(2 ** 16);
    const meta = readCheckpointMeta(readFileSync(join(out, 'checkpoint.safetensors')));
    expect(meta.config.precision).toBe('f16');
    expect(meta.lossScaler?.skippedSteps).toBe(steps.filter((s) => s.skipped).length);
    // The printed skips match the logged ones.
    expect((r.out.match(/step skipped/g) ?? []).length).toBe(steps.filter((s) => s.skipped).length);

    const refused = await webdino('train', '--data', data, '--out', out, '--resume', '--precision', 'f32');
    expect(refused.code).toBe(2);
    expect(refused.err).toMatch(/--precision f32 \(the run has f16\)/);
    const resumed = await webdino('train', '--data', data, '--out', out, '--resume');
    expect(resumed.code).toBe(0);
    expect(readCheckpointMeta(readFileSync(join(out, 'checkpoint.safetensors'))).iteration).toBe(4);
  });

  it('--recipe dinov2 --precision f16 stops before touching the output folder', async () => {
    const out = join(tempDir(), 'never');
    const r = await webdino('train', '--recipe', 'dinov2', '--precision', 'f16', '--out', out);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/DINO's recipe only/);
  });
});

describe('the progress line of a skipped step', () => {
  it('says that the gradients overflowed, at which scale, and that nothing was updated', () => {
    const lines: string[] = [];
    let t = 0;
    const p = new ProgressReporter({ out: (l) => lines.push(l), now: () => (t += 1000) });
    const base = { total: 10, epoch: 0, loss: 1.5, lr: 1e-3, momentum: 0.99, imagesPerSecond: 10 };
    p.step({ ...base, iteration: 0, lossScale: 65536, skipped: true });
    p.step({ ...base, iteration: 1, lossScale: 32768, skipped: false });
    p.done();
    expect(lines[0]).toBe('iter 1/10: the gradients overflowed at loss scale 65536: step skipped (nothing updated), the scale is halved');
    expect(lines.filter((l) => /skipped/.test(l))).toHaveLength(1);
  });
});
