/**
 * Index selection (kernels/gather.ts, ops.indexSelect) against float64: the forward on dims 0 and
 * 1 at shapes that are not multiples of the workgroup (rank 1–3, strided views, repeated and
 * unordered indices, rows never selected), the backward (the scatter-add) against the float64
 * adjoint and against central finite differences of the float64 forward, the CSR inverse on the
 * host, bitwise determinism of the backward, and the refusals.
 *
 * Tolerances: the forward copies, so it is exact; the backward adds at most (repeats of one row)
 * f32 values in a fixed order, so it is compared at rtol 1e-6 (the float64 sum rounded a few
 * times), and the finite differences of a linear function at 1e-9 (float64 roundoff).
 */
import { describe, expect, it } from 'vitest';
import { indexAddRef, indexSelectRef, invertIndices } from '../../kernels/gather.js';
import { ops } from '../../index.js';
import { expectClose, finiteDiff, getEngine, randn, read } from '../helpers.js';

const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

interface Case {
  name: string;
  shape: number[];
  dim: number;
  idx: number[];
}

const CASES: Case[] = [
  { name: 'dim 0 of (37, 13): unordered, repeated, rows never picked', shape: [37, 13], dim: 0, idx: [5, 0, 36, 5, 17, 17, 17, 2] },
  { name: 'dim 1 of (3, 29, 5)', shape: [3, 29, 5], dim: 1, idx: [28, 1, 1, 9, 0, 14, 22] },
  { name: 'dim 1 of (7, 41) (inner size 1)', shape: [7, 41], dim: 1, idx: [40, 3, 3, 3, 12] },
  { name: 'dim 0 of a vector (300)', shape: [300], dim: 0, idx: Array.from({ length: 257 }, (_, j) => (j * 37) % 300) },
  { name: 'dim -1 of (2, 3, 11)', shape: [2, 3, 11], dim: -1, idx: [10, 0] },
  // The iBOT gather's shape: (2B·hw, D) rows, M of them.
  { name: 'dim 0 of (1024, 64): 300 masked patches', shape: [1024, 64], dim: 0, idx: Array.from({ length: 300 }, (_, j) => (j * 7 + (j >> 3)) % 1024) },
];

