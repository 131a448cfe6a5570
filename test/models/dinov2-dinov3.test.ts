/**
 * DINOv2 / DINOv3 backbones (models/vit.ts, loaded by models/backbone.ts) against the golden
 * fixtures of test/fixtures/models/dinov2_dinov3 (written by the official code; make_fixtures.py,
 * cross-checked in float64 by check_fixtures.py):
 * - every fixture (v2 plain, v2 registers, v2 packed SwiGLU, v3 MLP, v3 SwiGLU) loaded from the
 *   official .pth, the official safetensors and the Hugging Face layout, with the architecture
 *   inferred; at the native 4×4 grid (batch 1) and a non-square 3×5 grid (batch 2): the tokens
 *   entering block 0, the interpolated pos_embed or the RoPE tables, x_norm_clstoken,
 *   x_norm_patchtokens, registers / storage tokens, x_prenorm, the last block's attention and
 *   the CLS attention over the patches; gradients of the fixture's loss w.r.t. the pixels and the
 *   stored parameters. Bound: max|got − want| ≤ 1e-4 · max|want| per tensor (the figures are
 *   printed);
 * - the library paths on them: eval/embed-node.ts embedAll (CLS, patch tokens, attention from an
 *   array input), eval/visualize.ts and eval/segment.ts (register / storage columns excluded);
 * - the masked forward (mask_token), RoPE's training-time coordinate rescaling, the antialiased
 *   resize weights (the SiLU / SwiGLU and RoPE kernels have their own tests: test/kernels/
 *   elementwise.test.ts, test/kernels/rope.test.ts);
 * - errors: strict loading with capped key lists and no GPU memory left behind, requests that
 *   contradict the file, hostile files through the DINOv2 / DINOv3 path, DINOv2 training
 *   checkpoints (backbone. prefix, block chunks, dino_head / ibot_head).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Rng, type Engine, type Tensor } from '../../index.js';
import { buildBackbone, describeArch, type LoadedBackbone, parseBackboneWeights } from '../../models/backbone.js';
import { loadBackbone } from '../../models/backbone-node.js';
import { bicubicWeights1dTo } from '../../models/interpolate.js';
import { loadStateDict } from '../../models/io/state-dict.js';
import { writeSafetensors } from '../../models/io/safetensors.js';
import { RopePositionEmbedding } from '../../models/rope.js';
import { dinoViTConfig, VisionTransformer } from '../../models/vit.js';
import { dinoPreset, dinoStateDictShapes } from '../../models/io/dino-arch.js';
import { embedForward } from '../../eval/embed.js';
import { embedAll } from '../../eval/embed-node.js';
import { clsAttention } from '../../eval/segment.js';
import { computeVisuals } from '../../eval/visualize.js';
import { expectClose, getEngine, randn } from '../helpers.js';

const dir = new URL('../fixtures/models/dinov2_dinov3/', import.meta.url);
const bytes = (f: string) => new Uint8Array(readFileSync(new URL(f, dir)));
type Host = { shape: number[]; data: Float32Array };

interface ArchJson {
  family: 'dinov2' | 'dinov3';
  num_heads: number;
  num_register_tokens: number;
  num_storage_tokens: number;
  inputs: { batch: number; height: number; width: number; grid: [number, number] }[];
  grad_params: string[];
}

const FIXTURES = ['v2_plain', 'v2_reg', 'v2_swiglu', 'v3_mlp', 'v3_swiglu'] as const;
const SOURCES = ['official.pth', 'official.safetensors', 'hf.safetensors'] as const;
const TOL = 1e-4;

/** max|got − want| / max|want| (the scale of the tensor; 0/0 = 0). */
function scaledError(got: ArrayLike<number>, want: ArrayLike<number>): number {
  expect(got.length).toBe(want.length);
  let err = 0;
  let scale = 0;
  for (let i = 0; i < want.length; i++) {
    err = Math.max(err, Math.abs(got[i] - want[i]));
    scale = Math.max(scale, Math.abs(want[i]));
  }
  return scale > 0 ? err / scale : err;
}

/** Worst scaled error per fixture, printed at the end (for the report). */
const worst = new Map<string, { forward: number; grads: number }>();
function record(key: string, kind: 'forward' | 'grads', e: number): void {
  const w = worst.get(key) ?? { forward: 0, grads: 0 };
  w[kind] = Math.max(w[kind], e);
  worst.set(key, w);
}

