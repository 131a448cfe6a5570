import { describe, it, expect } from 'vitest';
import { getEngine } from './helpers.js';

describe('smoke', () => {
  it('adds, broadcasts, reduces, backprops', async () => {
    const wd = await getEngine();
    const a = wd.tensor([[1, 2, 3], [4, 5, 6]], undefined, { requiresGrad: true });
    const b = wd.tensor([10, 20, 30], undefined, { requiresGrad: true });
    const c = a.mul(b).add(1);
    expect(Array.from(await c.toArray())).toEqual([11, 41, 91, 41, 101, 181]);
    const s = c.sum();
    expect(await s.item()).toBe(11 + 41 + 91 + 41 + 101 + 181);
    s.backward();
    expect(Array.from(await a.grad!.toArray())).toEqual([10, 20, 30, 10, 20, 30]);
    expect(Array.from(await b.grad!.toArray())).toEqual([5, 7, 9]);
    const t = a.transpose();
    expect(Array.from(await t.contiguous().toArray())).toEqual([1, 4, 2, 5, 3, 6]);
    expect(Array.from(await a.max(1).toArray())).toEqual([3, 6]);
    expect(Array.from(await a.argmax(0).toArray())).toEqual([1, 1, 1]);
    expect(Array.from(await a.gelu().toArray()).map((x) => +x.toFixed(5))).toEqual([0.84134, 1.9545, 2.99595, 3.99987, 5, 6]);
  });
});
