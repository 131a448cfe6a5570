/**
 * f16 storage (kernels/f16.ts, engine/half.ts): every kernel the f16 inference path runs, forced
 * with f16 operands, against its float64 reference evaluated on the same f16-rounded inputs.
 *
 * Tolerances: the kernels read f16, compute in f32 and round once at the store, so the error is
 * the output rounding (≤ 2⁻¹¹ ≈ 4.9e-4 relative) plus the f32 error of the original kernel:
 * rtol 1e-3 with an absolute floor of 1e-4 × the output's scale (sums that cancel). A kernel that
 * accumulated in f16 would miss these at the lengths used here (K, D, N up to 300), and the
 * explicit accumulation test (4096 ones: f16 accumulation stalls at 2048) fails outright.
 * Shapes are not multiples of any tile or vector width (37, 53, 29, 67, 197 ...), plus the
 * vec4 paths (multiples of 4) where the kernels have them, on both variant families (attention's
 * 'gpu' variant at small head dims only: its compile time on lavapipe).
 */
import { describe, expect, it } from 'vitest';
import { f16BitsToF32, f32ToF16Bits, roundF16 } from '../../engine/half.js';
import type { Tensor } from '../../index.js';
import { attentionRef } from '../../kernels/attention.js';
import { conv2dRef } from '../../kernels/conv2d.js';
import { broadcastRef, UNARY } from '../../kernels/elementwise.js';
import { halfStorage } from '../../kernels/f16.js';
import { layerNormRef, l2NormalizeRef } from '../../kernels/layernorm.js';
import { matmulRef } from '../../kernels/matmul.js';
import { ropeRef } from '../../kernels/rope.js';
import { softmaxRef } from '../../kernels/softmax.js';
import { getEngine, randn } from '../helpers.js';

const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);
const maxAbs = (a: ArrayLike<number>) => Array.from(a).reduce((m, v) => Math.max(m, Math.abs(v)), 0);
/** Seeded normal values already rounded to f16 (what an f16 tensor holds). */
const randh = (n: number, seed: number, scale = 1) => Float32Array.from(randn(n, seed, scale), roundF16);

/** |got − want| ≤ rtol·|want| + atol·max|want| elementwise; reports the worst element. */
function expectHalfClose(got: ArrayLike<number>, want: ArrayLike<number>, what: string, rtol = 1e-3, atol = 1e-4): void {
  expect(got.length, `${what}: length`).toBe(want.length);
  const scale = Math.max(maxAbs(want), 1e-30);
  let worst = -1;
  let excess = 0;
  for (let i = 0; i < want.length; i++) {
    const e = Math.abs(got[i] - want[i]) - (rtol * Math.abs(want[i]) + atol * scale);
    if (!(e <= excess) || Number.isNaN(got[i])) {
      excess = Number.isNaN(got[i]) ? Infinity : e;
      worst = i;
    }
  }
  if (worst >= 0) expect.fail(`${what}: element ${worst} is ${got[worst]}, want ${want[worst]} (rtol ${rtol}, atol ${atol}·${scale.toExponential(2)})`);
}

describe('host f16 conversion', () => {
  it('rounds to nearest even, keeps subnormals, overflows to infinity', () => {
    const cases: [number, number][] = [
      [0, 0x0000], [-0, 0x8000], [1, 0x3c00], [-2, 0xc000], [65504, 0x7bff], [65520, 0x7c00], [1e6, 0x7c00],
      [2 ** -24, 0x0001], [2 ** -25, 0x0000], [1.5 * 2 ** -25, 0x0001], [2 ** -14, 0x0400], [1 + 2 ** -11, 0x3c00], [1 + 3 * 2 ** -11, 0x3c02],
      [Infinity, 0x7c00], [-Infinity, 0xfc00], [0.1, 0x2e66],
    ];
    for (const [x, bits] of cases) expect(f32ToF16Bits(x), `f16 bits of ${x}`).toBe(bits);
    expect(Number.isNaN(f16BitsToF32(f32ToF16Bits(NaN)))).toBe(true);
    for (let h = 0; h < 0x7c00; h += 7) expect(f32ToF16Bits(f16BitsToF32(h))).toBe(h);
  });
});

