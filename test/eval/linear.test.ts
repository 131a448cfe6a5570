/**
 * The linear probe (eval/linear-probe.ts, `webdino eval linear`) on a tiny random ViT:
 * - one and two SGD-momentum steps of the GPU classifier equal the float64 reference (gradient of
 *   the mean cross-entropy, momentum buffer, weight decay);
 * - the probe's features: last-n CLS tokens concatenated, DINO's interleaved [cls, avg] for n = 1,
 *   the average appended for n > 1, against intermediateLayers read back;
 * - top-1 / top-5 and the per-epoch cosine by hand;
 * - the command: trains to memorise a small set it is evaluated on (the loop really learns),
 *   writes the classifier and per-epoch JSON, is deterministic for a seed (also with --augment),
 *   and refuses --n-last-blocks beyond the depth.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../index.js';
import { parseSafetensorsWithMetadata } from '../../models/io/safetensors.js';
import type { VisionTransformer } from '../../models/vit.js';
import { cosineEpochLr, LinearClassifier, probeFeatures, sgdStepRef, topkAccuracy } from '../../eval/linear-probe.js';
import { expectClose, getEngine, randn } from '../helpers.js';
import { tinyBackbone, webdino } from './cli.js';

let dir: string;
let model: VisionTransformer;
let weights: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'webdino-linear-'));
  ({ model, path: weights } = await tinyBackbone(dir));
});

afterAll(() => {
  model?.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('linear classifier', () => {
  it('two SGD-momentum steps equal the float64 reference', async () => {
    const wd = await getEngine();
    const [B, F, C] = [13, 37, 7];
    const lr = 0.3;
    const mom = 0.9;
    const decay = 0.01;
    const clf = new LinearClassifier(wd, F, C, new Rng(4));
    const w = Float64Array.from(await clf.weight.toArray());
    const b = new Float64Array(C);
    const vw = new Float64Array(C * F);
    const vb = new Float64Array(C);
    // DINO's init: N(0, 0.01²), bias 0.
    const std = Math.sqrt(w.reduce((s, v) => s + v * v, 0) / w.length);
    expect(std).toBeGreaterThan(0.008);
    expect(std).toBeLessThan(0.012);
    for (let step = 0; step < 2; step++) {
      const x = randn(B * F, 10 + step);
      const labels = Array.from({ length: B }, (_, i) => (i * 3 + step) % C);
      const loss = await wd.scope(() => clf.step(wd.tensor(x, [B, F]), labels, lr, mom, decay));
      const lossRef = sgdStepRef(x, labels, w, b, vw, vb, lr, mom, decay);
      expect(loss).toBeCloseTo(lossRef, 5);
      // f32 sums of 13 products per gradient entry: 1e-5 relative.
      expectClose(await clf.weight.toArray(), w, 1e-4, 1e-6, `weight after step ${step + 1}`);
      expectClose(await clf.bias.toArray(), b, 1e-4, 1e-6, `bias after step ${step + 1}`);
    }
    clf.dispose();
  });

  it('top-1 / top-5 and the cosine schedule by hand', () => {
    // 2 rows, 6 classes. Row 0: label 2 has the largest logit. Row 1: label 0 is 6th of 6.
    const logits = [0, 1, 5, 2, 3, 4, 1, 2, 3, 4, 5, 6];
    expect(topkAccuracy(logits, [2, 0], 6)).toEqual({ top1: 50, top5: 50 });
    expect(topkAccuracy(logits, [5, 5], 6)).toEqual({ top1: 50, top5: 100 });
    // Ties: the lower class index wins.
    expect(topkAccuracy([1, 1], [1], 2)).toEqual({ top1: 0, top5: 100 });
    expect(cosineEpochLr(0.4, 0, 4)).toBeCloseTo(0.4, 15);
    expect(cosineEpochLr(0.4, 2, 4)).toBeCloseTo(0.2, 15);
    expect(cosineEpochLr(0.4, 1, 4)).toBeCloseTo(0.2 * (1 + Math.SQRT1_2), 15);
  });
});

describe('probe features', () => {
  it('CLS tokens of the last n blocks; DINO interleaving with avgpool at n = 1; appended at n = 2', async () => {
    const wd = await getEngine();
    const B = 3;
    const D = 32;
    const N = 17; // 16 patches + CLS at 32 px, patch 8
    const x = randn(B * 3 * 32 * 32, 7);
    await wd.noGrad(() =>
      wd.scope(async () => {
        const t = wd.tensor(x, [B, 3, 32, 32]);
        const layers = await Promise.all(model.intermediateLayers(t, 2).map((l) => l.toArray())); // 2 × (B, N, D)
        const cls = (l: number, b: number) => Array.from(layers[l].subarray(b * N * D, b * N * D + D));
        const avg = (b: number) =>
          Array.from({ length: D }, (_, d) => {
            let s = 0;
            for (let n = 1; n < N; n++) s += layers[1][(b * N + n) * D + d];
            return s / (N - 1);
          });
        const f2 = await probeFeatures(model, t, 2, false).toArray();
        const f1a = await probeFeatures(model, t, 1, true).toArray();
        const f2a = await probeFeatures(model, t, 2, true).toArray();
        for (let b = 0; b < B; b++) {
          expectClose(f2.subarray(b * 2 * D, (b + 1) * 2 * D), [...cls(0, b), ...cls(1, b)], 1e-6, 1e-6, 'n = 2');
          const inter = cls(1, b).flatMap((c, d) => [c, avg(b)[d]]);
          expectClose(f1a.subarray(b * 2 * D, (b + 1) * 2 * D), inter, 1e-5, 1e-6, 'n = 1 + avgpool (interleaved)');
          expectClose(f2a.subarray(b * 3 * D, (b + 1) * 3 * D), [...cls(0, b), ...cls(1, b), ...avg(b)], 1e-5, 1e-6, 'n = 2 + avgpool');
        }
        expect(() => probeFeatures(model, t, 3, false)).toThrow(/from 1 to the model's depth 2/);
      }),
    );
  });
});

interface LinearJson {
  features: number;
  classes: number;
  best: { epoch: number; top1: number; top5: number };
  last: { epoch: number; top1: number; top5: number; loss: number };
  epochs: { epoch: number; lr: number; loss: number; top1: number }[];
}

describe('webdino eval linear', () => {
  it('learns: memorises 30 images it is evaluated on; writes the classifier and the per-epoch JSON', async () => {
    const json = join(dir, 'memorise.json');
    const save = join(dir, 'linear.safetensors');
    const r = await webdino(
      'eval', 'linear', '--weights', weights, '--train', 'synthetic:train', '--val', 'synthetic:train', '--train-limit', '30', '--val-limit', '30',
      '--epochs', '200', '--batch-size', '10', '--lr', '5', '--n-last-blocks', '2', '--json', json, '--save', save,
    );
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/features: 2 last CLS tokens \(64 dims\), 10 classes; 200 epochs, batch 10, lr 5 × 10\/256, eval transform/);
    const j = JSON.parse(readFileSync(json, 'utf8')) as LinearJson;
    expect(j.epochs).toHaveLength(200);
    j.epochs.forEach((e, i) => expect(e.lr).toBeCloseTo(cosineEpochLr((5 * 10) / 256, i, 200), 12));
    // From chance (~10 %) to (nearly) all of the 30 images: the loop trains the classifier.
    expect(j.epochs[0].top1).toBeLessThan(50);
    expect(j.best.top1).toBeGreaterThanOrEqual(90);
    expect(j.last.loss).toBeLessThan(j.epochs[0].loss / 2);
    expect(r.out).toContain(`linear top-1 ${j.best.top1.toFixed(2)} %`);
    const st = parseSafetensorsWithMetadata(new Uint8Array(readFileSync(save)));
    expect(st.tensors.get('linear.weight')!.shape).toEqual([10, 64]);
    expect(st.tensors.get('linear.bias')!.shape).toEqual([10]);
    expect(JSON.parse(st.metadata.webdino_linear!).nLastBlocks).toBe(2);
  });

  it('--augment: the same seed gives the same figures; cycled views and fresh crops both run', async () => {
    const run = async (...extra: string[]) => {
      const json = join(dir, `aug-${extra.join('')}.json`);
      const r = await webdino('eval', 'linear', '--weights', weights, '--train-limit', '24', '--val-limit', '10', '--epochs', '3', '--batch-size', '8', '--augment', '--json', json, ...extra);
      expect(r.code, r.err).toBe(0);
      return { out: r.out, j: JSON.parse(readFileSync(json, 'utf8')) as LinearJson };
    };
    const a = await run('--views', '2');
    expect(a.out).toMatch(/random resized crops \+ flips \(2 views per image, cycled\)/);
    const b = await run('--views', '2');
    expect(b.j.epochs).toEqual(a.j.epochs);
    const c = await run('--views', '0');
    expect(c.out).toMatch(/random resized crops \+ flips \(fresh every epoch\)/);
    // Epoch 0 draws the same crops either way; epoch 2 re-uses view 0 in one run and draws new crops in the other.
    expect(c.j.epochs[0].loss).toBeCloseTo(a.j.epochs[0].loss, 6);
    expect(c.j.epochs[2].loss).not.toBeCloseTo(a.j.epochs[2].loss, 6);
  });

  it('usage errors', async () => {
    expect((await webdino('eval', 'linear')).code).toBe(2);
    const r = await webdino('eval', 'linear', '--weights', weights, '--n-last-blocks', '3', '--train-limit', '4', '--val-limit', '4');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--n-last-blocks 3 exceeds the model's 2 blocks/);
    expect((await webdino('eval', 'linear', '--weights', weights, '--views', '-1')).code).toBe(2);
  });
});
