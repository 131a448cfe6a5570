/**
 * Elementwise kernels against float64 references. The gradient tables are iterated: every entry of
 * UNARY_GRADS and BINARY_GRADS (engine/ops/elementwise.ts) is checked, forward against the kernel
 * table's float64 reference and backward against its float64 derivative and against central
 * finite differences, so a new op is tested without a test of its own. Also: binary broadcasting
 * (in the strided kernel and, at multiples of 4 elements, in the vec4 kernel's broadcast modes),
 * strided views and views at offsets read in place, scalar variants, and launches large enough to
 * fold the grid into two dimensions.
 */
import { describe, expect, it } from 'vitest';
import { BINARY_GRADS, binary, UNARY_GRADS, unary } from '../../engine/ops/elementwise.js';
import { broadcastStrides, contiguousStrides } from '../../engine/shape.js';
import { BINARY, broadcastRef, erfc64, UNARY } from '../../kernels/elementwise.js';
import { grid1d } from '../../kernels/common.js';
import { expectClose, finiteDiff, getEngine, randn, randu, read } from '../helpers.js';
import { concat } from '../../engine/ops/index.js';

const SHAPES = [[1], [7], [13, 31], [3, 5, 67]];
/** The scalar operand of every unary op (the exponent of pow, the operand of the scalar ops). */
const P = 1.7;

/**
 * Inputs for op `f` with derivative `d`: normal values away from 0 (relu's kink), or, where the
 * op is not real-valued on them (log, sqrt, a fractional power), uniform values in [0.1, 4).
 */
function inputFor(f: (x: number, p: number) => number, d: (x: number, p: number) => number, n: number, seed: number): Float32Array {
  const x = randn(n, seed, 1.5);
  for (let i = 0; i < n; i++) if (Math.abs(x[i]) < 1e-3) x[i] = 0.5;
  const finite = Array.from(x).every((v) => Number.isFinite(f(v, P)) && Number.isFinite(d(v, P)));
  return finite ? x : randu(n, seed, 0.1, 4);
}