describe('the f16 source transform', () => {
  it('wraps loads, stores and compound stores of the named bindings only', () => {
    const src = `alias T = vec4<f32>;
@group(0) @binding(1) var<storage, read_write> Y: array<T>;
@group(0) @binding(2) var<storage, read> X: array<f32>;
@group(0) @binding(3) var<storage, read> Z: array<f32>;
fn main() { let a = X[X2(1u)] + Z[0]; Y[0] = T(a); Y[1] += T(X[2]); if (X[3] == 0.0) { Y[2] = T(0.0); } }`;
    const out = halfStorage(src, ['Y', 'X']);
    expect(out).toContain('enable f16;');
    expect(out).toContain('var<storage, read_write> Y: array<T_h>;');
    expect(out).toContain('alias T_h = vec4<f16>;');
    expect(out).toContain('var<storage, read> X: array<f16>;');
    expect(out).toContain('var<storage, read> Z: array<f32>;');
    expect(out).toContain('let a = f32(X[X2(1u)]) + Z[0];');
    expect(out).toContain('Y[0] = T_h(T(a));');
    expect(out).toContain('Y[1] = T_h(T(Y[1]) + (T(f32(X[2]))));');
    expect(out).toContain('if (f32(X[3]) == 0.0)');
    expect(() => halfStorage(src, ['W'])).toThrow(/no storage binding named 'W'/);
  });
});

describe('ops without an f16 kernel', () => {
  it('refuse f16 tensors instead of reading f16 bits as f32', async () => {
    const wd = await getEngine();
    const x = wd.tensor(randh(12, 30), [3, 4], { dtype: 'f16' });
    expect(() => x.sum()).toThrow(/no f16 kernel yet/);
    expect(() => x.max(1)).toThrow(/no f16 kernel yet/);
    const w = wd.tensor(randh(4, 31), [4], { dtype: 'f16', requiresGrad: true });
    const y = x.layerNorm(w, null);
    expect(() => y.backward(wd.ones([3, 4], { dtype: 'f16' }))).toThrow(/no f16 kernel yet/);
    x.dispose();
  });
});

