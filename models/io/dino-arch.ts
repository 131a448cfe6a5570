/**
 * DINOv2 / DINOv3 backbone architectures: the released presets, the state-dict shapes an
 * architecture implies, inference of the architecture from a state dict's keys and shapes, and
 * the strict check of a state dict against it.
 *
 * Everything here speaks the CANONICAL naming, which is the official state_dict of
 * facebookresearch/dinov2 and facebookresearch/dinov3 (`cls_token`, `blocks.3.attn.qkv.weight`,
 * `rope_embed.periods`, ...). models/io/dino-keys.ts turns the other layouts (Hugging Face) into it.
 *
 * Facts (reference dinov2-dinov3.md §1.6, §1.9, §3.1, §3.5; the hub code of both repositories):
 * - DINOv2: patch 14, learned pos_embed on a 37×37 grid (img 518), LayerScale, LN eps 1e-6, qkv
 *   bias, MLP ×4 (S/B/L) or packed SwiGLU `w12` [2H, D] + `w3` [D, H] with
 *   H = (⌊⌊4D⌋·2/3⌋ + 7) // 8 · 8 (ViT-g: 4096). `_reg` models add 4 registers after CLS and
 *   resize pos_embed with antialiased bicubic to an explicit size (offset 0); the others use
 *   bicubic by scale factor (n + 0.1)/M without antialias. The file does not record which: it is
 *   the hub's convention, keyed here on the presence of registers.
 * - DINOv3: patch 16, no pos_embed but axial RoPE (buffer `rope_embed.periods` [d/4], base 100,
 *   so the head dim d = 4·len(periods)), 4 storage tokens after CLS, LayerScale, LN eps 1e-5,
 *   qkv bias with the buffer `bias_mask` (zero on the key third), MLP ×4 or SwiGLU with separate
 *   `w1`, `w2`, `w3` and hidden d = ⌊⌊rD⌋·2/3⌋ rounded up to `align` (8; 64 for the 7B).
 *   The 7B has no qkv bias (hence no bias_mask) and, like the SAT ViT-L, a `local_cls_norm` that
 *   inference never uses.
 *
 * Pure TypeScript, no engine: inputs are maps of anything with a `shape` (and optionally `data`).
 */

import { formatShape } from './dtypes.js';
import { StateDictMismatchError } from './state-dict.js';

export type DinoFamily = 'dinov2' | 'dinov3';

/**
 * The feed-forward kind: `mlp` fc1/fc2 with GELU; `swiglu-packed` DINOv2's SwiGLUFFNFused, one
 * `w12` whose output rows are [x1; x2] and out = w3(SiLU(x1)·x2); `swiglu` DINOv3's separate
 * out = w3(SiLU(w1 x)·w2 x).
 */
export type DinoFfn = 'mlp' | 'swiglu-packed' | 'swiglu';

/** How DINOv2 resizes pos_embed for a patch grid other than its own (see the file header). */
export interface PosEmbedInterpolation {
  /** torch's antialiased bicubic (PIL's A = -0.5 kernel) to an explicit size. */
  antialias: boolean;
  /** 0.1: bicubic by scale factor (n + 0.1)/M (A = -0.75); 0: by output size. */
  offset: number;
}

export type DinoPosEmbed =
  | { kind: 'learned'; gridH: number; gridW: number; interpolation: PosEmbedInterpolation }
  | { kind: 'rope'; base: number };

export interface DinoArch {
  family: DinoFamily;
  embedDim: number;
  depth: number;
  numHeads: number;
  patchSize: number;
  inChans: number;
  /** Tokens between CLS and the patches: DINOv2 registers or DINOv3 storage tokens. */
  numRegisterTokens: number;
  ffn: DinoFfn;
  /** FFN hidden width H (SwiGLU: the width of SiLU(x1)·x2; w12 has 2H rows). */
  ffnHidden: number;
  layerScale: boolean;
  qkvBias: boolean;
  /** DINOv3's `attn.qkv.bias_mask` buffer: the key third of the qkv bias is multiplied by 0. */
  maskKeyBias: boolean;
  hasMaskToken: boolean;
  /** `local_cls_norm.*` (7B, SAT ViT-L): training-only, unused at inference. */
  localClsNorm: boolean;
  layerNormEps: number;
  posEmbed: DinoPosEmbed;
}

