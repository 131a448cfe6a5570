/**
 * "Did it learn?": `webdino train` on data with a held-out split (here a tiny IDX folder with t10k
 * files) evaluates the model at its initialisation before the first step, ends with a k-NN
 * evaluation, and prints both on one line; metrics.jsonl and report.html carry both. The figure at
 * initialisation is checked against an independent evaluation of a fresh trainer built with the
 * same config and seed. A resumed run still prints the figure of its original start, from the
 * checkpoint. The same holds for `--recipe dinov2` (its checkpoint keeps the baseline too), whose
 * step lines also carry the iBOT and KoLeo terms.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { learnedLine, recipeConfig, train, trainConfig } from '../../bin/commands/train.js';
import { parseOptions } from '../../bin/options.js';
import { idxBytes, openIdx } from '../../train/data/idx-node.js';
import { knnEvaluator } from '../../train/eval-hooks-node.js';
import { compareToInit, parseMetrics } from '../../train/report.js';
import { DinoTrainer, type TrainConfig } from '../../train/trainer.js';
import { inspectRunFolder } from '../../train/run-folder-node.js';
import { DinoV2Trainer } from '../../train/dinov2-trainer.js';
import { webdino } from '../eval/cli.js';
import { getEngine } from '../helpers.js';

const roots: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'webdino-learned-'));
  roots.push(d);
  return d;
}
afterAll(() => {
  for (const d of roots) rmSync(d, { recursive: true, force: true });
});

/** n grey 20×20 images of 3 classes: a bright bar (horizontal, vertical or a square) on noise. */
function shapes(n: number, seed: number): { pixels: Uint8Array; labels: Uint8Array } {
  const S = 20;
  const pixels = new Uint8Array(n * S * S);
  const labels = new Uint8Array(n);
  let r = seed * 7919 + 1;
  const rand = () => ((r = (r * 1103515245 + 12345) >>> 0) >>> 8) / 2 ** 24;
  for (let i = 0; i < n; i++) {
    const c = i % 3;
    labels[i] = c;
    const x0 = 3 + Math.floor(rand() * 4);
    const y0 = 3 + Math.floor(rand() * 4);
    for (let y = 0; y < S; y++) {
      for (let x = 0; x < S; x++) {
        const dx = x - x0;
        const dy = y - y0;
        const on = c === 0 ? dy >= 4 && dy < 8 && dx >= 0 && dx < 12 : c === 1 ? dx >= 4 && dx < 8 && dy >= 0 && dy < 12 : dx >= 2 && dx < 10 && dy >= 2 && dy < 10;
        pixels[i * S * S + y * S + x] = on ? 220 : Math.floor(rand() * 40);
      }
    }
  }
  return { pixels, labels };
}

function writeIdxFolder(dir: string): void {
  for (const [prefix, n, seed] of [['train', 36, 1], ['t10k', 15, 2]] as const) {
    const { pixels, labels } = shapes(n, seed);
    writeFileSync(join(dir, `${prefix}-images-idx3-ubyte`), idxBytes([n, 20, 20], pixels));
    writeFileSync(join(dir, `${prefix}-labels-idx1-ubyte`), idxBytes([n], labels));
  }
}

const TINY = ['--embed-dim', '16', '--depth', '1', '--heads', '2', '--out-dim', '32', '--batch-size', '12', '--epochs', '2', '--epoch-length', '0', '--local-crops', '2', '--seed', '3'];

