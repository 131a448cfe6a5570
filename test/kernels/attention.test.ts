/**
 * Fused attention against float64: the forward (out and probs) and the FlashAttention-2 backward
 * (dq, dk, dv) versus `attentionRef` / `attentionVjpRef`, and the reference VJP itself versus central
 * finite differences of the float64 forward.
 *
 * Shapes are chosen so no loop divides evenly: N ∈ {1, 17, 197} (197 = ViT-S/16 at 224 px; 17 and
 * 197 are 1 mod 4 and odd, so the 4-key blocks, the 2- and 4-row register blocks and the 16-row
 * workgroups all have ragged edges), cross-attention with Nq ≠ Nk, one sequence past a thousand keys,
 * head dims 32 and 64 (vec4 rows), 24 (six vec4 chunks) and 10 / 6 (the scalar path).
 * Inputs are read in place through strides, so the views ViT makes (qkv permuted and sliced) are
 * tested, plus views the kernels must copy first (d-stride ≠ 1, misaligned rows, three batch levels).
 *
 * Both kernel variants run: 'cpu' at every shape; 'gpu' (the same kernels with constant chunk loops,
 * which lavapipe's LLVM unrolls and compiles very slowly at d = 32/64) at d = 8 and 6. Both launches
 * (AttentionOptions.packed: several batch-heads per workgroup, or one per workgroup row) are forced
 * in turn on the main shapes. attentionPacked's layouts (token-major out, the qkv gradient written
 * in the projection's layout, and its copy fallback) are checked for values and for copies.
 *
 * Tolerances: scores are d-term f32 dot products and every output sums up to Nk f32 terms; the
 * observed max errors are 3e-7–5e-7 at unit-variance inputs (N = 197, d = 64) and up to 2e-5 on
 * outputs of magnitude ~16 with spread scores (N = 1031), so atol 2e-5 + rtol 1e-4 leaves ≥ 10×
 * headroom, while a lost key, a wrong mask or a missing rescale shows up as ≥ 1e-2.
 */
import { describe, expect, it } from 'vitest';
import type { Engine, Tensor } from '../../index.js';
import { attention, attentionPacked } from '../../engine/ops/index.js';
import { attentionRef, attentionVjpRef, type AttentionRefDims } from '../../kernels/attention.js';
import { expectClose, finiteDiff, getEngine, randn, read } from '../helpers.js';

interface Case {
  B: number;
  H: number;
  nq: number;
  nk: number;
  d: number;
  scale?: number;
  /** Multiplies q (spreads the scores, so the online max changes often). */
  qScale?: number;
}

const dimsOf = (c: Case): AttentionRefDims => ({ bh: c.B * c.H, nq: c.nq, nk: c.nk, d: c.d });
const label = (c: Case) => `B${c.B} H${c.H} Nq${c.nq} Nk${c.nk} d${c.d}${c.scale !== undefined ? ` scale ${c.scale}` : ''}`;

/** Seeded inputs and upstream gradient of a case, row-major [B, H, N, d]. */
function data(c: Case, seed: number) {
  const nQ = c.B * c.H * c.nq * c.d;
  const nK = c.B * c.H * c.nk * c.d;
  return {
    qs: randn(nQ, seed, c.qScale ?? 1),
    ks: randn(nK, seed + 1),
    vs: randn(nK, seed + 2),
    gs: randn(nQ, seed + 3),
  };
}