describe('unary ops: every entry of the gradient table', () => {
  it('the table has a rule for exactly the ops with a float64 derivative', () => {
    const withDerivative = Object.entries(UNARY)
      .filter(([, k]) => 'deriv' in k)
      .map(([op]) => op);
    expect(Object.keys(UNARY_GRADS).sort()).toEqual(withDerivative.sort());
  });

  for (const op of Object.keys(UNARY_GRADS) as (keyof typeof UNARY_GRADS)[]) {
    it(`${op}: forward and backward vs float64, finite differences`, async () => {
      const wd = await getEngine();
      const { ref, deriv } = UNARY[op];
      await wd.scope(async () => {
        for (const shape of SHAPES) {
          const n = shape.reduce((a, b) => a * b, 1);
          const xs = inputFor(ref, deriv, n, n + 1);
          const gs = randn(n, n + 2);
          const x = wd.tensor(xs, shape, { requiresGrad: true });
          const y = unary(op, x, P);
          expectClose(await y.toArray(), Array.from(xs, (v) => ref(v, P)), 2e-6, 1e-7, `${op}${JSON.stringify(shape)} forward`);
          y.mul(wd.tensor(gs, shape)).sum().backward();
          const got = await read(x.grad!);
          expectClose(got, Array.from(xs, (v, i) => gs[i] * deriv(v, P)), 1e-5, 1e-6, `${op} vjp vs derivative`);
          // Central differences of the float64 reference of sum(g · op(x)).
          const fd = finiteDiff((xx) => xx.reduce((s, v, i) => s + gs[i] * ref(v, P), 0), xs);
          expectClose(got, fd, 1e-4, 1e-5, `${op} vjp vs finite differences`);
        }
      });
    });
  }

  it('pow with integer and fractional exponents, negative bases', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      const xs = randn(101, 5, 2);
      for (const p of [2, 3, -1, 0.5]) {
        const src = p === 0.5 || p === -1 ? xs.map((v) => Math.abs(v) + 0.2) : xs;
        const x = wd.tensor(src, [101], { requiresGrad: true });
        const y = x.pow(p);
        expectClose(await y.toArray(), Array.from(src, (v) => Math.pow(v, p)), 1e-5, 1e-6, `pow ${p}`);
        y.sum().backward();
        expectClose(await x.grad!.toArray(), Array.from(src, (v) => p * Math.pow(v, p - 1)), 1e-4, 1e-5, `pow ${p} grad`);
      }
    });
  });

  it('silu and swiglu: accurate and finite far in both tails', async () => {
    const wd = await getEngine();
    const tails = [-1000, -100, -89, -80, -60, -30, -10, -1.2785, -1e-3, 0, 1e-3, 10, 17, 30, 89, 100, 1000];
    const xs = Float32Array.from([...randn(397, 7, 4), ...tails]);
    const n = xs.length;
    const { ref, deriv } = UNARY.silu;
    await wd.scope(async () => {
      const x = wd.tensor(xs, [n], { requiresGrad: true });
      const gs = randn(n, 8);
      const y = unary('silu', x);
      // Relative accuracy down to x = −80 (|silu| ~ 1e-33; f32 exp of a large argument: ~3e-6
      // relative), then e^x leaves the normal range (atol 1e-36 allows a flush to zero).
      expectClose(await y.toArray(), Array.from(xs, (v) => ref(v, 0)), 2e-5, 1e-36, 'silu tails');
      y.mul(wd.tensor(gs, [n])).sum().backward();
      const gx = await x.grad!.toArray();
      expect(gx.every(Number.isFinite)).toBe(true);
      // atol: the derivative crosses 0 near x = −1.28 (cancellation in 1 + x·σ(−x)).
      expectClose(gx, Array.from(xs, (v, i) => gs[i] * deriv(v, 0)), 1e-5, 1e-7, 'silu backward tails');
      const at = (v: number) => xs.indexOf(v);
      expect([gx[at(1000)] / gs[at(1000)], Math.abs(gx[at(-1000)]), gx[at(100)] / gs[at(100)]]).toEqual([1, 0, 1]);
      // The gate with an operand in the tails: no NaN where silu(a) = −0 and b is large.
      const a = wd.tensor(xs, [n], { requiresGrad: true });
      const b = wd.tensor(randn(n, 9, 100), [n], { requiresGrad: true });
      binary('swiglu', a, b).sum().backward();
      for (const t of [a.grad!, b.grad!]) expect((await t.toArray()).every(Number.isFinite)).toBe(true);
    });
  });

  it('gelu is exact (erf), accurate in the negative tail', async () => {
    const wd = await getEngine();
    const xs = Float32Array.from([-8, -6, -5, -3, -1, -0.1, 0, 0.1, 1, 3, 5, 8]);
    const got = await wd.scope(() => wd.tensor(xs).gelu()).toArray();
    // Relative accuracy holds even where x·Φ(x) is ~1e-15.
    expectClose(got, Array.from(xs, (v) => UNARY.gelu.ref(v, 0)), 1e-5, 1e-30, 'gelu tail'); // f32 exp near -32: ~5e-6 relative
    expect(erfc64(0.5)).toBeCloseTo(0.4795001221869535, 15);
    expect(erfc64(3)).toBeCloseTo(2.209049699858544e-5, 18);
  });
});

/** Float64 sum of `data` (row-major, shape `from`) over the dims broadcast from `to`: undoes broadcasting. */
function sumToRef(data: ArrayLike<number>, from: number[], to: number[]): Float64Array {
  const out = new Float64Array(to.reduce((a, b) => a * b, 1));
  const st = broadcastStrides(to, contiguousStrides(to), from);
  const sf = contiguousStrides(from);
  for (let i = 0; i < data.length; i++) {
    let j = 0;
    for (let d = 0; d < from.length; d++) j += (Math.floor(i / sf[d]) % from[d]) * st[d];
    out[j] += data[i];
  }
  return out;
}

