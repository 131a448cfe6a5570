/**
 * Matmul family: forward against the float64 reference (`matmulRef`) and backward (random upstream
 * gradient) against the float64 VJP (`matmulVjpRef`) and against central finite differences of the
 * float64 forward, in both kernel variants ('cpu': register-blocked, barrier-free; 'gpu':
 * workgroup-memory tiles). Operands are built as explicit views of a flat storage, so the same
 * cases cover row-major (N), transposed (T), padded/offset rows (ld > cols, element offset),
 * stride-0 batch broadcasts and a layout that is neither N nor T (densified). The 'cpu' variant is
 * also run without subgroup sharing of A (its fallback on adapters without a fixed subgroup size),
 * and two tests check that transposed operands and the linear-layer backward dispatch no copies.
 *
 * Shapes are chosen against the tiles: 1, primes (7, 13, 17, 31, 67, 257) that are multiples of
 * neither the cpu tile (TM = 16 rows × 64·TN columns, K by 4) nor the gpu tile (64×64, BK 16), 129
 * (two gpu tiles plus one row), and shapes that are multiples of 4 so the vec4 load paths run
 * (with M, N still not multiples of the tiles, and aligned offsets/strides).
 *
 * Tolerances (f32 accumulation vs float64): an output is a K-term dot product accumulated in f32;
 * its rounding error is ≲ √K·2⁻²³·Σ_k|a_k·b_k| for random signs (the worst case is K·2⁻²³·Σ). We
 * allow atol = 4·√K·2⁻²³·max Σ|a·b| (+1e-7) and rtol 1e-5 (GELU's erfc fit adds 1.2e-7 relative).
 * A dropped or doubled k term, or a wrong edge row/column, is an O(1) error: far above that.
 * Gradients are again dot products (over N for dA, over batch·M for dB), compared with
 * atol = 1e-5·max|grad| and rtol 1e-4; finite differences of the f64 reference (h = 1e-6) agree
 * with the f64 VJP to ~1e-8, which checks the reference VJP itself.
 */
import { describe, expect, it } from 'vitest';
import { ops, type Engine, type Tensor } from '../../index.js';
import { type Activation, matmulRaw, matmulRef, matmulVjpRef, type RefOperand } from '../../kernels/matmul.js';
import { dot, expectClose, finiteDiff, getEngine, randn, read } from '../helpers.js';

const VARIANTS = ['cpu', 'gpu'] as const;
const U32 = 2 ** -23;

const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

/**
 * How an operand of logical shape [...batch, R, C] sits in its storage:
 * N row-major; T transposed view; P rows padded by `pad` elements after an offset `off`;
 * PT transposed and padded; X neither (strides (2C, 2)); E batch dims broadcast with stride 0.
 */
type Layout = { kind: 'N' | 'T' | 'X' | 'E' } | { kind: 'P' | 'PT'; pad: number; off: number };

interface Built {
  t: Tensor;
  ref: RefOperand;
}

function stridesFor(shape: number[], layout: Layout): { strides: number[]; offset: number } {
  const r = shape.length;
  const [R, C] = [shape[r - 2], shape[r - 1]];
  let inner: [number, number];
  let mat: number;
  let offset = 0;
  switch (layout.kind) {
    case 'N':
    case 'E':
      inner = [C, 1];
      mat = R * C;
      break;
    case 'T':
      inner = [1, R];
      mat = R * C;
      break;
    case 'X':
      inner = [2 * C, 2];
      mat = 2 * R * C;
      break;
    case 'P':
      inner = [C + layout.pad, 1];
      mat = R * (C + layout.pad);
      offset = layout.off;
      break;
    case 'PT':
      inner = [1, R + layout.pad];
      mat = C * (R + layout.pad);
      offset = layout.off;
      break;
  }
  const strides = new Array<number>(r);
  [strides[r - 2], strides[r - 1]] = inner;
  let acc = mat;
  for (let d = r - 3; d >= 0; d--) {
    strides[d] = layout.kind === 'E' ? 0 : acc;
    acc *= shape[d];
  }
  return { strides, offset };
}

