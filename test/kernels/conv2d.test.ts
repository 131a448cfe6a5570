/**
 * Conv2d and max-pool 2-D: forward against the float64 references, backward (VJP with a random
 * upstream gradient) against the float64 VJP and against central finite differences of the
 * float64 forward, error messages, and no leaks.
 *
 * Shapes are chosen so that every block edge is exercised: output channels not a multiple of the
 * forward's or dw's channel block (8), Ho·Wo not a multiple of the pixel block (4), K = Cin·kh·kw
 * not a multiple of 4, Cin not a multiple of the dx channel block (4 below 8 channels, 8 from 8
 * on), input widths not a multiple of 4·stride (dx pixel blocks), and a dw reduction long enough
 * to be split into chunks.
 *
 * Tolerances: float32 accumulation of K (forward, dx: ≤ ~600 terms) or B·Ho·Wo (dw, dbias: ≤ ~3200
 * terms) products of O(1) values. The rounding error grows like √terms·ε·|term| in practice (≤
 * terms·ε worst case, ε = 6e-8), i.e. ≲ 2e-4 absolute for the longest sums; values are O(√terms).
 * We use atol = 2e-6·terms (≥ the worst-case bound for |term| ≲ 30) and rtol 1e-5: a wrong tap,
 * a dropped edge block or an off-by-one anywhere gives errors of O(1).
 */
import { describe, expect, it } from 'vitest';
import type { Engine } from '../../index.js';
import * as ops from '../../engine/ops/index.js';
import type { Conv2dOptions } from '../../engine/ops/index.js';
import { conv2dRef, conv2dVjpRef, maxPool2dRef, maxPool2dVjpRef, type MaxPool2dOptions } from '../../kernels/conv2d.js';
import { dot, expectClose, finiteDiff, getEngine, randn, read } from '../helpers.js';

interface Case {
  name: string;
  B: number;
  Cin: number;
  H: number;
  W: number;
  Cout: number;
  kh: number;
  kw: number;
  opts: Conv2dOptions;
  bias: boolean;
}

const c = (name: string, B: number, Cin: number, H: number, W: number, Cout: number, k: number | [number, number], opts: Conv2dOptions, bias = true): Case => {
  const [kh, kw] = typeof k === 'number' ? [k, k] : k;
  return { name, B, Cin, H, W, Cout, kh, kw, opts, bias };
};

const CASES: Case[] = [
  c('patch embed 8×8/8 (B=2, 3×32×32 → 13)', 2, 3, 32, 32, 13, 8, { stride: 8 }),
  c('odd shapes 3×3 s1 p1 (1, 3×7×9 → 5)', 1, 3, 7, 9, 5, 3, { stride: 1, padding: 1 }),
  c('stem-like 7×7 s2 p3 (2, 3×17×19 → 4)', 2, 3, 17, 19, 4, 7, { stride: 2, padding: 3 }),
  c('1×1 s2, no bias (2, 11×13×11 → 9)', 2, 11, 13, 11, 9, 1, { stride: 2 }, false),
  c('asymmetric 3×2, stride [2,1], pad [0,1] (3, 2×6×5 → 3)', 3, 2, 6, 5, 3, [3, 2], { stride: [2, 1], padding: [0, 1] }),
  c('kernel = padded input (1, 5×5×5 → 6, k7 p1 → 1×1)', 1, 5, 5, 5, 6, 7, { padding: 1 }),
  c('stride > kernel, padded (2, 3×11×13 → 7, k2 s3 p1)', 2, 3, 11, 13, 7, 2, { stride: 3, padding: 1 }),
];

/** A larger case: 117-long dot products, 120k outputs, 67 and 13 channels (not block multiples). */
const LARGE = c('large-ish 3×3 p1 (2, 13×31×29 → 67)', 2, 13, 31, 29, 67, 3, { padding: 1 });

