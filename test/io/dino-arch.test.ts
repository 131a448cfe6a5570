/**
 * The DINOv2 / DINOv3 preset table and architecture inference (models/io/dino-arch.ts), against
 * the released checkpoints' key tables of reference dinov2-dinov3.md §1.9 / §3.5 and the hub
 * code (shapes only: no weights needed), plus the inference rules and their errors.
 */
import { describe, expect, it } from 'vitest';

import {
  checkDinoStateDict,
  DINO_PRESETS,
  type DinoArch,
  type DinoPresetName,
  dinoPreset,
  dinoStateDictShapes,
  dinov2SwigluHidden,
  dinov3SwigluHidden,
  inferDinoArch,
  matchDinoPreset,
  ropePeriods,
  sameDinoArch,
} from '../../models/io/dino-arch.js';
import { StateDictMismatchError } from '../../models/io/state-dict.js';

const shapesOnly = (arch: DinoArch) => new Map([...dinoStateDictShapes(arch)].map(([k, shape]) => [k, { shape }]));

describe('hidden-size rules and RoPE periods', () => {
  it('DINOv2 packed SwiGLU: (⌊4D·2/3⌋ + 7) // 8 · 8', () => {
    expect(dinov2SwigluHidden(1536)).toBe(4096); // ViT-g: w12 [8192, 1536], w3 [1536, 4096]
    expect(dinov2SwigluHidden(32)).toBe(88); // the fixture: ⌊128·2/3⌋ = 85 → 88
    expect(dinov2SwigluHidden(384)).toBe(1024);
  });

  it('DINOv3 SwiGLU: ⌊rD·2/3⌋ rounded up to align', () => {
    expect(dinov3SwigluHidden(384, 6)).toBe(1536); // S+
    expect(dinov3SwigluHidden(1024, 6)).toBe(4096); // L+
    expect(dinov3SwigluHidden(1280, 6)).toBe(5120); // H+
    expect(dinov3SwigluHidden(4096, 3, 64)).toBe(8192); // 7B
    expect(dinov3SwigluHidden(100, 4, 64)).toBe(320); // ⌊266.67⌋ = 266 → 320
  });

  it('periods 100^(4j/d): d = 64 gives 1, 1.33, …, 74.99', () => {
    const p = ropePeriods(64);
    expect(p.length).toBe(16);
    expect(p[0]).toBe(1);
    expect(p[1]).toBeCloseTo(100 ** (1 / 16), 6);
    expect(p[15]).toBeCloseTo(74.989, 3);
    expect(ropePeriods(128).length).toBe(32); // 7B
    expect(() => ropePeriods(18)).toThrow('divisible by 4');
  });
});

