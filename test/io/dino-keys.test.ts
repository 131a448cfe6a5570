/**
 * DINOv2 / DINOv3 checkpoint layouts -> canonical names, on the golden fixtures of
 * test/fixtures/models/dinov2_dinov3 (official .pth and safetensors written by the official code,
 * and their Hugging Face layouts): layout detection, renaming, the q/k/v merge (bit-exact against
 * the official packed tensors), recreated buffers, the inferred architecture against each
 * fixture's arch.json, and the strict errors.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

import { canonicalDinoBackbone, detectDinoLayout, type DinoLayout, type HostTensor, renameDinoKeys } from '../../models/io/dino-keys.js';
import { ropePeriods } from '../../models/io/dino-arch.js';
import { loadStateDict, StateDictMismatchError } from '../../models/io/state-dict.js';

const dir = new URL('../fixtures/models/dinov2_dinov3/', import.meta.url);
const bytes = (f: string) => new Uint8Array(readFileSync(new URL(f, dir)));
const weights = (f: string): Map<string, HostTensor> => loadStateDict(bytes(f), { name: f }).tensors;

interface ArchJson {
  family: 'dinov2' | 'dinov3';
  embed_dim: number;
  depth: number;
  num_heads: number;
  patch_size: number;
  num_register_tokens: number;
  num_storage_tokens: number;
  ffn: 'mlp' | 'swiglu_packed' | 'swiglu';
  ffn_hidden: number;
  qkv_bias: boolean;
  mask_k_bias: boolean;
  layernorm_eps: number;
  pos_embed:
    | { kind: 'learned'; grid: [number, number]; interpolation: { antialias: boolean; offset: number } }
    | { kind: 'rope'; base: number; periods: number[] };
  official_keys: string[];
  hf_keys: string[];
}

const FIXTURES: { name: string; official: DinoLayout; hf: DinoLayout }[] = [
  { name: 'v2_plain', official: 'dinov2', hf: 'hf-dinov2' },
  { name: 'v2_reg', official: 'dinov2', hf: 'hf-dinov2-registers' },
  { name: 'v2_swiglu', official: 'dinov2', hf: 'hf-dinov2' },
  { name: 'v3_mlp', official: 'dinov3', hf: 'hf-dinov3' },
  { name: 'v3_swiglu', official: 'dinov3', hf: 'hf-dinov3' },
];

function expectSameValues(got: HostTensor, want: HostTensor, what: string): void {
  expect(got.shape, `${what}: shape`).toEqual(want.shape);
  expect(got.data.length, `${what}: length`).toBe(want.data.length);
  const i = got.data.findIndex((v, j) => !Object.is(v, want.data[j]));
  expect(i, `${what}: first differing element ${i}: ${got.data[i]} vs ${want.data[i]}`).toBe(-1);
}

describe.each(FIXTURES)('fixture $name', ({ name, official, hf }) => {
  const arch = JSON.parse(readFileSync(new URL(`${name}/arch.json`, dir), 'utf8')) as ArchJson;
  const pth = weights(`${name}/official.pth`);
  const st = weights(`${name}/official.safetensors`);
  const hfw = weights(`${name}/hf.safetensors`);
  // The tiny fixtures have 2 heads of 16: not the head dim 64 that inference assumes without a
  // periods buffer or a preset, so DINOv2 and HF DINOv3 need it given.
  const heads = { numHeads: arch.num_heads };

  it('the files hold the keys arch.json lists', () => {
    expect([...pth.keys()]).toEqual(arch.official_keys);
    expect([...st.keys()].sort()).toEqual([...arch.official_keys].sort());
    expect([...hfw.keys()].sort()).toEqual([...arch.hf_keys].sort());
  });

  it('detects the layouts', () => {
    expect(detectDinoLayout(pth.keys())).toBe(official);
    expect(detectDinoLayout(hfw.keys())).toBe(hf);
    expect(detectDinoLayout([...hfw.keys()].map((k) => `${arch.family === 'dinov3' ? 'dinov3_vit' : 'dinov2'}.${k}`))).toBe(hf);
  });

  it('official .pth: canonical as is, architecture as arch.json says', () => {
    const r = canonicalDinoBackbone(pth, arch.family === 'dinov2' ? heads : {});
    expect(r.layout).toBe(official);
    expect(r.synthesized).toEqual([]);
    expect(r.preset).toBeUndefined();
    const a = r.arch;
    expect(a.family).toBe(arch.family);
    expect([a.embedDim, a.depth, a.numHeads, a.patchSize, a.inChans]).toEqual([arch.embed_dim, arch.depth, arch.num_heads, arch.patch_size, 3]);
    expect(a.numRegisterTokens).toBe(arch.num_register_tokens + arch.num_storage_tokens);
    expect(a.ffn).toBe({ mlp: 'mlp', swiglu_packed: 'swiglu-packed', swiglu: 'swiglu' }[arch.ffn]);
    expect(a.ffnHidden).toBe(arch.ffn_hidden);
    expect([a.layerScale, a.qkvBias, a.maskKeyBias, a.hasMaskToken, a.localClsNorm]).toEqual([true, arch.qkv_bias, arch.mask_k_bias, true, false]);
    expect(a.layerNormEps).toBe(arch.layernorm_eps);
    const pe = arch.pos_embed;
    if (pe.kind === 'learned') {
      const { antialias, offset } = pe.interpolation;
      expect(a.posEmbed).toEqual({ kind: 'learned', gridH: pe.grid[0], gridW: pe.grid[1], interpolation: { antialias, offset } });
    } else {
      expect(a.posEmbed).toEqual({ kind: 'rope', base: pe.base }); // base recovered from the periods' values
    }
    for (const [k, t] of st) expectSameValues(r.tensors.get(k)!, t, `${k} (.pth vs safetensors)`);
  });

  it('Hugging Face layout: same canonical tensors, q/k/v merged in the [q; k; v] row order', () => {
    const r = canonicalDinoBackbone(hfw, heads);
    expect(r.layout).toBe(hf);
    expect([...r.tensors.keys()].sort()).toEqual([...arch.official_keys].sort());
    for (const [k, want] of st) {
      const got = r.tensors.get(k)!;
      if (arch.family === 'dinov3' && k.endsWith('attn.qkv.bias')) {
        // HF drops the masked key bias: the key third is zero, the effective bias (bias · mask) is equal.
        const mask = st.get(k.replace(/bias$/, 'bias_mask'))!.data;
        expect(Array.from(mask.subarray(0, 32)).every((m) => m === 1) && Array.from(mask.subarray(32, 64)).every((m) => m === 0)).toBe(true);
        expect(got.shape).toEqual(want.shape);
        expect(Array.from(got.data, (v, i) => v * mask[i] + 0)).toEqual(Array.from(want.data, (v, i) => v * mask[i] + 0)); // + 0: -0 → 0
        expect(Array.from(got.data.subarray(32, 64)).every((v) => v === 0), `${k}: zero key third`).toBe(true);
        expect(Array.from(want.data.subarray(32, 64)).some((v) => v !== 0), `${k}: the fixture's masked key bias is not trivial`).toBe(true);
      } else {
        expectSameValues(got, want, `${k} (HF vs official)`);
      }
    }
    const recreated = arch.family === 'dinov3' ? ['rope_embed.periods', ...Array.from({ length: arch.depth }, (_, i) => `blocks.${i}.attn.qkv.bias_mask`)] : [];
    expect([...r.synthesized].sort()).toEqual(recreated.sort());
    const ref = canonicalDinoBackbone(pth, heads);
    expect(r.arch).toEqual(ref.arch);
  });

  it('a base-model prefix (HF head models) is removed; their head is an unknown key', () => {
    const prefix = arch.family === 'dinov3' ? 'dinov3_vit.' : 'dinov2.';
    const prefixed = new Map([...hfw].map(([k, v]) => [prefix + k, v]));
    expect(canonicalDinoBackbone(prefixed, heads).tensors.size).toBe(arch.official_keys.length);
    prefixed.set('classifier.weight', { shape: [10, 64], data: new Float32Array(640) });
    expect(() => canonicalDinoBackbone(prefixed, heads)).toThrow(/1 unknown key, 0 missing, 0 mismatched\n {2}unknown keys: classifier\.weight/);
  });
});

describe('q/k/v merge', () => {
  const D = 3;
  const filled = (shape: number[], v: number): HostTensor => ({ shape, data: new Float32Array(shape.reduce((a, b) => a * b)).fill(v) });

  it('HF DINOv2: qkv.weight rows are q, then k, then v; biases likewise', () => {
    const m = new Map<string, HostTensor>();
    ['query', 'key', 'value'].forEach((p, i) => {
      m.set(`encoder.layer.0.attention.attention.${p}.weight`, filled([D, D], i + 1));
      m.set(`encoder.layer.0.attention.attention.${p}.bias`, filled([D], 10 * (i + 1)));
    });
    const out = renameDinoKeys('hf-dinov2', m);
    expect(out.get('blocks.0.attn.qkv.weight')!.shape).toEqual([3 * D, D]);
    expect(Array.from(out.get('blocks.0.attn.qkv.weight')!.data)).toEqual([...Array(9).fill(1), ...Array(9).fill(2), ...Array(9).fill(3)]);
    expect(Array.from(out.get('blocks.0.attn.qkv.bias')!.data)).toEqual([10, 10, 10, 20, 20, 20, 30, 30, 30]);
  });

  it('HF DINOv3: a key bias absent is the masked one (zeros + bias_mask); a full one is kept unmasked', () => {
    const m = new Map<string, HostTensor>();
    (['q', 'k', 'v'] as const).forEach((p, i) => m.set(`layer.0.attention.${p}_proj.weight`, filled([D, D], i + 1)));
    m.set('layer.0.attention.q_proj.bias', filled([D], 1));
    m.set('layer.0.attention.v_proj.bias', filled([D], 3));
    const synthesized: string[] = [];
    const out = renameDinoKeys('hf-dinov3', m, synthesized);
    expect(Array.from(out.get('blocks.0.attn.qkv.bias')!.data)).toEqual([1, 1, 1, 0, 0, 0, 3, 3, 3]);
    expect(Array.from(out.get('blocks.0.attn.qkv.bias_mask')!.data)).toEqual([1, 1, 1, 0, 0, 0, 1, 1, 1]);
    expect(synthesized).toEqual(['blocks.0.attn.qkv.bias_mask']);
    m.set('layer.0.attention.k_proj.bias', filled([D], 2));
    const full = renameDinoKeys('hf-dinov3', m);
    expect(Array.from(full.get('blocks.0.attn.qkv.bias')!.data)).toEqual([1, 1, 1, 2, 2, 2, 3, 3, 3]);
    expect(full.has('blocks.0.attn.qkv.bias_mask')).toBe(false);
  });

  it('absent or mis-shaped parts and unknown keys are one error', () => {
    const m = new Map<string, HostTensor>();
    m.set('encoder.layer.0.attention.attention.query.weight', filled([D, D], 1));
    m.set('encoder.layer.0.attention.attention.key.weight', filled([D, D + 1], 1));
    m.set('encoder.layer.0.attention.attention.value.weight', filled([D, D], 1));
    m.set('encoder.layer.1.attention.attention.query.bias', filled([D], 1));
    m.set('encoder.layer.1.attention.self.query.bias', filled([D], 1));
    let err: unknown;
    try {
      renameDinoKeys('hf-dinov2', m);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(StateDictMismatchError);
    const e = err as StateDictMismatchError;
    expect(e.unexpected).toEqual(['encoder.layer.1.attention.self.query.bias']);
    expect(e.missing).toEqual(['encoder.layer.1.attention.attention.key.bias', 'encoder.layer.1.attention.attention.value.bias']);
    expect(e.mismatched).toEqual([
      'encoder.layer.0.attention.attention.query.weight / encoder.layer.0.attention.attention.key.weight / encoder.layer.0.attention.attention.value.weight: shapes [3, 3] / [3, 4] / [3, 3] differ',
    ]);
    expect(e.message).toMatch(/^hf-dinov2 state dict: 1 unknown key, 2 missing, 1 mismatched/);
  });
});

describe('DINO v1 weights (test/fixtures/models/vit_weights.safetensors) read as the dinov2 layout', () => {
  it('LayerScale and mask_token off, pos_embed grid 4×4, offset-0.1 interpolation', () => {
    const all = weights('../vit_weights.safetensors');
    const backbone = new Map([...all].filter(([k]) => !k.startsWith('head.')));
    const r = canonicalDinoBackbone(backbone, { numHeads: 3 });
    expect(r.layout).toBe('dinov2');
    expect(r.arch).toEqual({
      family: 'dinov2', embedDim: 48, depth: 2, numHeads: 3, patchSize: 8, inChans: 3, numRegisterTokens: 0, ffn: 'mlp', ffnHidden: 192,
      layerScale: false, qkvBias: true, maskKeyBias: false, hasMaskToken: false, localClsNorm: false, layerNormEps: 1e-6,
      posEmbed: { kind: 'learned', gridH: 4, gridW: 4, interpolation: { antialias: false, offset: 0.1 } },
    });
    expect(() => canonicalDinoBackbone(all, { numHeads: 3 })).toThrow(/: 0 missing, 8 unexpected, 0 shape mismatches\n {2}unexpected keys: head\.last_layer\.weight_g, /);
  });
});

describe('strict canonical check on a fixture', () => {
  const pth = weights('v3_swiglu/official.pth');

  it('missing, unexpected and mis-shaped keys are listed together', () => {
    const m = new Map(pth);
    m.delete('blocks.1.mlp.w2.bias');
    m.delete('blocks.0.attn.qkv.bias_mask');
    m.set('blocks.0.attn.qkv.extra', { shape: [1], data: new Float32Array(1) });
    const ls = m.get('blocks.0.ls1.gamma')!;
    m.set('blocks.0.ls1.gamma', { shape: [1, ls.shape[0]], data: ls.data });
    expect(() => canonicalDinoBackbone(m, { source: 'tiny.pth' })).toThrow(
      /^tiny\.pth \(dinov3 layout\) does not match dinov3 32\/2 \(2 heads\), patch 16, swiglu 128, 4 storage tokens, rope: 2 missing, 1 unexpected, 1 shape mismatch\n {2}missing keys: blocks\.0\.attn\.qkv\.bias_mask, blocks\.1\.mlp\.w2\.bias\n {2}unexpected keys: blocks\.0\.attn\.qkv\.extra\n {2}shape mismatches: blocks\.0\.ls1\.gamma: expected \[32\], got \[1, 32\]$/,
    );
  });

  it('long lists are capped at 12 names and a count', () => {
    const m = new Map([...pth].filter(([k]) => !k.startsWith('blocks.1.')));
    m.set('blocks.3.norm1.weight', pth.get('blocks.0.norm1.weight')!);
    expect(() => canonicalDinoBackbone(m)).toThrow('cannot infer the architecture: blocks 1, 2 are absent (highest index 3)');
    const n = new Map([...pth].filter(([k]) => !k.startsWith('blocks.1.') || k.includes('norm1')));
    expect(() => canonicalDinoBackbone(n)).toThrow(/: 15 missing, 0 unexpected, 0 shape mismatches\n {2}missing keys: (blocks\.1\.[\w.]+, ){11}blocks\.1\.[\w.]+, … and 3 more$/);
  });

  it('errors name the source; non-DINO state dicts are refused by layout', () => {
    expect(() => canonicalDinoBackbone(new Map([['fc.weight', { shape: [2, 2], data: new Float32Array(4) }]]), { source: 'x.pth' })).toThrow(
      'x.pth: not a DINOv2 / DINOv3 backbone state dict (keys: fc.weight)',
    );
  });

  it('recreated periods equal the official float32 buffer', () => {
    expect(Array.from(ropePeriods(16, 100))).toEqual(Array.from(pth.get('rope_embed.periods')!.data));
  });
});
