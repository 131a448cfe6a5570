/**
 * Memory: scopes dispose every intermediate (sync and async, nested, on throw), returned values
 * survive, use after dispose is a clear error, views keep storage alive, and a training-like loop
 * of 100 forward + backward iterations inside scopes leaves live bytes unchanged.
 */
import { describe, expect, it } from 'vitest';
import { UseAfterDisposeError } from '../../index.js';
import { getEngine, randn } from '../helpers.js';

describe('scopes and the buffer pool', () => {
  it('disposes intermediates and keeps what the scope returns', async () => {
    const wd = await getEngine();
    const before = wd.memory().liveBytes;
    const kept = wd.scope(() => {
      const a = wd.ones([64]);
      const b = a.add(1).mul(2);
      return { b, n: 3 };
    });
    expect(wd.memory().liveBytes - before).toBe(256); // only b (64 floats)
    expect(Array.from(await kept.b.toArray()).slice(0, 2)).toEqual([4, 4]);
    kept.b.dispose();
    expect(wd.memory().liveBytes).toBe(before);
  });

  it('async scopes, nesting, throwing', async () => {
    const wd = await getEngine();
    const before = wd.memory().liveBytes;
    const out = await wd.scope(async () => {
      const a = wd.ones([10]);
      await Promise.resolve();
      const inner = wd.scope(() => a.mul(3));
      await new Promise((r) => setTimeout(r, 1));
      return inner.add(a);
    });
    expect(Array.from(await out.toArray())[0]).toBe(4);
    out.dispose();
    await expect(
      wd.scope(async () => {
        wd.ones([100]);
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(wd.memory().liveBytes).toBe(before);
  });

  it('concurrent async scopes do not capture each other (Node async context)', async () => {
    const wd = await getEngine();
    const before = wd.memory().liveBytes;
    let leakedFromA: import('../../index.js').Tensor | null = null;
    const a = wd.scope(async () => {
      await new Promise((r) => setTimeout(r, 20));
      leakedFromA = wd.ones([8]); // belongs to scope A
      await new Promise((r) => setTimeout(r, 20));
      return 1;
    });
    const b = wd.scope(async () => {
      await new Promise((r) => setTimeout(r, 10));
      const t = wd.ones([16]);
      await new Promise((r) => setTimeout(r, 30)); // A ends while B is still running
      return t;
    });
    const [, tb] = await Promise.all([a, b]);
    expect(leakedFromA!.disposed).toBe(true);
    expect(tb.disposed).toBe(false);
    tb.dispose();
    expect(wd.memory().liveBytes).toBe(before);
  });

  it('use after dispose is a clear error; views keep the storage alive', async () => {
    const wd = await getEngine();
    const x = wd.tensor([1, 2, 3, 4], [2, 2]);
    const t = x.transpose();
    x.dispose();
    expect(Array.from(await t.contiguous().toArray())).toEqual([1, 3, 2, 4]);
    t.dispose();
    expect(() => t.add(1)).toThrow(UseAfterDisposeError);
    expect(() => t.add(1)).toThrow(/\[2, 2\].*used after dispose/);
    await expect(x.toArray()).rejects.toThrow(/used after dispose/);
  });

  it('100 forward + backward iterations inside scopes leave live bytes unchanged', async () => {
    const wd = await getEngine();
    const w = wd.keep(wd.tensor(randn(32 * 16, 1, 0.1), [32, 16], { requiresGrad: true }));
    const x = wd.keep(wd.tensor(randn(8 * 32, 2), [8, 32]));
    const step = async () =>
      wd.scope(async () => {
        // A matmul-free model so this test stands on the elementwise and reduction kernels alone.
        const h = x.reshape(8, 32, 1).mul(w.reshape(1, 32, 16)).sum(1).gelu(); // (8, 16)
        const loss = h.mul(h).mean().add(h.tanh().sum(1).max());
        loss.backward();
        return loss.item();
      });
    await step();
    w.zeroGrad();
    const before = wd.memory();
    for (let i = 0; i < 100; i++) {
      await step();
      w.zeroGrad();
    }
    const after = wd.memory();
    expect(after.liveBytes).toBe(before.liveBytes);
    expect(after.liveBuffers).toBe(before.liveBuffers);
    // Buffers are reused from the pool rather than created every step.
    expect(after.created - before.created).toBeLessThan(10);
    w.dispose();
    x.dispose();
  });

  it('bucket sizes waste less than 25 %', async () => {
    const { bucketSize } = await import('../../engine/pool.js');
    for (const n of [1, 255, 257, 4097, 5000, 123457, 1 << 24, (1 << 24) + 1]) {
      const b = bucketSize(n);
      expect(b).toBeGreaterThanOrEqual(n);
      if (n > 4096) expect(b / n).toBeLessThan(1.25);
    }
  });
});
