/**
 * Soft-target cross-entropy at a temperature: the fused forward (per-row loss) against the float64
 * reference, the backward to the logits (random upstream g per row) against the reference VJP and
 * against central finite differences of the float64 forward, in every row layout and the automatic
 * choice (helpers ROW_CONFIGS), scalar and vec4 rows. Targets are softmax-normalised (DINO's
 * teacher) and also unnormalised (Σ target ≠ 1).
 *
 * Tolerances: the loss is T·log S + Σ t·(M − z) (two non-negative terms); each carries f32 rounding
 * of z = (l − M)/τ (≈ 2⁻²⁴·|z|) and of the blocked row sums, so rtol 1e-5 with an absolute floor of
 * 1e-6·(1 + Σ|t|·max|z|) (the scale of the terms) holds. The gradient g·(p·T − t)/τ cancels when
 * p ≈ t, so it is compared per element against ulp·|g|·(p·|T| + |t|)/τ plus rtol 1e-4.
 */
import { describe, expect, it } from 'vitest';
import { softCrossEntropyRef, softCrossEntropyVjpRef } from '../../kernels/cross-entropy.js';
import { softmaxRef } from '../../kernels/softmax.js';
import { ops } from '../../index.js';
import { getEngine, randn, randu, read, ROW_CONFIGS } from '../helpers.js';

const { softCrossEntropy } = ops;


function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** |got_i − want_i| ≤ rtol·|want_i| + tol_i for every i; reports the worst element. */
function expectWithin(got: ArrayLike<number>, want: ArrayLike<number>, tol: ArrayLike<number>, rtol: number, what: string): void {
  expect(got.length, `${what}: length`).toBe(want.length);
  let worst = -1;
  let excess = 0;
  for (let i = 0; i < want.length; i++) {
    const e = Math.abs(got[i] - want[i]) - (rtol * Math.abs(want[i]) + tol[i]);
    if (!(e <= 0) && (worst < 0 || !(e <= excess))) {
      worst = i;
      excess = e;
    }
  }
  if (worst >= 0) {
    throw new Error(`${what}: element ${worst} is ${got[worst]}, expected ${want[worst]} (tolerance ${rtol}·|want| + ${tol[worst]})`);
  }
}

/** Absolute floor of the loss comparison per row: 1e-6 of the size of its two terms. */
function lossTol(t: ArrayLike<number>, l: ArrayLike<number>, D: number, tau: number): Float64Array {
  const rows = l.length / D;
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let m = -Infinity;
    let lo = Infinity;
    let ta = 0;
    for (let j = 0; j < D; j++) {
      m = Math.max(m, l[r * D + j]);
      lo = Math.min(lo, l[r * D + j]);
      ta += Math.abs(t[r * D + j]);
    }
    out[r] = 1e-6 * (1 + ta * ((m - lo) / tau + Math.log(D)));
  }
  return out;
}

/** Per-element f32 bound of the backward: 16 ulp of |g|·(p·|T| + |t|)/τ. */
function gradTol(t: ArrayLike<number>, l: ArrayLike<number>, D: number, g: ArrayLike<number>, tau: number): Float64Array {
  const p = softmaxRef(l, D, { temperature: tau });
  const out = new Float64Array(l.length);
  for (let r = 0; r * D < l.length; r++) {
    let tt = 0;
    for (let j = 0; j < D; j++) tt += t[r * D + j];
    for (let j = 0; j < D; j++) {
      const i = r * D + j;
      out[i] = (16 * 2 ** -24 * Math.abs(g[r]) * (p[i] * Math.abs(tt) + Math.abs(t[i]))) / tau + 1e-10;
    }
  }
  return out;
}

/**
 * Five-point central differences of the float64 loss, row by row (rows are independent):
 * f′ ≈ (f(x−2h) − 8f(x−h) + 8f(x+h) − f(x+2h)) / 12h with h = 1e-3·τ (truncation O(h⁴), negligible).
 * A row's loss reaches |z| ~ 1e4 at τ = 0.04 with logits ±100, so differencing it still rounds:
 * `roundoff` bounds that error per element (≈ 8 ε₆₄ · |g_r| · Σ_j |t_j|(|z_j| + |lse|) / h).
 */