function expectScaled(got: ArrayLike<number>, want: ArrayLike<number>, what: string, key: string, kind: 'forward' | 'grads'): void {
  const e = scaledError(got, want);
  record(key, kind, e);
  expect(e, `${what}: scaled error ${e.toExponential(2)}`).toBeLessThanOrEqual(TOL);
}

afterAll(() => {
  const lines = [...worst].map(([k, w]) => `${k.padEnd(34)} forward ${w.forward.toExponential(1)}  gradients ${w.grads.toExponential(1)}`);
  console.log(`max scaled errors vs the official outputs:\n${lines.join('\n')}`);
});

/** Loads a fixture file through the backbone loader (architecture inferred; heads given where the file cannot tell). */
function load(wd: Engine, name: string, source: string, arch: ArchJson): LoadedBackbone {
  const weights = parseBackboneWeights(bytes(`${name}/${source}`), { name: source });
  // Width 32 is not a multiple of 64, so heads = width/64 does not apply: DINOv2 and HF DINOv3
  // need --heads; official DINOv3 files carry rope_embed.periods, which fix the head dim.
  const needHeads = arch.family === 'dinov2' || source.startsWith('hf');
  return buildBackbone(wd, weights, needHeads ? { numHeads: arch.num_heads } : {}, `${name}/${source}`);
}