/** Long dw reduction (B·Ho·Wo = 3200) over a small weight: the split-and-reduce path. */
const SPLIT = c('dw split (2, 2×40×40 → 3, k3 p1)', 2, 2, 40, 40, 3, 3, { padding: 1 });

interface Data {
  x: Float32Array;
  w: Float32Array;
  b: Float32Array | null;
  xShape: number[];
  wShape: number[];
}

function data(k: Case, seed: number): Data {
  const xShape = [k.B, k.Cin, k.H, k.W];
  const wShape = [k.Cout, k.Cin, k.kh, k.kw];
  return {
    x: randn(xShape.reduce((a, b) => a * b), seed),
    w: randn(wShape.reduce((a, b) => a * b), seed + 1),
    b: k.bias ? randn(k.Cout, seed + 2) : null,
    xShape,
    wShape,
  };
}

const kTerms = (k: Case): number => k.Cin * k.kh * k.kw;

async function forwardCheck(wd: Engine, k: Case, seed: number): Promise<void> {
  const d = data(k, seed);
  const want = conv2dRef(d.x, d.xShape, d.w, d.wShape, d.b, k.opts);
  await wd.scope(async () => {
    const x = wd.tensor(d.x, d.xShape);
    const w = wd.tensor(d.w, d.wShape);
    const b = d.b ? wd.tensor(d.b, [k.Cout]) : null;
    const y = ops.conv2d(x, w, b, k.opts);
    expect(y.shape).toEqual(want.shape);
    expectClose(await read(y), want.data, 1e-5, 2e-6 * kTerms(k) + 1e-6, `${k.name}: forward`);
  });
}

/** GPU gradients of ⟨G, conv(x, w) + b⟩ for a random G, plus the float64 VJP of the same. */
async function backwardCheck(wd: Engine, k: Case, seed: number, withFiniteDiff: boolean): Promise<void> {
  const d = data(k, seed);
  const { shape: yShape } = conv2dRef(d.x, d.xShape, d.w, d.wShape, d.b, k.opts);
  const G = randn(yShape.reduce((a, b) => a * b), seed + 3);
  const ref = conv2dVjpRef(d.x, d.xShape, d.w, d.wShape, G, k.opts);
  const N = k.B * yShape[2] * yShape[3];
  const [gx, gw, gb] = await wd.scope(async () => {
    const x = wd.tensor(d.x, d.xShape, { requiresGrad: true });
    const w = wd.tensor(d.w, d.wShape, { requiresGrad: true });
    const b = d.b ? wd.tensor(d.b, [k.Cout], { requiresGrad: true }) : null;
    ops.conv2d(x, w, b, k.opts).mul(wd.tensor(G, yShape)).sum().backward();
    const out = [await read(x.grad!), await read(w.grad!), b ? await read(b.grad!) : null] as const;
    x.zeroGrad();
    w.zeroGrad();
    b?.zeroGrad();
    return out;
  });
  const dxTerms = k.Cout * k.kh * k.kw; // an upper bound on the taps reaching one input element
  expectClose(gx, ref.dx, 1e-5, 2e-6 * dxTerms + 1e-6, `${k.name}: dx vs f64 VJP`);
  expectClose(gw, ref.dw, 1e-5, 2e-6 * N + 1e-6, `${k.name}: dw vs f64 VJP`);
  if (gb) expectClose(gb, ref.db, 1e-5, 2e-6 * N + 1e-6, `${k.name}: dbias vs f64 VJP`);
  if (!withFiniteDiff) return;
  // Central differences of the float64 forward: f(θ) = ⟨G, conv(x, w) + b⟩.
  const loss = (x: ArrayLike<number>, w: ArrayLike<number>, b: ArrayLike<number> | null): number =>
    dot(G, conv2dRef(x, d.xShape, w, d.wShape, b, k.opts).data);
  const fdx = finiteDiff((x) => loss(x, d.w, d.b), d.x);
  const fdw = finiteDiff((w) => loss(d.x, w, d.b), d.w);
  // The f64 VJP agrees with finite differences to rounding (the loss is linear in each argument).
  expectClose(ref.dx, fdx, 1e-6, 1e-6, `${k.name}: f64 VJP dx vs finite differences`);
  expectClose(ref.dw, fdw, 1e-6, 1e-6, `${k.name}: f64 VJP dw vs finite differences`);
  expectClose(gx, fdx, 1e-5, 2e-6 * dxTerms + 1e-5, `${k.name}: dx vs finite differences`);
  expectClose(gw, fdw, 1e-5, 2e-6 * N + 1e-5, `${k.name}: dw vs finite differences`);
  if (gb && d.b) {
    const fdb = finiteDiff((b) => loss(d.x, d.w, b), d.b);
    expectClose(gb, fdb, 1e-5, 2e-6 * N + 1e-5, `${k.name}: dbias vs finite differences`);
  }
}