describe('preset table', () => {
  it('DINOv2 ViT-S/14 has the released key table', () => {
    const m = dinoStateDictShapes(DINO_PRESETS.dinov2_vits14);
    expect(m.get('cls_token')).toEqual([1, 1, 384]);
    expect(m.get('pos_embed')).toEqual([1, 1370, 384]); // 1 + 37²
    expect(m.get('mask_token')).toEqual([1, 384]);
    expect(m.get('patch_embed.proj.weight')).toEqual([384, 3, 14, 14]);
    expect(m.get('blocks.11.attn.qkv.weight')).toEqual([1152, 384]);
    expect(m.get('blocks.11.attn.qkv.bias')).toEqual([1152]);
    expect(m.get('blocks.0.ls1.gamma')).toEqual([384]);
    expect(m.get('blocks.0.mlp.fc1.weight')).toEqual([1536, 384]);
    expect(m.get('blocks.0.mlp.fc2.weight')).toEqual([384, 1536]);
    expect(m.has('blocks.12.norm1.weight') || m.has('register_tokens') || m.has('blocks.0.attn.qkv.bias_mask')).toBe(false);
    // cls_token, pos_embed, mask_token + patch (2) + 12 blocks × 14 + norm (2) = 175 keys
    expect(m.size).toBe(3 + 2 + 12 * 14 + 2);
    expect(dinoStateDictShapes(DINO_PRESETS.dinov2_vits14_reg).get('register_tokens')).toEqual([1, 4, 384]);
  });

  it('DINOv2 B/L/g dimensions and ViT-g packed SwiGLU', () => {
    const dims = (n: DinoPresetName) => [DINO_PRESETS[n].embedDim, DINO_PRESETS[n].depth, DINO_PRESETS[n].numHeads];
    expect(dims('dinov2_vitb14')).toEqual([768, 12, 12]);
    expect(dims('dinov2_vitl14')).toEqual([1024, 24, 16]);
    expect(dims('dinov2_vitg14')).toEqual([1536, 40, 24]);
    const g = dinoStateDictShapes(DINO_PRESETS.dinov2_vitg14);
    expect(g.get('blocks.39.mlp.w12.weight')).toEqual([8192, 1536]);
    expect(g.get('blocks.39.mlp.w3.weight')).toEqual([1536, 4096]);
    expect(g.has('blocks.0.mlp.fc1.weight')).toBe(false);
    for (const n of ['dinov2_vits14', 'dinov2_vitb14', 'dinov2_vitl14', 'dinov2_vitg14'] as const) {
      expect(DINO_PRESETS[n].embedDim / DINO_PRESETS[n].numHeads).toBe(64);
      expect(DINO_PRESETS[n].posEmbed).toEqual({ kind: 'learned', gridH: 37, gridW: 37, interpolation: { antialias: false, offset: 0.1 } });
      expect(DINO_PRESETS[`${n}_reg`].posEmbed).toEqual({ kind: 'learned', gridH: 37, gridW: 37, interpolation: { antialias: true, offset: 0 } });
    }
  });

  it('DINOv3 ViT-S/16 has the released key table', () => {
    const m = dinoStateDictShapes(DINO_PRESETS.dinov3_vits16);
    expect(m.get('cls_token')).toEqual([1, 1, 384]);
    expect(m.get('storage_tokens')).toEqual([1, 4, 384]);
    expect(m.get('mask_token')).toEqual([1, 384]);
    expect(m.get('patch_embed.proj.weight')).toEqual([384, 3, 16, 16]);
    expect(m.get('rope_embed.periods')).toEqual([16]);
    expect(m.get('blocks.0.attn.qkv.bias_mask')).toEqual([1152]);
    expect(m.get('blocks.0.mlp.fc1.weight')).toEqual([1536, 384]);
    expect(m.has('pos_embed') || m.has('register_tokens') || m.has('local_cls_norm.weight')).toBe(false);
    expect(DINO_PRESETS.dinov3_vits16.layerNormEps).toBe(1e-5);
  });

  it('DINOv3 S+/B/L/L+/H+/7B', () => {
    const d = (n: DinoPresetName) => {
      const a = DINO_PRESETS[n];
      return [a.embedDim, a.depth, a.numHeads, a.ffn, a.ffnHidden];
    };
    expect(d('dinov3_vits16plus')).toEqual([384, 12, 6, 'swiglu', 1536]);
    expect(d('dinov3_vitb16')).toEqual([768, 12, 12, 'mlp', 3072]);
    expect(d('dinov3_vitl16')).toEqual([1024, 24, 16, 'mlp', 4096]);
    expect(d('dinov3_vitl16plus')).toEqual([1024, 24, 16, 'swiglu', 4096]);
    expect(d('dinov3_vith16plus')).toEqual([1280, 32, 20, 'swiglu', 5120]);
    expect(d('dinov3_vit7b16')).toEqual([4096, 40, 32, 'swiglu', 8192]);
    const sp = dinoStateDictShapes(DINO_PRESETS.dinov3_vits16plus);
    expect([sp.get('blocks.0.mlp.w1.weight'), sp.get('blocks.0.mlp.w2.weight'), sp.get('blocks.0.mlp.w3.weight')]).toEqual([
      [1536, 384],
      [1536, 384],
      [384, 1536],
    ]);
    const b7 = dinoStateDictShapes(DINO_PRESETS.dinov3_vit7b16);
    expect(b7.get('rope_embed.periods')).toEqual([32]); // head dim 128
    expect(b7.has('blocks.0.attn.qkv.bias') || b7.has('blocks.0.attn.qkv.bias_mask')).toBe(false); // qkv_bias=False
    expect(b7.get('local_cls_norm.weight')).toEqual([4096]);
  });

  it('every preset is inferred back from its key table and matched by name', () => {
    for (const name of Object.keys(DINO_PRESETS) as DinoPresetName[]) {
      const preset = DINO_PRESETS[name];
      const inferred = inferDinoArch(shapesOnly(preset)); // no options: heads from periods or the preset table
      expect(sameDinoArch(inferred, preset), name).toBe(true);
      expect(inferred.localClsNorm, name).toBe(preset.localClsNorm);
      expect(matchDinoPreset(inferred), name).toBe(name);
      expect(() => checkDinoStateDict(inferred, shapesOnly(preset))).not.toThrow();
    }
  });

  it('SAT ViT-L (local_cls_norm) still matches dinov3_vitl16', () => {
    const sat = { ...dinoPreset('dinov3_vitl16'), localClsNorm: true };
    const inferred = inferDinoArch(shapesOnly(sat));
    expect(inferred.localClsNorm).toBe(true);
    expect(matchDinoPreset(inferred)).toBe('dinov3_vitl16');
  });

  it('unknown preset names list the known ones', () => {
    expect(() => dinoPreset('dinov2_vith14')).toThrow(/unknown DINOv2\/DINOv3 preset 'dinov2_vith14' \(dinov2_vits14, dinov2_vitb14, /);
  });
});

describe('inference rules', () => {
  const small: DinoArch = { ...dinoPreset('dinov2_vits14'), embedDim: 96, depth: 3, numHeads: 3, ffnHidden: 384 };

  it('DINOv2 heads: given, else width/64 when no preset matches; otherwise an error', () => {
    expect(inferDinoArch(shapesOnly(small), { numHeads: 3 }).numHeads).toBe(3);
    expect(() => inferDinoArch(shapesOnly(small))).toThrow('cannot infer the number of heads of width 96 (not a multiple of 64, no preset matches): pass numHeads');
    const wide = { ...small, embedDim: 128, ffnHidden: 512 };
    expect(inferDinoArch(shapesOnly(wide)).numHeads).toBe(2);
  });

  it('DINOv3 heads from the periods buffer; a contradicting numHeads is refused', () => {
    const v3: DinoArch = { ...dinoPreset('dinov3_vits16'), embedDim: 96, numHeads: 2, ffnHidden: 384, depth: 2 };
    expect(inferDinoArch(shapesOnly(v3)).numHeads).toBe(2); // periods [12]: head dim 48
    expect(() => inferDinoArch(shapesOnly(v3), { numHeads: 3 })).toThrow('numHeads 3 contradicts rope_embed.periods (12 periods: head dim 48, so 2 heads)');
  });

  it('RoPE base from the periods values; other period forms are refused', () => {
    const v3: DinoArch = { ...dinoPreset('dinov3_vits16'), depth: 1 };
    const m = new Map<string, { shape: readonly number[]; data?: Float32Array }>(shapesOnly(v3));
    m.set('rope_embed.periods', { shape: [16], data: ropePeriods(64, 10000) });
    expect(inferDinoArch(m).posEmbed).toEqual({ kind: 'rope', base: 10000 });
    const odd = ropePeriods(64);
    odd[5] *= 1.01;
    m.set('rope_embed.periods', { shape: [16], data: odd });
    expect(() => inferDinoArch(m)).toThrow(/rope_embed\.periods \[.*\] are not base\^\(4j\/64\)/);
  });

  it('DINO v1 backbones (no LayerScale, no mask_token) read as DINOv2 with those off', () => {
    const v1 = { ...small, layerScale: false, hasMaskToken: false, posEmbed: { ...small.posEmbed, gridH: 14, gridW: 14 } } as DinoArch;
    const a = inferDinoArch(shapesOnly(v1), { numHeads: 3 });
    expect(sameDinoArch(a, v1)).toBe(true);
    expect(a.posEmbed).toEqual({ kind: 'learned', gridH: 14, gridW: 14, interpolation: { antialias: false, offset: 0.1 } });
  });

  it('a missing piece in one block is reported as missing, not a different architecture', () => {
    const m = shapesOnly(DINO_PRESETS.dinov2_vits14);
    m.delete('blocks.0.ls1.gamma');
    m.delete('blocks.5.mlp.fc1.weight');
    const a = inferDinoArch(m);
    expect(a.layerScale).toBe(true);
    expect(() => checkDinoStateDict(a, m)).toThrow(StateDictMismatchError);
    expect(() => checkDinoStateDict(a, m)).toThrow(/dinov2_vits14: .*: 2 missing, 0 unexpected, 0 shape mismatches\n {2}missing keys: blocks\.0\.ls1\.gamma, blocks\.5\.mlp\.fc1\.weight$/);
  });

  it('non-square pos_embed grids and patches are refused', () => {
    const m = shapesOnly(DINO_PRESETS.dinov2_vits14);
    m.set('pos_embed', { shape: [1, 1 + 37 * 36, 384] });
    expect(() => inferDinoArch(m)).toThrow('pos_embed holds 1332 patch positions, not a square grid');
    const n = shapesOnly(DINO_PRESETS.dinov2_vits14);
    n.set('patch_embed.proj.weight', { shape: [384, 3, 14, 16] });
    expect(() => inferDinoArch(n)).toThrow('non-square patches [384, 3, 14, 16]');
  });
});