function rowFiniteDiff(t: ArrayLike<number>, l: ArrayLike<number>, D: number, g: ArrayLike<number>, tau: number): { fd: Float64Array; roundoff: Float64Array } {
  const h = 1e-3 * tau;
  const fd = new Float64Array(l.length);
  const roundoff = new Float64Array(l.length);
  for (let r = 0; r * D < l.length; r++) {
    const tr = Array.from(t).slice(r * D, r * D + D);
    const lr = Float64Array.from(Array.from(l).slice(r * D, r * D + D));
    const f = () => g[r] * softCrossEntropyRef(tr, lr, D, tau)[0];
    let m = -Infinity;
    for (const v of lr) m = Math.max(m, v / tau);
    let s = 0;
    for (const v of lr) s += Math.exp(v / tau - m);
    const lse = m + Math.log(s);
    let mag = 0;
    for (let j = 0; j < D; j++) mag += Math.abs(tr[j]) * (Math.abs(lr[j] / tau) + Math.abs(lse));
    for (let j = 0; j < D; j++) {
      const v = lr[j];
      const at = (d: number) => {
        lr[j] = v + d;
        const y = f();
        lr[j] = v;
        return y;
      };
      fd[r * D + j] = (at(-2 * h) - 8 * at(-h) + 8 * at(h) - at(2 * h)) / (12 * h);
      roundoff[r * D + j] = (8 * 2.2e-16 * Math.abs(g[r]) * mag) / h;
    }
  }
  return { fd, roundoff };
}

/** Targets: softmax of random teacher logits at τ = 0.04 (sums to 1), or unnormalised uniform. */
function targets(n: number, D: number, seed: number, normalised: boolean): Float64Array {
  if (normalised) return softmaxRef(randn(n, seed, 0.1), D, { temperature: 0.04 });
  return Float64Array.from(randu(n, seed, 0, 0.5));
}

interface Case {
  shape: number[];
  temperature: number;
  normalised: boolean;
  scale?: number;
}

