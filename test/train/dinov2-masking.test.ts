/**
 * DINOv2's iBOT masks (train/dinov2/masking.ts) by their statistics over many draws, on the CPU:
 * - collate: exactly ⌊2B·0.5⌋ masked crops, one per ratio stratum of linspace(0.1, 0.5, n + 1)
 *   (their targets, sorted, fall one per stratum, with the stratum's mean), shuffled over the
 *   crop positions; counts ≤ target; indices, weights and upperbound as collate computes them;
 * - blocks: sides inside the grid (strictly smaller), aspect ratio within [0.3, 1/0.3] up to the
 *   rounding of the sides, log-uniform (symmetric in log h/w), area within the drawn range;
 * - the max-num-patches rule (no block adds more than the cap) and the 10-attempt loop (a grid
 *   where no block fits consumes exactly 10 × 2 draws and masks nothing);
 * - determinism from the Rng and its saved state.
 */
import { describe, expect, it } from 'vitest';

import { Rng } from '../../engine/random.js';
import { collateMasks, MaskingGenerator, officialMaxMaskPatches } from '../../train/dinov2/masking.js';

const linspace = (a: number, b: number, n: number) => Array.from({ length: n }, (_, i) => a + ((b - a) * i) / (n - 1));

describe('collate masks (collate_data_and_cast)', () => {
  const H = 14;
  const N = H * H; // 224/16
  const gen = new MaskingGenerator(H, H, { maxNumPatches: officialMaxMaskPatches(224, 16) });
  const images = 16; // 2B, B = 8
  const draws = 300;
  const rng = new Rng(7);
  const batches = Array.from({ length: draws }, () => collateMasks(gen, images, rng));
  const probs = linspace(0.1, 0.5, images / 2 + 1);

  it('masks exactly half of the global crops, one target per stratum, counts ≤ target ≤ N/2', () => {
    const strata: number[][] = probs.slice(1).map(() => []);
    let fill = 0;
    let masked = 0;
    for (const b of batches) {
      expect(b.images).toBe(images);
      expect(b.numPatches).toBe(N);
      const targets = [...b.targets].filter((t) => t > 0).sort((x, y) => x - y);
      expect(targets.length).toBe(images / 2);
      // Each sorted target lies in its stratum [⌊N p_k⌋, ⌊N p_{k+1}⌋].
      targets.forEach((t, k) => {
        expect(t).toBeGreaterThanOrEqual(Math.floor(N * probs[k]));
        expect(t).toBeLessThanOrEqual(Math.floor(N * probs[k + 1]));
        strata[k].push(t);
      });
      for (let i = 0; i < images; i++) {
        const c = b.counts[i];
        expect(c).toBe(b.masks.subarray(i * N, (i + 1) * N).reduce((a, x) => a + x, 0));
        expect(c).toBeLessThanOrEqual(b.targets[i]);
        expect(c).toBeLessThanOrEqual(N / 2);
        if (b.targets[i] === 0) expect(c).toBe(0);
        else {
          fill += c / b.targets[i];
          masked++;
        }
      }
      expect(b.upperbound).toBe(probs.slice(1).reduce((a, p) => a + Math.floor(N * p), 0));
    }
    // Within a stratum the target is ⌊N·U(p_k, p_{k+1})⌋: mean N·(p_k + p_{k+1})/2 − ½ (the floor),
    // standard error N·0.05/√12/√300 ≈ 0.16 patch.
    strata.forEach((ts, k) => {
      const mean = ts.reduce((a, x) => a + x, 0) / ts.length;
      expect(Math.abs(mean - (N * (probs[k] + probs[k + 1])) / 2 + 0.5), `stratum ${k}`).toBeLessThan(0.8);
    });
    // DINOv2 stops when a round adds nothing, so counts may stay below target, but rarely by much.
    const meanFill = fill / masked;
    console.log(`mean masked/target ${meanFill.toFixed(4)} over ${masked} masked crops`);
    expect(meanFill).toBeGreaterThan(0.95);
    expect(meanFill).toBeLessThanOrEqual(1);
  });

  it('shuffles which crops are masked (each position ≈ half of the draws)', () => {
    for (let i = 0; i < images; i++) {
      const f = batches.reduce((a, b) => a + (b.targets[i] > 0 ? 1 : 0), 0) / draws;
      // standard error 0.029: ±0.12 is 4σ
      expect(Math.abs(f - 0.5), `crop position ${i}`).toBeLessThan(0.12);
    }
  });

  it('indices list the masked patches in order; weights are 1/(masked patches of the image)', () => {
    for (const b of batches.slice(0, 50)) {
      const want: number[] = [];
      b.masks.forEach((m, i) => m && want.push(i));
      expect([...b.maskIndices]).toEqual(want);
      const perImage = new Float64Array(images);
      b.maskIndices.forEach((idx, j) => {
        const img = Math.floor(idx / N);
        expect(b.maskWeights[j]).toBe(Math.fround(1 / b.counts[img]));
        perImage[img] += b.maskWeights[j];
      });
      // Σ weights = 1 for every image with a masked patch, 0 for the others.
      perImage.forEach((s, i) => expect(s).toBeCloseTo(b.counts[i] > 0 ? 1 : 0, 5));
    }
  });

  it('the generator draws from the Rng only: same seed or restored state, same masks', () => {
    const a = new Rng(3);
    const b = new Rng(3);
    expect(collateMasks(gen, 8, a)).toEqual(collateMasks(gen, 8, b));
    const saved = a.state();
    const next = collateMasks(gen, 8, a);
    expect(collateMasks(gen, 8, Rng.fromState(saved))).toEqual(next);
    expect(collateMasks(gen, 8, a)).not.toEqual(next);
  });

  it('odd crop counts and other probabilities follow ⌊n·p⌋', () => {
    const b = collateMasks(gen, 6, new Rng(1), { maskProbability: 0.34, ratioMinMax: [0.2, 0.3] });
    const t = [...b.targets].filter((x) => x > 0).sort((x, y) => x - y);
    expect(t.length).toBe(2); // ⌊6·0.34⌋
    expect(t[0]).toBeGreaterThanOrEqual(Math.floor(N * 0.2));
    expect(t[1]).toBeLessThanOrEqual(Math.floor(N * 0.3));
  });
});