/** A view of a random flat storage with the given logical shape and layout, and its row-major data. */
function operand(wd: Engine, shape: number[], layout: Layout, seed: number, requiresGrad = false): Built {
  const { strides, offset } = stridesFor(shape, layout);
  let maxIndex = offset;
  for (let d = 0; d < shape.length; d++) maxIndex += (shape[d] - 1) * strides[d];
  const storage = randn(maxIndex + 1, seed);
  const data = new Float64Array(numel(shape));
  for (let i = 0; i < data.length; i++) {
    let rem = i;
    let at = offset;
    for (let d = shape.length - 1; d >= 0; d--) {
      at += (rem % shape[d]) * strides[d];
      rem = Math.floor(rem / shape[d]);
    }
    data[i] = storage[at];
  }
  const base = wd.tensor(storage, [storage.length]);
  const t = base.view(shape, strides, offset);
  base.dispose();
  if (requiresGrad) t.requireGrad();
  return { t, ref: { data, shape } };
}

/** Forward tolerance: 4·√K·2⁻²³·max_ij Σ_k |a_ik·b_kj| (see the header). */
function forwardAtol(a: RefOperand, b: RefOperand): number {
  const abs = (o: RefOperand): RefOperand => ({ data: Array.from(o.data, Math.abs), shape: o.shape });
  const K = a.shape[a.shape.length - 1];
  return 4 * Math.sqrt(Math.max(K, 1)) * U32 * maxAbs(matmulRef(abs(a), abs(b)).y) + 1e-7;
}

interface FwdCase {
  a: number[];
  b: number[];
  la?: Layout;
  lb?: Layout;
  bias?: boolean;
  act?: Activation;
}

const N_: Layout = { kind: 'N' };
const T_: Layout = { kind: 'T' };

function forwardCases(): FwdCase[] {
  const cases: FwdCase[] = [];
  // 2-D, every combination of transposes, odd and vec4-friendly shapes.
  const dims: [number, number, number][] = [
    [1, 1, 1],
    [7, 13, 5],
    [31, 67, 17],
    [128, 64, 96],
    [129, 257, 65],
    [1, 50, 37],
    [33, 9, 1],
    [17, 1, 23],
    [20, 36, 44],
    [36, 68, 40],
    [4, 4, 4],
  ];
  for (const [M, K, N] of dims) {
    for (const la of [N_, T_]) for (const lb of [N_, T_]) cases.push({ a: [M, K], b: [K, N], la, lb });
  }
  // Padded rows with offsets: unaligned (scalar loads) and aligned (vec4 loads).
  for (const [M, K, N] of [[13, 21, 19], [20, 36, 44]] as [number, number, number][]) {
    cases.push({ a: [M, K], b: [K, N], la: { kind: 'P', pad: 3, off: 1 }, lb: { kind: 'P', pad: 5, off: 2 } });
    cases.push({ a: [M, K], b: [K, N], la: { kind: 'P', pad: 4, off: 8 }, lb: { kind: 'P', pad: 4, off: 4 } });
    cases.push({ a: [M, K], b: [K, N], la: { kind: 'PT', pad: 4, off: 4 }, lb: { kind: 'PT', pad: 8, off: 12 } });
    cases.push({ a: [M, K], b: [K, N], la: { kind: 'PT', pad: 1, off: 3 }, lb: { kind: 'PT', pad: 2, off: 1 } });
    cases.push({ a: [M, K], b: [K, N], la: { kind: 'X' }, lb: { kind: 'X' } });
  }
  // Batched, with broadcasting.
  cases.push(
    { a: [3, 7, 13], b: [13, 5] }, // B without batch: A's batch folds into rows
    { a: [3, 20, 36], b: [36, 44] },
    { a: [3, 7, 13], b: [3, 13, 5] },
    { a: [2, 3, 7, 13], b: [3, 13, 5] },
    { a: [2, 1, 7, 13], b: [1, 3, 13, 5] },
    { a: [7, 13], b: [3, 13, 5] },
    { a: [2, 7, 13], b: [13, 5], la: T_ }, // transposed A: no fold, batch loop
    { a: [2, 3, 36, 20], b: [2, 3, 20, 44], la: T_, lb: T_ },
    { a: [3, 7, 13], b: [13, 5], la: { kind: 'E' } }, // stride-0 batch of A
    { a: [2, 3, 7, 13], b: [2, 3, 13, 5], lb: { kind: 'E' } },
    { a: [2, 2, 2, 2, 3, 5], b: [5, 4] },
  );
  // Fused epilogues.
  for (const [a, b] of [
    [[31, 67], [67, 17]],
    [[36, 68], [68, 40]],
    [[2, 5, 12], [12, 9]],
  ] as [number[], number[]][]) {
    cases.push({ a, b, bias: true }, { a, b, bias: true, act: 'relu' }, { a, b, bias: true, act: 'gelu' }, { a, b, act: 'gelu' });
    cases.push({ a, b, lb: T_, bias: true, act: 'gelu' });
  }
  return cases;
}

