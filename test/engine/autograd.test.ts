/**
 * Autograd: gradient accumulation across backward calls and across uses of one tensor, detach and
 * noGrad stop gradients, deep graphs do not overflow the stack, errors are clear (a disposed tensor
 * on the path and a second backward through a released graph throw: reliability F13), and the
 * tensors an op saves for its backward are freed with the graph.
 */
import { describe, expect, it } from 'vitest';
import { bucketSize } from '../../engine/pool.js';
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

  it('a tensor disposed between the leaves and the loss makes backward throw, naming it (F13)', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      for (const op of ['mul', 'exp'] as const) {
        const w = wd.tensor([1, 2, 3], [3], { requiresGrad: true });
        const h = op === 'mul' ? w.mul(w) : w.exp();
        const l = h.sum();
        h.dispose();
        expect(() => l.backward()).toThrow(new RegExp(`tensor \\[3\\] \\('${op}'\\), input 1 of 'sum', was disposed before backward`));
        expect(w.grad).toBeNull();
      }
      // A disposed leaf is on the path too.
      const p = wd.tensor([1, 2], [2], { requiresGrad: true, label: 'param' });
      const l = p.mul(3).sum();
      p.dispose();
      expect(() => l.backward()).toThrow(/\('param'\), input 1 of 'mulScalar', was disposed/);
    });
  });

  it('a second backward through a released graph throws (F13), also through a shared part', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      const w = wd.tensor([1, 2, 3], [3], { requiresGrad: true });
      const l = w.mul(w).sum();
      l.backward();
      expect(() => l.backward()).toThrow(/'sum'.*already released by an earlier backward/);
      expect(Array.from(await w.grad!.toArray())).toEqual([2, 4, 6]); // not accumulated twice
      w.zeroGrad();
      const h = w.exp();
      const a = h.sum();
      const b = h.mul(2).sum();
      a.backward();
      expect(() => b.backward()).toThrow(/\('exp'\), input 1 of 'mulScalar', was made by 'exp', whose graph was already released/);
      // A fresh forward back-propagates again.
      w.exp().sum().backward();
      expectClose(await w.grad!.toArray(), [1, 2, 3].map((v) => 2 * Math.exp(v)), 1e-6, 0, 'two forwards');
    });
  });

  it('saved tensors (layerNorm row statistics) are freed after backward, without a graph, and with their output', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      const x = wd.tensor(Array.from({ length: 1200 }, (_, i) => Math.sin(i)), [4, 300], { requiresGrad: true });
      const live = () => wd.memory().liveBytes;
      const yBytes = bucketSize(1200 * 4);
      const statBytes = 2 * bucketSize(4 * 4); // μ and 1/σ: [4] each
      let base = live();
      const y0 = wd.noGrad(() => x.layerNorm());
      expect(live() - base, 'no graph: the statistics are freed at once').toBe(yBytes);
      y0.dispose();
      base = live();
      const y1 = x.layerNorm();
      expect(live() - base, 'recorded: y and its statistics').toBe(yBytes + statBytes);
      y1.dispose();
      expect(live() - base, 'disposing the output releases its node').toBe(0);
      const y2 = x.layerNorm();
      const l = y2.sum();
      l.backward();
      x.zeroGrad();
      l.dispose();
      y2.dispose();
      expect(live() - base, 'after backward').toBe(0);
    });
  });
});
