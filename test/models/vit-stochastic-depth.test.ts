/**
 * Stochastic depth of models/vit.ts's Block against a reconstruction from the block's own parts:
 * - DINOv2's batch-subset form (rate > 0.1): per branch a random subset S of the samples,
 *   |S| = max(⌊b(1 − p)⌋, 1), gets x + (b/|S|)·ls(branch(x)), the others pass unchanged; the
 *   gradient reaches the input through the identity only for samples outside both subsets; LayerScale
 *   and every branch weight get gradients;
 * - classic DropPath (DINO, and DINOv2 at rate ≤ 0.1): per sample floor(1 − p + u)/(1 − p);
 * - drop_path_uniform: every block at the rate; the linear rule otherwise; eval mode and the
 *   defaults (DINO v1) draw nothing.
 * The subsets and masks are replayed from a copy of the block's generator state, so the comparison
 * is of the arithmetic (rtol 1e-5: the same f32 kernels on other batch sizes).
 */
import { describe, expect, it } from 'vitest';
import { Rng } from '../../engine/random.js';
import { createViT, type ViTConfig } from '../../models/vit.js';
import { expectClose, getEngine, randn } from '../helpers.js';

const D = 16;
const N = 5;

async function oneBlock(overrides: Partial<ViTConfig>) {
  const wd = await getEngine();
  const vit = createViT({ engine: wd, rng: new Rng(4) }, { imgSize: 8, patchSize: 4, embedDim: D, depth: 1, numHeads: 2, layerScale: 0.7, dropPathUniform: true, ...overrides });
  vit.train();
  return { wd, vit, block: vit.blocks[0] };
}

/** The subset a Block draws: the first |S| of a Fisher-Yates permutation. */
function drawSubset(rng: Rng, b: number, p: number): number[] {
  const perm = Array.from({ length: b }, (_, i) => i);
  for (let i = b - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [perm[i], perm[j]] = [perm[j], perm[i]];
  }
  return perm.slice(0, Math.max(Math.floor(b * (1 - p)), 1));
}

