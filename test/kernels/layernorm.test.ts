/**
 * LayerNorm (optional affine, configurable eps) and L2 normalisation: forward against the float64
 * references, backward (random upstream g) against the reference VJPs and against central finite
 * differences of the float64 forward, in every row layout forced in turn and in the automatic
 * choice (helpers ROW_CONFIGS). Row lengths 1, 7, 31, 67 (a serial block of 64 plus a tail), 300 (a
 * wide stride of 256 plus a tail) and 1000; vec4 rows 8, 12, 64, 68, 256, 300, 1000, of which the
 * short ones, 64+ rows at a time, take the serial layout with a register cache under 'auto'; row
 * counts up to 197 (the parameter-gradient kernel sums 64-row chunks: 197 = 3 full chunks and a
 * partial one).
 *
 * Tolerances: x̂ carries f32 rounding of x − μ and of the blocked sums (a few 1e-7 relative);
 * y = x̂·w + b is compared with rtol 1e-5 and atol 1e-5·(1 + |w|·|x̂| + |b|) scale. The backward
 * r·(ĝ − mean ĝ − x̂·mean(ĝx̂)) cancels, so dx is compared with atol = 1e-5·max|dx|; dw and db
 * are column sums over ≤ 197 rows: rtol 1e-4, atol 1e-5·max.
 */
import { describe, expect, it } from 'vitest';
import { l2NormalizeRef, l2NormalizeVjpRef, layerNormRef, layerNormVjpRef } from '../../kernels/layernorm.js';
import type { Tensor } from '../../index.js';
import { dot, expectClose, finiteDiff, getEngine, randn, read, ROW_CONFIGS } from '../helpers.js';


function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

/** Gradient comparison relative to the largest entry (the VJPs cancel). */
function expectGradClose(got: ArrayLike<number>, want: ArrayLike<number>, what: string, rtol = 1e-4): void {
  expectClose(got, want, rtol, 1e-5 * maxAbs(want) + 1e-9, what);
}

/** Central differences row by row (rows are independent; keeps roundoff at one row's scale). */
function rowFiniteDiff(f: (row: Float64Array, r: number) => number, x: ArrayLike<number>, D: number, h = 1e-6): Float64Array {
  const out = new Float64Array(x.length);
  for (let r = 0; r * D < x.length; r++) {
    out.set(finiteDiff((xx) => f(xx, r), Array.from(x).slice(r * D, r * D + D), h), r * D);
  }
  return out;
}

interface LnCase {
  shape: number[];
  affine: 'both' | 'weight' | 'bias' | 'none';
  eps: number;
}

