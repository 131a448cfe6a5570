/**
 * Top-k kernel and DINO's weighted k-NN evaluation against float64 references.
 *
 * topk: exact (values are copies of f32 inputs, indices integers) against topkRef, for both kernel
 * variants, single- and two-pass, at row lengths that are no multiple of anything, with heavy ties
 * and ±∞. knnClassify: equal accuracies to knnRef (DINO's code, float64) on clustered data; a
 * hand-made case where the temperature decides; the top-5 rules (min(5, k), fewer than 5 classes,
 * zero-vote classes ranked by index); errors; no leaks.
 */
import { describe, expect, it } from 'vitest';
import { Rng } from '../../index.js';
import { MAX_K, topk, topkRef, topkSegments } from '../../kernels/topk.js';
import { extractFeatures, knnClassify, knnRef } from '../../eval/knn.js';
import { getEngine, randn } from '../helpers.js';
import type { Engine } from '../../engine/engine.js';

/** Runs topk on the GPU and compares values and indices exactly with the reference. */
async function checkTopk(wd: Engine, x: Float32Array, R: number, C: number, k: number, segments?: number): Promise<void> {
  await wd.scope(async () => {
    const t = wd.tensor(x, [R, C]);
    const { values, indices } = topk(t, k, segments === undefined ? {} : { segments });
    expect(values.shape).toEqual([R, k]);
    const ref = topkRef(x, C, k);
    const what = `R=${R} C=${C} k=${k} segments=${segments ?? 'auto'}`;
    expect(Array.from(await indices.toArray()), `${what}: indices`).toEqual(Array.from(ref.indices));
    expect(Array.from(await values.toArray()), `${what}: values`).toEqual(Array.from(ref.values));
  });
}

describe('topk kernel', () => {
  for (const variant of ['cpu', 'gpu'] as const) {
    it(`matches the float64 reference exactly (${variant} variant, R 1/7/33, C 1/13/1000, k 1/5/20/200)`, async () => {
      const wd = await getEngine(variant);
      let seed = 1;
      for (const R of [1, 7, 33]) {
        for (const C of [1, 13, 1000]) {
          for (const k of [1, 5, 20, 200].filter((k) => k <= C)) {
            await checkTopk(wd, randn(R * C, seed++), R, C, k);
          }
        }
      }
    });
  }

  it('two-pass path: forced segments, including segments shorter than k (sentinels)', async () => {
    const wd = await getEngine('cpu');
    let seed = 100;
    // C = 13 in 5 segments of 3 with k = 5: every segment leaves sentinels that must lose.
    for (const [R, C, k, S] of [
      [7, 13, 5, 5],
      [7, 13, 13, 4],
      [33, 1000, 20, 7],
      [1, 1000, 200, 9],
      [3, 997, 1, 997],
    ]) {
      await checkTopk(wd, randn(R * C, seed++), R, C, k, S);
    }
  });

  it('ties go to the lower index; ±∞ are ordinary values', async () => {
    for (const variant of ['cpu', 'gpu'] as const) {
      const wd = await getEngine(variant);
      const rng = new Rng(7);
      const R = 33;
      const C = 1000;
      // Four distinct values only: almost every comparison is a tie.
      const x = Float32Array.from({ length: R * C }, () => Math.floor(rng.uniform() * 4));
      for (let j = 0; j < C; j++) x[2 * C + j] = -Infinity; // a row of −∞ only
      x[3 * C + 500] = Infinity;
      x[3 * C + 17] = -Infinity;
      for (const k of [1, 5, 200]) {
        await checkTopk(wd, x, R, C, k);
        await checkTopk(wd, x, R, C, k, 3);
      }
    }
  });

  it('a long row (C = 70001, k = 200) in the default two-pass layout', async () => {
    const wd = await getEngine('cpu');
    expect(topkSegments('cpu', 5, 70001, 200)).toBeGreaterThan(1);
    await checkTopk(wd, randn(5 * 70001, 9), 5, 70001, 200);
  });

  it('k > C, k < 1 and k > MAX_K are clear errors', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      const x = wd.zeros([3, 13]);
      expect(() => topk(x, 14)).toThrow(/k = 14 is larger than the last dimension of x \[3, 13\]/);
      expect(() => topk(x, 0)).toThrow(/positive integer/);
      expect(() => topk(wd.zeros([1, MAX_K + 1]), MAX_K + 1)).toThrow(/exceeds the supported maximum/);
    });
  });
});