describe.each(FIXTURES)('%s', (name) => {
  const arch = JSON.parse(readFileSync(new URL(`${name}/arch.json`, dir), 'utf8')) as ArchJson;
  const io = loadStateDict(bytes(`${name}/io.safetensors`)).tensors as Map<string, Host>;
  const R = arch.num_register_tokens + arch.num_storage_tokens;

  it.each(SOURCES)('%s: outputs at both input sizes', async (source) => {
    const wd = await getEngine();
    const { model, spec } = load(wd, name, source, arch);
    const key = `${name} ${source}`;
    try {
      expect(spec.dino?.family).toBe(arch.family);
      expect(model.training).toBe(false);
      await wd.noGrad(() =>
        wd.scope(async () => {
          for (let i = 0; i < arch.inputs.length; i++) {
            const t = (k: string) => wd.tensor(io.get(`in${i}.${k}`)!.data, io.get(`in${i}.${k}`)!.shape);
            const want = (k: string) => io.get(`in${i}.${k}`)!.data;
            const x = t('x');
            const [h, w] = arch.inputs[i].grid;
            const check = async (got: Tensor, k: string) => {
              expect(got.shape, `in${i}.${k} shape`).toEqual(io.get(`in${i}.${k}`)!.shape);
              expectScaled(await got.contiguous().toArray(), want(k), `${key} in${i}.${k}`, key, 'forward');
            };
            await check(model.prepareTokens(x), 'tokens');
            if (arch.family === 'dinov2') {
              await check(model.interpolatePosEncoding(h, w), 'pos_embed');
            } else {
              // The fixture's tables cover the patch tokens; ours have the prefix rows (sin 0, cos 1) first.
              const tables = model.ropeEmbed!.tables(h, w, 1 + R);
              await check(tables.sin.slice(0, 1 + R, 1 + R + h * w), 'rope_sin');
              await check(tables.cos.slice(0, 1 + R, 1 + R + h * w), 'rope_cos');
              expect(Array.from(await tables.sin.slice(0, 0, 1 + R).contiguous().toArray()).every((v) => v === 0)).toBe(true);
              expect(Array.from(await tables.cos.slice(0, 0, 1 + R).contiguous().toArray()).every((v) => v === 1)).toBe(true);
            }
            const f = model.forwardFeatures(x, { attention: true });
            await check(f.xNormClsToken, 'x_norm_clstoken');
            await check(f.xNormPatchTokens, 'x_norm_patchtokens');
            await check(f.xPrenorm, 'x_prenorm');
            await check(f.attention!, 'attn');
            if (arch.family === 'dinov2' && R) await check(f.xNormRegTokens, 'x_norm_regtokens');
            if (arch.family === 'dinov3') await check(f.xNormRegTokens, 'x_storage_tokens');
            // The library's paths: embedForward (eval/embed.ts) and the segmentation attention.
            const e = embedForward(model, x, { attention: true, patchTokens: true });
            await check(e.features, 'x_norm_clstoken');
            await check(e.patchTokens!, 'x_norm_patchtokens');
            await check(e.attention!, 'cls_attn');
            await check(model.forward(x), 'x_norm_clstoken');
            await check(model.lastSelfAttention(x), 'attn');
            const [last] = model.intermediateLayers(x, 1);
            await check(last.slice(1, 1 + R, last.shape[1]), 'x_norm_patchtokens');
          }
        }),
      );
    } finally {
      model.dispose();
    }
  });

  it.each(SOURCES)('%s: gradients w.r.t. the pixels and the stored parameters', async (source) => {
    const wd = await getEngine();
    const { model } = load(wd, name, source, arch);
    const key = `${name} ${source}`;
    try {
      // The fixture's backward ran in eval mode (no RoPE coordinate augmentation, no drop path).
      await wd.scope(async () => {
        const xs: Tensor[] = [];
        let loss: Tensor | null = null;
        for (let i = 0; i < arch.inputs.length; i++) {
          const t = (k: string, grad = false) => wd.tensor(io.get(`in${i}.${k}`)!.data, io.get(`in${i}.${k}`)!.shape, { requiresGrad: grad });
          const x = t('x', true);
          xs.push(x);
          const f = model.forwardFeatures(x);
          const l = f.xNormClsToken.mul(t('w_cls')).sum().add(f.xNormPatchTokens.mul(t('w_patch')).sum());
          // A sum of signed products: its scale is Σ|w·y|, not |loss| (which may cancel to near 0).
          const abs = (w: string, y: string) => io.get(`in${i}.${w}`)!.data.reduce((a, v, j) => a + Math.abs(v * io.get(`in${i}.${y}`)!.data[j]), 0);
          const scale = abs('w_cls', 'x_norm_clstoken') + abs('w_patch', 'x_norm_patchtokens');
          const lossErr = Math.abs((await l.item()) - io.get(`in${i}.loss`)!.data[0]) / scale;
          record(key, 'forward', lossErr);
          expect(lossErr, `${key} in${i}.loss`).toBeLessThanOrEqual(TOL);
          loss = loss ? loss.add(l) : l;
        }
        loss!.backward();
        for (let i = 0; i < xs.length; i++) expectScaled(await xs[i].grad!.toArray(), io.get(`in${i}.grad.x`)!.data, `${key} in${i}.grad.x`, key, 'grads');
        for (const p of arch.grad_params) {
          const want = io.get(`grad.${p}`)!.data;
          const g = model.get(p).grad;
          if (p === 'mask_token') {
            // Unused without masks: no gradient reaches it (the official one is all zeros).
            expect(Array.from(want).every((v) => v === 0)).toBe(true);
            expect(g === null || (await g.toArray()).every((v) => v === 0)).toBe(true);
            continue;
          }
          expectScaled(await g!.toArray(), want, `${key} grad.${p}`, key, 'grads');
        }
      });
    } finally {
      model.dispose();
    }
  });
});

