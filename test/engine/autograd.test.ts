/**
 * Autograd: gradient accumulation across backward calls and across uses of one tensor, detach and
 * noGrad stop gradients, deep graphs do not overflow the stack, and errors are clear.
 */
import { describe, expect, it } from 'vitest';
import { expectClose, getEngine } from '../helpers.js';

describe('autograd', () => {
  it('accumulates into .grad across backward calls until zeroGrad', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      const x = wd.tensor([1, 2, 3], [3], { requiresGrad: true });
      x.mul(x).sum().backward(); // 2x
      x.mul(3).sum().backward(); // + 3
      expect(Array.from(await x.grad!.toArray())).toEqual([5, 7, 9]);
      x.zeroGrad();
      expect(x.grad).toBeNull();
    });
  });

  it('sums gradients of a tensor used several times (diamond graph)', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      const x = wd.tensor([0.5, -1.5], [2], { requiresGrad: true });
      const a = x.exp();
      const b = x.mul(a); // x eˣ
      const c = a.add(b).add(a); // 2eˣ + x eˣ  → d/dx = 3eˣ + x eˣ
      c.sum().backward();
      const xs = [0.5, -1.5];
      expectClose(await x.grad!.toArray(), xs.map((v) => 3 * Math.exp(v) + v * Math.exp(v)), 1e-6, 1e-6, 'diamond');
    });
  });

  it('detach and noGrad stop gradients', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      const x = wd.tensor([2, 3], [2], { requiresGrad: true });
      const y = x.mul(x.detach()); // d/dx = x (the detached factor is a constant)
      y.sum().backward();
      expect(Array.from(await x.grad!.toArray())).toEqual([2, 3]);
      const z = wd.noGrad(() => x.mul(2));
      expect(z.requiresGrad).toBe(false);
      expect(() => z.sum().backward()).toThrow(/does not require a gradient/);
      await wd.noGrad(async () => {
        await Promise.resolve();
        expect(x.exp().requiresGrad).toBe(false);
      });
      expect(x.exp().requiresGrad).toBe(true);
    });
  });

  it('a graph 5000 ops deep back-propagates without recursion', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      const x = wd.tensor([1], [1], { requiresGrad: true });
      let y = x;
      for (let i = 0; i < 5000; i++) y = y.mul(1.0001);
      y.sum().backward();
      expectClose(await x.grad!.toArray(), [Math.pow(1.0001, 5000)], 1e-3, 0, 'deep chain');
    });
  });

  it('a non-scalar root needs an explicit gradient', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      const x = wd.tensor([1, 2], [2], { requiresGrad: true });
      const y = x.mul(3);
      expect(() => y.backward()).toThrow(/pass a gradient/);
      y.backward(wd.tensor([1, 10], [2]));
      expect(Array.from(await x.grad!.toArray())).toEqual([3, 30]);
    });
  });
});