describe.each(ROW_CONFIGS)('layerNorm, $name layout', ({ variants, rowLayout }) => {
  const cases: LnCase[] = [];
  // vec4 rows (D % 4 = 0): 8, 64 and 68 (serial register caches of 2, 16 slots and none), 300, 1000.
  for (const shape of [[1], [7], [13, 31], [64, 67], [3, 300], [2, 3, 5], [197, 13], [4, 1000], [70, 8], [66, 64], [65, 68]]) {
    cases.push({ shape, affine: 'both', eps: 1e-6 });
  }
  cases.push({ shape: [13, 31], affine: 'none', eps: 1e-5 }, { shape: [13, 31], affine: 'weight', eps: 1e-5 }, { shape: [13, 31], affine: 'bias', eps: 1e-6 });
  cases.push({ shape: [5, 1], affine: 'both', eps: 1e-5 });

  it.each(cases)('forward and backward %o', async (c) => {
    const wd = await getEngine(variants, rowLayout);
    await wd.scope(async () => {
      const D = c.shape[c.shape.length - 1];
      const n = numel(c.shape);
      const xs = randn(n, 3 + D, 2).map((v, i) => v + (i % 3) - 1);
      const ws = c.affine === 'both' || c.affine === 'weight' ? randn(D, 5 + D, 0.5).map((v) => v + 1) : null;
      const bs = c.affine === 'both' || c.affine === 'bias' ? randn(D, 7 + D, 0.5) : null;
      const gs = randn(n, 9 + D);
      const x = wd.tensor(xs, c.shape, { requiresGrad: true });
      const w = ws ? wd.tensor(ws, [D], { requiresGrad: true }) : null;
      const b = bs ? wd.tensor(bs, [D], { requiresGrad: true }) : null;
      const y = x.layerNorm(w, b, c.eps);
      expect(y.shape).toEqual(c.shape);
      const want = layerNormRef(xs, D, ws, bs, c.eps);
      expectClose(await read(y), want.y, 1e-5, 1e-5 * (1 + maxAbs(want.y)), `y ${JSON.stringify(c)}`);

      y.mul(wd.tensor(gs, c.shape)).sum().backward();
      const vjp = layerNormVjpRef(xs, D, ws, c.eps, gs);
      const dx = await read(x.grad!);
      expectGradClose(dx, vjp.dx, `dx ${JSON.stringify(c)}`);
      if (w) expectGradClose(await read(w.grad!), vjp.dw, `dw ${JSON.stringify(c)}`);
      if (b) expectGradClose(await read(b.grad!), vjp.db, `db ${JSON.stringify(c)}`);

      if (n <= 5000) {
        const rowLoss = (xr: Float64Array, r: number) =>
          dot(gs.subarray(r * D, r * D + D), layerNormRef(xr, D, ws, bs, c.eps).y);
        expectGradClose(dx, rowFiniteDiff(rowLoss, xs, D), `dx vs finite differences ${JSON.stringify(c)}`);
        const full = (wv: ArrayLike<number> | null, bv: ArrayLike<number> | null) => dot(gs, layerNormRef(xs, D, wv, bv, c.eps).y);
        if (ws) expectGradClose(await read(w!.grad!), finiteDiff((wv) => full(wv, bs), ws), `dw vs finite differences ${JSON.stringify(c)}`);
        if (bs) expectGradClose(await read(b!.grad!), finiteDiff((bv) => full(ws, bv), bs), `db vs finite differences ${JSON.stringify(c)}`);
      }
    });
  });

  it('rows with |mean| ≫ std: two passes around a shift keep the digits (E[x²] − μ² would not)', async () => {
    const wd = await getEngine(variants, rowLayout);
    await wd.scope(async () => {
      // mean 1000, std 1: E[x²] − μ² in f32 loses ~2⁻²⁴·10⁶ ≈ 0.06 of a variance of 1.
      const D = 384;
      const xs = randn(7 * D, 17).map((v) => 1000 + v);
      const y = await read(wd.tensor(xs, [7, D]).layerNorm(null, null, 1e-6));
      // x itself is exact; what remains is the f32 rounding of x − K and of 1/√σ² (≈ 1e-6).
      expectClose(y, layerNormRef(xs, D, null, null, 1e-6).y, 1e-5, 5e-6, 'layerNorm with mean 1000');
    });
  });

  it('only the parameter gradients (x constant), and only the input gradient (parameters constant)', async () => {
    const wd = await getEngine(variants, rowLayout);
    await wd.scope(async () => {
      const D = 31;
      const xs = randn(13 * D, 21);
      const ws = randn(D, 22);
      const bs = randn(D, 23);
      const gs = randn(13 * D, 24);
      const vjp = layerNormVjpRef(xs, D, ws, 1e-6, gs);
      const w = wd.tensor(ws, [D], { requiresGrad: true });
      const b = wd.tensor(bs, [D]);
      wd.tensor(xs, [13, D]).layerNorm(w, b, 1e-6).mul(wd.tensor(gs, [13, D])).sum().backward();
      expectGradClose(await read(w.grad!), vjp.dw, 'dw alone');
      const x = wd.tensor(xs, [13, D], { requiresGrad: true });
      x.layerNorm(wd.tensor(ws, [D]), wd.tensor(bs, [D]), 1e-6).mul(wd.tensor(gs, [13, D])).sum().backward();
      expectGradClose(await read(x.grad!), vjp.dx, 'dx alone');
    });
  });

  it('non-contiguous input (a transposed view)', async () => {
    const wd = await getEngine(variants, rowLayout);
    await wd.scope(async () => {
      const xs = randn(31 * 13, 31);
      const gs = randn(13 * 31, 32);
      const ws = randn(31, 33);
      const x = wd.tensor(xs, [31, 13], { requiresGrad: true });
      const xt = x.transpose();
      expect(xt.isContiguous).toBe(false);
      const xtData = new Float64Array(13 * 31);
      for (let i = 0; i < 31; i++) for (let j = 0; j < 13; j++) xtData[j * 31 + i] = xs[i * 13 + j];
      const y = xt.layerNorm(wd.tensor(ws, [31]), null, 1e-6);
      expectClose(await read(y), layerNormRef(xtData, 31, ws, null, 1e-6).y, 1e-5, 1e-5, 'forward of a view');
      y.mul(wd.tensor(gs, [13, 31])).sum().backward();
      const want = layerNormVjpRef(xtData, 31, ws, 1e-6, gs).dx;
      const wantX = new Float64Array(31 * 13);
      for (let i = 0; i < 31; i++) for (let j = 0; j < 13; j++) wantX[i * 13 + j] = want[j * 31 + i];
      expectGradClose(await read(x.grad!), wantX, 'dx through a view');
    });
  });

  it('non-contiguous upstream gradient (the output used through a transpose)', async () => {
    const wd = await getEngine(variants, rowLayout);
    await wd.scope(async () => {
      const xs = randn(13 * 31, 35);
      const gs = randn(13 * 31, 36);
      const ws = randn(31, 37);
      const gT = new Float32Array(31 * 13);
      for (let i = 0; i < 13; i++) for (let j = 0; j < 31; j++) gT[j * 13 + i] = gs[i * 31 + j];
      const x = wd.tensor(xs, [13, 31], { requiresGrad: true });
      const w = wd.tensor(ws, [31], { requiresGrad: true });
      x.layerNorm(w, null, 1e-6).transpose().mul(wd.tensor(gT, [31, 13])).sum().backward();
      const vjp = layerNormVjpRef(xs, 31, ws, 1e-6, gs);
      expectGradClose(await read(x.grad!), vjp.dx, 'dx with a transposed g');
      expectGradClose(await read(w.grad!), vjp.dw, 'dw with a transposed g');
      const z = wd.tensor(xs, [13, 31], { requiresGrad: true });
      z.l2Normalize().transpose().mul(wd.tensor(gT, [31, 13])).sum().backward();
      expectGradClose(await read(z.grad!), l2NormalizeVjpRef(xs, 31, 1e-12, gs), 'l2Normalize dx with a transposed g');
    });
  });

  it('frees every temporary, including the saved mean and rstd', async () => {
    const wd = await getEngine(variants, rowLayout);
    await wd.sync();
    const before = wd.memory().liveBytes;
    const params: Tensor[] = [];
    await wd.scope(async () => {
      const x = wd.randn([197, 13], { seed: 1, requiresGrad: true });
      const w = wd.randn([13], { seed: 2, requiresGrad: true });
      const b = wd.randn([13], { seed: 3, requiresGrad: true });
      params.push(x, w, b);
      x.transpose().contiguous().transpose().layerNorm(w, b, 1e-6).l2Normalize().mul(x).sum().backward();
      await w.grad!.toArray();
      for (const p of params) p.dispose();
    });
    expect(wd.memory().liveBytes).toBe(before);
    // Outside any scope and without gradients, the row statistics are released at once.
    const t = wd.randn([4, 5], { seed: 4 });
    const y = t.layerNorm(null, null, 1e-5);
    const z = t.l2Normalize();
    await y.toArray();
    for (const u of [y, z, t]) u.dispose();
    expect(wd.memory().liveBytes).toBe(before);
  });
});

