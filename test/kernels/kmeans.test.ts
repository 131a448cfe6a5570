/**
 * K-means kernels (kernels/kmeans.ts) against their float64 references, in both variants ('cpu':
 * register tile with and without subgroup sharing; 'gpu': workgroup-memory tiles), at sizes that
 * are multiples of no tile (points 1…300 against TM = 16 / BM = 64, centroids 1…130 against the
 * 32- and 64-wide column tiles, widths 37 → padded 40, 4 and 12).
 *
 * Tolerances. Distances are formed as ‖x‖² + ‖c‖² − 2x·c in f32: the error is ≲ a few ulps of
 * ‖x‖² + ‖c‖² (plus √D ulps of the dot), so we allow 1e-5·(‖x‖² + ‖c‖²)+1e-6. An argmin may
 * legitimately differ from float64 when two centroids are that close, so the general check is
 * "the chosen centroid is within that tolerance of the true minimum"; on data whose nearest
 * centroid wins by a clear margin (and for exact duplicates, which must go to the lower index)
 * the argmin must be exactly the reference's. A wrong tile edge or a dropped column is an O(1)
 * error and fails both.
 */
import { describe, expect, it } from 'vitest';
import type { Engine, Tensor } from '../../index.js';
import {
  accumulateCentroids,
  assignNearest,
  assignRef,
  blockSums,
  blockSumsRef,
  candidateDistances,
  candidateDistancesRef,
  centroidSumsRef,
  D2_BLOCK,
  gatherRows,
  type GpuRows,
  type KmeansTuning,
  packDraws,
  pickD2,
  pickD2Ref,
} from '../../kernels/kmeans.js';
import { expectClose, getEngine, randn } from '../helpers.js';

/** Pads rows of width D to a multiple of 4 and uploads them with their float64 norms. */
function upload(e: Engine, data: ArrayLike<number>, D: number): GpuRows {
  const n = data.length / D;
  const D4 = Math.ceil(D / 4) * 4;
  const x = new Float32Array(n * D4);
  const xn = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let d = 0; d < D; d++) {
      const v = Math.fround(data[i * D + d]);
      x[i * D4 + d] = v;
      s += v * v;
    }
    xn[i] = s;
  }
  return { x: e.tensor(x, [n, D4]), xn: e.tensor(xn, [n]) };
}

async function readU32(t: Tensor): Promise<Uint32Array> {
  return new Uint32Array(await t.engine.device.read(t.buffer, 0, t.size * 4));
}

function u32Tensor(e: Engine, v: ArrayLike<number>): Tensor {
  const t = e.empty([Math.max(v.length, 1)]);
  if (v.length) e.device.write(t.buffer, 0, Uint32Array.from(v));
  return t;
}

function norm2(a: ArrayLike<number>, i: number, D: number): number {
  let s = 0;
  for (let d = 0; d < D; d++) s += Math.fround(a[i * D + d]) ** 2;
  return s;
}

const CONFIGS: { name: string; variants: 'cpu' | 'gpu'; tuning: KmeansTuning }[] = [
  { name: 'cpu', variants: 'cpu', tuning: {} },
  { name: 'cpu without subgroups', variants: 'cpu', tuning: { subgroups: false } },
  { name: 'gpu', variants: 'gpu', tuning: {} },
];