/** `n` points in `D` dims around `classes` Gaussian cluster centres; labels = cluster. */
function clustered(n: number, D: number, classes: number, centres: Float64Array, spread: number, rng: Rng) {
  const x = new Float32Array(n * D);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const c = Math.floor(rng.uniform() * classes);
    labels[i] = c;
    for (let d = 0; d < D; d++) x[i * D + d] = centres[c * D + d] + spread * rng.normal();
  }
  return { x, labels };
}

describe('knnClassify (DINO eval_knn.knn_classifier)', () => {
  for (const classes of [5, 12]) {
    it(`equals the float64 reference on ${classes} Gaussian clusters (500 train, 137 test, 32-D), chunked`, async () => {
      const wd = await getEngine();
      const D = 32;
      const rng = new Rng(3);
      const centres = Float64Array.from({ length: classes * D }, () => rng.normal());
      // Overlapping clusters (noise std 2 per dim vs unit-normal centres): accuracies are far from 100 %.
      const train = clustered(500, D, classes, centres, 2, rng);
      const test = clustered(137, D, classes, centres, 2, rng);
      const ks = [10, 20, 100, 200, 1, 3];
      const want = knnRef(train.x, train.labels, test.x, test.labels, D, classes, ks, 0.07);
      const live = wd.memory().liveBytes;
      await wd.scope(async () => {
        const trainF = wd.tensor(train.x, [500, D]);
        const testF = wd.tensor(test.x, [137, D]);
        for (const chunk of [undefined, 16]) {
          const got = await knnClassify({ trainFeatures: trainF, trainLabels: train.labels, testFeatures: testF, testLabels: test.labels, numClasses: classes, ks, chunk });
          expect(got, `chunk ${chunk ?? 'default'}`).toEqual(want);
        }
      });
      expect(wd.memory().liveBytes).toBe(live);
      const at = (k: number) => want.find((r) => r.k === k)!;
      // Not a degenerate case: the clusters overlap (top-1 well inside (0, 100)).
      expect(at(20).top1).toBeGreaterThan(50);
      expect(at(20).top1).toBeLessThan(90);
      expect(at(1).top5).toBe(at(1).top1); // min(5, 1) = 1 slot
      if (classes === 5) expect(at(20).top5).toBe(100); // 5 classes all fit in 5 slots
      else expect(at(20).top5).toBeLessThan(100);
    });
  }

  it('the temperature decides: one near neighbour of class 0 against two far ones of class 1', async () => {
    const wd = await getEngine();
    // 2-D unit vectors by angle; the test point is at angle 0.
    const at = (a: number) => [Math.cos(a), Math.sin(a)];
    const train = [at(0.1), at(1.0), at(1.05), at(Math.PI), at(Math.PI + 0.1), at(Math.PI - 0.1)].flat();
    const trainLabels = [0, 1, 1, 2, 2, 2];
    const test = at(0);
    const run = (T: number) =>
      wd.scope(() =>
        knnClassify({ trainFeatures: wd.tensor(train, [6, 2]), trainLabels, testFeatures: wd.tensor(test, [1, 2]), testLabels: [0], numClasses: 3, ks: [1, 3], T }),
      );
    // T = 0.07: exp(0.995/T) ≫ exp(0.540/T) + exp(0.497/T): the near neighbour wins.
    const sharp = await run(0.07);
    expect(sharp).toEqual([
      { k: 1, top1: 100, top5: 100 },
      { k: 3, top1: 100, top5: 100 },
    ]);
    // T = 10: all weights ≈ 1, the two far neighbours outvote it (k = 3); with fewer than 5 classes
    // (3) every class is within the first min(5, 3) ranks, so top-5 stays 100 %.
    const flat = await run(10);
    expect(flat).toEqual([
      { k: 1, top1: 100, top5: 100 },
      { k: 3, top1: 0, top5: 100 },
    ]);
    expect(flat).toEqual(knnRef(train, trainLabels, test, [0], 2, 3, [1, 3], 10));
    expect(sharp).toEqual(knnRef(train, trainLabels, test, [0], 2, 3, [1, 3], 0.07));
  });

  it('top-5: zero-vote classes fill the remaining slots by class index; 2 classes give 100 %', async () => {
    const wd = await getEngine();
    // All 5 train points are class 3 and identical: ranks are 3, 0, 1, 2, 4, 5, ...
    const D = 4;
    const train = Array.from({ length: 5 * D }, (_, i) => (i % D === 0 ? 1 : 0.01 * i));
    const trainLabels = [3, 3, 3, 3, 3];
    const test = [1, 0, 0, 0, 1, 0.5, 0, 0, 1, 0, 0.2, 0];
    const testLabels = [2, 4, 7]; // ranks 3, 4, 7 → top-5 hits for the first two only
    await wd.scope(async () => {
      const got = await knnClassify({ trainFeatures: wd.tensor(train, [5, D]), trainLabels, testFeatures: wd.tensor(test, [3, D]), testLabels, numClasses: 10, ks: [5, 2] });
      expect(got).toEqual([
        { k: 5, top1: 0, top5: (100 * 2) / 3 },
        { k: 2, top1: 0, top5: 0 }, // min(5, k) = 2 slots: classes 3 and 0
      ]);
      expect(got).toEqual(knnRef(train, trainLabels, test, testLabels, D, 10, [5, 2]));
      // Two classes, k = 10 ≥ 5: every label is within the first 2 ranks → top-5 = 100 %.
      const rng = new Rng(5);
      const two = await knnClassify({
        trainFeatures: wd.tensor(randn(20 * D, 11), [20, D]),
        trainLabels: Array.from({ length: 20 }, () => Math.floor(rng.uniform() * 2)),
        testFeatures: wd.tensor(randn(9 * D, 12), [9, D]),
        testLabels: Array.from({ length: 9 }, (_, i) => i % 2),
        ks: [10],
      });
      expect(two[0].top5).toBe(100);
    });
  });

  it('errors: k larger than the train set, labels out of range, mismatched shapes', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      const trainFeatures = wd.randn([100, 8], { seed: 1 });
      const testFeatures = wd.randn([10, 8], { seed: 2 });
      const trainLabels = new Int32Array(100);
      const testLabels = new Int32Array(10);
      const base = { trainFeatures, trainLabels, testFeatures, testLabels, numClasses: 2, ks: [10, 100] };
      await expect(knnClassify({ ...base, ks: [10, 300] })).rejects.toThrow(/k = 300 is larger than the train set \(N = 100\)/);
      await expect(knnClassify({ ...base, testLabels: [0, 0, 0, 0, 0, 0, 0, 0, 0, 2] })).rejects.toThrow(/test label 9 is 2/);
      await expect(knnClassify({ ...base, testFeatures: wd.randn([10, 7]) })).rejects.toThrow(/\[10, 7\]/);
    });
  });

  it('extractFeatures runs the model per batch without gradients and concatenates', async () => {
    const wd = await getEngine();
    const live = wd.memory().liveBytes;
    await wd.scope(async () => {
      const w = wd.randn([6, 4], { seed: 4, requiresGrad: true });
      const model = { forward: (x: import('../../index.js').Tensor) => x.matmul(w).relu() };
      const xs = [wd.randn([3, 6], { seed: 5 }), wd.randn([5, 6], { seed: 6 })];
      async function* gen() {
        yield* xs;
      }
      const f = await extractFeatures(model, gen());
      expect(f.shape).toEqual([8, 4]);
      expect(f.requiresGrad).toBe(false);
      const want = [...(await model.forward(xs[0]).toArray()), ...(await model.forward(xs[1]).toArray())];
      expect(Array.from(await f.toArray())).toEqual(want);
      f.dispose();
    });
    expect(wd.memory().liveBytes).toBe(live);
  });
});
