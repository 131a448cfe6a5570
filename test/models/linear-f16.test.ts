/**
 * The mixed-precision Linear (models/nn.ts `linearF16`, what `setPrecision('f16')` runs) forward
 * and backward against float64, and the f16 gradient paths it relies on:
 *
 * - y = act(x₁₆·W₁₆ᵀ + b) with f32 x and W read through casts (rounded to f16) and an f32 bias:
 *   y is f16, and the gradients of x, W (f32 leaves) and b are f32 and equal the float64 VJP of the
 *   same math on the f16-rounded x and W (kernels/matmul.ts matmulVjpRef), at shapes that are not
 *   multiples of any tile (M 7, K 13, N 11, batched rows 2×7), with activation none and GELU, on
 *   both kernel variant sets;
 * - the gradient of an f16 tensor is f16 (autograd gives a gradient its input's dtype), also when
 *   the op that consumed it computed in f32 (a mixed f32 + f16 add);
 * - sumTo of an f16 gradient sums in f32 (what a bias read by an f16 matmul gets).
 *
 * Tolerances: the reference computes exactly on the f16-rounded operands; the GPU path also rounds
 * y, the upstream gradient, Gz = g·act'(Z) and the products Gz·W and Gzᵀ·X to f16 (relative 2⁻¹¹
 * each, f32 accumulation inside), so each gradient is within ~3 roundings (1.5e-3): 2e-3 of its
 * tensor's largest value, against 1e-4–6.4e-4 measured (printed); a missing term or a wrong
 * transpose is off by the tensor's whole scale.
 */
import { describe, expect, it } from 'vitest';
import { roundF16 } from '../../engine/half.js';
import * as ops from '../../engine/ops/index.js';
import { matmulRef, matmulVjpRef } from '../../kernels/matmul.js';
import { reduceRef } from '../../kernels/reduce.js';
import { linearF16 } from '../../models/nn.js';
import { getEngine, randn } from '../helpers.js';

/** max |got − want| / max |want|. */
function scaledError(got: ArrayLike<number>, want: ArrayLike<number>): number {
  expect(got.length).toBe(want.length);
  let scale = 0;
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    scale = Math.max(scale, Math.abs(want[i]));
    const e = Math.abs(got[i] - want[i]);
    worst = Number.isNaN(e) ? Infinity : Math.max(worst, e);
  }
  return worst / Math.max(scale, 1e-30);
}

/** Row-major transpose of an (r, c) matrix. */
function transpose(a: ArrayLike<number>, r: number, c: number): Float64Array {
  const out = new Float64Array(r * c);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) out[j * r + i] = a[i * c + j];
  return out;
}