describe('block masking (MaskingGenerator)', () => {
  it("train.py's max_num_patches expression", () => {
    expect(officialMaxMaskPatches(224, 14)).toBe(128);
    expect(officialMaxMaskPatches(224, 16)).toBe(98);
    expect(officialMaxMaskPatches(32, 8)).toBe(8);
    expect(officialMaxMaskPatches(12, 4)).toBe(3); // not 0.5·9: Python's left-to-right //
  });

  it('blocks: sides inside the grid, aspect in [0.3, 3.33] up to rounding, log-uniform, area in range', () => {
    const H = 14;
    const W = 16; // not square: the h < H and w < W bounds differ
    const gen = new MaskingGenerator(H, W, { maxNumPatches: 100 });
    const rng = new Rng(11);
    let logSum = 0;
    let taller = 0;
    let wider = 0;
    const n = 4000;
    for (let k = 0; k < n; k++) {
      const target = 4 + rng.int(80);
      const mask = gen.generate(target, rng);
      const first = gen.lastBlocks[0];
      expect(first).toBeDefined();
      const { top, left, h, w } = first;
      expect(h).toBeGreaterThanOrEqual(1);
      expect(w).toBeGreaterThanOrEqual(1);
      expect(h).toBeLessThan(H);
      expect(w).toBeLessThan(W);
      expect(top + h).toBeLessThanOrEqual(H);
      expect(left + w).toBeLessThanOrEqual(W);
      // h = round(√(a·r)), w = round(√(a/r)): the true ratio r lies in [(h−½)/(w+½), (h+½)/(w−½)].
      expect((h + 0.5) / Math.max(w - 0.5, 1e-9)).toBeGreaterThanOrEqual(0.3);
      expect((h - 0.5) / (w + 0.5)).toBeLessThanOrEqual(1 / 0.3);
      // The first block on an empty grid adds h·w ≤ budget = min(target, max), and its area came
      // from U(4, budget): (h+½)(w+½) ≥ min(4, budget), (h−½)(w−½) ≤ max(4, budget).
      const budget = Math.min(target, 100);
      expect(h * w).toBeLessThanOrEqual(budget);
      expect((h + 0.5) * (w + 0.5)).toBeGreaterThanOrEqual(Math.min(4, budget));
      expect((h - 0.5) * (w - 0.5)).toBeLessThanOrEqual(Math.max(4, budget));
      for (let i = top; i < top + h; i++) for (let j = left; j < left + w; j++) expect(mask[i * W + j]).toBe(1);
      logSum += Math.log(h / w);
      if (h > w) taller++;
      if (w > h) wider++;
    }
    // log-uniform aspect on a symmetric range: E[log h/w] ≈ 0 (the W > H grid allows slightly more wide blocks)
    console.log(`mean log(h/w) ${(logSum / n).toFixed(4)}, taller ${taller}, wider ${wider}`);
    expect(Math.abs(logSum / n)).toBeLessThan(0.08);
    expect(Math.abs(taller - wider) / n).toBeLessThan(0.08);
  });

  it('no block adds more than max_num_patches; the count never exceeds the target', () => {
    const H = 12;
    const cap = 10;
    const gen = new MaskingGenerator(H, H, { maxNumPatches: cap });
    const rng = new Rng(5);
    for (let k = 0; k < 300; k++) {
      const target = 30 + rng.int(42);
      const mask = gen.generate(target, rng);
      const replay = new Uint8Array(H * H);
      let count = 0;
      for (const { top, left, h, w } of gen.lastBlocks) {
        let added = 0;
        for (let i = top; i < top + h; i++) {
          for (let j = left; j < left + w; j++) {
            if (!replay[i * H + j]) added++;
            replay[i * H + j] = 1;
          }
        }
        expect(added).toBeGreaterThan(0);
        expect(added).toBeLessThanOrEqual(Math.min(cap, target - count));
        count += added;
      }
      expect(replay).toEqual(mask);
      expect(count).toBeLessThanOrEqual(target);
      expect(gen.lastBlocks.length).toBeGreaterThanOrEqual(Math.ceil(Math.min(count, target) / cap));
    }
  });

  it('10 attempts: where no block fits, 20 draws are consumed and nothing is masked', () => {
    // On a 1×1 grid w < 1 never holds.
    const gen = new MaskingGenerator(1, 1);
    const rng = new Rng(9);
    const mask = gen.generate(1, rng);
    expect([...mask]).toEqual([0]);
    const ref = new Rng(9);
    for (let i = 0; i < 20; i++) ref.uniform();
    expect(rng.state()).toEqual(ref.state());
  });

  it('target 0 masks nothing and draws nothing', () => {
    const gen = new MaskingGenerator(4, 4);
    const rng = new Rng(2);
    const before = rng.state();
    expect(gen.generate(0, rng).every((x) => x === 0)).toBe(true);
    expect(rng.state()).toEqual(before);
  });
});
