/**
 * Curation selection steps on planted data: water-filling gives the counts worked out by hand,
 * hierarchical sampling splits budgets level by level exactly, deduplication removes every
 * planted near-duplicate and no distinct point (also with more copies than neighbours), relative
 * deduplication removes exactly the planted copies of the "eval" set, and retrieval returns the
 * rows a float64 brute-force search returns.
 */
import { describe, expect, it } from 'vitest';
import { Rng } from '../../index.js';
import { dedupAgainst, dedupPool } from '../../eval/curate/dedup.js';
import { nearestNeighbors } from '../../eval/curate/neighbors.js';
import { retrieveFromClusters, retrieveNearest } from '../../eval/curate/retrieve.js';
import { flatSizes, hierarchicalSample, waterFill } from '../../eval/curate/sample.js';
import { ArraySource } from '../../eval/curate/source.js';
import { getEngine } from '../helpers.js';
import { cosine, nearCopy, sphere } from './curate-data.js';

describe('water-filling and balanced sampling', () => {
  it('waterFill gives the hand-computed counts', () => {
    const sizes = [10, 3, 7, 1, 20];
    // Cut 5: 5 + 3 + 5 + 1 + 5 = 19.
    expect(Array.from(waterFill(sizes, 19, new Rng(1)))).toEqual([5, 3, 5, 1, 5]);
    // Target 20: cut 5 and one extra point for one of the clusters larger than 5 (0, 2 or 4).
    for (let seed = 0; seed < 20; seed++) {
      const got = Array.from(waterFill(sizes, 20, new Rng(seed)));
      const extra = got.map((g, i) => g - [5, 3, 5, 1, 5][i]);
      expect(extra.reduce((a, b) => a + b, 0)).toBe(1);
      expect(extra[1] + extra[3]).toBe(0);
      expect(extra.every((x) => x === 0 || x === 1)).toBe(true);
    }
    // Target 36: cut 10 gives 10 + 3 + 7 + 1 + 10 = 31, cut 15 gives 36.
    expect(Array.from(waterFill(sizes, 36, new Rng(2)))).toEqual([10, 3, 7, 1, 15]);
    expect(Array.from(waterFill(sizes, 41, new Rng(2)))).toEqual(sizes);
    expect(Array.from(waterFill(sizes, 1000, new Rng(2)))).toEqual(sizes);
    expect(Array.from(waterFill(sizes, 0, new Rng(2)))).toEqual([0, 0, 0, 0, 0]);
  });

  it('splits the budget top-down exactly and draws distinct points of the right clusters', () => {
    // Level-1 clusters 0..4 with 50, 5, 5, 8, 100 points; level 2: A = {0, 1, 2} (60), B = {3, 4} (108).
    const leafSizes = [50, 5, 5, 8, 100];
    const assign1: number[] = [];
    leafSizes.forEach((s, c) => {
      for (let i = 0; i < s; i++) assign1.push(c);
    });
    for (let i = assign1.length - 1; i > 0; i--) {
      const j = (i * 7919) % (i + 1);
      [assign1[i], assign1[j]] = [assign1[j], assign1[i]];
    }
    const levels = [
      { k: 5, assign: Int32Array.from(assign1) },
      { k: 2, assign: Int32Array.from([0, 0, 0, 1, 1]) },
    ];
    expect(flatSizes(levels).map((s) => Array.from(s))).toEqual([leafSizes, [60, 108]]);
    // 40 → [20, 20] at the top; A: [50, 5, 5] with 20 → [10, 5, 5]; B: [8, 100] with 20 → [8, 12].
    const r = hierarchicalSample(levels, 40, new Rng(3));
    expect(Array.from(r.perLeaf)).toEqual([10, 5, 5, 8, 12]);
    expect(r.points.length).toBe(40);
    expect(new Set(r.points).size).toBe(40);
    const per = [0, 0, 0, 0, 0];
    for (const p of r.points) per[assign1[p]]++;
    expect(per).toEqual([10, 5, 5, 8, 12]);
    // The same seed gives the same selection; the whole pool when the target covers it.
    expect(Array.from(hierarchicalSample(levels, 40, new Rng(3)).points)).toEqual(Array.from(r.points));
    expect(hierarchicalSample(levels, 500, new Rng(3)).points.length).toBe(168);
  });
});