describe('assignNearest', () => {
  for (const cfg of CONFIGS) {
    it(`matches float64 (${cfg.name})`, async () => {
      const e = await getEngine(cfg.variants);
      await e.scope(async () => {
        let seed = 1;
        for (const [n, k, D] of [
          [1, 1, 4],
          [7, 5, 37],
          [17, 33, 12],
          [129, 67, 40],
          [300, 130, 37],
          [65, 1, 8],
        ]) {
          const xs = randn(n * D, seed++);
          const cs = randn(k * D, seed++);
          const ref = assignRef(Float64Array.from(xs), Float64Array.from(cs), D);
          const { idx, part } = assignNearest(upload(e, xs, D), upload(e, cs, D), cfg.tuning);
          const gi = await readU32(idx);
          const gd = Float64Array.from(await part.toArray(), (p, i) => p + norm2(xs, i, D));
          for (let i = 0; i < n; i++) {
            expect(gi[i], `row ${i} index in range`).toBeLessThan(k);
            const tol = 1e-5 * (norm2(xs, i, D) + norm2(cs, gi[i], D)) + 1e-6;
            const chosen = assignRef(xs.subarray(i * D, (i + 1) * D), cs.subarray(gi[i] * D, (gi[i] + 1) * D), D).dist[0];
            if (!(chosen <= ref.dist[i] + tol)) throw new Error(`n=${n} k=${k} D=${D} row ${i}: picked ${gi[i]} at ${chosen}, best ${ref.idx[i]} at ${ref.dist[i]}`);
            expect(Math.abs(gd[i] - ref.dist[i]), `n=${n} k=${k} row ${i} distance`).toBeLessThanOrEqual(tol);
          }
        }
      });
    });

    it(`argmin is exact with a clear margin and ties go to the lower index (${cfg.name})`, async () => {
      const e = await getEngine(cfg.variants);
      await e.scope(async () => {
        // 70 centroids, the last 20 exact copies of centroids 3..22; points near a centroid.
        const D = 21;
        const kBase = 50;
        const base = randn(kBase * D, 11, 10);
        const cs = new Float32Array(70 * D);
        cs.set(base);
        for (let j = 0; j < 20; j++) cs.set(base.subarray((3 + j) * D, (4 + j) * D), (kBase + j) * D);
        const n = 203;
        const xs = new Float32Array(n * D);
        const noise = randn(n * D, 12, 0.1);
        for (let i = 0; i < n; i++) for (let d = 0; d < D; d++) xs[i * D + d] = base[(i % kBase) * D + d] + noise[i * D + d];
        const { idx } = assignNearest(upload(e, xs, D), upload(e, cs, D), cfg.tuning);
        const gi = await readU32(idx);
        const ref = assignRef(xs, base, D); // the copies never win: ties go to the lower index
        expect(Array.from(gi)).toEqual(Array.from(ref.idx));
      });
    });
  }
});

