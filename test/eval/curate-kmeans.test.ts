/**
 * Curation k-means (eval/curate/kmeans.ts) on synthetic embeddings with planted clusters:
 * Lloyd equals the float64 reference from the same initialisation, k-means++ picks the rows the
 * float64 reference picks from the same random stream, results are bit-identical for every chunk
 * size and for resident vs streamed points, empty clusters keep their centroid, and resampled and
 * hierarchical levels have the documented shapes and recover the planted structure.
 */
import { describe, expect, it } from 'vitest';
import { Rng } from '../../index.js';
import { ChunkedRows } from '../../eval/curate/chunks.js';
import {
  assignPass,
  clusterLevel,
  closestPerCluster,
  hierarchicalKmeans,
  kmeans,
  kmeansPlusPlus,
  kmeansPlusPlusRef,
  lloyd,
  lloydRef,
  randomInit,
} from '../../eval/curate/kmeans.js';
import { ArraySource } from '../../eval/curate/source.js';
import { getEngine } from '../helpers.js';
import { blobs } from './curate-data.js';

/** Cluster labels agree up to a renaming (every planted blob maps to one cluster and back). */
function samePartition(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  const ab = new Map<number, number>();
  const ba = new Map<number, number>();
  for (let i = 0; i < a.length; i++) {
    if ((ab.get(a[i]) ?? b[i]) !== b[i] || (ba.get(b[i]) ?? a[i]) !== a[i]) return false;
    ab.set(a[i], b[i]);
    ba.set(b[i], a[i]);
  }
  return true;
}

