/**
 * The ViT and DINO head against PyTorch golden fixtures (test/fixtures/models/make_model_fixtures.py):
 * a depth-2, dim-48, 3-head ViT with patch 8 at 32 px (no interpolation) and 48 px (bicubic
 * position-embedding interpolation 4×4 → 6×6), the DINO head, the last layer's attention, and the
 * gradients of a scalar loss with respect to the input and every weight.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseSafetensors } from '../../models/io/safetensors.js';
import { createViT } from '../../models/vit.js';
import { DINOHead, dinoHeadConfig } from '../../models/dino-head.js';
import { Rng } from '../../index.js';
import { expectClose, expectCloseScaled, getEngine } from '../helpers.js';

const dir = new URL('../fixtures/models/', import.meta.url);
const load = (f: string) => parseSafetensors(new Uint8Array(readFileSync(new URL(f, dir))));
const cfg = JSON.parse(readFileSync(new URL('vit_config.json', dir), 'utf8'));

async function build() {
  const wd = await getEngine();
  const ctx = { engine: wd, rng: new Rng(1) };
  const vit = createViT(ctx, { imgSize: cfg.img, patchSize: cfg.patch, embedDim: cfg.dim, depth: cfg.depth, numHeads: cfg.heads });
  const head = new DINOHead(ctx, dinoHeadConfig({ inDim: cfg.dim, outDim: cfg.out_dim, hiddenDim: cfg.head_hidden, bottleneckDim: cfg.head_bottleneck }));
  const weights = load('vit_weights.safetensors');
  const backbone = new Map([...weights].filter(([k]) => !k.startsWith('head.')));
  const headW = new Map([...weights].filter(([k]) => k.startsWith('head.')).map(([k, v]) => [k.slice(5), v]));
  vit.loadStateDict(backbone);
  head.loadStateDict(headW);
  return { wd, vit, head, io: load('vit_io.safetensors') };
}

describe('ViT + DINO head vs PyTorch', () => {
  it('features, head outputs and last-layer attention at 32 px and 48 px (interpolated)', async () => {
    const { wd, vit, head, io } = await build();
    vit.eval();
    await wd.scope(async () => {
      const t = (k: string) => wd.tensor(io.get(k)!.data, io.get(k)!.shape);
      const f32 = vit.forward(t('x32'));
      expectClose(await f32.toArray(), io.get('feats32')!.data, 1e-4, 1e-5, 'features 32px');
      expectClose(await vit.forward(t('x48')).toArray(), io.get('feats48')!.data, 1e-4, 1e-5, 'features 48px');
      expectClose(await head.forward(f32).toArray(), io.get('logits')!.data, 1e-4, 1e-5, 'head logits');
      const a32 = vit.lastSelfAttention(t('x32'));
      expect(a32.shape).toEqual(io.get('attn32')!.shape);
      expectClose(await a32.toArray(), io.get('attn32')!.data, 1e-4, 1e-6, 'attention 32px');
      expectClose(await vit.lastSelfAttention(t('x48')).toArray(), io.get('attn48')!.data, 1e-4, 1e-6, 'attention 48px');
    });
    vit.dispose();
    head.dispose();
  });

  it('gradients of a scalar loss w.r.t. the input and every weight', async () => {
    const { wd, vit, head, io } = await build();
    vit.train(); // no drop path configured: same as eval for this model
    await wd.scope(async () => {
      const t = (k: string, grad = false) => wd.tensor(io.get(k)!.data, io.get(k)!.shape, { requiresGrad: grad });
      const x32 = t('x32', true);
      const loss = head.forward(vit.forward(x32)).mul(t('r1')).sum().add(vit.forward(t('x48')).mul(t('r2')).sum());
      loss.backward();
      expectCloseScaled(await x32.grad!.toArray(), io.get('grad.x32')!.data, 1e-3, 'grad x32');
      for (const [name, p] of vit.namedParameters()) {
        expectCloseScaled(await p.grad!.toArray(), io.get(`grad.${name}`)!.data, 1e-3, `grad ${name}`);
      }
      for (const [name, p] of head.namedParameters()) {
        const want = io.get(`grad.head.${name}`);
        if (!want) {
          expect(p.requiresGrad, `${name} should be frozen`).toBe(false);
          continue;
        }
        expectCloseScaled(await p.grad!.toArray(), want.data, 1e-3, `grad head.${name}`);
      }
    });
    vit.dispose();
    head.dispose();
  });

  it('strict loading lists missing, unexpected and mis-shaped keys', async () => {
    const wd = await getEngine();
    const vit = createViT({ engine: wd, rng: new Rng(0) }, { imgSize: 32, patchSize: 8, embedDim: 48, depth: 2, numHeads: 3 });
    const weights = new Map([...load('vit_weights.safetensors')].filter(([k]) => !k.startsWith('head.')));
    weights.delete('blocks.1.mlp.fc2.bias');
    weights.set('blocks.9.extra', { dtype: 'F32', shape: [1], data: new Float32Array(1) });
    const qkv = weights.get('blocks.0.attn.qkv.weight')!;
    weights.set('blocks.0.attn.qkv.weight', { ...qkv, shape: [qkv.shape[1], qkv.shape[0]] });
    expect(() => vit.loadStateDict(weights)).toThrow(/blocks\.1\.mlp\.fc2\.bias[\s\S]*blocks\.9\.extra[\s\S]*blocks\.0\.attn\.qkv\.weight: expected \[144, 48\], got \[48, 144\]/);
    vit.dispose();
  });
});

describe('DINO head at the official size', () => {
  it('K = 65536 prototypes: forward and backward of the weight-normalised last layer', async () => {
    const wd = await getEngine();
    const head = new DINOHead({ engine: wd, rng: new Rng(3) }, dinoHeadConfig({ inDim: 48, outDim: 65536, hiddenDim: 64, bottleneckDim: 256 }));
    await wd.scope(async () => {
      const x = wd.randn([20, 48], { seed: 4 });
      const y = head.forward(x); // (20, 65536): 5 MB of logits, a 64 MiB weight
      expect(y.shape).toEqual([20, 65536]);
      // Logits are cosine similarities (unit prototypes, l2-normalised bottleneck).
      const m = await y.max().item();
      expect(m).toBeLessThanOrEqual(1 + 1e-5);
      // Row 0 against the float64 product of the bottleneck and the normalised prototypes 0..7.
      const z = await head.bottleneck(x).toArray();
      const v = await head.lastLayer.weightV.slice(0, 0, 8).contiguous().toArray();
      const got = (await y.toArray()).slice(0, 8);
      const want = Array.from({ length: 8 }, (_, k) => {
        let dot = 0;
        let nv = 0;
        for (let j = 0; j < 256; j++) {
          dot += z[j] * v[k * 256 + j];
          nv += v[k * 256 + j] ** 2;
        }
        return dot / Math.sqrt(nv);
      });
      expectClose(got, want, 1e-4, 1e-6, 'logits of K = 65536');
      y.sum().backward();
      expect(head.lastLayer.weightV.grad!.shape).toEqual([65536, 256]);
      expect(head.lastLayer.weightG.grad).toBeNull(); // norm_last_layer: weight_g is fixed
    });
    head.dispose();
  });
});