// -------------------------------------------------------------------------------------------------
// hidden-size rules and RoPE periods

/** DINOv2 SwiGLUFFNFused: H = (⌊⌊D·ratio⌋·2/3⌋ + 7) // 8 · 8 (4096 for D = 1536, ratio 4). */
export function dinov2SwigluHidden(embedDim: number, mlpRatio = 4): number {
  const h = Math.floor(Math.floor(embedDim * mlpRatio) * (2 / 3));
  return Math.floor((h + 7) / 8) * 8;
}

/** DINOv3 SwiGLUFFN: d = ⌊⌊D·ratio⌋·2/3⌋ rounded up to a multiple of `align`. */
export function dinov3SwigluHidden(embedDim: number, ffnRatio: number, align = 8): number {
  const d = Math.floor(Math.floor(embedDim * ffnRatio) * (2 / 3));
  return Math.ceil(d / align) * align;
}

/** DINOv3 RoPE periods P_j = base^(2j/(d/2)), j = 0 … d/4 − 1, rounded to float32 as the buffer. */
export function ropePeriods(headDim: number, base = 100): Float32Array {
  if (headDim % 4 !== 0) throw new Error(`RoPE needs a head dim divisible by 4, got ${headDim}`);
  const n = headDim / 4;
  return Float32Array.from({ length: n }, (_, j) => base ** ((2 * j) / (headDim / 2)));
}

// -------------------------------------------------------------------------------------------------
// presets

const V2_INTERP: PosEmbedInterpolation = { antialias: false, offset: 0.1 };
const V2_REG_INTERP: PosEmbedInterpolation = { antialias: true, offset: 0 };

function dinov2(embedDim: number, depth: number, numHeads: number, swiglu: boolean, registers: boolean): DinoArch {
  return {
    family: 'dinov2',
    embedDim,
    depth,
    numHeads,
    patchSize: 14,
    inChans: 3,
    numRegisterTokens: registers ? 4 : 0,
    ffn: swiglu ? 'swiglu-packed' : 'mlp',
    ffnHidden: swiglu ? dinov2SwigluHidden(embedDim) : 4 * embedDim,
    layerScale: true,
    qkvBias: true,
    maskKeyBias: false,
    hasMaskToken: true,
    localClsNorm: false,
    layerNormEps: 1e-6,
    // img_size 518 / patch 14 = 37: pos_embed [1, 1 + 37², D] = [1, 1370, D].
    posEmbed: { kind: 'learned', gridH: 37, gridW: 37, interpolation: registers ? V2_REG_INTERP : V2_INTERP },
  };
}

function dinov3(
  embedDim: number,
  depth: number,
  numHeads: number,
  ffn: { ratio: number; swiglu: boolean; align?: number },
  extra: { qkvBias?: boolean; localClsNorm?: boolean } = {},
): DinoArch {
  const qkvBias = extra.qkvBias ?? true;
  return {
    family: 'dinov3',
    embedDim,
    depth,
    numHeads,
    patchSize: 16,
    inChans: 3,
    numRegisterTokens: 4,
    ffn: ffn.swiglu ? 'swiglu' : 'mlp',
    ffnHidden: ffn.swiglu ? dinov3SwigluHidden(embedDim, ffn.ratio, ffn.align) : Math.floor(embedDim * ffn.ratio),
    layerScale: true,
    qkvBias,
    // mask_k_bias is set on every release, but a bias-free qkv (7B) registers no bias_mask.
    maskKeyBias: qkvBias,
    hasMaskToken: true,
    localClsNorm: extra.localClsNorm ?? false,
    layerNormEps: 1e-5,
    posEmbed: { kind: 'rope', base: 100 },
  };
}

/**
 * The released backbones (hub names). DINOv3 ViT-L's SAT-493M weights add `local_cls_norm` to
 * the dinov3_vitl16 arch; matching ignores that norm.
 */