describe.each(ROW_CONFIGS)('l2Normalize, $name layout', ({ variants, rowLayout }) => {
  const shapes = [[1], [7], [13, 31], [64, 67], [3, 300], [2, 3, 5], [4, 1000], [70, 12], [66, 64], [3, 256]].map((shape) => ({ shape }));

  it.each(shapes)('forward and backward %o', async ({ shape }) => {
    const wd = await getEngine(variants, rowLayout);
    await wd.scope(async () => {
      const D = shape[shape.length - 1];
      const n = numel(shape);
      const xs = randn(n, 41 + D, 3);
      const gs = randn(n, 43 + D);
      const x = wd.tensor(xs, shape, { requiresGrad: true });
      const y = x.l2Normalize(1e-12);
      expectClose(await read(y), l2NormalizeRef(xs, D, 1e-12), 1e-5, 1e-7, `y ${JSON.stringify(shape)}`);
      y.mul(wd.tensor(gs, shape)).sum().backward();
      const dx = await read(x.grad!);
      expectGradClose(dx, l2NormalizeVjpRef(xs, D, 1e-12, gs), `dx ${JSON.stringify(shape)}`);
      if (n <= 5000) {
        const rowLoss = (xr: Float64Array, r: number) => dot(gs.subarray(r * D, r * D + D), l2NormalizeRef(xr, D, 1e-12));
        expectGradClose(dx, rowFiniteDiff(rowLoss, xs, D), `dx vs finite differences ${JSON.stringify(shape)}`);
      }
    });
  });

  it('rows with ‖x‖ ≤ eps: y = x/eps and dx = g/eps (the zero row included)', async () => {
    const wd = await getEngine(variants, rowLayout);
    await wd.scope(async () => {
      const D = 7;
      const eps = 1e-3;
      // row 0: tiny (‖x‖ ≈ 2e-4 < eps), row 1: zero, row 2: normal
      const xs = Float32Array.from([...randn(D, 51, 1e-4), ...new Array(D).fill(0), ...randn(D, 52)]);
      const gs = randn(3 * D, 53);
      const x = wd.tensor(xs, [3, D], { requiresGrad: true });
      const y = x.l2Normalize(eps);
      const yv = await read(y);
      expectClose(yv, l2NormalizeRef(xs, D, eps), 1e-5, 1e-7, 'y with small rows');
      y.mul(wd.tensor(gs, [3, D])).sum().backward();
      const dx = await read(x.grad!);
      expectGradClose(dx, l2NormalizeVjpRef(xs, D, eps, gs), 'dx with small rows');
      for (let j = 0; j < 2 * D; j++) expect(dx[j]).toBeCloseTo(gs[j] / eps, 2);
      const rowLoss = (xr: Float64Array, r: number) => dot(gs.subarray(r * D, r * D + D), l2NormalizeRef(xr, D, eps));
      // Rows 0 and 1 lie inside the ball ‖x‖ < eps where y = x/eps is linear; h = 1e-9 stays inside.
      expectGradClose(dx, rowFiniteDiff(rowLoss, xs, D, 1e-9), 'dx vs finite differences with small rows');
    });
  });

  it('non-contiguous input (a transposed view)', async () => {
    const wd = await getEngine(variants, rowLayout);
    await wd.scope(async () => {
      const xs = randn(31 * 13, 61);
      const x = wd.tensor(xs, [31, 13]);
      const xtData = new Float64Array(13 * 31);
      for (let i = 0; i < 31; i++) for (let j = 0; j < 13; j++) xtData[j * 31 + i] = xs[i * 13 + j];
      expectClose(await read(x.transpose().l2Normalize()), l2NormalizeRef(xtData, 31, 1e-12), 1e-5, 1e-7, 'forward of a view');
    });
  });
});

describe('norm errors', () => {
  it('names both shapes when weight or bias has the wrong length', async () => {
    const wd = await getEngine('cpu');
    await wd.scope(() => {
      const x = wd.zeros([4, 7]);
      expect(() => x.layerNorm(wd.ones([6]), null)).toThrow(/weight \[6\].*x \[4, 7\]/);
      expect(() => x.layerNorm(null, wd.zeros([1, 7]))).toThrow(/bias \[1, 7\].*x \[4, 7\]/);
      expect(() => x.layerNorm(null, null, -1)).toThrow(/eps/);
    });
  });
});