/** Forward (with probs) and backward of one contiguous case against the float64 references. */
async function checkCase(wd: Engine, c: Case, seed: number, opts: { backward?: boolean; probs?: boolean; packed?: boolean } = {}): Promise<void> {
  const { qs, ks, vs, gs } = data(c, seed);
  const what = `${label(c)}${opts.packed === undefined ? '' : opts.packed ? ' packed' : ' unpacked'}`;
  await wd.scope(async () => {
    const q = wd.tensor(qs, [c.B, c.H, c.nq, c.d], { requiresGrad: true });
    const k = wd.tensor(ks, [c.B, c.H, c.nk, c.d], { requiresGrad: true });
    const v = wd.tensor(vs, [c.B, c.H, c.nk, c.d], { requiresGrad: true });
    const { out, probs } = attention(q, k, v, { scale: c.scale, returnProbs: opts.probs ?? true, packed: opts.packed });
    expect(out.shape).toEqual([c.B, c.H, c.nq, c.d]);
    const ref = attentionRef(qs, ks, vs, dimsOf(c), c.scale);
    expectClose(await read(out), ref.out, 1e-4, 2e-5, `out ${what}`);
    if (opts.probs ?? true) {
      expect(probs!.shape).toEqual([c.B, c.H, c.nq, c.nk]);
      expect(probs!.requiresGrad).toBe(false);
      expectClose(await read(probs!), ref.probs, 1e-4, 1e-6, `probs ${what}`);
    }
    if (opts.backward ?? true) {
      out.mul(wd.tensor(gs, out.shape)).sum().backward();
      const want = attentionVjpRef(qs, ks, vs, gs, dimsOf(c), c.scale);
      expectClose(await read(q.grad!), want.dq, 1e-4, 2e-5, `dq ${what}`);
      expectClose(await read(k.grad!), want.dk, 1e-4, 2e-5, `dk ${what}`);
      expectClose(await read(v.grad!), want.dv, 1e-4, 2e-5, `dv ${what}`);
      for (const t of [q, k, v]) t.zeroGrad();
    }
  });
}

/** Row-major copy of a [B, N, 3, H, d] qkv array's part `which` as [B, H, N, d]. */
function splitQkv(x: Float32Array, B: number, N: number, H: number, d: number, which: number): Float32Array {
  const out = new Float32Array(B * H * N * d);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let n = 0; n < N; n++)
        for (let e = 0; e < d; e++) out[((b * H + h) * N + n) * d + e] = x[(((b * N + n) * 3 + which) * H + h) * d + e];
  return out;
}