describe.each(['cpu', 'gpu'] as const)('linearF16 against float64 (%s kernel variants)', (variants) => {
  it.each([
    ['none', [7]],
    ['gelu', [7]],
    ['gelu', [2, 7]],
  ] as const)('activation %s, rows %j: f16 output, f32 gradients of x, W and b', async (act, rows) => {
    const wd = await getEngine(variants);
    const [K, N] = [13, 11];
    const M = rows.reduce((a, b) => a * b, 1);
    const x = randn(M * K, 1);
    const w = randn(N * K, 2, 0.3);
    const b = randn(N, 3, 0.1);
    const g = randn(M * N, 4);
    const out = await wd.scope(async () => {
      const xt = wd.tensor(x, [...rows, K], { requiresGrad: true });
      const wt = wd.tensor(w, [N, K], { requiresGrad: true });
      const bt = wd.tensor(b, [N], { requiresGrad: true });
      const y = linearF16(xt, wt, bt, act);
      expect(y.dtype).toBe('f16');
      // L = Σ y·g with g in f32: y's gradient is g, rounded to f16 on its way back.
      ops.sum(ops.mul(y, wd.tensor(g, [...rows, N]))).backward();
      expect([xt.grad!.dtype, wt.grad!.dtype, bt.grad!.dtype]).toEqual(['f32', 'f32', 'f32']);
      const res = { y: await y.toArray(), gx: await xt.grad!.toArray(), gw: await wt.grad!.toArray(), gb: await bt.grad!.toArray() };
      for (const t of [xt, wt, bt]) t.grad!.dispose();
      return res;
    });
    const x16 = Float64Array.from(x, roundF16);
    const w16T = transpose(Float64Array.from(w, roundF16), N, K); // (K, N)
    const a = { data: x16, shape: [M, K] };
    const bm = { data: w16T, shape: [K, N] };
    const ref = matmulRef(a, bm, b, act);
    const vjp = matmulVjpRef(a, bm, b, act, g);
    const errs = {
      y: scaledError(out.y, ref.y),
      gx: scaledError(out.gx, vjp.ga),
      gw: scaledError(out.gw, transpose(vjp.gb, K, N)),
      gb: scaledError(out.gb, vjp.gbias!),
    };
    console.log(`${variants} ${act} rows ${rows.join('×')}: scaled errors ${Object.entries(errs).map(([k, v]) => `${k} ${v.toExponential(2)}`).join(', ')}`);
    expect(errs.y).toBeLessThan(2e-3);
    for (const k of ['gx', 'gw', 'gb'] as const) expect(errs[k], k).toBeLessThan(2e-3);
  });
});

describe('f16 gradients', () => {
  it('the gradient of an f16 tensor is f16, also through an op that computed in f32', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      const h = wd.tensor(randn(10, 5), [2, 5], { requiresGrad: true, dtype: 'f16' }); // an f16 leaf
      const r = wd.tensor(randn(10, 6), [2, 5], { requiresGrad: true });
      const a = wd.tensor(randn(10, 7), [2, 5], { requiresGrad: true });
      const sum = ops.add(r, h); // f32 + f16 → f32: the add's rule gives h an f32 gradient
      expect(sum.dtype).toBe('f32');
      const a16 = ops.cast(a, 'f16');
      // L = Σ (r + h) + Σ 3·a₁₆: d/dh = 1, d/dr = 1, d/da = 3 (through the cast, back in f32).
      ops.add(ops.sum(sum), ops.sum(ops.cast(ops.mul(a16, 3), 'f32'))).backward();
      expect([h.grad!.dtype, r.grad!.dtype, a.grad!.dtype]).toEqual(['f16', 'f32', 'f32']);
      expect(Array.from(await h.grad!.toArray())).toEqual(new Array(10).fill(1));
      expect(Array.from(await a.grad!.toArray())).toEqual(new Array(10).fill(3));
      for (const t of [h, r, a]) t.grad!.dispose();
    });
  });

  it('sumTo of an f16 gradient (a broadcast f16 + f16 add) sums in f32, exactly as float64 sums the f16 values', async () => {
    const wd = await getEngine();
    // 300 rows of values ~1: an f16 accumulator would lose the low bits (spacing 0.25 above 256).
    const R = 300;
    const C = 7;
    const gv = Float32Array.from(randn(R * C, 8, 1), roundF16);
    const got = await wd.scope(async () => {
      const bias = wd.tensor(new Float32Array(C), [C], { requiresGrad: true, dtype: 'f16' });
      const x = wd.tensor(new Float32Array(R * C), [R, C], { dtype: 'f16' });
      const y = ops.add(x, bias); // f16: its gradient reaches bias through sumTo
      y.backward(wd.tensor(gv, [R, C], { dtype: 'f16' }));
      expect(bias.grad!.dtype).toBe('f16');
      const v = await bias.grad!.toArray();
      bias.grad!.dispose();
      return v;
    });
    const want = reduceRef(gv, [R, C], 0, 'sum'); // float64 sums of the f16 values
    for (let j = 0; j < C; j++) expect(got[j], `column ${j}`).toBe(roundF16(want[j]));
  });
});
