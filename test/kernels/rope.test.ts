/**
 * The RoPE kernels (kernels/rope.ts, engine/ops/rope.ts) against their float64 references, at
 * shapes that are not multiples of the workgroup (and head dims with an odd half, d = 10): the
 * forward, the backward as a vector-Jacobian product against the reference VJP (accumulated
 * partial derivatives, not the kernel's closed form) and against central finite differences of
 * the reference; general tables (sin and cos not tiled, so the transpose is not the inverse
 * rotation) and DINOv3's tiled ones (where it is: backward ∘ forward = identity); views read in
 * place (a permuted packed qkv, offsets in x and in the tables); prefix tokens with sin 0, cos 1
 * passing unchanged; the argument checks.
 */
import { describe, expect, it } from 'vitest';
import { rope, ropePacked } from '../../engine/ops/rope.js';
import { ropeBackwardRaw, ropeRef, ropeVjpRef } from '../../kernels/rope.js';
import { expectClose, finiteDiff, getEngine, randn } from '../helpers.js';

/** Row-major float64 permutation of `data` (shape `shape`) by `perm` (as Tensor.permute). */
function permuteRef(data: ArrayLike<number>, shape: number[], perm: number[]): Float64Array {
  const out = new Float64Array(data.length);
  const strides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
  const oshape = perm.map((p) => shape[p]);
  for (let i = 0; i < data.length; i++) {
    let rem = i;
    let src = 0;
    for (let k = oshape.length - 1; k >= 0; k--) {
      const c = rem % oshape[k];
      rem = Math.floor(rem / oshape[k]);
      src += c * strides[perm[k]];
    }
    out[i] = data[src];
  }
  return out;
}

/** Tables (N, d) of random angles, sin and cos of the same angle (general: not tiled). */
function tables(N: number, d: number, seed: number): { sin: Float32Array; cos: Float32Array } {
  const ang = randn(N * d, seed, 3);
  return { sin: ang.map(Math.sin), cos: ang.map(Math.cos) };
}

describe('rope: forward and backward vs float64', () => {
  const SHAPES = [
    [5, 6],
    [2, 3, 7, 10],
    [3, 1, 13, 6],
    [2, 2, 67, 12],
  ];
  for (const shape of SHAPES) {
    it(`${JSON.stringify(shape)}`, async () => {
      const wd = await getEngine();
      const [N, d] = shape.slice(-2);
      const n = shape.reduce((a, b) => a * b, 1);
      const xs = randn(n, n + 1);
      const gs = randn(n, n + 2);
      const t = tables(N, d, n + 3);
      await wd.scope(async () => {
        const x = wd.tensor(xs, shape, { requiresGrad: true });
        const tt = { sin: wd.tensor(t.sin, [N, d]), cos: wd.tensor(t.cos, [N, d]) };
        const y = rope(x, tt);
        expect(y.shape).toEqual(shape);
        expectClose(await y.toArray(), ropeRef(xs, t.sin, t.cos, N, d), 1e-6, 1e-6, 'rope forward');
        y.mul(wd.tensor(gs, shape)).sum().backward();
        const got = await x.grad!.toArray();
        expectClose(got, ropeVjpRef(gs, t.sin, t.cos, N, d), 1e-6, 1e-6, 'rope vjp vs reference');
        const fd = finiteDiff((xx) => ropeRef(xx, t.sin, t.cos, N, d).reduce((s, v, i) => s + v * gs[i], 0), xs);
        expectClose(got, fd, 1e-4, 1e-5, 'rope vjp vs finite differences');
      });
    });
  }

  it('tiled tables (DINOv3): the backward is the inverse rotation; sin 0, cos 1 rows pass unchanged', async () => {
    const wd = await getEngine();
    const [A, N, d, prefix] = [6, 9, 16, 3];
    const sin = new Float32Array(N * d);
    const cos = new Float32Array(N * d).fill(1, 0, prefix * d);
    const ang = randn(N * (d / 2), 21, 2);
    for (let i = prefix; i < N; i++) {
      for (let c = 0; c < d / 2; c++) {
        for (const ch of [c, c + d / 2]) {
          sin[i * d + ch] = Math.sin(ang[i * (d / 2) + c]);
          cos[i * d + ch] = Math.cos(ang[i * (d / 2) + c]);
        }
      }
    }
    const xs = randn(A * N * d, 22);
    await wd.scope(async () => {
      const tt = { sin: wd.tensor(sin, [N, d]), cos: wd.tensor(cos, [N, d]) };
      const y = rope(wd.tensor(xs, [A, N, d]), tt);
      const back = await ropeBackwardRaw(y, tt).toArray();
      expectClose(back, xs, 1e-5, 1e-6, 'rotation by −θ after rotation by θ');
      const yv = await y.toArray();
      for (let a = 0; a < A; a++) {
        const o = a * N * d;
        expect(Array.from(yv.subarray(o, o + prefix * d))).toEqual(Array.from(xs.subarray(o, o + prefix * d)));
      }
    });
  });
});