const label = (c: FwdCase) =>
  `${c.a.join('x')}${c.la ? c.la.kind : 'N'} @ ${c.b.join('x')}${c.lb ? c.lb.kind : 'N'}${c.bias ? ' +bias' : ''}${c.act ? ` ${c.act}` : ''}`;

describe.each(VARIANTS)('matmul, %s variant', (variant) => {
  const engine = (): Promise<Engine> => getEngine(variant);

  it.each(forwardCases().map((c) => [label(c), c] as const))('forward %s', async (_name, c) => {
    const wd = await engine();
    await wd.scope(async () => {
      const A = operand(wd, c.a, c.la ?? N_, 1 + numel(c.a));
      const B = operand(wd, c.b, c.lb ?? N_, 2 + numel(c.b));
      const N = c.b[c.b.length - 1];
      const biasData = c.bias ? randn(N, 3 + N) : null;
      const bias = biasData ? wd.tensor(biasData, [N]) : null;
      const y = ops.matmul(A.t, B.t, { bias, activation: c.act ?? 'none' });
      const want = matmulRef(A.ref, B.ref, biasData, c.act ?? 'none');
      expect(y.shape).toEqual(want.shape);
      expectClose(await read(y), want.y, 1e-5, forwardAtol(A.ref, B.ref), label(c));
    });
  });

  // The 'cpu' kernel shares A through subgroupBroadcast when the adapter has a fixed subgroup size
  // (lavapipe: 8); without one it loads A per invocation. Both paths, here the fallback.
  if (variant === 'cpu') {
    const fallback: FwdCase[] = [
      { a: [31, 67], b: [67, 17] },
      { a: [31, 67], b: [67, 17], la: T_, lb: T_, bias: true, act: 'gelu' },
      { a: [36, 68], b: [68, 40] },
      { a: [36, 68], b: [68, 40], la: T_, lb: T_, bias: true, act: 'relu' },
      { a: [2, 3, 7, 13], b: [3, 13, 5] },
    ];
    it.each(fallback.map((c) => [label(c), c] as const))('forward without subgroups %s', async (_name, c) => {
      const wd = await engine();
      await wd.scope(async () => {
        const A = operand(wd, c.a, c.la ?? N_, 1 + numel(c.a));
        const B = operand(wd, c.b, c.lb ?? N_, 2 + numel(c.b));
        const N = c.b[c.b.length - 1];
        const biasData = c.bias ? randn(N, 3 + N) : null;
        const bias = biasData ? wd.tensor(biasData, [N]) : null;
        const { y } = matmulRaw(A.t, B.t, { bias, activation: c.act ?? 'none' }, { subgroups: false });
        const want = matmulRef(A.ref, B.ref, biasData, c.act ?? 'none');
        expectClose(await read(y), want.y, 1e-5, forwardAtol(A.ref, B.ref), label(c));
      });
    });
  }

  it('reads transposed views in place (one dispatch, no copy)', async () => {
    const wd = await engine();
    await wd.scope(async () => {
      const x = wd.randn([6, 20, 36], { seed: 4 });
      const w = wd.randn([44, 36], { seed: 5 });
      const before = wd.device.stats.dispatches;
      ops.matmul(x, w.transpose(), {});
      ops.matmul(x.transpose(), x, {});
      expect(wd.device.stats.dispatches - before).toBe(2);
    });
  });

  it('runs the linear layer backward without copies (two matmuls, one bias reduction)', async () => {
    const wd = await engine();
    await wd.scope(async () => {
      const x = wd.randn([2, 5, 12], { seed: 9, requiresGrad: true });
      const w = wd.randn([8, 12], { seed: 10, requiresGrad: true });
      const bias = wd.randn([8], { seed: 11, requiresGrad: true });
      const y = ops.linear(x, w, bias, 'gelu');
      const g = wd.randn(y.shape, { seed: 12 });
      // Record the kernels the backward dispatches (an instance spy, removed in `finally`).
      const names: string[] = [];
      const dev = wd.device;
      const dispatch = dev.dispatch.bind(dev);
      dev.dispatch = (k, args) => {
        names.push(k.name);
        dispatch(k, args);
      };
      try {
        y.backward(g);
      } finally {
        delete (dev as { dispatch?: unknown }).dispatch;
      }
      expect(names.filter((n) => n.startsWith('matmul')).length, names.join(', ')).toBe(2);
      expect(names.length, names.join(', ')).toBe(4); // geluBackward, dX, dW, sum over rows for dbias
      expect(w.grad!.shape).toEqual([8, 12]);
    });
  });

  it('rejects mismatched shapes', async () => {
    const wd = await engine();
    await wd.scope(async () => {
      const a = wd.zeros([3, 4]);
      expect(() => ops.matmul(a, wd.zeros([5, 2]), {})).toThrow(/inner dims/);
      expect(() => ops.matmul(a, wd.zeros([4, 2]), { bias: wd.zeros([3]) })).toThrow(/bias/);
      expect(() => ops.matmul(wd.zeros([2, 3, 4]), wd.zeros([3, 4, 2]), {})).toThrow();
    });
  });

  interface BwdCase extends FwdCase {
    /** Also check against finite differences (small shapes only). */
    fd: boolean;
  }
  const backwardCases: BwdCase[] = [
    { a: [7, 13], b: [13, 5], fd: true },
    { a: [6, 9], b: [9, 11], lb: T_, bias: true, act: 'gelu', fd: true },
    { a: [5, 8], b: [8, 12], la: T_, bias: true, act: 'relu', fd: true },
    { a: [2, 3, 4, 5], b: [3, 5, 6], bias: true, act: 'gelu', fd: true },
    { a: [2, 5, 7], b: [7, 6], lb: T_, bias: true, act: 'gelu', fd: true }, // the linear layer (batch folded)
    { a: [4, 5], b: [3, 5, 6], fd: true }, // A broadcast over B's batch
    { a: [2, 1, 3, 4], b: [1, 3, 4, 5], la: T_, fd: true },
    { a: [20, 36], b: [36, 44], lb: T_, bias: true, act: 'relu', fd: false }, // vec4 paths
    { a: [3, 33, 40], b: [40, 67], bias: true, fd: false },
    { a: [67, 129], b: [129, 31], la: T_, fd: false },
  ];

  it.each(backwardCases.map((c) => [label(c), c] as const))('backward %s', async (_name, c) => {
    const wd = await engine();
    const live = wd.memory().liveBytes;
    await wd.scope(async () => {
      const act = c.act ?? 'none';
      const A = operand(wd, c.a, c.la ?? N_, 10 + numel(c.a), true);
      const B = operand(wd, c.b, c.lb ?? N_, 20 + numel(c.b), true);
      const N = c.b[c.b.length - 1];
      const biasData = c.bias ? randn(N, 30 + N) : null;
      const bias = biasData ? wd.tensor(biasData, [N], { requiresGrad: true }) : null;
      const y = ops.matmul(A.t, B.t, { bias, activation: act });
      const gData = randn(y.size, 40 + y.size);
      y.mul(wd.tensor(gData, y.shape)).sum().backward();
      const want = matmulVjpRef(A.ref, B.ref, biasData, act, gData);
      const ga = await read(A.t.grad!);
      const gb = await read(B.t.grad!);
      expectClose(ga, want.ga, 1e-4, 1e-5 * maxAbs(want.ga), `${label(c)}: dA`);
      expectClose(gb, want.gb, 1e-4, 1e-5 * maxAbs(want.gb), `${label(c)}: dB`);
      if (bias) expectClose(await read(bias.grad!), want.gbias!, 1e-4, 1e-5 * maxAbs(want.gbias!), `${label(c)}: dbias`);
      if (c.fd) {
        const loss = (a: ArrayLike<number>, b: ArrayLike<number>, bb: ArrayLike<number> | null) =>
          dot(matmulRef({ data: a, shape: c.a }, { data: b, shape: c.b }, bb, act).y, gData);
        const fa = finiteDiff((x) => loss(x, B.ref.data, biasData), A.ref.data);
        const fb = finiteDiff((x) => loss(A.ref.data, x, biasData), B.ref.data);
        // The float64 VJP against finite differences (h = 1e-6: truncation ~1e-12, rounding ~1e-10).
        expectClose(want.ga, fa, 1e-6, 1e-7, `${label(c)}: reference dA vs finite differences`);
        expectClose(want.gb, fb, 1e-6, 1e-7, `${label(c)}: reference dB vs finite differences`);
        // The GPU gradients against finite differences.
        expectClose(ga, fa, 1e-4, 1e-5 * maxAbs(fa), `${label(c)}: dA vs finite differences`);
        expectClose(gb, fb, 1e-4, 1e-5 * maxAbs(fb), `${label(c)}: dB vs finite differences`);
        if (bias) {
          const fbias = finiteDiff((x) => loss(A.ref.data, B.ref.data, x), biasData!);
          expectClose(await read(bias.grad!), fbias, 1e-4, 1e-5 * maxAbs(fbias), `${label(c)}: dbias vs finite differences`);
        }
      }
    });
    expect(wd.memory().liveBytes).toBe(live);
  });

  it('backward with a non-contiguous upstream gradient (a transposed view of Y)', async () => {
    const wd = await engine();
    await wd.scope(async () => {
      const A = operand(wd, [3, 5, 7], N_, 51, true);
      const B = operand(wd, [7, 6], N_, 52, true);
      const y = ops.matmul(A.t, B.t, {}); // [3, 5, 6]
      const gData = randn(3 * 6 * 5, 53); // the upstream gradient of yᵀ: [3, 6, 5]
      y.transpose().mul(wd.tensor(gData, [3, 6, 5])).sum().backward();
      // g for y = (gData as [3, 6, 5]) transposed back to [3, 5, 6].
      const g = new Float64Array(3 * 5 * 6);
      for (let b = 0; b < 3; b++) for (let m = 0; m < 5; m++) for (let n = 0; n < 6; n++) g[(b * 5 + m) * 6 + n] = gData[(b * 6 + n) * 5 + m];
      const want = matmulVjpRef(A.ref, B.ref, null, 'none', g);
      expectClose(await read(A.t.grad!), want.ga, 1e-4, 1e-5 * maxAbs(want.ga), 'dA');
      expectClose(await read(B.t.grad!), want.gb, 1e-4, 1e-5 * maxAbs(want.gb), 'dB');
    });
  });

  it('skips the saved pre-activation without gradients (noGrad)', async () => {
    const wd = await engine();
    await wd.scope(async () => {
      const x = wd.randn([5, 8], { seed: 7, requiresGrad: true });
      const w = wd.randn([8, 3], { seed: 8 });
      const live = wd.memory().liveBytes;
      const y = wd.noGrad(() => ops.matmul(x, w, { activation: 'gelu' }));
      expect(y.gradFn).toBeNull();
      // Only Y was allocated (256-byte pool bucket), no Z.
      expect(wd.memory().liveBytes - live).toBe(256);
    });
  });
});