describe('binary ops: every entry of the gradient table', () => {
  const cases: [number[], number[]][] = [
    [[7], [7]],
    [[13, 31], [31]],
    [[4, 1, 6], [5, 1]],
    [[1], [3, 7]],
    [[2, 3, 5, 7], [3, 1, 7]],
    // Multiples of 4 elements: the vec4 kernel with each operand flat, broadcast over leading dims
    // ('inner': a bias, a position embedding) or over trailing dims ('outer': a per-sample scale).
    [[6, 8], [8]],
    [[3, 4, 8], [3, 1, 1]],
    [[1, 4, 8], [5, 4, 8]],
    [[2, 5, 12], [1, 5, 12]],
    [[4, 1], [4, 12]],
  ];
  it('the table has a rule for exactly the ops with float64 partial derivatives', () => {
    const withPartials = Object.entries(BINARY)
      .filter(([, k]) => 'partials' in k)
      .map(([op]) => op);
    expect(Object.keys(BINARY_GRADS).sort()).toEqual(withPartials.sort());
  });

  for (const op of Object.keys(BINARY_GRADS) as (keyof typeof BINARY_GRADS)[]) {
    it(`${op} with broadcasting, forward and both gradients`, async () => {
      const wd = await getEngine();
      const { ref, partials } = BINARY[op];
      await wd.scope(async () => {
        for (const [sa, sb] of cases) {
          const na = sa.reduce((p, q) => p * q, 1);
          const nb = sb.reduce((p, q) => p * q, 1);
          const as = randn(na, na);
          // b away from 0 (a divisor), of either sign.
          const bs = randu(nb, nb + 7, 0.5, 2).map((v, i) => (i % 3 === 1 ? -v : v));
          const a = wd.tensor(as, sa, { requiresGrad: true });
          const b = wd.tensor(bs, sb, { requiresGrad: true });
          const y = binary(op, a, b);
          const want = broadcastRef(as, sa, bs, sb, ref);
          expect(y.shape).toEqual(want.shape);
          expectClose(await y.toArray(), want.data, 1e-6, 1e-7, `${op} ${JSON.stringify([sa, sb])}`);
          const gs = randn(want.data.length, 99);
          y.mul(wd.tensor(gs, want.shape)).sum().backward();
          const [ga, gb] = [await read(a.grad!), await read(b.grad!)];
          // Float64: g ⊙ ∂op/∂a on the broadcast grid, summed back to each operand's shape.
          const da = broadcastRef(as, sa, bs, sb, partials[0]).data.map((v, i) => v * gs[i]);
          const db = broadcastRef(as, sa, bs, sb, partials[1]).data.map((v, i) => v * gs[i]);
          expectClose(ga, sumToRef(da, want.shape, sa), 1e-5, 1e-6, `${op} grad a vs partials`);
          expectClose(gb, sumToRef(db, want.shape, sb), 1e-5, 1e-6, `${op} grad b vs partials`);
          const loss = (aa: ArrayLike<number>, bb: ArrayLike<number>) => broadcastRef(aa, sa, bb, sb, ref).data.reduce((s, v, i) => s + v * gs[i], 0);
          expectClose(ga, finiteDiff((x) => loss(x, bs), as), 1e-4, 1e-5, `${op} grad a vs finite differences`);
          expectClose(gb, finiteDiff((x) => loss(as, x), bs), 1e-4, 1e-5, `${op} grad b vs finite differences`);
        }
      });
    });
  }

  it('scalar variants and rsub', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      const xs = randn(37, 3);
      const x = wd.tensor(xs, [37], { requiresGrad: true });
      const y = x.add(2).mul(3).sub(1).div(4);
      expectClose(await y.toArray(), Array.from(xs, (v) => ((v + 2) * 3 - 1) / 4), 1e-6, 1e-6, 'scalar chain');
      y.sum().backward();
      expectClose(await x.grad!.toArray(), new Array(37).fill(0.75), 1e-6, 0, 'scalar chain grad');
    });
  });

  it('shape mismatch names both shapes', async () => {
    const wd = await getEngine();
    wd.scope(() => {
      const a = wd.zeros([2, 3]);
      const b = wd.zeros([4]);
      expect(() => a.add(b)).toThrow(/\[2, 3\].*\[4\]/);
    });
  });
});

