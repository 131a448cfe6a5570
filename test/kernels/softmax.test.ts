/**
 * Softmax / log-softmax with temperature and center: forward against the float64 reference, the
 * backward (random upstream g) against the reference VJP and against central finite differences of
 * the float64 forward, in every row layout forced in turn ('serial': one invocation per row,
 * 'subgroup': one 8-lane subgroup per row, 'workgroup' and 'workgroup-subgroup': one 256-lane
 * workgroup per row; helpers ROW_CONFIGS) and in the automatic choice. Row lengths 1, 7, 31, 67
 * (< one wide stride of 256, and 67 = one serial block of 64 plus a tail), 300 (a wide stride plus
 * a tail) and 65 537 (many blocks and a partial one), scalar; 8, 36, 300 and 1028 as vec4 rows
 * (D % 4 = 0), the online max/sum stepping 4 vec4 at a time with a masked tail.
 *
 * Tolerances (f32 kernels vs float64): an output element carries ≈ |z_j − m|·2⁻²³ relative error
 * from forming z in f32, plus the error of the row sum (blocked, ~1e-7 relative even at K = 65 537),
 * so rtol 1e-5 with atol 1e-7 holds wherever y is not negligible. Gradients involve a cancellation
 * (g − Σ g·y), so they are compared with atol = 1e-5 · max|dx| and rtol 1e-4.
 */
import { describe, expect, it } from 'vitest';
import type { Engine } from '../../index.js';
import { logSoftmaxRef, logSoftmaxVjpRef, softmaxRef, softmaxVjpRef, type SoftmaxRefOptions } from '../../kernels/softmax.js';
import { dot, expectClose, finiteDiff, getEngine, randn, read, ROW_CONFIGS } from '../helpers.js';


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

/**
 * The f32 error bound of the fused backward, per element: softmax forms g_j − Σ g·y and scales by
 * y_j/τ, so its absolute error is ≈ a few ulp of (|g_j| + Σ|g·y|)·y_j/τ (when y is nearly one-hot
 * the difference cancels to ~1e-7 and only this bound is meaningful); log-softmax forms
 * g_j − p_j Σ g: error ≈ ulp·(|g_j| + p_j Σ|g|)/τ. 16 ulp of margin; rows of length D.
 */
function gradTol(log: boolean, x: ArrayLike<number>, D: number, g: ArrayLike<number>, o: SoftmaxRefOptions): { dx: Float64Array; dc: Float64Array } {
  const y = softmaxRef(x, D, o);
  const tau = o.temperature ?? 1;
  const ulp16 = 16 * 2 ** -24;
  const dx = new Float64Array(x.length);
  const dc = new Float64Array(D);
  for (let r = 0; r * D < x.length; r++) {
    let s = 0;
    for (let j = 0; j < D; j++) s += log ? Math.abs(g[r * D + j]) : Math.abs(g[r * D + j] * y[r * D + j]);
    for (let j = 0; j < D; j++) {
      const i = r * D + j;
      dx[i] = (ulp16 * (log ? Math.abs(g[i]) + y[i] * s : y[i] * (Math.abs(g[i]) + s))) / tau + 1e-9;
      dc[j] += dx[i];
    }
  }
  return { dx, dc };
}

function expectFinite(a: ArrayLike<number>, what: string): void {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) throw new Error(`${what}: element ${i} is ${a[i]}`);
}

/** Values that are multiples of 2⁻¹²: x − c and x − max are then exact in f32 (|x| < 2¹¹). */
function quantized(n: number, seed: number, scale: number): Float32Array {
  return randn(n, seed, scale).map((v) => Math.round(v * 4096) / 4096);
}

/**
 * Central differences of the float64 forward, f = Σ g ⊙ softmax(x), row by row: rows are
 * independent, so each row's scalar is differenced alone and the roundoff stays at the scale of one
 * row (differencing the whole tensor's sum loses ~1e-6 at 64×67). The step is h·τ (1e-5 in units
 * of z = x/τ). The center's derivative is the sum over rows of each row's differences.
 */
function rowFiniteDiff(log: boolean, x: ArrayLike<number>, D: number, g: ArrayLike<number>, o: SoftmaxRefOptions): { dx: Float64Array; dc: Float64Array } {
  const h = 1e-5 * (o.temperature ?? 1);
  const dx = new Float64Array(x.length);
  const dc = new Float64Array(D);
  for (let r = 0; r * D < x.length; r++) {
    const xr = Array.from(x).slice(r * D, r * D + D);
    const gr = Array.from(g).slice(r * D, r * D + D);
    dx.set(finiteDiff((xx) => dot(gr, ref(log, xx, D, o)), xr, h), r * D);
    if (o.center) {
      const fc = finiteDiff((cc) => dot(gr, ref(log, xr, D, { ...o, center: cc })), o.center, h);
      for (let j = 0; j < D; j++) dc[j] += fc[j];
    }
  }
  return { dx, dc };
}