for (const variant of ['cpu', 'gpu'] as const) {
  describe(`attention (${variant} variant)`, () => {
    const heavy = variant === 'cpu';

    if (heavy) {
      for (const d of [32, 64]) {
        it(`forward + backward vs float64, N ∈ {1, 17, 197}, d = ${d}, both launches`, async () => {
          const wd = await getEngine(variant);
          for (const packed of [true, false]) {
            await checkCase(wd, { B: 2, H: 3, nq: 1, nk: 1, d }, 10 + d, { packed });
            await checkCase(wd, { B: 2, H: 3, nq: 17, nk: 17, d }, 20 + d, { packed });
            // 197 rows once per launch (the slowest case): packed at d = 32, per-batch-head at d = 64.
            if (packed === (d === 32)) await checkCase(wd, { B: 1, H: 2, nq: 197, nk: 197, d }, 30 + d, { packed });
          }
        });
      }

      it('head dims 24 (vec4 chunks) and 10 (scalar path); cross-attention Nq ≠ Nk', async () => {
        const wd = await getEngine(variant);
        await checkCase(wd, { B: 1, H: 2, nq: 13, nk: 13, d: 24 }, 1);
        await checkCase(wd, { B: 2, H: 1, nq: 17, nk: 17, d: 10 }, 2);
        await checkCase(wd, { B: 1, H: 3, nq: 6, nk: 31, d: 24 }, 3);
        await checkCase(wd, { B: 1, H: 1, nq: 67, nk: 2, d: 32 }, 4);
      });

      it('a long sequence (1031 keys) with spread scores: the online max is rescaled many times', async () => {
        const wd = await getEngine(variant);
        await checkCase(wd, { B: 1, H: 1, nq: 1031, nk: 1031, d: 32, qScale: 4 }, 5, { probs: false, backward: false });
        await checkCase(wd, { B: 1, H: 1, nq: 301, nk: 301, d: 64, qScale: 3 }, 6, { probs: false });
      });

      it('custom scale (including a negative one) forward and backward', async () => {
        const wd = await getEngine(variant);
        await checkCase(wd, { B: 1, H: 2, nq: 17, nk: 19, d: 32, scale: 0.3 }, 7);
        await checkCase(wd, { B: 1, H: 1, nq: 9, nk: 9, d: 10, scale: -0.7 }, 8);
      });
    } else {
      it('forward + backward vs float64 at d = 8 (vec4) and d = 6 (scalar), ragged N, both launches', async () => {
        const wd = await getEngine(variant);
        for (const packed of [undefined, true, false]) {
          for (const [nq, nk] of [[1, 1], [17, 17], [67, 67], [6, 31]]) {
            await checkCase(wd, { B: 2, H: 2, nq, nk, d: 8 }, nq + 100, { packed });
            await checkCase(wd, { B: 1, H: 3, nq, nk, d: 6, scale: 0.5 }, nq + 200, { packed });
          }
        }
      });
    }

    it('reads the permuted, sliced views ViT makes from qkv in place, with gradients back to qkv', async () => {
      const wd = await getEngine(variant);
      const [B, N, H, d] = heavy ? [2, 17, 3, 32] : [2, 17, 2, 8];
      const xs = randn(B * N * 3 * H * d, 40);
      const gs = randn(B * H * N * d, 41);
      await wd.scope(async () => {
        const x = wd.tensor(xs, [B, N, 3, H, d], { requiresGrad: true });
        const qkv = x.permute(2, 0, 3, 1, 4); // (3, B, H, N, d)
        const [q, k, v] = [0, 1, 2].map((i) => qkv.slice(0, i, i + 1)); // (1, B, H, N, d) views
        expect(q.isContiguous).toBe(false);
        const before = wd.device.stats.dispatches;
        const { out } = attention(q, k, v, {});
        expect(wd.device.stats.dispatches - before, 'one dispatch: no copies of the views').toBe(1);
        expect(out.shape).toEqual([1, B, H, N, d]);
        const [qs, ks, vs] = [0, 1, 2].map((i) => splitQkv(xs, B, N, H, d, i));
        const dims = { bh: B * H, nq: N, nk: N, d };
        expectClose(await read(out), attentionRef(qs, ks, vs, dims).out, 1e-4, 2e-5, 'out from qkv views');
        // dO arrives as a permuted (non-contiguous) view: out (1,B,H,N,d) → (B,N,H,d)·G.
        const o2 = out.reshape(B, H, N, d).transpose(1, 2);
        o2.mul(wd.tensor(gs, [B, N, H, d])).sum().backward();
        const gT = new Float32Array(gs.length); // G back to (B, H, N, d)
        for (let b = 0; b < B; b++)
          for (let n = 0; n < N; n++)
            for (let h = 0; h < H; h++)
              for (let e = 0; e < d; e++) gT[((b * H + h) * N + n) * d + e] = gs[((b * N + n) * H + h) * d + e];
        const want = attentionVjpRef(qs, ks, vs, gT, dims);
        const gx = await read(x.grad!);
        const parts = [want.dq, want.dk, want.dv];
        const wantX = new Float64Array(xs.length);
        for (let b = 0; b < B; b++)
          for (let n = 0; n < N; n++)
            for (let w = 0; w < 3; w++)
              for (let h = 0; h < H; h++)
                for (let e = 0; e < d; e++) wantX[(((b * N + n) * 3 + w) * H + h) * d + e] = parts[w][((b * H + h) * N + n) * d + e];
        expectClose(gx, wantX, 1e-4, 2e-5, 'qkv grad');
        x.zeroGrad();
      });
    });

    it('views it must copy (d-stride ≠ 1 on the vec4 path, rows of d + 1, three batch levels) and strided d read in place (scalar path)', async () => {
      const wd = await getEngine(variant);
      const N = 13;
      for (const d of heavy ? [32, 10] : [8, 6]) {
        for (const lay of layouts(N, d)) {
          const bh = lay.batch.reduce((x, y) => x * y, 1);
          const dims = { bh, nq: N, nk: N, d };
          const n = bh * N * d;
          const [qs, ks, vs, gs] = [60, 61, 62, 63].map((s) => randn(n, s + d));
          const ref = attentionRef(qs, ks, vs, dims);
          const want = attentionVjpRef(qs, ks, vs, gs, dims);
          await wd.scope(async () => {
            const leaves = [qs, ks, vs].map((xs) => wd.tensor(scatter(xs, lay, N, d), lay.leafShape, { requiresGrad: true }));
            const [q, k, v] = leaves.map(lay.view);
            expect(q.shape).toEqual([...lay.batch, N, d]);
            const before = wd.device.stats.dispatches;
            const { out } = attention(q, k, v, {});
            const what = `${lay.name}, d=${d}`;
            // The scalar path reads a transposed (d-stride N) view in place: one dispatch, no copies.
            if (d % 4 !== 0 && lay.batch.length === 2 && lay.name.startsWith('transposed')) {
              expect(wd.device.stats.dispatches - before, `in place: ${what}`).toBe(1);
            }
            expectClose(await read(out), ref.out, 1e-4, 2e-5, `out, ${what}`);
            out.mul(wd.tensor(gs, out.shape)).sum().backward();
            const grads = [want.dq, want.dk, want.dv];
            for (let t = 0; t < 3; t++) {
              expectClose(await read(leaves[t].grad!), scatter(grads[t], lay, N, d), 1e-4, 2e-5, `${'qkv'[t]} grad, ${what}`);
              leaves[t].zeroGrad();
            }
          });
        }
      }
    });
  });
}