describe('webdino train says whether it learned', () => {
  it('prints the trained k-NN next to the same model at initialisation; metrics and report carry both', async () => {
    const data = tempDir();
    writeIdxFolder(data);
    const out = tempDir();
    const r = await webdino('train', '--data', data, '--out', out, ...TINY);
    expect(r.err).not.toMatch(/Error/);
    expect(r.code).toBe(0);
    // IDX images are grey: the CPU default says it adapts its augmentation, and the run records it.
    expect(r.out).toContain('data: grey images: the CPU default adds brightness/contrast jitter 0.4/0.4, blurs σ 0.1–0.5 px and weighs KoLeo 0.5');
    const state = inspectRunFolder(out);
    const recorded = state.kind === 'finished' ? (state.meta.config as TrainConfig) : null;
    expect(recorded?.augment).toEqual({ brightness: 0.4, contrast: 0.4, blurSigma: [0.1, 0.5] });
    expect(recorded?.koleoWeight).toBe(0.5);
    const m = /k-NN top-1 \(k = 20\) on the held-out split: ([\d.]+) % trained teacher vs ([\d.]+) % at initialisation \(([+-][\d.]+) points\)/.exec(r.out);
    expect(m, r.out).not.toBeNull();
    const [trained, init, diff] = [Number(m![1]), Number(m![2]), Number(m![3])];
    expect(diff).toBeCloseTo(trained - init, 0);

    // metrics.jsonl: the evaluation at iteration 0 (before any step) and at the end (2 epochs × 3 steps).
    const metrics = parseMetrics(readFileSync(join(out, 'metrics.jsonl'), 'utf8'));
    expect(metrics.evals.map((e) => e.iteration)).toEqual([0, 6]);
    expect(metrics.evals[0]!.knn_top1!.toFixed(1)).toBe(init.toFixed(1));
    expect(metrics.evals[1]!.knn_top1!.toFixed(1)).toBe(trained.toFixed(1));
    const cmp = compareToInit(metrics.evals).find((c) => c.metric === 'knn_top1');
    expect(cmp).toEqual({ metric: 'knn_top1', init: metrics.evals[0]!.knn_top1, trained: metrics.evals[1]!.knn_top1, iteration: 6 });
    const html = readFileSync(join(out, 'report.html'), 'utf8');
    expect(html).toContain('Did it learn?');
    expect(html).toMatch(/<th>knn_top1<\/th><td>[\d.]+<\/td><td>[\d.]+<\/td>/);

    // The baseline is the architecture as initialised from the same seed: an independent trainer
    // of the same config, never stepped, gives the same k-NN figure.
    const wd = await getEngine();
    const fresh = new DinoTrainer(wd, trainConfig(parseOptions(train.options, ['--embed-dim', '16', '--depth', '1', '--heads', '2', '--out-dim', '32', '--batch-size', '12', '--epochs', '2', '--epoch-length', '0', '--local-crops', '2', '--seed', '3'], '/work'), { grey: true }));
    try {
      const knn = knnEvaluator(wd, { train: openIdx(data, 'train'), val: openIdx(data, 'test') });
      expect((await knn(fresh)).knn_top1).toBe(metrics.evals[0]!.knn_top1);
    } finally {
      fresh.dispose();
    }

    // Resumed with a longer schedule: no new baseline is computed, the original one is printed.
    const r2 = await webdino('train', '--data', data, '--out', out, '--resume', '--epochs', '3');
    expect(r2.code).toBe(0);
    expect(r2.out).not.toContain('grey images'); // the checkpoint's config applies, decided once
    expect(r2.out).toContain(`vs ${init.toFixed(1)} % at initialisation`);
    const evals2 = parseMetrics(readFileSync(join(out, 'metrics.jsonl'), 'utf8')).evals.map((e) => e.iteration);
    expect(evals2).toEqual([0, 6, 9]);
  });

  it('--recipe dinov2: the same line, baseline and resume; the step lines carry the iBOT and KoLeo terms', async () => {
    const data = tempDir();
    writeIdxFolder(data);
    const out = tempDir();
    const V2 = ['--recipe', 'dinov2', '--arch', 'custom', '--embed-dim', '16', '--depth', '1', '--heads', '2', '--patch-size', '4', '--global-size', '16', '--local-size', '8', '--local-crops', '2', '--out-dim', '32', '--batch-size', '12', '--epochs', '2', '--epoch-length', '0', '--layerscale', '0.1', '--seed', '3'];
    const r = await webdino('train', '--data', data, '--out', out, ...V2);
    expect(r.err).not.toMatch(/Error/);
    expect(r.code, r.err).toBe(0);
    const m = /k-NN top-1 \(k = 20\) on the held-out split: ([\d.]+) % trained teacher vs ([\d.]+) % at initialisation/.exec(r.out);
    expect(m, r.out).not.toBeNull();
    const init = Number(m![2]);
    const text = readFileSync(join(out, 'metrics.jsonl'), 'utf8');
    const metrics = parseMetrics(text);
    expect(metrics.evals.map((e) => e.iteration), '36 images / 12 = 3 steps per epoch').toEqual([0, 6]);
    const steps = text.split('\n').filter((l) => l.includes('"type":"step"')).map((l) => JSON.parse(l) as Record<string, number>);
    expect(steps.map((s) => s.iteration)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(steps.every((s) => Number.isFinite(s.ibot_loss) && Number.isFinite(s.koleo_loss) && s.masked_patches >= 0)).toBe(true);
    expect(steps.some((s) => s.masked_patches > 0), 'half of the global crops are masked').toBe(true);

    const wd = await getEngine();
    const request = recipeConfig(parseOptions(train.options, V2, '/work'));
    expect(request.recipe).toBe('dinov2');
    const fresh = new DinoV2Trainer(wd, { ...(request.config as object), epochLength: 3 });
    try {
      const knn = knnEvaluator(wd, { train: openIdx(data, 'train'), val: openIdx(data, 'test') });
      expect((await knn(fresh)).knn_top1).toBe(metrics.evals[0]!.knn_top1);
    } finally {
      fresh.dispose();
    }

    const r2 = await webdino('train', '--data', data, '--out', out, '--resume', '--epochs', '3', '--epoch-length', '0');
    expect(r2.code, r2.err).toBe(0);
    expect(r2.out).toContain(`vs ${init.toFixed(1)} % at initialisation`);
    expect(parseMetrics(readFileSync(join(out, 'metrics.jsonl'), 'utf8')).evals.map((e) => e.iteration)).toEqual([0, 6, 9]);
  });

  it('has no line without both evaluations', () => {
    expect(learnedLine(null, { iteration: 5, knn_top1: 50 })).toBeNull();
    expect(learnedLine({ iteration: 0, knn_top1: 40 }, undefined)).toBeNull();
    expect(learnedLine({ iteration: 0, knn_top1: 40 }, { iteration: 0, knn_top1: 40 })).toBeNull();
    expect(learnedLine({ iteration: 0, knn_top1: 40 }, { iteration: 8, knn_top1: 52.25 })).toMatch(/52\.3 % trained teacher vs 40\.0 % at initialisation \(\+12\.3 points\)/);
  });
});