export const DINO_PRESETS = {
  dinov2_vits14: dinov2(384, 12, 6, false, false),
  dinov2_vitb14: dinov2(768, 12, 12, false, false),
  dinov2_vitl14: dinov2(1024, 24, 16, false, false),
  dinov2_vitg14: dinov2(1536, 40, 24, true, false),
  dinov2_vits14_reg: dinov2(384, 12, 6, false, true),
  dinov2_vitb14_reg: dinov2(768, 12, 12, false, true),
  dinov2_vitl14_reg: dinov2(1024, 24, 16, false, true),
  dinov2_vitg14_reg: dinov2(1536, 40, 24, true, true),
  dinov3_vits16: dinov3(384, 12, 6, { ratio: 4, swiglu: false }),
  dinov3_vits16plus: dinov3(384, 12, 6, { ratio: 6, swiglu: true }),
  dinov3_vitb16: dinov3(768, 12, 12, { ratio: 4, swiglu: false }),
  dinov3_vitl16: dinov3(1024, 24, 16, { ratio: 4, swiglu: false }),
  dinov3_vitl16plus: dinov3(1024, 24, 16, { ratio: 6, swiglu: true }),
  dinov3_vith16plus: dinov3(1280, 32, 20, { ratio: 6, swiglu: true }),
  dinov3_vit7b16: dinov3(4096, 40, 32, { ratio: 3, swiglu: true, align: 64 }, { qkvBias: false, localClsNorm: true }),
} as const satisfies Record<string, DinoArch>;

export type DinoPresetName = keyof typeof DINO_PRESETS;

/** A preset's architecture (a copy); throws listing the names for an unknown one. */
export function dinoPreset(name: string): DinoArch {
  if (!Object.hasOwn(DINO_PRESETS, name)) throw new Error(`unknown DINOv2/DINOv3 preset '${name}' (${Object.keys(DINO_PRESETS).join(', ')})`);
  return structuredClone(DINO_PRESETS[name as DinoPresetName]) as DinoArch;
}

/** Whether two architectures build the same model (local_cls_norm, unused at inference, aside). */
export function sameDinoArch(a: DinoArch, b: DinoArch): boolean {
  const fields = ['family', 'embedDim', 'depth', 'numHeads', 'patchSize', 'inChans', 'numRegisterTokens', 'ffn', 'ffnHidden',
    'layerScale', 'qkvBias', 'maskKeyBias', 'hasMaskToken', 'layerNormEps'] as const;
  if (fields.some((f) => a[f] !== b[f])) return false;
  const p = a.posEmbed;
  const q = b.posEmbed;
  if (p.kind === 'rope' || q.kind === 'rope') return p.kind === q.kind && (p as { base: number }).base === (q as { base: number }).base;
  return (
    p.gridH === q.gridH && p.gridW === q.gridW && p.interpolation.antialias === q.interpolation.antialias && p.interpolation.offset === q.interpolation.offset
  );
}

/** The preset whose dimensions `arch` has (local_cls_norm ignored), if any. */
export function matchDinoPreset(arch: DinoArch): DinoPresetName | undefined {
  return (Object.keys(DINO_PRESETS) as DinoPresetName[]).find((n) => sameDinoArch(DINO_PRESETS[n], arch));
}

/** `dinov3_vits16plus: dinov3 384/12 (6 heads), patch 16, swiglu 1536, 4 storage tokens, rope`. */
export function describeDinoArch(arch: DinoArch): string {
  const name = matchDinoPreset(arch);
  const extra = arch.numRegisterTokens ? `, ${arch.numRegisterTokens} ${arch.family === 'dinov2' ? 'registers' : 'storage tokens'}` : '';
  const pos = arch.posEmbed.kind === 'rope' ? 'rope' : `pos_embed ${arch.posEmbed.gridH}×${arch.posEmbed.gridW}`;
  return `${name ? `${name}: ` : ''}${arch.family} ${arch.embedDim}/${arch.depth} (${arch.numHeads} heads), patch ${arch.patchSize}, ${arch.ffn} ${arch.ffnHidden}${extra}, ${pos}`;
}

// -------------------------------------------------------------------------------------------------
// the state dict an architecture implies