describe('k-means++ kernels', () => {
  for (const cfg of CONFIGS) {
    it(`candidateDistances matches float64 (${cfg.name})`, async () => {
      const e = await getEngine(cfg.variants);
      await e.scope(async () => {
        let seed = 100;
        for (const [n, L, D] of [
          [1, 1, 4],
          [33, 3, 37],
          [257, 16, 12],
          [100, 9, 40],
        ]) {
          const xs = randn(n * D, seed++);
          const ys = randn(16 * D, seed++); // 16 rows, only the first L are candidates
          const closest = Float32Array.from(randn(n, seed++), (v) => Math.abs(v) * 2 * D);
          const want = candidateDistancesRef(xs, closest, ys.subarray(0, L * D), D);
          const dm = candidateDistances(upload(e, xs, D), e.tensor(closest, [n]), upload(e, ys, D), L, cfg.tuning);
          expect(dm.shape).toEqual([L, n]);
          const got = await dm.toArray();
          const tol = want.map((_, q) => 1e-5 * (norm2(xs, q % n, D) + norm2(ys, Math.floor(q / n), D)) + 1e-6);
          for (let q = 0; q < want.length; q++) {
            if (!(Math.abs(got[q] - want[q]) <= tol[q])) throw new Error(`n=${n} L=${L} entry ${q}: ${got[q]} vs ${want[q]}`);
          }
        }
      });
    });
  }

  it('blockSums matches float64 around the block length', async () => {
    const e = await getEngine();
    await e.scope(async () => {
      for (const n of [1, D2_BLOCK - 1, D2_BLOCK, D2_BLOCK + 1, 5 * D2_BLOCK + 77]) {
        const L = 3;
        const m = Float32Array.from(randn(L * n, n), Math.abs);
        const p = blockSums(e.tensor(m, [L, n]));
        expectClose(await p.toArray(), blockSumsRef(m, L, n), 1e-6, 1e-6, `n=${n}`);
      }
    });
  });

  it('pickD2 finds the first row whose cumulative D² exceeds the residual, only for its chunk', async () => {
    const e = await getEngine();
    await e.scope(async () => {
      const n = 3 * D2_BLOCK + 10;
      const closest = Float32Array.from(randn(n, 7), (v) => (v > 0.3 ? v : 0)); // many zeros
      closest.fill(0, D2_BLOCK, 2 * D2_BLOCK - 5); // block 1 nearly empty
      const sums = blockSumsRef(closest, 1, n);
      const draws = [
        { chunk: 2, block: 0, residual: 0 },
        { chunk: 2, block: 0, residual: sums[0] * 0.37 },
        { chunk: 2, block: 1, residual: sums[1] * 0.5 },
        { chunk: 2, block: 3, residual: sums[3] * 0.999 },
        { chunk: 2, block: 2, residual: sums[2] * 2 }, // past the block's mass: its last row with D² > 0
        { chunk: 5, block: 0, residual: 0 }, // another chunk's draw: slot untouched
      ];
      const ids = u32Tensor(e, Array(draws.length).fill(0xdeadbeef));
      const packed = packDraws(draws);
      const dt = e.empty([packed.length / 4]);
      e.device.write(dt.buffer, 0, packed);
      pickD2(e.tensor(closest, [n]), dt, draws.length, 2, 1000, ids);
      const got = await readU32(ids);
      draws.slice(0, 5).forEach((d, t) => expect(got[t], `draw ${t}`).toBe(1000 + pickD2Ref(closest, d.block, d.residual)));
      expect(got[5]).toBe(0xdeadbeef);
      for (let t = 0; t < 5; t++) expect(closest[got[t] - 1000], `draw ${t} lands on mass`).toBeGreaterThan(0);
    });
  });

  it('gatherRows copies the rows of this chunk and their norms', async () => {
    const e = await getEngine();
    await e.scope(async () => {
      const D = 7;
      const xs = randn(20 * D, 3);
      const pts = upload(e, xs, D);
      const out = upload(e, new Float32Array(4 * D).fill(-1), D);
      gatherRows(pts, u32Tensor(e, [105, 119, 99, 100]), 4, 100, out);
      const gx = await out.x.toArray();
      const gn = await out.xn.toArray();
      const row = (i: number) => Array.from(pts.x.shape[1] === 8 ? [...xs.subarray(i * D, (i + 1) * D), 0] : []);
      expect(Array.from(gx.subarray(0, 8))).toEqual(row(5));
      expect(Array.from(gx.subarray(8, 16))).toEqual(row(19));
      expect(Array.from(gx.subarray(16, 24))).toEqual(Array(7).fill(-1).concat([0])); // id 99: not in this chunk
      expect(Array.from(gx.subarray(24, 32))).toEqual(row(0));
      expect(gn[0]).toBeCloseTo(norm2(xs, 5, D), 4);
      expect(gn[3]).toBeCloseTo(norm2(xs, 0, D), 4);
    });
  });
});