for (const variants of ['cpu', 'gpu'] as const) {
  describe(`f16 kernels (${variants} variants)`, () => {
    const engine = () => getEngine(variants);
    const half = async (data: Float32Array, shape: number[]): Promise<Tensor> => (await engine()).tensor(data, shape, { dtype: 'f16' });

    it('cast f32 → f16 → f32 rounds exactly like the host, on strided views', async () => {
      const wd = await engine();
      const x = randn(5 * 37, 1, 3);
      const t = wd.tensor(x, [5, 37]);
      const h = t.transpose(0, 1).cast('f16'); // (37, 5) strided read
      expect(h.dtype).toBe('f16');
      const back = h.cast('f32');
      expect(back.dtype).toBe('f32');
      const want = new Float32Array(37 * 5);
      for (let i = 0; i < 37; i++) for (let j = 0; j < 5; j++) want[i * 5 + j] = roundF16(x[j * 37 + i]);
      expect(Array.from(await back.toArray())).toEqual(Array.from(want));
      expect(Array.from(await h.toArray())).toEqual(Array.from(want));
      for (const u of [t, h, back]) u.dispose();
    });

    it('elementwise ops with broadcasting (strided and vec4 kernels), f16 in and out', async () => {
      for (const [as, bs] of [
        [[3, 37], [37]],
        [[2, 5, 8], [5, 1]],
        [[4, 12], [4, 12]],
        [[7, 1], [1, 9]],
      ] as number[][][]) {
        const a = randh(numel(as), 2);
        const b = randh(numel(bs), 3);
        const ta = await half(a, as);
        const tb = await half(b, bs);
        for (const [name, f, g] of [
          ['add', (x: number, y: number) => x + y, (x: Tensor, y: Tensor) => x.add(y)],
          ['mul', (x: number, y: number) => x * y, (x: Tensor, y: Tensor) => x.mul(y)],
          ['swiglu', (x: number, y: number) => UNARY.silu.ref(x, 0) * y, (x: Tensor, y: Tensor) => x.engine.ops.swiglu(x, y)],
        ] as const) {
          const y = g(ta, tb);
          expect(y.dtype).toBe('f16');
          expectHalfClose(await y.toArray(), broadcastRef(a, as, b, bs, f).data, `${name} ${as}·${bs}`);
          y.dispose();
        }
        const ge = ta.gelu();
        expectHalfClose(await ge.toArray(), Float64Array.from(a, (v) => UNARY.gelu.ref(v, 0)), `gelu ${as}`);
        for (const t of [ta, tb, ge]) t.dispose();
      }
    });

    it('matmul: f32 accumulation (4096 ones sum to 4096, where f16 accumulation stalls at 2048)', async () => {
      const wd = await engine();
      const a = wd.ones([3, 4096], { dtype: 'f16' });
      const b = wd.ones([4096, 5], { dtype: 'f16' });
      const y = a.matmul(b);
      expect(y.dtype).toBe('f16');
      expect(Array.from(await y.toArray())).toEqual(new Array(15).fill(4096));
      for (const t of [a, b, y]) t.dispose();
    });

    it('matmul and linear (bias, GELU), N/T layouts, batches, odd and vec4 shapes', async () => {
      const wd = await engine();
      for (const [M, K, N, batch] of [
        [37, 53, 29, []],
        [67, 300, 41, [2]],
        [16, 64, 48, [3]],
        [5, 7, 3, [2, 3]],
      ] as [number, number, number, number[]][]) {
        const a = randh(numel(batch) * M * K, 4);
        const w = randh(N * K, 5, 0.1);
        const bias = randh(N, 6);
        const ta = await half(a, [...batch, M, K]);
        const tw = await half(w, [N, K]);
        const tb = await half(bias, [N]);
        // linear: x·wᵀ + b (w read transposed in place), with GELU.
        const y = wd.ops.linear(ta, tw, tb, 'gelu');
        expect(y.dtype).toBe('f16');
        const wt = new Float64Array(K * N);
        for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) wt[k * N + n] = w[n * K + k];
        const want = matmulRef({ data: a, shape: [...batch, M, K] }, { data: wt, shape: [K, N] }, bias, 'gelu').y;
        expectHalfClose(await y.toArray(), want, `linear ${batch} ${M}×${K}×${N}`);
        // plain matmul with a batched right operand (N layout), the left one transposed (T layout).
        const b2 = randh(numel(batch) * K * N, 7);
        const tb2 = await half(b2, [...batch, K, N]);
        const at = ta.transpose(-2, -1).contiguous().transpose(-2, -1); // same values, T layout
        const y2 = at.matmul(tb2);
        expectHalfClose(await y2.toArray(), matmulRef({ data: a, shape: [...batch, M, K] }, { data: b2, shape: [...batch, K, N] }).y, `matmul ${batch} ${M}×${K}×${N}`);
        for (const t of [ta, tw, tb, y, tb2, at, y2]) t.dispose();
      }
    });

    it('layerNorm and l2Normalize: f16 rows, f32 statistics', async () => {
      const wd = await engine();
      for (const [rows, D] of [[197, 67], [5, 300], [70, 64], [3, 384]]) {
        const x = randh(rows * D, 8, 2);
        for (let i = 0; i < x.length; i++) x[i] = roundF16(x[i] + 3); // an offset the statistics must handle
        const w = randh(D, 9);
        const b = randh(D, 10);
        const tx = await half(x, [rows, D]);
        const y = tx.layerNorm(await half(w, [D]), await half(b, [D]), 1e-6);
        expect(y.dtype).toBe('f16');
        expectHalfClose(await y.toArray(), layerNormRef(x, D, w, b, 1e-6).y, `layerNorm ${rows}×${D}`, 2e-3, 2e-4);
        const n = tx.l2Normalize();
        expectHalfClose(await n.toArray(), l2NormalizeRef(x, D, 1e-12), `l2Normalize ${rows}×${D}`);
        void wd;
      }
    });

    it('softmax with temperature over long rows (f32 max and sum)', async () => {
      for (const [rows, D, tau] of [[7, 65536, 0.04], [67, 37, 1], [3, 300, 0.1]] as const) {
        const x = randh(rows * D, 11);
        const tx = await half(x, [rows, D]);
        const y = tx.softmax(-1, { temperature: tau });
        expect(y.dtype).toBe('f16');
        const want = softmaxRef(x, D, { temperature: tau });
        // Probabilities below f16's normal range keep only absolute accuracy (2⁻²⁴).
        expectHalfClose(await y.toArray(), want, `softmax ${rows}×${D} τ=${tau}`, 1e-3, 1e-4);
        tx.dispose();
        y.dispose();
      }
    });

    it('packed attention (token-major output), vec4 and scalar head dims', async () => {
      const wd = await engine();
      // The 'gpu' variant's constant chunk loops compile very slowly in lavapipe's LLVM at d ≥ 16
      // (as in attention.test.ts): it runs at d = 8 and 6, the 'cpu' variant up to ViT-S's 64.
      const cases = variants === 'cpu' ? [[2, 3, 17, 16], [1, 2, 37, 6], [2, 6, 197, 64]] : [[2, 3, 17, 8], [1, 2, 37, 6]];
      for (const [B, H, N, d] of cases) {
        const D = H * d;
        const x = randh(B * N * 3 * D, 12);
        const qkv = (await half(x, [B, N, 3 * D])).reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4); // (3, B, H, N, d)
        const { out } = wd.ops.attentionPacked(qkv, { scale: d ** -0.5 });
        expect(out.dtype).toBe('f16');
        const merged = out.transpose(1, 2).reshape(B, N, D);
        // Reference on [B·H, N, d] row-major pieces.
        const piece = (which: number) => {
          const p = new Float64Array(B * H * N * d);
          for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let n = 0; n < N; n++) for (let e = 0; e < d; e++) p[((b * H + h) * N + n) * d + e] = x[((b * N + n) * 3 + which) * D + h * d + e];
          return p;
        };
        const ref = attentionRef(piece(0), piece(1), piece(2), { bh: B * H, nq: N, nk: N, d }).out;
        const want = new Float64Array(B * N * D);
        for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let n = 0; n < N; n++) for (let e = 0; e < d; e++) want[(b * N + n) * D + h * d + e] = ref[((b * H + h) * N + n) * d + e];
        expectHalfClose(await merged.toArray(), want, `attention B${B} H${H} N${N} d${d}`);
        for (const t of [qkv, out, merged]) t.dispose();
      }
    });

    it('RoPE on f16 activations with f32 tables', async () => {
      const wd = await engine();
      const [N, d] = [37, 12];
      const x = randh(2 * N * d, 13);
      const ang = randn(N * d, 14);
      const sin = Float32Array.from(ang, Math.sin);
      const cos = Float32Array.from(ang, Math.cos);
      const tables = { sin: wd.tensor(sin, [N, d]), cos: wd.tensor(cos, [N, d]) };
      const y = wd.ops.rope(await half(x, [2, N, d]), tables);
      expect(y.dtype).toBe('f16');
      expectHalfClose(await y.toArray(), ropeRef(x, sin, cos, N, d), 'rope');
    });

    it('patch-embedding convolution (stride = kernel) with f16 image, weights and bias', async () => {
      const wd = await engine();
      const [B, C, Hh, W, Co, p] = [2, 3, 30, 22, 13, 7];
      const x = randh(B * C * Hh * W, 15);
      const w = randh(Co * C * p * p, 16, 0.2);
      const b = randh(Co, 17);
      const y = wd.ops.conv2d(await half(x, [B, C, Hh, W]), await half(w, [Co, C, p, p]), await half(b, [Co]), { stride: p });
      expect(y.dtype).toBe('f16');
      expectHalfClose(await y.toArray(), conv2dRef(x, [B, C, Hh, W], w, [Co, C, p, p], b, { stride: p }).data, 'conv2d');
    });

    it('views, concat and copies keep f16 and move bits exactly', async () => {
      const wd = await engine();
      const a = randh(2 * 3 * 5, 18);
      const b = randh(2 * 4 * 5, 19);
      const ta = await half(a, [2, 3, 5]);
      const tb = await half(b, [2, 4, 5]);
      const c = wd.ops.concat([ta, tb.slice(1, 1, 4)], 1); // (2, 6, 5)
      expect(c.dtype).toBe('f16');
      const got = await c.permute(0, 2, 1).contiguous().toArray(); // (2, 5, 6)
      for (let i = 0; i < 2; i++)
        for (let j = 0; j < 5; j++)
          for (let k = 0; k < 6; k++) {
            const want = k < 3 ? a[(i * 3 + k) * 5 + j] : b[(i * 4 + k - 2) * 5 + j];
            expect(got[(i * 5 + j) * 6 + k]).toBe(want);
          }
      expect(() => wd.ops.concat([ta, wd.zeros([2, 1, 5])], 1)).toThrow(/dtypes f16, f32 differ/);
    });
  });
}