/** Canonical (official) names and shapes of `arch`'s state dict, in the official order. */
export function dinoStateDictShapes(arch: DinoArch): Map<string, number[]> {
  const D = arch.embedDim;
  const H = arch.ffnHidden;
  const R = arch.numRegisterTokens;
  const m = new Map<string, number[]>();
  const v3 = arch.family === 'dinov3';
  m.set('cls_token', [1, 1, D]);
  if (arch.posEmbed.kind === 'learned') m.set('pos_embed', [1, 1 + arch.posEmbed.gridH * arch.posEmbed.gridW, D]);
  if (R) m.set(v3 ? 'storage_tokens' : 'register_tokens', [1, R, D]);
  if (arch.hasMaskToken) m.set('mask_token', [1, D]);
  m.set('patch_embed.proj.weight', [D, arch.inChans, arch.patchSize, arch.patchSize]);
  m.set('patch_embed.proj.bias', [D]);
  if (arch.posEmbed.kind === 'rope') m.set('rope_embed.periods', [D / arch.numHeads / 4]);
  for (let i = 0; i < arch.depth; i++) {
    const b = `blocks.${i}.`;
    m.set(`${b}norm1.weight`, [D]);
    m.set(`${b}norm1.bias`, [D]);
    m.set(`${b}attn.qkv.weight`, [3 * D, D]);
    if (arch.qkvBias) m.set(`${b}attn.qkv.bias`, [3 * D]);
    if (arch.maskKeyBias) m.set(`${b}attn.qkv.bias_mask`, [3 * D]);
    m.set(`${b}attn.proj.weight`, [D, D]);
    m.set(`${b}attn.proj.bias`, [D]);
    if (arch.layerScale) m.set(`${b}ls1.gamma`, [D]);
    m.set(`${b}norm2.weight`, [D]);
    m.set(`${b}norm2.bias`, [D]);
    if (arch.ffn === 'mlp') {
      m.set(`${b}mlp.fc1.weight`, [H, D]);
      m.set(`${b}mlp.fc1.bias`, [H]);
      m.set(`${b}mlp.fc2.weight`, [D, H]);
      m.set(`${b}mlp.fc2.bias`, [D]);
    } else if (arch.ffn === 'swiglu-packed') {
      m.set(`${b}mlp.w12.weight`, [2 * H, D]);
      m.set(`${b}mlp.w12.bias`, [2 * H]);
      m.set(`${b}mlp.w3.weight`, [D, H]);
      m.set(`${b}mlp.w3.bias`, [D]);
    } else {
      for (const w of ['w1', 'w2']) {
        m.set(`${b}mlp.${w}.weight`, [H, D]);
        m.set(`${b}mlp.${w}.bias`, [H]);
      }
      m.set(`${b}mlp.w3.weight`, [D, H]);
      m.set(`${b}mlp.w3.bias`, [D]);
    }
    if (arch.layerScale) m.set(`${b}ls2.gamma`, [D]);
  }
  m.set('norm.weight', [D]);
  m.set('norm.bias', [D]);
  if (arch.localClsNorm) {
    m.set('local_cls_norm.weight', [D]);
    m.set('local_cls_norm.bias', [D]);
  }
  return m;
}

/** Most names listed per category in an error message. */
const LIST_CAP = 12;

function capped(names: readonly string[]): string {
  const shown = names.slice(0, LIST_CAP).join(', ');
  return names.length > LIST_CAP ? `${shown}, … and ${names.length - LIST_CAP} more` : shown;
}

/**
 * Throws one {@link StateDictMismatchError} naming (at most 12 per category, then a count) every
 * missing key, unexpected key and shape mismatch of `tensors` against `arch`; `what` prefixes
 * the message (e.g. the file name).
 */
export function checkDinoStateDict(arch: DinoArch, tensors: ReadonlyMap<string, { shape: readonly number[] }>, what = 'state dict'): void {
  const expected = dinoStateDictShapes(arch);
  const missing: string[] = [];
  const unexpected: string[] = [];
  const mismatched: string[] = [];
  for (const [name, shape] of expected) {
    const t = tensors.get(name);
    if (!t) missing.push(name);
    else if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      mismatched.push(`${name}: expected ${formatShape(shape)}, got ${formatShape(t.shape)}`);
    }
  }
  for (const name of tensors.keys()) if (!expected.has(name)) unexpected.push(name);
  if (!missing.length && !unexpected.length && !mismatched.length) return;
  const lines = [
    `${what} does not match ${describeDinoArch(arch)}: ${missing.length} missing, ${unexpected.length} unexpected, ${mismatched.length} shape mismatch${mismatched.length === 1 ? '' : 'es'}`,
  ];
  if (missing.length) lines.push(`  missing keys: ${capped(missing)}`);
  if (unexpected.length) lines.push(`  unexpected keys: ${capped(unexpected)}`);
  if (mismatched.length) lines.push(`  shape mismatches: ${capped(mismatched)}`);
  throw new StateDictMismatchError(lines.join('\n'), missing, unexpected, mismatched);
}