/** A storage layout of logical [..batch, N, d] data: the leaf tensor, the view, the index map. */
interface Layout {
  name: string;
  batch: number[];
  leafShape: number[];
  /** Leaf element index of logical element (flat batch r, row i, column e). */
  index: (r: number, i: number, e: number) => number;
  view: (leaf: Tensor) => Tensor;
}

function layouts(N: number, d: number): Layout[] {
  return [
    {
      name: 'transposed (d-stride N)',
      batch: [2, 2],
      leafShape: [2, 2, d, N],
      index: (r, i, e) => (r * d + e) * N + i,
      view: (t) => t.transpose(-1, -2),
    },
    {
      name: 'rows of d + 1 (sliced)',
      batch: [2, 2],
      leafShape: [2, 2, N, d + 1],
      index: (r, i, e) => (r * N + i) * (d + 1) + e,
      view: (t) => t.slice(3, 0, d),
    },
    {
      // storage (N, b, a, c, d) viewed as (a, b, c, N, d): strides (2d, 4d, d, 8d, 1) merge nowhere.
      name: 'three batch levels',
      batch: [2, 2, 2],
      leafShape: [N, 2, 2, 2, d],
      index: (r, i, e) => {
        const [a, b, c] = [r >> 2, (r >> 1) & 1, r & 1];
        return (((i * 2 + b) * 2 + a) * 2 + c) * d + e;
      },
      view: (t) => t.permute(2, 1, 3, 0, 4),
    },
  ];
}

/** Logical row-major [bh, N, d] values placed into a leaf of `lay` (elements not covered stay 0). */
function scatter(x: ArrayLike<number>, lay: Layout, N: number, d: number): Float32Array {
  const out = new Float32Array(lay.leafShape.reduce((a, b) => a * b, 1));
  const bh = x.length / (N * d);
  for (let r = 0; r < bh; r++) for (let i = 0; i < N; i++) for (let e = 0; e < d; e++) out[lay.index(r, i, e)] = x[(r * N + i) * d + e];
  return out;
}