interface Case {
  shape: number[];
  log: boolean;
  temperature?: number;
  center?: boolean;
  scale?: number;
}

const ref = (log: boolean, x: ArrayLike<number>, D: number, o: SoftmaxRefOptions) => (log ? logSoftmaxRef(x, D, o) : softmaxRef(x, D, o));
const vjpRef = (log: boolean, x: ArrayLike<number>, D: number, g: ArrayLike<number>, o: SoftmaxRefOptions) =>
  log ? logSoftmaxVjpRef(x, D, g, o) : softmaxVjpRef(x, D, g, o);

describe.each(ROW_CONFIGS)('softmax family, $name layout', ({ variants, rowLayout }) => {
  const engine = (): Promise<Engine> => getEngine(variants, rowLayout);

  const forwardCases: Case[] = [];
  // Scalar rows (D % 4 ≠ 0) and vec4 rows (D % 4 = 0: 8, 36, 300, 1028), short and long; 70 rows
  // of 36 take the serial layout under 'auto', 3 rows of 1028 the subgroup one.
  for (const shape of [[1], [7], [13, 31], [64, 67], [5, 300], [2, 3, 5], [4, 1], [3, 8], [70, 36], [3, 1028]]) {
    for (const log of [false, true]) {
      forwardCases.push({ shape, log });
      forwardCases.push({ shape, log, temperature: 0.1, center: true, scale: 2 });
    }
  }
  forwardCases.push({ shape: [2, 65537], log: false }, { shape: [2, 65537], log: true, temperature: 0.04, center: true });

  it.each(forwardCases)('forward %o', async (c) => {
    const wd = await engine();
    await wd.scope(async () => {
      const D = c.shape[c.shape.length - 1];
      const xs = randn(numel(c.shape), 11 + D, c.scale ?? 1);
      const cs = c.center ? randn(D, 5 + D, 0.5) : null;
      const x = wd.tensor(xs, c.shape);
      const center = cs ? wd.tensor(cs, [D]) : undefined;
      const opts = { temperature: c.temperature, center };
      const y = c.log ? x.logSoftmax(-1, opts) : x.softmax(-1, opts);
      expect(y.shape).toEqual(c.shape);
      const want = ref(c.log, xs, D, { temperature: c.temperature, center: cs });
      // log-softmax values are O(log D + |z|): an absolute floor of 2e-6 covers the f32 rounding of z.
      expectClose(await read(y), want, 1e-5, c.log ? 2e-6 : 1e-7, `${c.log ? 'logSoftmax' : 'softmax'} ${JSON.stringify(c)}`);
    });
  });

  it('rows sum to one at K = 65 537 (blocked sum keeps the row total accurate)', async () => {
    const wd = await engine();
    await wd.scope(async () => {
      const y = await read(wd.tensor(randn(2 * 65537, 3, 3), [2, 65537]).softmax(-1));
      for (let r = 0; r < 2; r++) {
        let s = 0;
        for (let j = 0; j < 65537; j++) s += y[r * 65537 + j];
        expect(Math.abs(s - 1)).toBeLessThan(1e-5);
      }
    });
  });

  for (const scale of [100, 1000]) {
    it(`τ = 0.04 with logits ±${scale}: no NaN/Inf, matches float64 within rtol 1e-5 / atol 1e-7`, async () => {
      const wd = await engine();
      await wd.scope(async () => {
        const shape = [13, 31];
        // Quantized to 2⁻¹² so x − c is exact in f32: what remains is the kernel's own error.
        const xs = quantized(numel(shape), 21, scale);
        const cs = quantized(31, 22, scale / 10);
        for (const center of [null, cs]) {
          const x = wd.tensor(xs, shape);
          const opts = { temperature: 0.04, center: center ? wd.tensor(center, [1, 31]) : undefined };
          const o64 = { temperature: 0.04, center };
          const y = await read(x.softmax(-1, opts));
          const ly = await read(x.logSoftmax(-1, opts));
          expectFinite(y, 'softmax');
          expectClose(y, softmaxRef(xs, 31, o64), 1e-5, 1e-7, `softmax τ=0.04 ±${scale}`);
          // log-softmax reaches |z| ~ 2·scale/τ = 5e4 here: rtol 1e-6 of it is the f32 resolution.
          for (let i = 0; i < ly.length; i++) if (Number.isNaN(ly[i]) || ly[i] === Infinity) throw new Error(`logSoftmax ${i}: ${ly[i]}`);
          expectClose(ly, logSoftmaxRef(xs, 31, o64), 1e-6, 2e-6, `logSoftmax τ=0.04 ±${scale}`);
        }
      });
    });
  }

  it('τ = 0.04 with unquantized logits ±100 and a center: within the f32 rounding of x − c', async () => {
    const wd = await engine();
    await wd.scope(async () => {
      const xs = randn(7 * 67, 31, 100);
      const cs = randn(67, 32, 10);
      const y = await read(wd.tensor(xs, [7, 67]).softmax(-1, { temperature: 0.04, center: wd.tensor(cs, [67]) }));
      expectFinite(y, 'softmax');
      // x − c (|·| ≲ 400) is rounded to f32 (≤ 2⁻¹⁶ abs), then divided by τ: up to ≈ 4e-4 relative.
      expectClose(y, softmaxRef(xs, 67, { temperature: 0.04, center: cs }), 1e-3, 1e-7, 'softmax τ=0.04 with center');
    });
  });

  const backwardCases: Case[] = [];
  for (const shape of [[1], [7], [13, 31], [64, 67], [3, 300]]) {
    for (const log of [false, true]) {
      backwardCases.push({ shape, log });
      backwardCases.push({ shape, log, temperature: 0.1, center: true, scale: 2 });
    }
  }
  backwardCases.push({ shape: [2, 65537], log: false, temperature: 0.5, center: true }, { shape: [2, 65537], log: true });
  backwardCases.push({ shape: [13, 31], log: false, temperature: 0.04, scale: 1 }, { shape: [13, 31], log: true, temperature: 0.04, center: true, scale: 1 });

  it.each(backwardCases)('backward %o: reference VJP and finite differences', async (c) => {
    const wd = await engine();
    await wd.scope(async () => {
      const D = c.shape[c.shape.length - 1];
      const n = numel(c.shape);
      const xs = randn(n, 41 + D, c.scale ?? 1);
      const gs = randn(n, 43 + D);
      const cs = c.center ? randn(D, 47 + D, 0.5) : null;
      const x = wd.tensor(xs, c.shape, { requiresGrad: true });
      const center = cs ? wd.tensor(cs, [D], { requiresGrad: true }) : undefined;
      const opts = { temperature: c.temperature, center };
      const y = c.log ? x.logSoftmax(-1, opts) : x.softmax(-1, opts);
      y.mul(wd.tensor(gs, c.shape)).sum().backward();
      const o64 = { temperature: c.temperature, center: cs };
      const want = vjpRef(c.log, xs, D, gs, o64);
      const tol = gradTol(c.log, xs, D, gs, o64);
      const dx = await read(x.grad!);
      expectWithin(dx, want.dx, tol.dx, 1e-4, `dx ${JSON.stringify(c)}`);
      const dc = cs ? await read(center!.grad!) : null;
      if (dc) expectWithin(dc, want.dcenter, tol.dc, 1e-4, `dcenter ${JSON.stringify(c)}`);
      if (n <= 5000) {
        const fd = rowFiniteDiff(c.log, xs, D, gs, o64);
        expectWithin(dx, fd.dx, tol.dx, 1e-4, `dx vs finite differences ${JSON.stringify(c)}`);
        if (dc) expectWithin(dc, fd.dc, tol.dc, 1e-4, `dcenter vs finite differences ${JSON.stringify(c)}`);
      }
    });
  });

  it('center gradient alone (x constant), center of shape [1, D]', async () => {
    const wd = await engine();
    await wd.scope(async () => {
      const xs = randn(9 * 13, 51);
      const cs = randn(13, 52);
      const gs = randn(9 * 13, 53);
      const center = wd.tensor(cs, [1, 13], { requiresGrad: true });
      const y = wd.tensor(xs, [9, 13]).softmax(-1, { temperature: 0.2, center });
      y.mul(wd.tensor(gs, [9, 13])).sum().backward();
      expect(center.grad!.shape).toEqual([1, 13]);
      const o64 = { temperature: 0.2, center: cs };
      expectWithin(await read(center.grad!), softmaxVjpRef(xs, 13, gs, o64).dcenter, gradTol(false, xs, 13, gs, o64).dc, 1e-4, 'dcenter');
    });
  });

  it('non-contiguous input (a transposed view) and its gradient', async () => {
    const wd = await engine();
    await wd.scope(async () => {
      // x is [31, 13]; softmax runs over the rows of xᵀ ([13, 31]).
      const xs = randn(31 * 13, 61);
      const gs = randn(13 * 31, 62);
      const x = wd.tensor(xs, [31, 13], { requiresGrad: true });
      const xtData = new Float64Array(13 * 31);
      for (let i = 0; i < 31; i++) for (let j = 0; j < 13; j++) xtData[j * 31 + i] = xs[i * 13 + j];
      for (const log of [false, true]) {
        x.zeroGrad();
        const xt = x.transpose(); // a fresh view each time: backward releases the graph it ran through
        expect(xt.isContiguous).toBe(false);
        const y = log ? xt.logSoftmax(-1, { temperature: 0.5 }) : xt.softmax(-1, { temperature: 0.5 });
        expectClose(await read(y), ref(log, xtData, 31, { temperature: 0.5 }), 1e-5, 2e-6, 'forward of a transposed view');
        y.mul(wd.tensor(gs, [13, 31])).sum().backward();
        const want = vjpRef(log, xtData, 31, gs, { temperature: 0.5 }).dx;
        const tol = gradTol(log, xtData, 31, gs, { temperature: 0.5 }).dx;
        const wantX = new Float64Array(31 * 13);
        const tolX = new Float64Array(31 * 13);
        for (let i = 0; i < 31; i++) {
          for (let j = 0; j < 13; j++) {
            wantX[i * 13 + j] = want[j * 31 + i];
            tolX[i * 13 + j] = tol[j * 31 + i];
          }
        }
        expectWithin(await read(x.grad!), wantX, tolX, 1e-4, 'dx through a transposed view');
      }
    });
  });

  it('non-contiguous upstream gradient (the output used through a transpose)', async () => {
    const wd = await engine();
    await wd.scope(async () => {
      const xs = randn(13 * 31, 63);
      const gs = randn(13 * 31, 64);
      const gT = new Float32Array(31 * 13);
      for (let i = 0; i < 13; i++) for (let j = 0; j < 31; j++) gT[j * 13 + i] = gs[i * 31 + j];
      for (const log of [false, true]) {
        const x = wd.tensor(xs, [13, 31], { requiresGrad: true });
        const y = log ? x.logSoftmax(-1, { temperature: 0.3 }) : x.softmax(-1, { temperature: 0.3 });
        y.transpose().mul(wd.tensor(gT, [31, 13])).sum().backward();
        const o = { temperature: 0.3 };
        expectWithin(await read(x.grad!), vjpRef(log, xs, 31, gs, o).dx, gradTol(log, xs, 31, gs, o).dx, 1e-4, 'dx with a transposed g');
      }
    });
  });

  it('many rows (70 000 × 3: the workgroup grid folds past 65 535)', async () => {
    const wd = await engine();
    await wd.scope(async () => {
      const xs = randn(70000 * 3, 71);
      const y = await read(wd.tensor(xs, [70000, 3]).softmax(-1, { temperature: 0.7 }));
      expectClose(y, softmaxRef(xs, 3, { temperature: 0.7 }), 1e-5, 1e-7, 'softmax 70000×3');
    });
  });

  it('frees every temporary (forward + backward inside a scope)', async () => {
    const wd = await engine();
    await wd.sync();
    const before = wd.memory().liveBytes;
    await wd.scope(async () => {
      const x = wd.randn([13, 31], { seed: 1, requiresGrad: true });
      const center = wd.randn([31], { seed: 2, requiresGrad: true });
      x.transpose().contiguous().transpose().softmax(-1, { temperature: 0.3, center }).mul(x).sum().backward();
      x.logSoftmax(-1, { center }).sum().backward();
      await x.grad!.toArray();
      x.dispose();
      center.dispose();
    });
    expect(wd.memory().liveBytes).toBe(before);
  });
});

describe('softmax errors', () => {
  it('names both shapes when the center has the wrong length', async () => {
    const wd = await getEngine('cpu');
    await wd.scope(() => {
      const x = wd.zeros([4, 7]);
      expect(() => x.softmax(-1, { center: wd.zeros([6]) })).toThrow(/center \[6\].*x \[4, 7\]/);
      expect(() => x.logSoftmax(-1, { center: wd.zeros([2, 7]) })).toThrow(/center \[2, 7\].*x \[4, 7\]/);
    });
  });

  it('rejects a non-positive temperature and a dim other than the last', async () => {
    const wd = await getEngine('cpu');
    await wd.scope(() => {
      const x = wd.zeros([4, 7]);
      expect(() => x.softmax(-1, { temperature: 0 })).toThrow(/temperature/);
      expect(() => x.softmax(0)).toThrow(/last dimension/);
    });
  });

  it('a rank-1 input is one row', async () => {
    const wd = await getEngine('cpu');
    const sum = await wd.scope(async () => {
      const y = await wd.tensor([1, 2, 3]).softmax().toArray();
      return y.reduce((a, b) => a + b, 0);
    });
    expect(sum).toBeCloseTo(1, 6);
  });
});