describe('conv2d forward', () => {
  for (const variant of ['cpu', 'gpu'] as const) {
    for (const [i, k] of CASES.entries()) {
      it(`${variant}: ${k.name}`, async () => forwardCheck(await getEngine(variant), k, 100 + i));
    }
  }
  it(`cpu: ${LARGE.name}`, async () => forwardCheck(await getEngine('cpu'), LARGE, 7));

  it('reads views in place of contiguous inputs (NHWC data permuted to NCHW, transposed weight)', async () => {
    const wd = await getEngine('cpu');
    const k = CASES[1];
    const d = data(k, 11);
    const want = conv2dRef(d.x, d.xShape, d.w, d.wShape, d.b, k.opts);
    await wd.scope(async () => {
      // x stored as [B, H, W, C]; w stored as [Cin, Cout, kh, kw].
      const nhwc = new Float32Array(d.x.length);
      const { B, Cin: C, H, W } = k;
      for (let b = 0; b < B; b++)
        for (let ch = 0; ch < C; ch++)
          for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) nhwc[((b * H + y) * W + x) * C + ch] = d.x[((b * C + ch) * H + y) * W + x];
      const wT = new Float32Array(d.w.length);
      const kk = k.kh * k.kw;
      for (let o = 0; o < k.Cout; o++) for (let i = 0; i < C; i++) for (let t = 0; t < kk; t++) wT[(i * k.Cout + o) * kk + t] = d.w[(o * C + i) * kk + t];
      const x = wd.tensor(nhwc, [B, H, W, C]).permute(0, 3, 1, 2);
      const w = wd.tensor(wT, [C, k.Cout, k.kh, k.kw]).transpose(0, 1);
      const y = ops.conv2d(x, w, wd.tensor(d.b!, [k.Cout]), k.opts);
      expectClose(await read(y), want.data, 1e-5, 1e-4, 'forward from views');
    });
  });
});

describe('conv2d backward', () => {
  for (const [i, k] of CASES.entries()) {
    it(`${k.name}: VJP vs f64 reference and finite differences`, async () => backwardCheck(await getEngine('cpu'), k, 200 + i, true));
  }
  it(`${SPLIT.name}: VJP vs f64 reference`, async () => backwardCheck(await getEngine('cpu'), SPLIT, 300, false));
  it(`${LARGE.name}: VJP vs f64 reference`, async () => backwardCheck(await getEngine('cpu'), LARGE, 301, false));
  it('gpu variant: stem-like VJP', async () => backwardCheck(await getEngine('gpu'), CASES[2], 302, false));

  it('gives gradients only to inputs that require them, and leaks nothing', async () => {
    const wd = await getEngine('cpu');
    const k = CASES[2];
    const d = data(k, 400);
    const w = wd.tensor(d.w, d.wShape, { requiresGrad: true });
    const before = wd.memory().liveBytes;
    await wd.scope(async () => {
      const x = wd.tensor(d.x, d.xShape); // no gradient
      const b = wd.tensor(d.b!, [k.Cout]);
      ops.conv2d(x, w, b, k.opts).sum().backward();
      expect(x.grad).toBeNull();
      expect(b.grad).toBeNull();
      const G = new Float64Array(conv2dRef(d.x, d.xShape, d.w, d.wShape, null, k.opts).data.length).fill(1);
      expectClose(await read(w.grad!), conv2dVjpRef(d.x, d.xShape, d.w, d.wShape, G, k.opts).dw, 1e-5, 1e-3, 'dw with ones');
    });
    w.zeroGrad();
    expect(wd.memory().liveBytes).toBe(before);
    w.dispose();
  });
});