describe('ropePacked: the permuted qkv projection read in place', () => {
  it('rotates q and k, copies v; the gradient reaches the projection through the permute', async () => {
    const wd = await getEngine();
    // (B, N, 3, H, d) projection output, permuted to (3, B, H, N, d) as ViT attention does.
    const [B, N, H, d] = [2, 11, 3, 10];
    const base = [B, N, 3, H, d];
    const perm = [2, 0, 3, 1, 4];
    const n = B * N * 3 * H * d;
    const xs = randn(n, 31);
    const gs = randn(n, 32);
    // Tables as views with an offset: rows 2 .. 2 + N of a larger table.
    const big = tables(N + 4, d, 33);
    const sin = big.sin.slice(2 * d, (2 + N) * d);
    const cos = big.cos.slice(2 * d, (2 + N) * d);
    await wd.scope(async () => {
      const x = wd.tensor(xs, base, { requiresGrad: true });
      const qkv = x.permute(...perm);
      expect(qkv.isContiguous).toBe(false);
      const tt = { sin: wd.tensor(big.sin, [N + 4, d]).slice(0, 2, 2 + N), cos: wd.tensor(big.cos, [N + 4, d]).slice(0, 2, 2 + N) };
      const y = ropePacked(qkv, tt);
      expect(y.shape).toEqual([3, B, H, N, d]);
      expect(y.isContiguous).toBe(true);
      const dense = permuteRef(xs, base, perm);
      const rotated = (2 * n) / 3;
      expectClose(await y.toArray(), ropeRef(dense, sin, cos, N, d, rotated), 1e-6, 1e-6, 'packed forward');
      y.mul(wd.tensor(gs, [3, B, H, N, d])).sum().backward();
      // The reference gradient on the permuted layout, permuted back to the projection's.
      const gPerm = ropeVjpRef(gs, sin, cos, N, d, rotated);
      const inverse = perm.map((_, i) => perm.indexOf(i));
      const want = permuteRef(gPerm, [3, B, H, N, d], inverse);
      expectClose(await x.grad!.toArray(), want, 1e-6, 1e-6, 'packed gradient');
    });
  });

  it('a slice with an offset (the q, k part of the packed tensor) is read in place', async () => {
    const wd = await getEngine();
    const [N, d] = [7, 6];
    const xs = randn(3 * 2 * N * d, 41);
    const t = tables(N, d, 42);
    await wd.scope(async () => {
      const x = wd.tensor(xs, [3, 2, N, d]).slice(0, 1, 3); // offset 2·N·d
      const y = rope(x, { sin: wd.tensor(t.sin, [N, d]), cos: wd.tensor(t.cos, [N, d]) });
      expectClose(await y.toArray(), ropeRef(xs.subarray(2 * N * d), t.sin, t.cos, N, d), 1e-6, 1e-6, 'offset view');
    });
  });
});

describe('rope: argument checks', () => {
  it('refuses mismatched tables, an odd head dim, tables asking for gradients, a non-packed qkv', async () => {
    const wd = await getEngine();
    wd.scope(() => {
      const x = wd.zeros([2, 5, 8]);
      const ok = { sin: wd.zeros([5, 8]), cos: wd.zeros([5, 8]) };
      expect(() => rope(x, { sin: wd.zeros([4, 8]), cos: ok.cos })).toThrow(/sin table \[4, 8\] does not match x \[2, 5, 8\]/);
      expect(() => rope(wd.zeros([5, 7]), { sin: wd.zeros([5, 7]), cos: wd.zeros([5, 7]) })).toThrow(/must be even/);
      expect(() => rope(x, { sin: wd.zeros([5, 8], { requiresGrad: true }), cos: ok.cos })).toThrow(/constants/);
      expect(() => ropePacked(wd.zeros([2, 1, 5, 8]), ok)).toThrow(/qkv must be \[3, \.\.\., N, d\]/);
    });
  });
});