// -------------------------------------------------------------------------------------------------
// inference

/** What a state dict cannot tell, or a caller wants to force. */
export interface DinoArchOptions {
  /** Default: from the keys (pos_embed → dinov2, otherwise dinov3). */
  family?: DinoFamily;
  /**
   * Default: DINOv3 with a periods buffer: embedDim / (4·len(periods)); else the matching
   * preset's; else embedDim / 64 (head dim 64, as every release but the 7B).
   */
  numHeads?: number;
  /** Default: from the periods buffer's values, else 100. */
  ropeBase?: number;
  /** DINOv2 only. Default: the hub's convention (registers → antialiased by size, offset 0). */
  interpolation?: PosEmbedInterpolation;
  /** Default: 1e-6 (DINOv2), 1e-5 (DINOv3). */
  layerNormEps?: number;
}

type Shaped = { shape: readonly number[]; data?: Float32Array };

/** The RoPE base of a periods buffer of the base form P_j = base^(4j/d); throws otherwise. */
function ropeBaseOf(periods: Float32Array, headDim: number): number {
  if (periods.length < 2) return 100;
  const base = periods[1] ** (headDim / 4);
  const want = ropePeriods(headDim, base);
  const off = periods.findIndex((p, j) => Math.abs(p - want[j]) > 1e-5 * Math.abs(want[j]));
  if (off >= 0) {
    throw new Error(`rope_embed.periods [${Array.from(periods).join(', ')}] are not base^(4j/${headDim}) (min/max-period RoPE is not supported)`);
  }
  // Released models use base 100: snap float32 noise to the nearest integer when within 1e-4.
  return Math.abs(base - Math.round(base)) < 1e-4 * base ? Math.round(base) : base;
}

/**
 * The architecture of a canonical DINOv2 / DINOv3 state dict, from its keys and shapes (and the
 * values of `rope_embed.periods` when given). Throws naming what is absent or inconsistent; a
 * full strict check is {@link checkDinoStateDict}.
 */