describe('curation k-means', () => {
  it('Lloyd equals the float64 reference from the same initialisation', async () => {
    const e = await getEngine();
    const dim = 37;
    // Overlapping blobs (spread 2, σ 1): assignments move for several iterations.
    const { x } = blobs([150, 90, 60, 33, 7], dim, 1, 2, 1);
    const src = new ArraySource(x, dim);
    const k = 6;
    const init = randomInit(src, k, new Rng(3)).centroids;
    const ref = lloydRef(x, init, dim, 8);
    const chunks = new ChunkedRows(e, src, { chunkRows: 100 });
    try {
      const got = await lloyd(chunks, init, k, 8);
      expect(Array.from(got.assign)).toEqual(Array.from(ref.assign));
      for (let q = 0; q < ref.centroids.length; q++) {
        expect(Math.abs(got.centroids[q] - ref.centroids[q]), `centroid value ${q}`).toBeLessThanOrEqual(1e-6 * (1 + Math.abs(ref.centroids[q])));
      }
      expect(Math.abs(got.objective - ref.objective) / ref.objective).toBeLessThan(1e-5);
      expect(got.objectives.length).toBe(9);
      for (let p = 1; p < got.objectives.length; p++) expect(got.objectives[p]).toBeLessThanOrEqual(got.objectives[p - 1] * (1 + 1e-6));
    } finally {
      chunks.dispose();
    }
  });

  it('k-means++ picks the rows the float64 reference picks from the same random stream', async () => {
    const e = await getEngine();
    const dim = 12;
    const { x } = blobs([300, 200, 250, 120, 80, 40, 10], dim, 5, 3, 1);
    const src = new ArraySource(x, dim);
    for (const [k, chunkRows] of [
      [7, 256],
      [25, 512],
      [40, 1024],
    ]) {
      const got = await kmeansPlusPlus(e, src, k, new Rng(k), { chunkRows });
      const want = kmeansPlusPlusRef(x, dim, k, new Rng(k));
      expect(Array.from(got.rows), `k = ${k}`).toEqual(Array.from(want));
      expect(Array.from(got.centroids.subarray(0, dim))).toEqual(Array.from(x.subarray(want[0] * dim, (want[0] + 1) * dim)));
    }
  });

  it('is bit-identical for every chunk size, resident or streamed, and finds the planted clusters', async () => {
    const e = await getEngine();
    const dim = 20;
    const sizes = [400, 300, 250, 200, 150, 100, 60, 40];
    const { x, label } = blobs(sizes, dim, 9);
    const src = new ArraySource(x, dim);
    const run = (chunkRows: number | undefined, residentBytes?: number) =>
      kmeans(e, src, { k: sizes.length, iters: 6, seed: 4, chunkRows, residentBytes });
    const base = await run(undefined);
    expect(samePartition(base.assign, label)).toBe(true);
    for (const [chunkRows, resident] of [
      [256, undefined],
      [768, 0],
      [1280, 0],
    ] as const) {
      const r = await run(chunkRows, resident);
      expect(Array.from(r.assign), `chunk ${chunkRows}`).toEqual(Array.from(base.assign));
      expect(Array.from(r.centroids), `chunk ${chunkRows}`).toEqual(Array.from(base.centroids));
      expect(r.objective).toBe(base.objective);
    }
    // Lloyd alone is chunk-invariant for any chunk size (not only multiples of 256).
    const init = base.centroids.map((v, q) => v + ((q * 7919) % 13) / 13);
    const outs = [];
    for (const cr of [77, 500, 1505]) {
      const ch = new ChunkedRows(e, src, { chunkRows: cr, residentBytes: 0 });
      outs.push(await lloyd(ch, init, sizes.length, 3));
      ch.dispose();
    }
    expect(Array.from(outs[1].centroids)).toEqual(Array.from(outs[0].centroids));
    expect(Array.from(outs[2].centroids)).toEqual(Array.from(outs[0].centroids));
    // Centroids in blocks (as when k·D exceeds the binding limit) give the same pass exactly.
    const ch = new ChunkedRows(e, src, { chunkRows: 300 });
    const one = await assignPass(ch, init, sizes.length, { accumulate: true });
    for (const blockRows of [1, 3, 5]) {
      const got = await assignPass(ch, init, sizes.length, { accumulate: true, blockRows });
      expect(Array.from(got.assign), `blocks of ${blockRows}`).toEqual(Array.from(one.assign));
      expect(Array.from(got.dist)).toEqual(Array.from(one.dist));
      expect(Array.from(got.sums!)).toEqual(Array.from(one.sums!));
    }
    ch.dispose();
  });

  it('an empty cluster keeps its centroid', async () => {
    const e = await getEngine();
    const dim = 8;
    const { x } = blobs([50, 50], dim, 2);
    const src = new ArraySource(x, dim);
    const init = new Float32Array(3 * dim);
    init.set(x.subarray(0, dim), 0);
    init.set(x.subarray(dim, 2 * dim), dim);
    init.fill(1e6, 2 * dim); // far from every point: never nearest
    const chunks = new ChunkedRows(e, src);
    const r = await lloyd(chunks, init, 3, 4);
    chunks.dispose();
    expect(Array.from(r.centroids.subarray(2 * dim))).toEqual(Array(dim).fill(1e6));
    expect(r.assign.every((c) => c < 2)).toBe(true);
  });

  it('closestPerCluster takes the r nearest of each cluster, ties to the lower row', () => {
    const assign = Int32Array.from([0, 1, 0, 0, 1, 2, 0]);
    const dist = Float32Array.from([5, 1, 2, 2, 0, 9, 1]);
    expect(Array.from(closestPerCluster(assign, dist, 3, 2))).toEqual([1, 2, 4, 5, 6]);
    expect(Array.from(closestPerCluster(assign, dist, 4, 1))).toEqual([4, 5, 6]);
  });

  it('a resampled level and a two-level hierarchy have the documented shapes', async () => {
    const e = await getEngine();
    const dim = 16;
    const sizes = [500, 200, 120, 80, 60, 40, 30, 20, 15, 10, 8, 6, 4, 3, 2, 1];
    const { x, label } = blobs(sizes, dim, 13);
    const src = new ArraySource(x, dim);
    const lvl = await clusterLevel(e, src, { k: 16, steps: 3, sample: 5 }, { level: 1, iters: 5, seed: 1 });
    expect(lvl.centroids.length).toBe(16 * dim);
    expect(lvl.assign.length).toBe(src.rows);
    const levels = await hierarchicalKmeans(e, src, [
      { k: 16, steps: 1, sample: 1 },
      { k: 4, steps: 2, sample: 2 },
    ], { iters: 10, seed: 2, centroidSource: (_l, prev) => new ArraySource(prev.centroids, dim) });
    expect(levels.map((l) => l.assign.length)).toEqual([src.rows, 16]);
    expect(samePartition(levels[0].assign, label)).toBe(true);
    expect(new Set(levels[1].assign).size).toBeLessThanOrEqual(4);
    await expect(clusterLevel(e, src, { k: 3000, steps: 1, sample: 1 }, { level: 1, iters: 1 })).rejects.toThrow(/k = 3000 clusters for 1099 points/);
  });
});