describe('indexSelect', () => {
  it.each(CASES)('$name: forward exact, backward = float64 scatter-add, and = finite differences', async ({ shape, dim, idx }) => {
    const wd = await getEngine();
    await wd.scope(async () => {
      const d = dim < 0 ? dim + shape.length : dim;
      const xs = randn(numel(shape), 1);
      const x = wd.tensor(xs, shape, { requiresGrad: true });
      const y = ops.indexSelect(x, dim, idx);
      const yShape = [...shape];
      yShape[d] = idx.length;
      expect(y.shape).toEqual(yShape);
      const want = indexSelectRef(xs, shape, d, idx);
      expect(Array.from(await read(y))).toEqual(Array.from(want));

      const gs = randn(numel(yShape), 2);
      y.mul(wd.tensor(gs, yShape)).sum().backward();
      const dx = await read(x.grad!);
      const adj = indexAddRef(gs, shape, d, idx);
      expectClose(dx, adj, 1e-6, 1e-7, 'dx');
      // Every untouched row is exactly 0; the others not (random g).
      const picked = new Set(idx);
      const { O, R, I } = { O: numel(shape.slice(0, d)), R: shape[d], I: numel(shape.slice(d + 1)) };
      for (let o = 0; o < O; o++) for (let r = 0; r < R; r++) for (let i = 0; i < I; i++) {
        const v = dx[(o * R + r) * I + i];
        if (!picked.has(r)) expect(v).toBe(0);
      }
      // Central differences of the float64 forward f(x) = <g, select(x)> on a few elements.
      const f = (xx: Float64Array) => indexSelectRef(xx, shape, d, idx).reduce((a, v, k) => a + v * gs[k], 0);
      const probe = Array.from({ length: Math.min(40, xs.length) }, (_, k) => (k * 97) % xs.length);
      const fd = finiteDiff((sub) => {
        const xx = Float64Array.from(xs);
        probe.forEach((p, k) => (xx[p] = sub[k]));
        return f(xx);
      }, probe.map((p) => xs[p]), 1e-3);
      expectClose(probe.map((p) => dx[p]), fd, 1e-6, 1e-9, 'dx vs finite differences');
    });
  });

  it('reads strided views (a transposed input) and its gradient lands in the base tensor', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      const xs = randn(9 * 14, 3);
      const base = wd.tensor(xs, [9, 14], { requiresGrad: true });
      const xt = base.transpose(0, 1); // (14, 9), not contiguous
      const idx = [13, 0, 6, 6];
      const y = ops.indexSelect(xt, 0, idx);
      const xtHost = Float64Array.from({ length: 14 * 9 }, (_, k) => xs[(k % 9) * 14 + Math.floor(k / 9)]);
      expect(Array.from(await read(y))).toEqual(Array.from(indexSelectRef(xtHost, [14, 9], 0, idx)));
      const gs = randn(4 * 9, 4);
      y.mul(wd.tensor(gs, [4, 9])).sum().backward();
      const adjT = indexAddRef(gs, [14, 9], 0, idx);
      const adj = Float64Array.from({ length: 9 * 14 }, (_, k) => adjT[(k % 14) * 9 + Math.floor(k / 14)]);
      expectClose(await read(base.grad!), adj, 1e-6, 1e-7, 'd base');
    });
  });

  it('the backward is bitwise deterministic (fixed summation order, no atomics)', async () => {
    const wd = await getEngine();
    const idx = Array.from({ length: 500 }, (_, j) => (j * 13) % 7); // every row picked ~70 times
    const run = () =>
      wd.scope(async () => {
        const x = wd.tensor(randn(7 * 33, 5), [7, 33], { requiresGrad: true });
        ops.indexSelect(x, 0, idx).mul(wd.tensor(randn(500 * 33, 6), [500, 33])).sum().backward();
        return x.grad!.toArray();
      });
    const a = await run();
    const b = await run();
    // Bit patterns, not values (runs in the browser too: no Node Buffer).
    expect(Array.from(new Uint32Array(a.buffer, a.byteOffset, a.byteLength / 4))).toEqual(Array.from(new Uint32Array(b.buffer, b.byteOffset, b.byteLength / 4)));
  });

  it('the CSR inverse lists each source row’s positions in ascending order', () => {
    const { offsets, lists } = invertIndices([3, 1, 3, 0, 3], 5);
    expect(Array.from(offsets)).toEqual([0, 1, 2, 2, 5, 5]);
    expect(Array.from(lists)).toEqual([3, 1, 0, 2, 4]);
  });

  it('frees its saved indices with the graph (no leak), also without gradients', async () => {
    const wd = await getEngine();
    const live = wd.memory().liveBytes;
    await wd.scope(async () => {
      const x = wd.tensor(randn(50, 7), [10, 5], { requiresGrad: true });
      ops.indexSelect(x, 0, [1, 2, 2]).sum().backward();
      await x.grad!.toArray();
      wd.noGrad(() => ops.indexSelect(x, 1, [4]));
    });
    expect(wd.memory().liveBytes).toBe(live);
  });

  it('refuses out-of-range, fractional and missing indices, and a bad dim', async () => {
    const wd = await getEngine();
    wd.scope(() => {
      const x = wd.tensor(randn(12, 8), [3, 4]);
      expect(() => ops.indexSelect(x, 0, [0, 3])).toThrow(/index 3 at position 1 is outside \[0, 3\)/);
      expect(() => ops.indexSelect(x, 1, [-1])).toThrow(/outside \[0, 4\)/);
      expect(() => ops.indexSelect(x, 1, [1.5])).toThrow(/outside/);
      expect(() => ops.indexSelect(x, 0, [])).toThrow(/no indices/);
      expect(() => ops.indexSelect(x, 2, [0])).toThrow();
    });
  });
});