describe('library paths on DINOv2 / DINOv3 backbones', () => {
  it('embedAll on an NCHW array: CLS, patch tokens and CLS attention (storage tokens excluded)', async () => {
    const wd = await getEngine();
    const arch = JSON.parse(readFileSync(new URL('v3_swiglu/arch.json', dir), 'utf8')) as ArchJson;
    const io = loadStateDict(bytes('v3_swiglu/io.safetensors')).tensors as Map<string, Host>;
    const { model } = load(wd, 'v3_swiglu', 'official.pth', arch);
    try {
      const x = io.get('in1.x')!; // (2, 3, 48, 80): a 3×5 grid
      const r = await embedAll(wd, model, { kind: 'array', data: x.data, shape: x.shape as [number, number, number, number] }, {
        batchSize: 1,
        crop: 224,
        attention: true,
        patchTokens: true,
      });
      expect(r.featuresShape).toEqual([2, 32]);
      expect(r.patchTokensShape).toEqual([2, 15, 32]);
      expect(r.attentionShape).toEqual([2, 2, 15]);
      expect(scaledError(r.features, io.get('in1.x_norm_clstoken')!.data)).toBeLessThanOrEqual(TOL);
      expect(scaledError(r.patchTokens!, io.get('in1.x_norm_patchtokens')!.data)).toBeLessThanOrEqual(TOL);
      expect(scaledError(r.attention!, io.get('in1.cls_attn')!.data)).toBeLessThanOrEqual(TOL);
      const odd = new Float32Array(3 * 50 * 64);
      await expect(embedAll(wd, model, { kind: 'array', data: odd, shape: [1, 3, 50, 64] }, { batchSize: 1, crop: 224, attention: false })).rejects.toThrow(
        "the array's images are 64x50: not multiples of the patch size 16",
      );
    } finally {
      model.dispose();
    }
  });

  it('segmentation attention and the visualisation (PCA of patch tokens) use the patch columns only', async () => {
    const wd = await getEngine();
    for (const name of ['v2_reg', 'v3_mlp'] as const) {
      const arch = JSON.parse(readFileSync(new URL(`${name}/arch.json`, dir), 'utf8')) as ArchJson;
      const io = loadStateDict(bytes(`${name}/io.safetensors`)).tensors as Map<string, Host>;
      const { model } = load(wd, name, 'official.safetensors', arch);
      try {
        const x0 = io.get('in0.x')!;
        const x = wd.tensor(x0.data, x0.shape);
        const a = await clsAttention(model, x);
        x.dispose();
        expect([a.batch, a.heads, a.h, a.w]).toEqual([1, 2, 4, 4]);
        expect(scaledError(a.attention, io.get('in0.cls_attn')!.data)).toBeLessThanOrEqual(TOL);
        const p = model.cfg.patchSize;
        const img = { width: 50, height: 40, data: Uint8Array.from({ length: 50 * 40 * 3 }, (_, i) => (i * 37) % 251) };
        const v = await computeVisuals(wd, model, [img, img], { size: 4 * p });
        expect(v.grid).toEqual([4, 4]);
        expect(v.heads).toBe(2);
        expect(v.images[0].pca.width).toBe(4 * p);
        // Same image twice: same PCA colours (fitted jointly on 2 × 16 patch tokens).
        expect(Array.from(v.images[1].pca.data)).toEqual(Array.from(v.images[0].pca.data));
      } finally {
        model.dispose();
      }
    }
  });
});

describe('masked forward (mask_token)', () => {
  it.each(['v2_reg', 'v3_mlp'] as const)('%s: masked patch embeddings become mask_token before the position embedding', async (name) => {
    const wd = await getEngine();
    const arch = JSON.parse(readFileSync(new URL(`${name}/arch.json`, dir), 'utf8')) as ArchJson;
    const io = loadStateDict(bytes(`${name}/io.safetensors`)).tensors as Map<string, Host>;
    const { model } = load(wd, name, 'official.pth', arch);
    const R = arch.num_register_tokens + arch.num_storage_tokens;
    try {
      await wd.scope(async () => {
        const x1 = io.get('in1.x')!; // batch 2, 3×5 grid
        const x = wd.tensor(x1.data, x1.shape);
        const n = 15;
        const masks = Array.from({ length: 2 * n }, (_, i) => i % 4 === 1 || i === 2 * n - 1);
        const plain = await model.prepareTokensWithMasks(x).tokens.toArray();
        const noneMasked = await model.prepareTokensWithMasks(x, new Array(2 * n).fill(false)).tokens.toArray();
        expect(Array.from(noneMasked)).toEqual(Array.from(plain));
        const { tokens } = model.prepareTokensWithMasks(x, masks);
        const got = await tokens.toArray();
        const D = 32;
        const N = 1 + R + n;
        const mt = await model.maskToken!.toArray();
        const pos = arch.family === 'dinov2' ? await model.interpolatePosEncoding(3, 5).toArray() : new Float32Array((1 + n) * D);
        for (let b = 0; b < 2; b++) {
          for (let i = 0; i < N; i++) {
            const row = got.subarray((b * N + i) * D, (b * N + i + 1) * D);
            const patch = i - 1 - R;
            if (patch >= 0 && masks[b * n + patch]) {
              // mask_token (+ the patch's position embedding in DINOv2)
              expectClose(row, Array.from(mt, (v, c) => v + pos[(1 + patch) * D + c]), 1e-6, 1e-6, `token ${b},${i}`);
            } else {
              expect(Array.from(row), `token ${b},${i} unchanged`).toEqual(Array.from(plain.subarray((b * N + i) * D, (b * N + i + 1) * D)));
            }
          }
        }
        // d/d mask_token of Σ tokens ⊙ W = Σ over the masked patches of W's rows.
        const W = wd.tensor(randn(2 * N * D, 3), [2, N, D]);
        tokens.mul(W).sum().backward();
        const Wh = await W.toArray();
        const want = new Float64Array(D);
        masks.forEach((m, k) => {
          if (!m) return;
          const b = Math.floor(k / n);
          const row = (b * N + 1 + R + (k % n)) * D;
          for (let c = 0; c < D; c++) want[c] += Wh[row + c];
        });
        expectClose(await model.maskToken!.grad!.toArray(), want, 1e-5, 1e-5, 'grad mask_token');
        expect(() => model.prepareTokensWithMasks(x, masks.slice(1))).toThrow(/masks hold 29 values, not 2 images × 15 patches/);
      });
    } finally {
      model.dispose();
    }
  });
});