describe('accumulateCentroids', () => {
  /** CSR of rows [start, end) by cluster, each cluster's rows in order (local row numbers). */
  function csr(assign: Int32Array, k: number, start: number, end: number): { off: Uint32Array; mem: Uint32Array } {
    const off = new Uint32Array(k + 1);
    for (let i = start; i < end; i++) off[assign[i] + 1]++;
    for (let c = 0; c < k; c++) off[c + 1] += off[c];
    const fill = off.slice(0, k);
    const mem = new Uint32Array(end - start);
    for (let i = start; i < end; i++) mem[fill[assign[i]]++] = i - start;
    return { off, mem };
  }

  it('sums to float64 accuracy, far beyond plain f32, and bit-identically for any chunking', async () => {
    const e = await getEngine();
    await e.scope(async () => {
      // Values 1000 + small noise: a plain f32 running sum of ~3600 of them drops the noise
      // (8.9e-8 relative error here); the TwoSum pair keeps it (its lo word's own rounding is
      // the limit: ≲ 1e-10 relative).
      const n = 9001;
      const D = 12;
      const k = 3;
      const noise = randn(n * D, 21, 1e-3);
      const xs = Float32Array.from(noise, (v) => 1000 + v);
      const assign = Int32Array.from({ length: n }, (_, i) => (i * 7) % 5 === 0 ? 2 : i % 2);
      const want = centroidSumsRef(xs, assign, k, D).sums;
      const runChunks = async (bounds: number[]) => {
        const hi = e.zeros([k, D]);
        const lo = e.zeros([k, D]);
        for (let b = 0; b + 1 < bounds.length; b++) {
          const { off, mem } = csr(assign, k, bounds[b], bounds[b + 1]);
          const x = e.tensor(xs.subarray(bounds[b] * D, bounds[b + 1] * D), [bounds[b + 1] - bounds[b], D]);
          accumulateCentroids(x, u32Tensor(e, off), u32Tensor(e, mem), hi, lo);
        }
        return { hi: await hi.toArray(), lo: await lo.toArray() };
      };
      const one = await runChunks([0, n]);
      const got = Float64Array.from(one.hi, (h, q) => h + one.lo[q]);
      // Plain f32 accumulation, for comparison: the bound below must reject it.
      const naive = new Float64Array(k * D);
      for (let i = 0; i < n; i++) for (let d = 0; d < D; d++) naive[assign[i] * D + d] = Math.fround(naive[assign[i] * D + d] + xs[i * D + d]);
      let worstGot = 0;
      let worstNaive = 0;
      for (let q = 0; q < want.length; q++) {
        worstGot = Math.max(worstGot, Math.abs(got[q] - want[q]) / want[q]);
        worstNaive = Math.max(worstNaive, Math.abs(naive[q] - want[q]) / want[q]);
      }
      // The kernel's exact arithmetic, replayed in f32 on the CPU: the GPU pairs must equal it bit
      // for bit (a compiler that folds the error term away, as Mesa's NIR did before the
      // uniform-1.0 guard, fails here).
      const sim = { hi: new Float32Array(k * D), lo: new Float32Array(k * D) };
      for (let i = 0; i < n; i++) {
        for (let d = 0; d < D; d++) {
          const q = assign[i] * D + d;
          const [h, x] = [sim.hi[q], xs[i * D + d]];
          const s2 = Math.fround(h + x);
          const bp = Math.fround(s2 - h);
          const ap = Math.fround(s2 - bp);
          sim.lo[q] = Math.fround(sim.lo[q] + Math.fround(Math.fround(h - ap) + Math.fround(x - bp)));
          sim.hi[q] = s2;
        }
      }
      expect(Array.from(one.hi)).toEqual(Array.from(sim.hi));
      expect(Array.from(one.lo)).toEqual(Array.from(sim.lo));
      expect(worstNaive, 'plain f32 would fail this bound').toBeGreaterThan(1e-9);
      expect(worstGot).toBeLessThan(1e-10);
      for (const bounds of [
        [0, 1, 4000, n],
        [0, 4096, 8192, n],
        [0, 17, 18, 19, 5000, n - 1, n],
      ]) {
        const r = await runChunks(bounds);
        expect(Array.from(r.hi), `hi, chunks ${bounds}`).toEqual(Array.from(one.hi));
        expect(Array.from(r.lo), `lo, chunks ${bounds}`).toEqual(Array.from(one.lo));
      }
    });
  });
});