describe('attention: references, probs, errors, memory', () => {
  it('the float64 VJP matches central finite differences of the float64 forward, and so does the GPU backward', async () => {
    const wd = await getEngine('cpu');
    const c: Case = { B: 1, H: 2, nq: 5, nk: 5, d: 8 };
    const dims = dimsOf(c);
    const { qs, ks, vs, gs } = data(c, 70);
    const inputs = [qs, ks, vs].map((x) => Float64Array.from(x));
    const want = attentionVjpRef(qs, ks, vs, gs, dims);
    const fd = [0, 1, 2].map((which) =>
      finiteDiff((x) => {
        const args = inputs.map((a, i) => (i === which ? x : a));
        const { out } = attentionRef(args[0], args[1], args[2], dims);
        let s = 0;
        for (let i = 0; i < out.length; i++) s += out[i] * gs[i];
        return s;
      }, inputs[which]),
    );
    // Central differences with h = 1e-6 on float64: truncation ~h², rounding ~1e-16/h ≈ 1e-10.
    expectClose(want.dq, fd[0], 1e-6, 1e-8, 'ref dq vs finite differences');
    expectClose(want.dk, fd[1], 1e-6, 1e-8, 'ref dk vs finite differences');
    expectClose(want.dv, fd[2], 1e-6, 1e-8, 'ref dv vs finite differences');
    await wd.scope(async () => {
      const [q, k, v] = [qs, ks, vs].map((x) => wd.tensor(x, [c.B, c.H, c.nq, c.d], { requiresGrad: true }));
      attention(q, k, v, {}).out.mul(wd.tensor(gs, [c.B, c.H, c.nq, c.d])).sum().backward();
      expectClose(await read(q.grad!), fd[0], 1e-4, 1e-5, 'GPU dq vs finite differences');
      expectClose(await read(k.grad!), fd[1], 1e-4, 1e-5, 'GPU dk vs finite differences');
      expectClose(await read(v.grad!), fd[2], 1e-4, 1e-5, 'GPU dv vs finite differences');
      for (const t of [q, k, v]) t.zeroGrad();
    });
  });

  it('probs: every row sums to 1, the CLS row matches, and probs carry no gradient', async () => {
    const wd = await getEngine('cpu');
    const [B, H, N, d] = [1, 3, 197, 64];
    const c: Case = { B, H, nq: N, nk: N, d };
    const { qs, ks, vs } = data(c, 80);
    await wd.scope(async () => {
      const [q, k, v] = [qs, ks, vs].map((x) => wd.tensor(x, [B, H, N, d], { requiresGrad: true }));
      const { out, probs } = attention(q, k, v, { returnProbs: true });
      const p = await read(probs!);
      for (let r = 0; r < B * H * N; r++) {
        let s = 0;
        for (let j = 0; j < N; j++) s += p[r * N + j];
        // N f32 terms, each with relative error ~1e-6 from exp(S − L).
        expect(Math.abs(s - 1), `row ${r} sums to ${s}`).toBeLessThan(2e-5);
      }
      const ref = attentionRef(qs, ks, vs, dimsOf(c));
      const cls = (a: ArrayLike<number>) => Array.from({ length: H }, (_, h) => Array.from({ length: N }, (_, j) => a[h * N * N + j])).flat();
      expectClose(cls(p), cls(ref.probs), 1e-4, 1e-7, 'CLS attention rows');
      expect(probs!.requiresGrad).toBe(false);
      expect(probs!.gradFn).toBeNull();
      expect(out.requiresGrad).toBe(true);
    });
  });

  it('returns gradients only for the inputs that need them', async () => {
    const wd = await getEngine('cpu');
    const c: Case = { B: 1, H: 2, nq: 7, nk: 11, d: 16 };
    const { qs, ks, vs, gs } = data(c, 90);
    const want = attentionVjpRef(qs, ks, vs, gs, dimsOf(c));
    for (const needs of [[true, false, false], [false, true, false], [false, false, true], [false, true, true]]) {
      await wd.scope(async () => {
        const shapes = [[1, 2, 7, 16], [1, 2, 11, 16], [1, 2, 11, 16]];
        const ts = [qs, ks, vs].map((x, i) => wd.tensor(x, shapes[i], { requiresGrad: needs[i] }));
        attention(ts[0], ts[1], ts[2], {}).out.mul(wd.tensor(gs, shapes[0])).sum().backward();
        const wants = [want.dq, want.dk, want.dv];
        for (let i = 0; i < 3; i++) {
          if (needs[i]) {
            expectClose(await read(ts[i].grad!), wants[i], 1e-4, 2e-5, `grad ${'qkv'[i]} with needs ${needs}`);
            ts[i].zeroGrad();
          } else expect(ts[i].grad).toBeNull();
        }
      });
    }
  });

  it('an upstream gradient whose batch dims group differently from the inputs (contiguous q, k, v; permuted dO)', async () => {
    const wd = await getEngine('cpu');
    const c: Case = { B: 2, H: 3, nq: 11, nk: 11, d: 16 };
    const { qs, ks, vs, gs } = data(c, 97);
    await wd.scope(async () => {
      const [q, k, v] = [qs, ks, vs].map((x) => wd.tensor(x, [2, 3, 11, 16], { requiresGrad: true }));
      // out (2,3,N,d) → (3,2,N,d): dO reaches attention as a view whose (b, h) do not merge.
      const G = new Float32Array(gs.length);
      for (let b = 0; b < 2; b++) for (let h = 0; h < 3; h++) for (let x = 0; x < 11 * 16; x++) G[(h * 2 + b) * 176 + x] = gs[(b * 3 + h) * 176 + x];
      attention(q, k, v, {}).out.transpose(0, 1).mul(wd.tensor(G, [3, 2, 11, 16])).sum().backward();
      const want = attentionVjpRef(qs, ks, vs, gs, dimsOf(c));
      expectClose(await read(q.grad!), want.dq, 1e-4, 2e-5, 'dq with a permuted dO');
      expectClose(await read(k.grad!), want.dk, 1e-4, 2e-5, 'dk with a permuted dO');
      expectClose(await read(v.grad!), want.dv, 1e-4, 2e-5, 'dv with a permuted dO');
      for (const t of [q, k, v]) t.zeroGrad();
    });
  });

  it('accepts [BH, N, d] and uses 1/√d by default', async () => {
    const wd = await getEngine('cpu');
    const c: Case = { B: 1, H: 4, nq: 9, nk: 9, d: 16 };
    const { qs, ks, vs } = data(c, 95);
    await wd.scope(async () => {
      const [q, k, v] = [qs, ks, vs].map((x) => wd.tensor(x, [4, 9, 16]));
      const { out, probs } = attention(q, k, v, {});
      expect(probs).toBeUndefined();
      expect(out.shape).toEqual([4, 9, 16]);
      expectClose(await read(out), attentionRef(qs, ks, vs, dimsOf(c), 0.25).out, 1e-4, 2e-5, 'out [BH, N, d]');
    });
  });

  it('no query rows: empty out, zero dk and dv', async () => {
    const wd = await getEngine('cpu');
    await wd.scope(async () => {
      const q = wd.zeros([1, 2, 0, 8], { requiresGrad: true });
      const k = wd.randn([1, 2, 5, 8], { seed: 1, requiresGrad: true });
      const v = wd.randn([1, 2, 5, 8], { seed: 2, requiresGrad: true });
      const { out, probs } = attention(q, k, v, { returnProbs: true });
      expect(out.shape).toEqual([1, 2, 0, 8]);
      expect(probs!.shape).toEqual([1, 2, 0, 5]);
      out.sum().backward();
      expect(Array.from(await k.grad!.toArray()).every((x) => x === 0)).toBe(true);
      expect(Array.from(await v.grad!.toArray()).every((x) => x === 0)).toBe(true);
      for (const t of [q, k, v]) t.zeroGrad();
    });
  });

  it('shape errors name the shapes', async () => {
    const wd = await getEngine('cpu');
    await wd.scope(async () => {
      const q = wd.zeros([1, 2, 5, 8]);
      expect(() => attention(q, wd.zeros([1, 2, 5, 16]), wd.zeros([1, 2, 5, 16]), {})).toThrow(
        /q \[1, 2, 5, 8\] and k \[1, 2, 5, 16\] have different head dims/,
      );
      expect(() => attention(q, wd.zeros([1, 2, 5, 8]), wd.zeros([1, 2, 6, 8]), {})).toThrow(
        /k \[1, 2, 5, 8\] and v \[1, 2, 6, 8\] have different lengths/,
      );
      expect(() => attention(q, wd.zeros([1, 3, 5, 8]), wd.zeros([1, 3, 5, 8]), {})).toThrow(/batch dims.*q \[1, 2, 5, 8\], k \[1, 3, 5, 8\]/);
      expect(() => attention(wd.zeros([5, 8]), wd.zeros([5, 8]), wd.zeros([5, 8]), {})).toThrow(/rank ≥ 3.*q \[5, 8\]/);
      expect(() => attention(q, q, wd.zeros([1, 2, 5, 4]), {})).toThrow(/v \[1, 2, 5, 4\] must have the head dim of q \[1, 2, 5, 8\]/);
      expect(() => attention(q, wd.zeros([1, 2, 0, 8]), wd.zeros([1, 2, 0, 8]), {})).toThrow(/no keys/);
    });
  });

  it('leaves no live memory behind after forward + backward in a scope', async () => {
    const wd = await getEngine('cpu');
    const c: Case = { B: 1, H: 2, nq: 17, nk: 17, d: 32 };
    const { qs, ks, vs, gs } = data(c, 99);
    const before = wd.memory().liveBytes;
    await wd.scope(async () => {
      const [q, k, v] = [qs, ks, vs].map((x) => wd.tensor(x, [1, 2, 17, 32], { requiresGrad: true }));
      const { out } = attention(q, k, v, { returnProbs: true });
      out.mul(wd.tensor(gs, out.shape)).sum().backward();
      await q.grad!.toArray();
      for (const t of [q, k, v]) t.zeroGrad();
    });
    expect(wd.memory().liveBytes).toBe(before);
  });
});