export function inferDinoArch(tensors: ReadonlyMap<string, Shaped>, opts: DinoArchOptions = {}): DinoArch {
  const shape = (k: string): readonly number[] | undefined => tensors.get(k)?.shape;
  const need = (k: string, rank: number): readonly number[] => {
    const s = shape(k);
    if (!s) throw new Error(`cannot infer the architecture: no '${k}'`);
    if (s.length !== rank) throw new Error(`cannot infer the architecture: '${k}' has shape ${formatShape(s)}, expected rank ${rank}`);
    return s;
  };
  const family: DinoFamily = opts.family ?? (tensors.has('pos_embed') ? 'dinov2' : 'dinov3');
  const D = need('cls_token', 3)[2];
  const pw = need('patch_embed.proj.weight', 4);
  if (pw[2] !== pw[3]) throw new Error(`cannot infer the architecture: non-square patches ${formatShape(pw)}`);

  const blockIds = new Set<number>();
  for (const k of tensors.keys()) {
    const m = /^blocks\.(\d+)\./.exec(k);
    if (m) blockIds.add(Number(m[1]));
  }
  if (!blockIds.size) throw new Error('cannot infer the architecture: no blocks.N.* keys');
  const depth = Math.max(...blockIds) + 1;
  const gaps = Array.from({ length: depth }, (_, i) => i).filter((i) => !blockIds.has(i));
  if (gaps.length) throw new Error(`cannot infer the architecture: blocks ${capped(gaps.map(String))} are absent (highest index ${depth - 1})`);
  // Optional pieces count as present when any block has them, so a block that lacks one is
  // reported as missing by the strict check rather than changing the architecture.
  const firstBlockWith = (suffix: string): string | undefined => {
    for (let i = 0; i < depth; i++) if (tensors.has(`blocks.${i}.${suffix}`)) return `blocks.${i}.${suffix}`;
    return undefined;
  };

  const regKey = family === 'dinov3' ? 'storage_tokens' : 'register_tokens';
  const reg = shape(regKey);
  const numRegisterTokens = reg ? need(regKey, 3)[1] : 0;

  let ffn: DinoFfn;
  let ffnHidden: number;
  const fc1 = firstBlockWith('mlp.fc1.weight');
  const w12 = firstBlockWith('mlp.w12.weight');
  const w1 = firstBlockWith('mlp.w1.weight');
  if (fc1) {
    ffn = 'mlp';
    ffnHidden = need(fc1, 2)[0];
  } else if (w12) {
    ffn = 'swiglu-packed';
    const rows = need(w12, 2)[0];
    if (rows % 2) throw new Error(`'${w12}' has ${rows} rows: not the two halves [x1; x2] of a packed SwiGLU`);
    ffnHidden = rows / 2;
  } else if (w1) {
    ffn = 'swiglu';
    ffnHidden = need(w1, 2)[0];
  } else {
    throw new Error('cannot infer the architecture: no block has mlp.fc1 (MLP), mlp.w12 (packed SwiGLU) or mlp.w1 (SwiGLU)');
  }

  const periods = tensors.get('rope_embed.periods');
  let numHeads = opts.numHeads;
  if (periods) {
    const fromPeriods = D / (4 * need('rope_embed.periods', 1)[0]);
    if (numHeads !== undefined && numHeads !== fromPeriods) {
      throw new Error(`numHeads ${numHeads} contradicts rope_embed.periods (${periods.shape[0]} periods: head dim ${4 * periods.shape[0]}, so ${fromPeriods} heads)`);
    }
    numHeads = fromPeriods;
  }

  let posEmbed: DinoPosEmbed;
  if (family === 'dinov2') {
    const n = need('pos_embed', 3)[1] - 1;
    const side = Math.round(Math.sqrt(n));
    if (side * side !== n) throw new Error(`pos_embed holds ${n} patch positions, not a square grid`);
    const interpolation = opts.interpolation ?? (numRegisterTokens ? V2_REG_INTERP : V2_INTERP);
    posEmbed = { kind: 'learned', gridH: side, gridW: side, interpolation: { ...interpolation } };
  } else {
    posEmbed = { kind: 'rope', base: opts.ropeBase ?? 100 };
  }

  const arch: DinoArch = {
    family,
    embedDim: D,
    depth,
    numHeads: numHeads ?? 0,
    patchSize: pw[2],
    inChans: pw[1],
    numRegisterTokens,
    ffn,
    ffnHidden,
    layerScale: firstBlockWith('ls1.gamma') !== undefined || firstBlockWith('ls2.gamma') !== undefined,
    qkvBias: firstBlockWith('attn.qkv.bias') !== undefined,
    maskKeyBias: firstBlockWith('attn.qkv.bias_mask') !== undefined,
    hasMaskToken: tensors.has('mask_token'),
    localClsNorm: tensors.has('local_cls_norm.weight'),
    layerNormEps: opts.layerNormEps ?? (family === 'dinov2' ? 1e-6 : 1e-5),
    posEmbed,
  };
  if (!arch.numHeads) {
    // A preset with these dimensions settles the heads (the 7B's head dim is 128); else 64.
    const preset = (Object.keys(DINO_PRESETS) as DinoPresetName[]).find((n) => {
      const p = DINO_PRESETS[n];
      return p.family === family && p.embedDim === D && p.depth === depth && p.ffn === ffn && p.ffnHidden === ffnHidden;
    });
    if (preset) arch.numHeads = DINO_PRESETS[preset].numHeads;
    else if (D % 64 === 0) arch.numHeads = D / 64;
    else throw new Error(`cannot infer the number of heads of width ${D} (not a multiple of 64, no preset matches): pass numHeads (--heads on the command line)`);
  }
  if (D % arch.numHeads !== 0) throw new Error(`width ${D} is not divisible by ${arch.numHeads} heads`);
  if (family === 'dinov3' && (D / arch.numHeads) % 4 !== 0) throw new Error(`RoPE needs a head dim divisible by 4, got ${D / arch.numHeads}`);
  if (periods?.data && opts.ropeBase === undefined) {
    (arch.posEmbed as { base: number }).base = ropeBaseOf(periods.data, D / arch.numHeads);
  }
  return arch;
}