describe('DINOv2 stochastic depth (Block)', () => {
  it.each([
    { b: 7, p: 0.3 },
    { b: 5, p: 0.4 },
    { b: 3, p: 0.9 }, // |S| = max(0, 1) = 1
  ])('batch subsets at rate $p, b = $b: forward = reconstruction; gradients', async ({ b, p }) => {
    const { wd, vit, block } = await oneBlock({ dropPathRate: p, stochasticDepth: 'dinov2' });
    expect(block.dropPath).toBe(p);
    await wd.scope(async () => {
      const xs = randn(b * N * D, 9);
      const replay = Rng.fromState(vit.dropRng.state());
      const x = wd.tensor(xs, [b, N, D], { requiresGrad: true });
      const out = block.forward(x).out;
      const S1 = drawSubset(replay, b, p);
      const S2 = drawSubset(replay, b, p);
      expect(vit.dropRng.state(), 'the block drew exactly two subsets').toEqual(replay.state());
      // Reconstruction: the branches on every sample (rows are independent), kept on the subsets.
      const ref = wd.noGrad(() => {
        const t = wd.tensor(xs, [b, N, D]);
        const addOn = (base: Float32Array, branch: Float32Array, S: number[]) => {
          const o = Float32Array.from(base);
          const scale = b / S.length;
          for (const r of S) for (let k = 0; k < N * D; k++) o[r * N * D + k] = base[r * N * D + k] + branch[r * N * D + k] * scale;
          return o;
        };
        return { t, addOn };
      });
      const a1 = await wd.noGrad(() => block.ls1!.forward(block.attn.forward(block.norm1.forward(ref.t)).out)).toArray();
      const x1 = ref.addOn(xs, a1, S1);
      const f1 = await wd.noGrad(() => block.ls2!.forward(block.mlp.forward(block.norm2.forward(wd.tensor(x1, [b, N, D]))))).toArray();
      const x2 = ref.addOn(x1, f1, S2);
      expectClose(await out.toArray(), x2, 1e-5, 1e-6, 'subset forward');

      const g = randn(b * N * D, 10);
      out.mul(wd.tensor(g, [b, N, D])).sum().backward();
      const dx = await x.grad!.toArray();
      for (let r = 0; r < b; r++) {
        const row = Array.from(dx.subarray(r * N * D, (r + 1) * N * D));
        const gRow = Array.from(g.subarray(r * N * D, (r + 1) * N * D));
        if (!S1.includes(r) && !S2.includes(r)) expect(row, `sample ${r} outside both subsets: identity`).toEqual(gRow);
        else expect(row).not.toEqual(gRow);
      }
      for (const [name, t] of block.namedParameters()) {
        expect(t.grad, `${name} has a gradient`).toBeTruthy();
        const v = await t.grad!.toArray();
        expect(v.some((z) => z !== 0), `${name} gradient is not all zero`).toBe(true);
        t.zeroGrad();
      }
    });
  });

  it.each([
    { mode: 'drop-path' as const, p: 0.3 },
    { mode: 'dinov2' as const, p: 0.1 }, // at and below 0.1: classic DropPath
  ])('classic DropPath ($mode, rate $p): per-sample masks floor(1 − p + u)/(1 − p) on both branches', async ({ mode, p }) => {
    const { wd, vit, block } = await oneBlock({ dropPathRate: p, stochasticDepth: mode });
    const b = 9;
    await wd.scope(async () => {
      const xs = randn(b * N * D, 11);
      const replay = Rng.fromState(vit.dropRng.state());
      const out = await block.forward(wd.tensor(xs, [b, N, D])).out.toArray();
      const keep = 1 - p;
      const mask = () => Array.from({ length: b }, () => Math.floor(keep + replay.uniform()) / keep);
      const m1 = mask();
      const m2 = mask();
      expect(vit.dropRng.state()).toEqual(replay.state());
      const apply = (base: Float32Array, br: Float32Array, m: number[]) => Float32Array.from(base, (v, k) => v + Math.fround(br[k] * Math.fround(m[Math.floor(k / (N * D))])));
      const a1 = await wd.noGrad(() => block.ls1!.forward(block.attn.forward(block.norm1.forward(wd.tensor(xs, [b, N, D]))).out)).toArray();
      const x1 = apply(xs, a1, m1);
      const f1 = await wd.noGrad(() => block.ls2!.forward(block.mlp.forward(block.norm2.forward(wd.tensor(x1, [b, N, D]))))).toArray();
      expectClose(out, apply(x1, f1, m2), 1e-5, 1e-6, 'drop-path forward');
    });
  });

  it('drop_path_uniform gives every block the rate; the linear rule otherwise; eval and the defaults draw nothing', async () => {
    const wd = await getEngine();
    const mk = (o: Partial<ViTConfig>) => createViT({ engine: wd, rng: new Rng(1) }, { imgSize: 8, patchSize: 4, embedDim: D, depth: 4, numHeads: 2, ...o });
    expect(mk({ dropPathRate: 0.3, dropPathUniform: true }).blocks.map((b) => b.dropPath)).toEqual([0.3, 0.3, 0.3, 0.3]);
    expect(mk({ dropPathRate: 0.3 }).blocks.map((b) => b.dropPath)).toEqual([0, 0.1, 0.2, 0.3].map((v, i) => (0.3 * i) / 3));
    const v1 = mk({});
    expect([v1.cfg.stochasticDepth, v1.cfg.dropPathUniform, v1.cfg.dropPathRate]).toEqual(['drop-path', false, 0]);
    const m = mk({ dropPathRate: 0.5, dropPathUniform: true, stochasticDepth: 'dinov2' });
    m.eval();
    const s = m.dropRng.state();
    await wd.scope(() => m.forward(wd.tensor(randn(2 * 3 * 8 * 8, 2), [2, 3, 8, 8])).toArray());
    expect(m.dropRng.state(), 'eval mode draws nothing').toEqual(s);
  });
});