describe('conv2d errors', () => {
  it('names both shapes on a channel mismatch', async () => {
    const wd = await getEngine('cpu');
    await wd.scope(() => {
      const x = wd.zeros([2, 3, 8, 8]);
      const w = wd.zeros([5, 4, 3, 3]);
      expect(() => ops.conv2d(x, w, null, {})).toThrow(/\[2, 3, 8, 8\].*\[5, 4, 3, 3\].*groups = 1/);
    });
  });
  it('rejects a kernel larger than the padded input', async () => {
    const wd = await getEngine('cpu');
    await wd.scope(() => {
      const x = wd.zeros([1, 3, 4, 9]);
      const w = wd.zeros([2, 3, 7, 3]);
      expect(() => ops.conv2d(x, w, null, { padding: 1 })).toThrow(/kernel height 7 is larger than the padded input height 4 \+ 2·1 = 6/);
      expect(() => ops.conv2d(x, w, null, { padding: [2, 0] })).not.toThrow();
    });
  });
  it('rejects bad bias, rank, stride and padding', async () => {
    const wd = await getEngine('cpu');
    await wd.scope(() => {
      const x = wd.zeros([1, 3, 8, 8]);
      const w = wd.zeros([4, 3, 3, 3]);
      expect(() => ops.conv2d(x, w, wd.zeros([3]), {})).toThrow(/bias \[3\] must be \[4\]/);
      expect(() => ops.conv2d(wd.zeros([3, 8, 8]), w, null, {})).toThrow(/NCHW/);
      expect(() => ops.conv2d(x, w, null, { stride: 0 })).toThrow(/stride/);
      expect(() => ops.conv2d(x, w, null, { padding: -1 })).toThrow(/padding/);
    });
  });
});

// -------------------------------------------------------------------------------------------------
// Max pooling

interface PoolCase {
  name: string;
  shape: [number, number, number, number];
  opts: MaxPool2dOptions;
}

const POOLS: PoolCase[] = [
  { name: 'ResNet k3 s2 p1 (2, 3×17×19)', shape: [2, 3, 17, 19], opts: { kernel: 3, stride: 2, padding: 1 } },
  { name: 'k2 (stride defaults to kernel) (1, 2×8×7)', shape: [1, 2, 8, 7], opts: { kernel: 2 } },
  { name: 'overlapping k3 s1 p1 (1, 5×7×6)', shape: [1, 5, 7, 6], opts: { kernel: 3, stride: 1, padding: 1 } },
  { name: 'asymmetric k[3,2] s[1,2] p[1,0] (3, 1×6×9)', shape: [3, 1, 6, 9], opts: { kernel: [3, 2], stride: [1, 2], padding: [1, 0] } },
];

