/**
 * Reductions against float64: sum / mean / max / argmax along every axis and over all elements, at
 * sizes around the pass length (so the multi-pass path and its padding are exercised), with
 * gradients checked against finite differences of the float64 reference.
 */
import { describe, expect, it } from 'vitest';
import { reduceRef } from '../../kernels/reduce.js';
import { expectClose, finiteDiff, getEngine, randn, read } from '../helpers.js';

describe('reductions', () => {
  const shapes = [[1], [7], [13, 31], [3, 5, 67], [2, 1, 9]];
  for (const op of ['sum', 'mean', 'max', 'argmax'] as const) {
    it(`${op} along each axis matches float64`, async () => {
      const wd = await getEngine();
      await wd.scope(async () => {
        for (const shape of shapes) {
          const n = shape.reduce((a, b) => a * b, 1);
          const xs = randn(n, n);
          const x = wd.tensor(xs, shape);
          for (let axis = 0; axis < shape.length; axis++) {
            const y = x[op](axis);
            expect(y.shape).toEqual(shape.filter((_, i) => i !== axis));
            const want = reduceRef(xs, shape, axis, op);
            expectClose(await y.toArray(), want, 1e-5, 1e-6, `${op} ${JSON.stringify(shape)} axis ${axis}`);
            const yk = x[op](axis - shape.length, true);
            expect(yk.shape).toEqual(shape.map((s, i) => (i === axis ? 1 : s)));
          }
        }
      });
    });
  }

  it('sum and max over all elements, across the multi-pass boundary', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      for (const n of [1, 1023, 1024, 1025, 4096 * 3 + 5, 1_048_577]) {
        const xs = randn(n, n);
        const x = wd.tensor(xs, [n]);
        let s = 0;
        let m = -Infinity;
        for (const v of xs) {
          s += v;
          m = Math.max(m, v);
        }
        // f32 accumulation over n terms: error grows ~ sqrt(n)·eps·|x|
        expectClose([await x.sum().item()], [s], 1e-5, 1e-6 * Math.sqrt(n) * 4, `sum n=${n}`);
        expect(await x.max().item()).toBe(Math.fround(m));
        expect(x.sum().shape).toEqual([]);
        expect(x.sum(undefined, true).shape).toEqual([1]);
      }
    });
  });

  it('argmax over all elements', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      const xs = randn(3 * 41, 4);
      xs[77] = 100;
      expect(await wd.tensor(xs, [3, 41]).argmax().item()).toBe(77);
    });
  });

  for (const op of ['sum', 'mean', 'max'] as const) {
    it(`${op} backward vs finite differences`, async () => {
      const wd = await getEngine();
      await wd.scope(async () => {
        const shape = [3, 4, 5];
        const xs = randn(60, 21);
        for (const axis of [0, 1, 2, undefined]) {
          const x = wd.tensor(xs, shape, { requiresGrad: true });
          const y = x[op](axis);
          const m = y.size;
          const gs = randn(m, 22);
          y.mul(wd.tensor(gs, y.shape)).sum().backward();
          const f = (xx: Float64Array) => {
            const r = axis === undefined ? reduceRef(xx, [60], 0, op) : reduceRef(xx, shape, axis, op);
            return r.reduce((s, v, i) => s + v * gs[i], 0);
          };
          expectClose(await read(x.grad!), finiteDiff(f, xs), 1e-4, 1e-5, `${op} axis ${axis} grad`);
        }
      });
    });
  }

  it('an empty axis sums to zero and maxes to an error', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      const x = wd.zeros([3, 0]);
      expect(Array.from(await x.sum(1).toArray())).toEqual([0, 0, 0]);
      expect(() => x.max(1)).toThrow(/empty axis/);
    });
  });
});