describe('RoPE, SiLU and the resize kernels', () => {
  it('training-mode RoPE: coordinates rescaled by one log-uniform factor in [1/2, 2], redrawn per call (per block); eval tables cached', async () => {
    const wd = await getEngine();
    // dinov3_vits16's RoPE: head dim 64, base 100, rescale 2 (the recipe's training augmentation).
    const cfg = dinoViTConfig('dinov3_vits16');
    expect(cfg.rope).toEqual({ base: 100, shiftCoords: null, jitterCoords: null, rescaleCoords: 2 });
    const rope = new RopePositionEmbedding({ engine: wd, rng: new Rng(4) }, 64, cfg.rope, new Rng(5));
    try {
      rope.eval();
      expect(rope.tables(3, 5, 5)).toBe(rope.tables(3, 5, 5)); // eval: one cached table per grid
      rope.train();
      const factors: number[] = [];
      for (let call = 0; call < 2; call++) {
        const t = rope.tables(3, 5, 5);
        const [sin, cos] = [await t.sin.toArray(), await t.cos.toArray()];
        const d = 64;
        const P = 100 ** (2 * 15 / 32); // the longest period (channel 15 and, for x, 31): |angle| < π
        for (let tok = 0; tok < 15; tok++) {
          const r = Math.floor(tok / 5);
          const c = tok % 5;
          const y = (2 * (r + 0.5)) / 3 - 1;
          const xc = (2 * (c + 0.5)) / 5 - 1;
          const row = (5 + tok) * d;
          for (const [ch, coord] of [[15, y], [31, xc]] as const) {
            const angle = Math.atan2(sin[row + ch], cos[row + ch]);
            if (Math.abs(coord) > 0.2) factors.push((angle * P) / (2 * Math.PI * coord));
            expect(sin[row + ch + 32]).toBe(sin[row + ch]); // tiled ×2
          }
        }
      }
      const first = factors.slice(0, factors.length / 2);
      const second = factors.slice(factors.length / 2);
      for (const fs of [first, second]) {
        expect(fs[0]).toBeGreaterThanOrEqual(0.5);
        expect(fs[0]).toBeLessThanOrEqual(2);
        for (const f of fs) expect(Math.abs(f - fs[0])).toBeLessThan(1e-4 * fs[0]);
      }
      expect(Math.abs(first[0] - second[0])).toBeGreaterThan(1e-6); // redrawn
    } finally {
      rope.dispose();
    }
  });

  it('antialiased bicubic weights: normalised rows, PIL taps, and plain bicubic by scale factor', () => {
    // 4 → 3 (down, s = 4/3): support 8/3, taps clipped to the grid; 4 → 5 (up): support 2.
    for (const [n, out] of [[4, 3], [4, 5], [37, 16], [37, 73]] as const) {
      const { weights } = bicubicWeights1dTo(n, { size: out }, true);
      for (let o = 0; o < out; o++) {
        let s = 0;
        for (let j = 0; j < n; j++) s += weights[o * n + j];
        expect(Math.abs(s - 1)).toBeLessThan(1e-12);
      }
    }
    // Up-sampling 4 → 5, output 0: centre 0.4, taps j ∈ [0, 2) with PIL's A = −0.5 kernel at
    // (j − 0.4 + 0.5) = 0.1 and 1.1, normalised.
    const k = (t: number) => (t < 1 ? (1.5 * t - 2.5) * t * t + 1 : ((-0.5 * t + 2.5) * t - 4) * t + 2);
    const w = bicubicWeights1dTo(4, { size: 5 }, true).weights;
    const sum = k(0.1) + k(1.1);
    expect(Array.from(w.subarray(0, 4))).toEqual([k(0.1) / sum, k(1.1) / sum, 0, 0]);
    // Plain bicubic by scale factor (n + 0.1)/M keeps the output size n.
    expect(bicubicWeights1dTo(37, { scaleFactor: 16.1 / 37 }).outSize).toBe(16);
  });
});