describe('maxPool2d', () => {
  for (const variant of ['cpu', 'gpu'] as const) {
    for (const [i, p] of POOLS.entries()) {
      it(`${variant}: ${p.name}: forward, VJP vs f64 and finite differences`, async () => {
        const wd = await getEngine(variant);
        const n = p.shape.reduce((a, b) => a * b);
        const xs = randn(n, 500 + i); // continuous random data: no ties
        const ref = maxPool2dRef(xs, p.shape, p.opts);
        const G = randn(ref.data.length, 600 + i);
        const [y, yNoGrad, gx] = await wd.scope(async () => {
          const x = wd.tensor(xs, p.shape, { requiresGrad: true });
          const yy = ops.maxPool2d(x, p.opts);
          expect(yy.shape).toEqual(ref.shape);
          const y0 = await read(wd.noGrad(() => ops.maxPool2d(x, p.opts)));
          yy.mul(wd.tensor(G, ref.shape)).sum().backward();
          const out = [await read(yy), y0, await read(x.grad!)] as const;
          x.zeroGrad();
          return out;
        });
        expectClose(y, ref.data, 0, 0, `${p.name}: forward`);
        expectClose(yNoGrad, ref.data, 0, 0, `${p.name}: forward without indices`);
        const vjp = maxPool2dVjpRef(xs, p.shape, G, p.opts);
        // A sum of at most ⌈k/s⌉² gradients per element.
        expectClose(gx, vjp, 1e-6, 1e-6, `${p.name}: dx vs f64 VJP`);
        const fd = finiteDiff((x) => dot(G, maxPool2dRef(x, p.shape, p.opts).data), xs, 1e-7);
        expectClose(vjp, fd, 1e-6, 1e-6, `${p.name}: f64 VJP vs finite differences`);
        expectClose(gx, fd, 1e-5, 1e-5, `${p.name}: dx vs finite differences`);
      });
    }
  }

  it('routes a window gradient to every window that chose the same element (overlapping windows)', async () => {
    const wd = await getEngine('cpu');
    await wd.scope(async () => {
      // One large element in the middle of a 5×5 plane is the max of all nine 3×3 s1 windows.
      const xs = new Float32Array(25).map((_, i) => (i === 12 ? 10 : -i));
      const x = wd.tensor(xs, [1, 1, 5, 5], { requiresGrad: true });
      ops.maxPool2d(x, { kernel: 3, stride: 1 }).sum().backward();
      const gx = await read(x.grad!);
      expect(gx[12]).toBe(9);
      expect(gx.reduce((a, b) => a + b)).toBe(9);
      x.zeroGrad();
    });
  });

  it('breaks ties towards the first maximum in row-major window order (as PyTorch)', async () => {
    const wd = await getEngine('cpu');
    await wd.scope(async () => {
      const x = wd.tensor(new Float32Array(16).fill(-5), [1, 1, 4, 4], { requiresGrad: true });
      ops.maxPool2d(x, { kernel: 3, stride: 2, padding: 1 }).sum().backward();
      // Windows start at rows/cols −1 and 1: their first real elements are (0,0), (0,1), (1,0), (1,1).
      expect(Array.from(await x.grad!.toArray())).toEqual([1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
      x.zeroGrad();
    });
  });

  it('treats padding as −∞ and rejects padding over half the kernel', async () => {
    const wd = await getEngine('cpu');
    await wd.scope(async () => {
      const x = wd.tensor(new Float32Array(16).fill(-5), [1, 1, 4, 4]);
      expect(Array.from(await ops.maxPool2d(x, { kernel: 3, stride: 2, padding: 1 }).toArray())).toEqual([-5, -5, -5, -5]);
      expect(() => ops.maxPool2d(x, { kernel: 3, padding: 2 })).toThrow(/at most half the kernel/);
      expect(() => ops.maxPool2d(x, { kernel: 5 })).toThrow(/kernel height 5 is larger/);
    });
  });

  it('leaks nothing (the saved indices die with the backward or the scope)', async () => {
    const wd = await getEngine('cpu');
    const x = wd.tensor(randn(2 * 3 * 9 * 9, 700), [2, 3, 9, 9], { requiresGrad: true });
    const before = wd.memory().liveBytes;
    await wd.scope(async () => {
      ops.maxPool2d(x, { kernel: 3, stride: 2, padding: 1 }).sum().backward();
      ops.maxPool2d(x, { kernel: 3, stride: 2, padding: 1 }); // never back-propagated
      await wd.sync();
    });
    x.zeroGrad();
    expect(wd.memory().liveBytes).toBe(before);
    x.dispose();
  });
});