describe.each(ROW_CONFIGS)('softCrossEntropy, $name layout', ({ variants, rowLayout }) => {
  const cases: Case[] = [];
  for (const shape of [[1], [7], [13, 31], [64, 67], [5, 300], [2, 3, 5], [3, 1], [70, 36], [3, 1028]]) {
    cases.push({ shape, temperature: 0.1, normalised: true }, { shape, temperature: 1, normalised: false });
  }
  cases.push({ shape: [2, 65537], temperature: 0.1, normalised: true }, { shape: [13, 31], temperature: 0.04, normalised: true, scale: 100 });

  it.each(cases)('forward and backward %o', async (c) => {
    const wd = await getEngine(variants, rowLayout);
    await wd.scope(async () => {
      const D = c.shape[c.shape.length - 1];
      const n = numel(c.shape);
      const rows = n / D;
      const ts = Float32Array.from(targets(n, D, 3 + D, c.normalised));
      const ls = randn(n, 5 + D, c.scale ?? 1);
      const gs = randn(rows, 7 + D);
      const target = wd.tensor(ts, c.shape);
      const logits = wd.tensor(ls, c.shape, { requiresGrad: true });
      const loss = softCrossEntropy(target, logits, { temperature: c.temperature });
      expect(loss.shape).toEqual(c.shape.slice(0, -1));
      const got = await read(loss);
      for (const v of got) expect(Number.isFinite(v)).toBe(true);
      expectWithin(got, softCrossEntropyRef(ts, ls, D, c.temperature), lossTol(ts, ls, D, c.temperature), 1e-5, `loss ${JSON.stringify(c)}`);

      loss.mul(wd.tensor(gs, loss.shape)).sum().backward();
      const dl = await read(logits.grad!);
      const tol = gradTol(ts, ls, D, gs, c.temperature);
      expectWithin(dl, softCrossEntropyVjpRef(ts, ls, D, gs, c.temperature), tol, 1e-4, `dlogits ${JSON.stringify(c)}`);
      if (n <= 5000) {
        const { fd, roundoff } = rowFiniteDiff(ts, ls, D, gs, c.temperature);
        const tolFd = tol.map((v, i) => v + roundoff[i]);
        expectWithin(dl, fd, tolFd, 1e-4, `dlogits vs finite differences ${JSON.stringify(c)}`);
      }
    });
  });

  it('τ = 0.04 with logits ±1000: finite loss and gradient', async () => {
    const wd = await getEngine(variants, rowLayout);
    await wd.scope(async () => {
      const ts = Float32Array.from(targets(7 * 31, 31, 9, true));
      const ls = randn(7 * 31, 10, 1000);
      const logits = wd.tensor(ls, [7, 31], { requiresGrad: true });
      const loss = softCrossEntropy(wd.tensor(ts, [7, 31]), logits, { temperature: 0.04 });
      const got = await read(loss);
      expectWithin(got, softCrossEntropyRef(ts, ls, 31, 0.04), lossTol(ts, ls, 31, 0.04), 1e-5, 'loss ±1000');
      loss.sum().backward();
      const dl = await read(logits.grad!);
      for (const v of dl) expect(Number.isFinite(v)).toBe(true);
      const ones = new Float64Array(7).fill(1);
      expectWithin(dl, softCrossEntropyVjpRef(ts, ls, 31, ones, 0.04), gradTol(ts, ls, 31, ones, 0.04), 1e-4, 'dlogits ±1000');
    });
  });

  it('non-contiguous target and logits (transposed views)', async () => {
    const wd = await getEngine(variants, rowLayout);
    await wd.scope(async () => {
      // Stored as [D, rows] = [31, 13]; the op sees the [13, 31] transposes.
      const tsT = randu(31 * 13, 11, 0, 1);
      const lsT = randn(31 * 13, 12, 2);
      const ts = new Float64Array(13 * 31);
      const ls = new Float64Array(13 * 31);
      for (let i = 0; i < 31; i++) {
        for (let j = 0; j < 13; j++) {
          ts[j * 31 + i] = tsT[i * 13 + j];
          ls[j * 31 + i] = lsT[i * 13 + j];
        }
      }
      const logitsT = wd.tensor(lsT, [31, 13], { requiresGrad: true });
      const target = wd.tensor(tsT, [31, 13]).transpose();
      const logits = logitsT.transpose();
      expect(target.isContiguous || logits.isContiguous).toBe(false);
      const loss = softCrossEntropy(target, logits, { temperature: 0.3 });
      expectWithin(await read(loss), softCrossEntropyRef(ts, ls, 31, 0.3), lossTol(ts, ls, 31, 0.3), 1e-5, 'loss of views');
      const gs = randn(13, 13);
      loss.mul(wd.tensor(gs, [13])).sum().backward();
      const want = softCrossEntropyVjpRef(ts, ls, 31, gs, 0.3);
      const tol = gradTol(ts, ls, 31, gs, 0.3);
      const wantT = new Float64Array(31 * 13);
      const tolT = new Float64Array(31 * 13);
      for (let i = 0; i < 31; i++) {
        for (let j = 0; j < 13; j++) {
          wantT[i * 13 + j] = want[j * 31 + i];
          tolT[i * 13 + j] = tol[j * 31 + i];
        }
      }
      expectWithin(await read(logitsT.grad!), wantT, tolT, 1e-4, 'dlogits through a view');
    });
  });

  it('no gradient reaches the target, even when it requires one', async () => {
    const wd = await getEngine(variants, rowLayout);
    await wd.scope(async () => {
      const target = wd.tensor(Float32Array.from(targets(3 * 7, 7, 1, true)), [3, 7], { requiresGrad: true });
      const logits = wd.randn([3, 7], { seed: 2, requiresGrad: true });
      softCrossEntropy(target, logits, { temperature: 0.1 }).sum().backward();
      expect(target.grad).toBeNull();
      expect(logits.grad).not.toBeNull();
      // With constant logits and a target that requires a gradient, nothing is recorded at all.
      const loss = softCrossEntropy(target, wd.randn([3, 7], { seed: 3 }));
      expect(loss.requiresGrad).toBe(false);
    });
  });

  it('frees every temporary, including the saved row statistics', async () => {
    const wd = await getEngine(variants, rowLayout);
    await wd.sync();
    const before = wd.memory().liveBytes;
    await wd.scope(async () => {
      const logits = wd.randn([13, 31], { seed: 1, requiresGrad: true });
      const target = wd.randn([13, 31], { seed: 2 }).softmax(-1);
      softCrossEntropy(target, logits.transpose().contiguous().transpose(), { temperature: 0.1 }).sum().backward();
      await logits.grad!.toArray();
      logits.dispose();
    });
    expect(wd.memory().liveBytes).toBe(before);
    // Outside any scope: without gradients the statistics are released at once.
    const t = wd.zeros([4, 5]);
    const loss = softCrossEntropy(t, t);
    await loss.toArray();
    loss.dispose();
    t.dispose();
    expect(wd.memory().liveBytes).toBe(before);
  });
});

describe('softCrossEntropy errors', () => {
  it('names both shapes when target and logits differ', async () => {
    const wd = await getEngine('cpu');
    await wd.scope(() => {
      expect(() => softCrossEntropy(wd.zeros([4, 7]), wd.zeros([4, 8]))).toThrow(/target \[4, 7\].*logits \[4, 8\]/);
      expect(() => softCrossEntropy(wd.zeros([7]), wd.zeros([1, 7]))).toThrow(/target \[7\].*logits \[1, 7\]/);
      expect(() => softCrossEntropy(wd.zeros([2, 3]), wd.zeros([2, 3]), { temperature: -1 })).toThrow(/temperature/);
    });
  });
});