describe('attentionPacked', () => {
  it('equals attention on the three slices, with one gradient for the packed tensor', async () => {
    const wd = await getEngine('cpu');
    await wd.scope(async () => {
      const B = 2, N = 11, H = 3, d = 8;
      const xs = randn(B * N * 3 * H * d, 31);
      const gs = randn(B * H * N * d, 32);
      const run = async (packed: boolean) => {
        const x = wd.tensor(xs, [B, N, 3 * H * d], { requiresGrad: true });
        const qkv = x.reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4); // (3, B, H, N, d)
        const out = packed
          ? attentionPacked(qkv, { returnProbs: true })
          : attention(qkv.slice(0, 0, 1), qkv.slice(0, 1, 2), qkv.slice(0, 2, 3), { returnProbs: true });
        out.out.reshape(B, H, N, d).mul(wd.tensor(gs, [B, H, N, d])).sum().backward();
        return [await out.out.toArray(), await out.probs!.toArray(), await x.grad!.toArray()];
      };
      const [a, b] = [await run(true), await run(false)];
      expectClose(a[0], b[0], 1e-6, 1e-7, 'out');
      expectClose(a[1], b[1], 1e-6, 1e-7, 'probs');
      expectClose(a[2], b[2], 1e-6, 1e-7, 'grad');
    });
  });

  it("ViT's path costs no copies: out is token-major, the qkv gradient lands in the projection's layout", async () => {
    const wd = await getEngine('cpu');
    await wd.scope(async () => {
      const B = 2, N = 9, H = 3, d = 8;
      const xs = randn(B * N * 3 * H * d, 33);
      const gs = randn(B * N * H * d, 34);
      const x = wd.tensor(xs, [B, N, 3 * H * d], { requiresGrad: true });
      const g = wd.tensor(gs, [B, N, H * d]);
      const stats = () => ({ ...wd.device.stats });
      const s0 = stats();
      const qkv = x.reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4); // (3, B, H, N, d): views
      const { out } = attentionPacked(qkv);
      const merged = out.reshape(B, H, N, d).transpose(1, 2).reshape(B, N, H * d); // (B, N, H·d): views
      const s1 = stats();
      expect(s1.dispatches - s0.dispatches, 'the forward is one dispatch').toBe(1);
      expect(merged.strides).toEqual([N * H * d, H * d, 1]);
      merged.backward(g);
      const s2 = stats();
      // dq, then dk and dv: two dispatches, no buffer copies, no copy kernels.
      expect(s2.dispatches - s1.dispatches).toBe(2);
      expect(s2.copies - s1.copies).toBe(0);
      expect(x.grad!.isContiguous).toBe(true);
      // Values against the float64 reference of the three slices.
      const [qs, ks, vs] = [0, 1, 2].map((i) => splitQkv(xs, B, N, H, d, i));
      const dims = { bh: B * H, nq: N, nk: N, d };
      const toBhnd = (a: ArrayLike<number>) => {
        const o = new Float64Array(a.length);
        for (let b = 0; b < B; b++) for (let n = 0; n < N; n++) for (let h = 0; h < H; h++) for (let e = 0; e < d; e++) o[((b * H + h) * N + n) * d + e] = a[((b * N + n) * H + h) * d + e];
        return o;
      };
      const ref = attentionRef(qs, ks, vs, dims);
      expectClose(toBhnd(await merged.contiguous().toArray()), ref.out, 1e-4, 2e-5, 'merged out');
      const want = attentionVjpRef(qs, ks, vs, toBhnd(gs), dims);
      const parts = [want.dq, want.dk, want.dv];
      const wantX = new Float64Array(xs.length);
      for (let b = 0; b < B; b++)
        for (let n = 0; n < N; n++)
          for (let w = 0; w < 3; w++)
            for (let h = 0; h < H; h++)
              for (let e = 0; e < d; e++) wantX[(((b * N + n) * 3 + w) * H + h) * d + e] = parts[w][((b * H + h) * N + n) * d + e];
      expectClose(await x.grad!.toArray(), wantX, 1e-4, 2e-5, 'qkv grad');
    });
  });

  it('qkv views with three batch levels: the gradient is computed aside and copied into the layout', async () => {
    const wd = await getEngine('cpu');
    await wd.scope(async () => {
      // x [A, N, B, 3, H, d] viewed as (3, A, B, H, N, d): A, B and H cannot merge (N > 1).
      const A = 2, N = 5, B = 2, H = 2, d = 4;
      const xs = randn(A * N * B * 3 * H * d, 35);
      const gs = randn(A * B * H * N * d, 36);
      const x = wd.tensor(xs, [A, N, B, 3, H, d], { requiresGrad: true });
      const qkv = x.permute(3, 0, 2, 4, 1, 5);
      const at = (a: number, n: number, b: number, w: number, h: number, e: number) => xs[((((a * N + n) * B + b) * 3 + w) * H + h) * d + e];
      const part = (w: number) => {
        const o = new Float32Array(A * B * H * N * d);
        for (let a = 0; a < A; a++) for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let n = 0; n < N; n++) for (let e = 0; e < d; e++) o[((((a * B + b) * H + h) * N + n) * d) + e] = at(a, n, b, w, h, e);
        return o;
      };
      const dims = { bh: A * B * H, nq: N, nk: N, d };
      const { out } = attentionPacked(qkv);
      out.mul(wd.tensor(gs, out.shape)).sum().backward();
      expectClose(await out.contiguous().toArray(), attentionRef(part(0), part(1), part(2), dims).out, 1e-4, 2e-5, 'out');
      const want = attentionVjpRef(part(0), part(1), part(2), gs, dims);
      const gx = await x.grad!.toArray();
      const parts = [want.dq, want.dk, want.dv];
      for (let a = 0; a < A; a++)
        for (let n = 0; n < N; n++)
          for (let b = 0; b < B; b++)
            for (let w = 0; w < 3; w++)
              for (let h = 0; h < H; h++)
                for (let e = 0; e < d; e++) {
                  const got = gx[((((a * N + n) * B + b) * 3 + w) * H + h) * d + e];
                  const exp = parts[w][((((a * B + b) * H + h) * N + n) * d) + e];
                  expect(Math.abs(got - exp), `grad at ${[a, n, b, w, h, e]}`).toBeLessThanOrEqual(2e-5 + 1e-4 * Math.abs(exp));
                }
    });
  });
});