describe('released presets', () => {
  it.each(['dinov2_vits14', 'dinov2_vits14_reg', 'dinov3_vits16', 'dinov3_vits16plus'] as const)(
    '%s: the model built from the preset has exactly the official state_dict names and shapes',
    async (name) => {
      const wd = await getEngine();
      const model = new VisionTransformer({ engine: wd, rng: new Rng(1) }, dinoViTConfig(name));
      try {
        const got = new Map(model.stateEntries().map(([k, t]) => [k, [...t.shape]]));
        expect(got).toEqual(dinoStateDictShapes(dinoPreset(name)));
        expect(model.cfg.imgSize).toBe(name.startsWith('dinov2') ? 518 : 224);
      } finally {
        model.dispose();
      }
    },
  );
});

describe('loading errors', () => {
  const archOf = (name: string) => JSON.parse(readFileSync(new URL(`${name}/arch.json`, dir), 'utf8')) as ArchJson;
  const tmp = mkdtempSync(join(tmpdir(), 'webdino-dinov2-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('strict loading: missing, unexpected and mis-shaped keys in one capped error, no GPU memory left behind', async () => {
    const wd = await getEngine();
    const weights = parseBackboneWeights(bytes('v2_reg/official.pth'));
    weights.tensors.delete('blocks.1.mlp.fc2.bias');
    weights.tensors.set('blocks.0.attn.qkv.extra', { shape: [1], data: new Float32Array(1) });
    const ls = weights.tensors.get('blocks.0.ls1.gamma')!;
    weights.tensors.set('blocks.0.ls1.gamma', { shape: [1, 32], data: ls.data });
    const before = wd.memory().liveBytes;
    expect(() => buildBackbone(wd, weights, { numHeads: 2 }, 'reg.pth')).toThrow(
      /^reg\.pth \(dinov2 layout\) does not match dinov2 32\/2 \(2 heads\), patch 14, mlp 128, 4 registers, pos_embed 4×4: 1 missing, 1 unexpected, 1 shape mismatch\n {2}missing keys: blocks\.1\.mlp\.fc2\.bias\n {2}unexpected keys: blocks\.0\.attn\.qkv\.extra\n {2}shape mismatches: blocks\.0\.ls1\.gamma: expected \[32\], got \[1, 32\]$/,
    );
    // Block 1 gone but its norm1: 15 missing keys, listed 12 and a count.
    const partial = parseBackboneWeights(bytes('v3_mlp/official.safetensors'));
    for (const k of [...partial.tensors.keys()]) if (k.startsWith('blocks.1.') && !k.includes('norm1')) partial.tensors.delete(k);
    expect(() => buildBackbone(wd, partial, {}, 'v3.safetensors')).toThrow(/^v3\.safetensors \(dinov3 layout\) does not match .*: 13 missing, 0 unexpected, 0 shape mismatches\n {2}missing keys: (blocks\.1\.[\w.]+, ){11}blocks\.1\.[\w.]+, … and 1 more$/);
    expect(wd.memory().liveBytes).toBe(before);
  });

  it('requests that contradict the file', async () => {
    const wd = await getEngine();
    const v2 = parseBackboneWeights(bytes('v2_plain/official.safetensors'));
    expect(() => buildBackbone(wd, v2, { arch: 'vit_small' }, 'v2.safetensors')).toThrow(
      /^v2\.safetensors: these are DINOv2 \/ DINOv3 weights, but --arch vit_small is a DINO v1 ViT/,
    );
    expect(() => buildBackbone(wd, v2, { arch: 'dinov2_vitb14' }, 'v2.safetensors')).toThrow(
      /^v2\.safetensors: width 32 is not divisible by 12 heads \(--arch dinov2_vitb14 is dinov2_vitb14: dinov2 768\/12 \(12 heads\), patch 14, mlp 3072, pos_embed 37×37\)$/,
    );
    expect(() => buildBackbone(wd, v2, {}, 'v2.safetensors')).toThrow(/^v2\.safetensors: cannot infer the number of heads of width 32 .*pass numHeads/);
    expect(() => buildBackbone(wd, v2, { numHeads: 2, patchSize: 16 }, 'v2.safetensors')).toThrow(/patch 14 \(--patch-size 16\)/);
    const v3 = parseBackboneWeights(bytes('v3_mlp/official.pth'));
    expect(() => buildBackbone(wd, v3, { numHeads: 4 }, 'v3.pth')).toThrow(/^v3\.pth: numHeads 4 contradicts rope_embed\.periods/);
    expect(() => buildBackbone(wd, v3, { arch: 'dinov2_vits14' }, 'v3.pth')).toThrow(/^v3\.pth: numHeads 6 contradicts rope_embed\.periods.* \(--arch dinov2_vits14 is dinov2_vits14: dinov2 384\/12/);
    // A DINOv2 preset request on DINO v1 weights: every difference from the preset is named.
    const v1 = parseBackboneWeights(new Uint8Array(readFileSync(new URL('../fixtures/models/vit_weights.safetensors', import.meta.url))));
    expect(() => buildBackbone(wd, v1, { arch: 'dinov2_vits14', numHeads: 3 }, 'v1.safetensors')).toThrow(
      /^v1\.safetensors: the weights hold dinov2 48\/2 \(3 heads\), patch 8, mlp 192, pos_embed 4×4, not what the command line asks for: embedDim 48 \(preset 384\); .*layerScale false \(preset true\); hasMaskToken false \(preset true\)$/,
    );
  });

  it('files through the node loader: hostile pickle and truncated safetensors are refused by name; a good file describes its arch', async () => {
    const wd = await getEngine();
    const trunc = join(tmp, 'trunc.safetensors');
    const st = bytes('v3_swiglu/official.safetensors');
    writeFileSync(trunc, st.subarray(0, st.length - 100));
    await expect(loadBackbone(wd, trunc)).rejects.toThrow(/^weights .*trunc\.safetensors: safetensors: /);
    const pickle = new URL('../fixtures/io/hostile_os_system.pth', import.meta.url).pathname;
    await expect(loadBackbone(wd, pickle, { arch: 'dinov2_vits14' })).rejects.toThrow(/hostile_os_system\.pth: .*(posix|os)\.?system/);
    const good = join(tmp, 'good.pth');
    writeFileSync(good, bytes('v3_swiglu/official.pth'));
    const { model, spec, dino } = await loadBackbone(wd, good);
    model.dispose();
    expect(describeArch(spec)).toBe('dinov3 32/2 (2 heads), patch 16, swiglu 128, 4 storage tokens, rope');
    expect(dino?.layout).toBe('dinov3');
  });

  it('a DINOv2 training checkpoint: backbone. prefix, block chunks, dino_head / ibot_head dropped', async () => {
    const wd = await getEngine();
    const arch = archOf('v2_swiglu');
    const io = loadStateDict(bytes('v2_swiglu/io.safetensors')).tensors as Map<string, Host>;
    const sd = loadStateDict(bytes('v2_swiglu/official.safetensors')).tensors;
    const chunked: Record<string, Host> = {};
    for (const [k, v] of sd) chunked[`backbone.${k.replace(/^blocks\.(\d+)\./, 'blocks.0.$1.')}`] = v; // block_chunks: all in chunk 0
    chunked['dino_head.mlp.0.weight'] = { shape: [4, 32], data: new Float32Array(128) };
    chunked['ibot_head.last_layer.weight_g'] = { shape: [4, 1], data: new Float32Array(4) };
    const weights = parseBackboneWeights(writeSafetensors(chunked));
    expect(weights.droppedHead).toBe(2);
    const { model } = buildBackbone(wd, weights, { numHeads: arch.num_heads }, 'teacher_checkpoint');
    try {
      await wd.noGrad(() =>
        wd.scope(async () => {
          const x = io.get('in1.x')!;
          const got = await model.forward(wd.tensor(x.data, x.shape)).toArray();
          expect(scaledError(got, io.get('in1.x_norm_clstoken')!.data)).toBeLessThanOrEqual(TOL);
        }),
      );
    } finally {
      model.dispose();
    }
  });
});