describe('strided views read in place', () => {
  it('transpose, permute, slice and broadcast views as inputs', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      const xs = randn(3 * 5 * 7, 11);
      const x = wd.tensor(xs, [3, 5, 7]);
      const p = x.permute(2, 0, 1); // (7, 3, 5)
      const got = await p.exp().toArray();
      const want: number[] = [];
      for (let k = 0; k < 7; k++) for (let i = 0; i < 3; i++) for (let j = 0; j < 5; j++) want.push(Math.exp(xs[(i * 5 + j) * 7 + k]));
      expectClose(got, want, 2e-6, 0, 'permuted exp');
      const s = x.slice(1, 1, 4).slice(2, 2, 6); // (3, 3, 4)
      const sw: number[] = [];
      for (let i = 0; i < 3; i++) for (let j = 1; j < 4; j++) for (let k = 2; k < 6; k++) sw.push(xs[(i * 5 + j) * 7 + k]);
      expectClose(await s.contiguous().toArray(), sw, 0, 0, 'double slice');
      const sum = s.add(p.slice(0, 0, 4).permute(1, 2, 0).slice(1, 0, 3)); // both strided
      const pv = await p.slice(0, 0, 4).permute(1, 2, 0).slice(1, 0, 3).contiguous().toArray();
      expectClose(await sum.toArray(), sw.map((v, i) => v + pv[i]), 1e-6, 1e-7, 'strided + strided');
    });
  });

  it('views at offsets: a multiple of 4 takes the vec4 kernel, others the strided one', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      const xs = randn(6 * 8, 21);
      const ys = randn(4 * 8, 22);
      const x = wd.tensor(xs, [6, 8]);
      const y = wd.tensor(ys, [4, 8]);
      for (const start of [1, 2]) {
        // rows start..start+4 of x: offset 8 (vec4) and 16; then an offset of 3 elements (strided).
        const got = await x.slice(0, start, start + 4).mul(y).toArray();
        expectClose(got, ys.map((v, i) => v * xs[start * 8 + i]), 1e-6, 0, `slice at row ${start} · y`);
      }
      const flat = wd.tensor(xs, [48]);
      const got = await flat.slice(0, 3, 35).add(wd.tensor(ys, [32])).toArray();
      expectClose(got, ys.map((v, i) => v + xs[3 + i]), 1e-6, 0, 'offset 3 + y');
      // An 'outer' operand at an offset: a per-row scale read from the middle of a vector.
      const s = wd.tensor(randn(10, 23), [10]);
      const sv = await s.toArray();
      const scaled = await y.mul(s.slice(0, 4, 8).reshape(4, 1)).toArray();
      expectClose(scaled, ys.map((v, i) => v * sv[4 + Math.floor(i / 8)]), 1e-6, 0, 'y · s[4:8] per row');
    });
  });

  it('gradients flow through views back to the base tensor', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      const xs = randn(4 * 6, 12);
      const x = wd.tensor(xs, [4, 6], { requiresGrad: true });
      const y = x.transpose().slice(0, 1, 4).reshape(-1).mul(wd.tensor(randn(12, 13), [12]));
      y.sum().backward();
      const g = await x.grad!.toArray();
      const gs = randn(12, 13);
      const want = new Array(24).fill(0);
      // transpose → (6, 4); rows 1..3 → (3, 4) flattened: element (r, c) = x[c, r + 1]
      for (let r = 0; r < 3; r++) for (let c = 0; c < 4; c++) want[c * 6 + r + 1] = gs[r * 4 + c];
      expectClose(g, want, 1e-6, 0, 'view grads');
    });
  });

  it('concat along an axis, with gradients split back', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      const a = wd.tensor(randn(6, 1), [2, 3], { requiresGrad: true });
      const b = wd.tensor(randn(10, 2), [2, 5], { requiresGrad: true });
      const c = concat([a, b], 1);
      expect(c.shape).toEqual([2, 8]);
      const av = await a.toArray();
      const bv = await b.toArray();
      expectClose(await c.toArray(), [...av.slice(0, 3), ...bv.slice(0, 5), ...av.slice(3), ...bv.slice(5)], 0, 0, 'concat');
      c.mul(wd.tensor(Array.from({ length: 16 }, (_, i) => i), [2, 8])).sum().backward();
      expect(Array.from(await a.grad!.toArray())).toEqual([0, 1, 2, 8, 9, 10]);
      expect(Array.from(await b.grad!.toArray())).toEqual([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]);
    });
  });
});

describe('launch geometry', () => {
  it('grid1d folds large launches under the per-dimension cap', () => {
    expect(grid1d(1, 256)).toEqual([1, 1, 1]);
    expect(grid1d(256 * 65535, 256)).toEqual([65535, 1, 1]);
    const [x, y] = grid1d(256 * 65535 + 1, 256);
    expect(x * y * 256).toBeGreaterThanOrEqual(256 * 65535 + 1);
    expect(x).toBeLessThanOrEqual(65535);
  });

  it('a launch of more than 65535 workgroups covers every element exactly once', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      const n = 256 * 65535 + 1000; // 16.8 M elements: the grid folds into y
      const x = wd.full([n], 0.5);
      const y = x.add(0.25); // every element must be written
      const s = await y.sum().item();
      expect(s).toBeCloseTo(n * 0.75, -1);
      const tail = await y.slice(0, n - 3, n).contiguous().toArray();
      expect(Array.from(tail)).toEqual([0.75, 0.75, 0.75]);
    });
  });
});