describe('deduplication', () => {
  const dim = 32;

  it('removes every planted near-duplicate and no distinct point', async () => {
    const e = await getEngine();
    const nBase = 300;
    const base = sphere(nBase, dim, 1);
    let maxBase = -1;
    for (let i = 0; i < nBase; i++) for (let j = 0; j < i; j++) maxBase = Math.max(maxBase, cosine(base, i, base, j, dim));
    const T = 0.95;
    expect(maxBase, 'the originals are distinct at this threshold').toBeLessThan(T - 0.1);
    // After the originals: 1-3 near copies of 60 originals (cosine ≈ 0.999), and 12 exact copies
    // of original 7 (more copies than the k = 4 neighbours each row looks at).
    const rng = new Rng(2);
    const rows: Float32Array[] = [];
    for (let c = 0; c < 60; c++) {
      const src = (c * 37) % nBase;
      for (let t = 0; t <= c % 3; t++) rows.push(nearCopy(base, dim, src, 0.03, rng));
    }
    for (let t = 0; t < 12; t++) rows.push(base.slice(7 * dim, 8 * dim));
    const x = new Float32Array((nBase + rows.length) * dim);
    x.set(base);
    rows.forEach((r, i) => x.set(r, (nBase + i) * dim));
    const pool = new ArraySource(x, dim, 'pool');
    const r = await dedupPool(e, pool, T, 4, { dbRows: 100 }); // several database chunks
    expect(Array.from(r.keep.subarray(0, nBase)).every((v) => v === 1), 'every original kept').toBe(true);
    expect(Array.from(r.keep.subarray(nBase)).every((v) => v === 0), 'every copy removed').toBe(true);
    expect(r.removed).toBe(rows.length);
    expect(r.groups).toBe(61);
    expect(r.largestGroup).toBe(13);
  });

  it('relative deduplication removes exactly the pool rows copied in the eval set', async () => {
    const e = await getEngine();
    const pool = sphere(500, dim, 3);
    const rng = new Rng(4);
    const copied = [3, 44, 45, 120, 121, 250, 333, 499];
    const evalRows = new Float32Array((copied.length + 50) * dim);
    copied.forEach((i, q) => evalRows.set(nearCopy(pool, dim, i, 0.05, rng), q * dim));
    evalRows.set(sphere(50, dim, 5), copied.length * dim);
    const r = await dedupAgainst(e, new ArraySource(pool, dim), new ArraySource(evalRows, dim), 0.9, { dbRows: 16 });
    const removed: number[] = [];
    r.remove.forEach((v, i) => {
      if (v) removed.push(i);
    });
    expect(removed).toEqual(copied);
    expect(r.removed).toBe(copied.length);
  });
});

describe('retrieval', () => {
  const dim = 24;

  it('nearest neighbours equal a float64 brute-force search, across database chunks', async () => {
    const e = await getEngine();
    const db = sphere(700, dim, 6);
    const q = sphere(45, dim, 7);
    const k = 5;
    const got: number[][] = [];
    await nearestNeighbors(e, new ArraySource(q, dim), new ArraySource(db, dim), { k, dbRows: 128 }, (c) => {
      for (let r = 0; r < c.rows; r++) got.push(Array.from(c.ids.subarray(r * k, (r + 1) * k)));
    });
    for (let r = 0; r < 45; r++) {
      const order = [...Array(700).keys()].sort((a, b) => cosine(q, r, db, b, dim) - cosine(q, r, db, a, dim) || a - b);
      expect(got[r], `query ${r}`).toEqual(order.slice(0, k));
    }
  });

  it('sample mode returns the union of every query’s N nearest rows; cluster mode draws M per hit cluster', async () => {
    const e = await getEngine();
    const pool = sphere(400, dim, 8);
    const rng = new Rng(9);
    const targets = [5, 17, 17, 230, 399];
    const q = new Float32Array(targets.length * dim);
    targets.forEach((i, t) => q.set(nearCopy(pool, dim, i, 0.01, rng), t * dim));
    expect(Array.from(await retrieveNearest(e, new ArraySource(pool, dim), new ArraySource(q, dim), 1))).toEqual([5, 17, 230, 399]);
    const three = await retrieveNearest(e, new ArraySource(pool, dim), new ArraySource(q, dim), 3);
    const want = new Set<number>();
    targets.forEach((_, t) => {
      [...Array(400).keys()].sort((a, b) => cosine(q, t, pool, b, dim) - cosine(q, t, pool, a, dim) || a - b).slice(0, 3).forEach((i) => want.add(i));
    });
    expect(Array.from(three)).toEqual([...want].sort((a, b) => a - b));

    const clusters = Int32Array.from({ length: 100 }, (_, i) => i % 4); // sizes 25 each
    const picked = retrieveFromClusters([1, 3, 3], clusters, 4, 10, new Rng(1));
    expect(picked.length).toBe(20);
    expect(Array.from(picked).filter((i) => clusters[i] === 1).length).toBe(10);
    expect(Array.from(picked).filter((i) => clusters[i] === 3).length).toBe(10);
    expect(retrieveFromClusters([2], clusters, 4, 100, new Rng(1)).length).toBe(25);
  });
});
