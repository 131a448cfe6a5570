/**
 * The Vision Transformer of the official DINO, DINOv2 and DINOv3 code (vision_transformer.py of
 * each), with their parameter names. One class: the families differ only in switches of the config.
 *
 *   x (B, 3, H, W) → patch_embed.proj (conv, stride = patch) → (B, D, h, w) → (B, hw, D)
 *   [masked patches replaced by mask_token, DINOv2/v3 training]
 *   tokens [CLS, registers | storage tokens, patches] (B, 1 + R + hw, D)
 *     DINO / DINOv2: + pos_embed on [CLS, patches] (bicubic-resized for other grids), registers
 *       inserted after the CLS token without position embedding;
 *     DINOv3: no pos_embed; RoPE rotates the patch tokens' q and k in every block.
 *   blocks: x + ls1·attn(norm1(x)), x + ls2·ffn(norm2(x)) (pre-norm, qkv bias [key third masked in
 *     DINOv3], LayerScale in v2/v3, FFN = MLP with exact GELU or SwiGLU)
 *   norm → x_norm_clstoken (B, D), x_norm_regtokens (B, R, D), x_norm_patchtokens (B, hw, D).
 *
 * Config switches (defaults = DINO v1, so `vitConfig('vit_small')` is exactly DINO's ViT-S):
 *   numRegisterTokens + registerTokensName   DINOv2 `register_tokens` / DINOv3 `storage_tokens`
 *   layerScale          init value of `ls1.gamma`, `ls2.gamma` (0 = no LayerScale, as DINO v1)
 *   ffn, ffnHidden      'mlp' (fc1, fc2), 'swiglu-packed' (DINOv2 `w12` [2H, D] + `w3`),
 *                       'swiglu' (DINOv3 `w1`, `w2`, `w3`); hidden width from the family's rule
 *   posEmbed            'learned' (`pos_embed`, resized as `posEmbedInterpolation` says) or 'rope'
 *   maskKeyBias         DINOv3's `attn.qkv.bias_mask` buffer (qkv bias · mask, 0 on the key third)
 *   maskToken           a `mask_token` [1, D] (DINOv2/v3: iBOT masking)
 *   eps                 LayerNorm epsilon (1e-6 DINO and DINOv2, 1e-5 DINOv3)
 *
 * Stochastic depth acts only in training mode with rate > 0 (the student; the teacher is built
 * without it). Per block the rate is linspace(0, rate, depth)[i] (DINO), or `rate` on every block
 * with dropPathUniform (DINOv2's drop_path_uniform). Two forms (`stochasticDepth`):
 *   'drop-path'     DINO's DropPath on each residual branch: per sample, keep with probability
 *                   1 − p and scale by 1/(1 − p) (the whole branch is computed for every sample).
 *   'dinov2'        DINOv2's Block: for p > 0.1 the batch-subset form
 *                   (drop_add_residual_stochastic_depth): per branch draw a random subset S of the
 *                   b samples, |S| = max(⌊b(1 − p)⌋, 1), compute the branch on S only and add it
 *                   scaled by b/|S|: x[S] += (b/|S|)·ls(branch(x[S])), so dropped samples cost
 *                   nothing; for 0 < p ≤ 0.1 classic DropPath, with `drop_path1` drawn for both
 *                   branches (the official FIXME: same rate, independent masks).
 *                   (The official NestedTensorBlock, which the student's list forward goes through,
 *                   takes the subset form for any p > 0; the Block form is what the spec asks.)
 */
import { Tensor } from '../engine/tensor.js';
import { Rng } from '../engine/random.js';
import * as ops from '../engine/ops/index.js';
import { Conv2d, init, LayerNorm, Linear, linearF16, Module, type ModuleContext } from './nn.js';
import { bicubicResizeMatrixTo, type ResizeTo } from './interpolate.js';
import { type DinoArch, dinoPreset, dinov2SwigluHidden, dinov3SwigluHidden, type DinoFfn, type PosEmbedInterpolation } from './io/dino-arch.js';
import { type RopeConfig, RopePositionEmbedding, type RopeTables } from './rope.js';

export interface ViTConfig {
  imgSize: number;
  patchSize: number;
  inChans: number;
  embedDim: number;
  depth: number;
  numHeads: number;
  mlpRatio: number;
  qkvBias: boolean;
  /** Stochastic depth rate of the last block (linear rule from 0), or of every block with dropPathUniform. 0 for the teacher. */
  dropPathRate: number;
  /** DINOv2's drop_path_uniform: every block at dropPathRate (default false: DINO's linear rule). */
  dropPathUniform: boolean;
  /** 'drop-path' (DINO, default) or 'dinov2' (batch subsets above 0.1): see the file header. */
  stochasticDepth: 'drop-path' | 'dinov2';
  /** Tokens between CLS and the patches: DINOv2 registers, DINOv3 storage tokens (0 in DINO v1). */
  numRegisterTokens: number;
  /** Their state_dict name: 'register_tokens' (DINOv2) or 'storage_tokens' (DINOv3). */
  registerTokensName: 'register_tokens' | 'storage_tokens';
  /** LayerScale init value (0 = off, as DINO v1; DINOv2's hub 1.0, DINOv3 1e-5). */
  layerScale: number;
  /** LayerNorm epsilon (1e-6 in DINO and DINOv2, 1e-5 in DINOv3). */
  eps: number;
  /** Feed-forward kind (see the file header). */
  ffn: DinoFfn;
  /** FFN hidden width H; 0 = the kind's rule from mlpRatio (MLP ⌊D·r⌋, SwiGLU ~⅔ of it, aligned). */
  ffnHidden: number;
  /** 'learned' pos_embed (DINO, DINOv2) or axial RoPE (DINOv3). */
  posEmbed: 'learned' | 'rope';
  /** How pos_embed is resized to other grids: DINO/DINOv2 offset 0.1 by scale factor; DINOv2 `_reg` antialiased by size. */
  posEmbedInterpolation: PosEmbedInterpolation;
  /** RoPE settings (posEmbed 'rope'); the coordinate augmentation acts in training mode only. */
  rope: RopeConfig;
  /** DINOv3's masked key bias: the buffer `attn.qkv.bias_mask`. */
  maskKeyBias: boolean;
  /** A `mask_token` [1, D] replacing masked patch embeddings (DINOv2/v3). */
  maskToken: boolean;
  /** DINOv3's `local_cls_norm` (7B, SAT ViT-L): a LayerNorm for local crops in training, unused here. */
  localClsNorm: boolean;
}

export const VIT_PRESETS = {
  vit_tiny: { embedDim: 192, depth: 12, numHeads: 3 },
  vit_small: { embedDim: 384, depth: 12, numHeads: 6 },
  vit_base: { embedDim: 768, depth: 12, numHeads: 12 },
} as const;

export type ViTArch = keyof typeof VIT_PRESETS;

/** A ViT config from a preset name with overrides. */
export function vitConfig(arch: ViTArch | Partial<ViTConfig>, overrides: Partial<ViTConfig> = {}): ViTConfig {
  const base = typeof arch === 'string' ? VIT_PRESETS[arch] : {};
  if (typeof arch === 'string' && !(arch in VIT_PRESETS)) throw new Error(`unknown ViT arch '${arch}' (${Object.keys(VIT_PRESETS).join(', ')})`);
  return {
    imgSize: 224,
    patchSize: 16,
    inChans: 3,
    embedDim: 384,
    depth: 12,
    numHeads: 6,
    mlpRatio: 4,
    qkvBias: true,
    dropPathRate: 0,
    dropPathUniform: false,
    stochasticDepth: 'drop-path',
    numRegisterTokens: 0,
    registerTokensName: 'register_tokens',
    layerScale: 0,
    eps: 1e-6,
    ffn: 'mlp',
    ffnHidden: 0,
    posEmbed: 'learned',
    // DINO's interpolate_pos_encoding: bicubic by scale factor (n + 0.1)/√N, no antialias.
    posEmbedInterpolation: { antialias: false, offset: 0.1 },
    // DINOv3's recipe (pos_embed_rope_*): base 100, rescale 2 in training, no shift or jitter.
    rope: { base: 100, shiftCoords: null, jitterCoords: null, rescaleCoords: 2 },
    maskKeyBias: false,
    maskToken: false,
    localClsNorm: false,
    ...base,
    ...(typeof arch === 'string' ? {} : arch),
    ...overrides,
  };
}

/**
 * The ViT config of a DINOv2 / DINOv3 architecture (models/io/dino-arch.ts: a released preset's
 * name, or one inferred from a state dict). LayerScale starts at 1e-5 (both families' training
 * recipe; loaded weights overwrite it). DINOv2's img_size follows its pos_embed grid (518 for the
 * releases: 37 × 14); DINOv3 has no pos_embed and takes any size.
 */
export function dinoViTConfig(arch: DinoArch | string, overrides: Partial<ViTConfig> = {}): ViTConfig {
  const a = typeof arch === 'string' ? dinoPreset(arch) : arch;
  const pe = a.posEmbed;
  if (pe.kind === 'learned' && pe.gridH !== pe.gridW) throw new Error(`pos_embed grid ${pe.gridH}×${pe.gridW} is not square`);
  return vitConfig(
    {
      imgSize: pe.kind === 'learned' ? pe.gridH * a.patchSize : 224,
      patchSize: a.patchSize,
      inChans: a.inChans,
      embedDim: a.embedDim,
      depth: a.depth,
      numHeads: a.numHeads,
      qkvBias: a.qkvBias,
      numRegisterTokens: a.numRegisterTokens,
      registerTokensName: a.family === 'dinov3' ? 'storage_tokens' : 'register_tokens',
      layerScale: a.layerScale ? 1e-5 : 0,
      eps: a.layerNormEps,
      ffn: a.ffn,
      ffnHidden: a.ffnHidden,
      posEmbed: pe.kind,
      ...(pe.kind === 'learned' ? { posEmbedInterpolation: { ...pe.interpolation } } : {}),
      ...(pe.kind === 'rope' ? { rope: { base: pe.base, shiftCoords: null, jitterCoords: null, rescaleCoords: 2 } } : {}),
      maskKeyBias: a.maskKeyBias,
      maskToken: a.hasMaskToken,
      localClsNorm: a.localClsNorm,
    },
    overrides,
  );
}

/** The FFN hidden width of a config: ffnHidden, else the rule of its kind. */
export function ffnHiddenOf(cfg: ViTConfig): number {
  if (cfg.ffnHidden > 0) return cfg.ffnHidden;
  if (cfg.ffn === 'swiglu-packed') return dinov2SwigluHidden(cfg.embedDim, cfg.mlpRatio);
  if (cfg.ffn === 'swiglu') return dinov3SwigluHidden(cfg.embedDim, cfg.mlpRatio);
  return Math.floor(cfg.embedDim * cfg.mlpRatio);
}

class PatchEmbed extends Module {
  readonly proj: Conv2d;
  constructor(ctx: ModuleContext, readonly patch: number, inChans: number, dim: number) {
    super(ctx);
    // PyTorch's default Conv2d init (DINO's _init_weights does not touch the conv).
    this.proj = this.child('proj', new Conv2d(ctx, inChans, dim, patch, { stride: patch }));
  }
  /** (B, C, H, W) → (B, hw, D) */
  forward(x: Tensor): Tensor {
    const y = this.proj.forward(x); // (B, D, h, w)
    const [B, D, h, w] = y.shape;
    return y.reshape(B, D, h * w).transpose(1, 2); // (B, hw, D)
  }
}

/**
 * DINOv3's LinearKMaskedBias: the qkv projection whose bias is multiplied by the buffer
 * `bias_mask`, 1 on the q and v thirds and 0 on the k third. Without RoPE a key bias only adds a
 * per-query constant to the logits (it cancels in the softmax); with RoPE it does not, so the
 * mask matters. The gradient of the key third of the bias is 0.
 */
class LinearKMaskedBias extends Linear {
  biasMask: Tensor;
  constructor(ctx: ModuleContext, dim: number, opts: ConstructorParameters<typeof Linear>[3]) {
    super(ctx, dim, 3 * dim, opts);
    this.biasMask = this.buffer('bias_mask', [3 * dim], (n) => new Float32Array(n).fill(1).fill(0, dim, 2 * dim));
  }
  protected override onReplace(name: string, t: Tensor): void {
    super.onReplace(name, t);
    if (name === 'bias_mask') this.biasMask = t;
  }
  override forward(x: Tensor): Tensor {
    const bias = this.bias ? this.bias.mul(this.biasMask) : null;
    return this.precision === 'f16' ? linearF16(x, this.weight, bias) : ops.linear(x, this.weight, bias);
  }
}

class Attention extends Module {
  readonly qkv: Linear;
  readonly proj: Linear;
  constructor(ctx: ModuleContext, readonly dim: number, readonly numHeads: number, qkvBias: boolean, maskKeyBias: boolean) {
    super(ctx);
    const tn = init.truncNormal(0.02);
    const opts = { bias: qkvBias, weightInit: tn, biasInit: init.zeros() };
    this.qkv = this.child('qkv', maskKeyBias ? new LinearKMaskedBias(ctx, dim, opts) : new Linear(ctx, dim, dim * 3, opts));
    this.proj = this.child('proj', new Linear(ctx, dim, dim, { weightInit: tn, biasInit: init.zeros() }));
  }
  /**
   * (B, N, D) → (B, N, D), and the attention probabilities when asked: `true` all of them
   * (B, heads, N, N), `'cls'` only the CLS query's row (B, heads, 1, N). With `rope` (DINOv3), q and
   * k are rotated first (tables (N, d); prefix tokens unchanged).
   *
   * The CLS row is what every attention map and segmentation uses, and it is N times smaller: at
   * 480 px with patch 8 (N = 3601) the full probabilities of 6 heads are 311 MB, over a storage
   * binding, while the CLS row is 86 KB. It is computed beside the fused attention as
   * softmax(q_cls · Kᵀ · scale), from the same (rotated) q and k.
   */
  forward(x: Tensor, returnProbs: boolean | 'cls' = false, rope?: RopeTables): { out: Tensor; probs?: Tensor } {
    const [B, N, D] = x.shape;
    const H = this.numHeads;
    // Mixed precision: the f16 projection is converted back, and attention computes in f32.
    let qkv = this.f32(this.qkv.forward(x)).reshape(B, N, 3, H, D / H).permute(2, 0, 3, 1, 4); // (3, B, H, N, d)
    // DINOv3: q and k rotated, v copied, read in place from the permuted view: (3, B, H, N, d) contiguous.
    if (rope) qkv = ops.ropePacked(qkv, rope);
    // q, k, v are read in place from the packed tensor; one gradient flows back into it.
    const scale = (D / H) ** -0.5;
    const a = ops.attentionPacked(qkv, { scale, returnProbs: returnProbs === true });
    const merged = a.out.reshape(B, H, N, D / H).transpose(1, 2).reshape(B, N, D); // (B, N, H, d) → (B, N, D)
    let probs = a.probs?.reshape(B, H, N, N);
    if (returnProbs === 'cls') {
      const q0 = qkv.slice(0, 0, 1).slice(3, 0, 1).reshape(B, H, 1, D / H); // (B, H, 1, d)
      const k = qkv.slice(0, 1, 2).reshape(B, H, N, D / H); // (B, H, N, d)
      probs = ops.softmax(q0.matmul(k.transpose(-2, -1)), -1, { temperature: 1 / scale }); // (B, H, 1, N)
    }
    return { out: this.proj.forward(merged), probs };
  }
}

/** DINO's Mlp: fc2(GELU(fc1(x))), hidden H. */
class Mlp extends Module {
  readonly fc1: Linear;
  readonly fc2: Linear;
  constructor(ctx: ModuleContext, dim: number, hidden: number) {
    super(ctx);
    const tn = init.truncNormal(0.02);
    this.fc1 = this.child('fc1', new Linear(ctx, dim, hidden, { weightInit: tn, biasInit: init.zeros() }));
    this.fc2 = this.child('fc2', new Linear(ctx, hidden, dim, { weightInit: tn, biasInit: init.zeros() }));
  }
  forward(x: Tensor): Tensor {
    return this.fc2.forward(this.fc1.forward(x, 'gelu'));
  }
}

/**
 * DINOv2's SwiGLUFFNFused (ViT-g): one packed projection w12 (D → 2H) whose output is
 * [x1 | x2] (chunk(2) of the last dim), out = w3(SiLU(x1) ⊙ x2). H = (⌊⌊D·r⌋·2/3⌋ + 7) // 8 · 8.
 */
class SwiGLUFFNFused extends Module {
  readonly w12: Linear;
  readonly w3: Linear;
  constructor(ctx: ModuleContext, dim: number, readonly hidden: number) {
    super(ctx);
    const tn = init.truncNormal(0.02);
    this.w12 = this.child('w12', new Linear(ctx, dim, 2 * hidden, { weightInit: tn, biasInit: init.zeros() }));
    this.w3 = this.child('w3', new Linear(ctx, hidden, dim, { weightInit: tn, biasInit: init.zeros() }));
  }
  forward(x: Tensor): Tensor {
    const x12 = this.w12.forward(x); // (B, N, 2H)
    const H = this.hidden;
    const x1 = x12.slice(-1, 0, H); // (B, N, H)
    const x2 = x12.slice(-1, H, 2 * H);
    return this.w3.forward(ops.swiglu(x1, x2)); // SiLU(x1) ⊙ x2, the halves read in place
  }
}

/**
 * DINOv3's SwiGLUFFN: out = w3(SiLU(w1 x) ⊙ w2 x), w1, w2: D → H, w3: H → D, with
 * H = ⌊⌊D·r⌋·2/3⌋ rounded up to a multiple of 8 (64 for the 7B).
 */
class SwiGLUFFN extends Module {
  readonly w1: Linear;
  readonly w2: Linear;
  readonly w3: Linear;
  constructor(ctx: ModuleContext, dim: number, hidden: number) {
    super(ctx);
    const tn = init.truncNormal(0.02);
    this.w1 = this.child('w1', new Linear(ctx, dim, hidden, { weightInit: tn, biasInit: init.zeros() }));
    this.w2 = this.child('w2', new Linear(ctx, dim, hidden, { weightInit: tn, biasInit: init.zeros() }));
    this.w3 = this.child('w3', new Linear(ctx, hidden, dim, { weightInit: tn, biasInit: init.zeros() }));
  }
  forward(x: Tensor): Tensor {
    return this.w3.forward(ops.swiglu(this.w1.forward(x), this.w2.forward(x))); // SiLU(w1 x) ⊙ w2 x
  }
}

type Ffn = Mlp | SwiGLUFFNFused | SwiGLUFFN;

function makeFfn(ctx: ModuleContext, cfg: ViTConfig): Ffn {
  const H = ffnHiddenOf(cfg);
  if (cfg.ffn === 'swiglu-packed') return new SwiGLUFFNFused(ctx, cfg.embedDim, H);
  if (cfg.ffn === 'swiglu') return new SwiGLUFFN(ctx, cfg.embedDim, H);
  return new Mlp(ctx, cfg.embedDim, H);
}

/** DINOv2's LayerScale: x · gamma (per channel). */
class LayerScale extends Module {
  gamma: Tensor;
  constructor(ctx: ModuleContext, dim: number, value: number) {
    super(ctx);
    this.gamma = this.param('gamma', [dim], (n) => new Float32Array(n).fill(value));
  }
  protected override onReplace(_n: string, t: Tensor): void {
    this.gamma = t;
  }
  forward(x: Tensor): Tensor {
    return x.mul(this.gamma);
  }
}

export class Block extends Module {
  readonly norm1: LayerNorm;
  readonly attn: Attention;
  readonly norm2: LayerNorm;
  readonly mlp: Ffn;
  readonly ls1: LayerScale | null;
  readonly ls2: LayerScale | null;
  /** The batch-subset form above this rate (DINOv2's Block: "the overhead is compensated only for a drop path rate larger than 0.1"). */
  static readonly SUBSET_ABOVE = 0.1;
  private readonly subsets: boolean;

  constructor(ctx: ModuleContext, cfg: ViTConfig, readonly dropPath: number, private readonly dropRng: Rng) {
    super(ctx);
    this.subsets = cfg.stochasticDepth === 'dinov2' && dropPath > Block.SUBSET_ABOVE;
    this.norm1 = this.child('norm1', new LayerNorm(ctx, cfg.embedDim, cfg.eps));
    this.attn = this.child('attn', new Attention(ctx, cfg.embedDim, cfg.numHeads, cfg.qkvBias, cfg.maskKeyBias));
    this.ls1 = cfg.layerScale > 0 ? this.child('ls1', new LayerScale(ctx, cfg.embedDim, cfg.layerScale)) : null;
    this.norm2 = this.child('norm2', new LayerNorm(ctx, cfg.embedDim, cfg.eps));
    this.mlp = this.child('mlp', makeFfn(ctx, cfg));
    this.ls2 = cfg.layerScale > 0 ? this.child('ls2', new LayerScale(ctx, cfg.embedDim, cfg.layerScale)) : null;
  }

  /** Per-sample drop path: keep with probability 1 − p and scale by 1/(1 − p). */
  private dropPathBranch(branch: Tensor): Tensor {
    if (!this.training || this.dropPath <= 0) return branch;
    const B = branch.shape[0];
    const keep = 1 - this.dropPath;
    const mask = new Float32Array(B);
    for (let i = 0; i < B; i++) mask[i] = Math.floor(keep + this.dropRng.uniform()) / keep;
    return branch.mul(this.engine.tensor(mask, [B, ...branch.shape.slice(1).map(() => 1)]));
  }

  /**
   * x + (b/|S|)·branch(x[S]) on the rows of S only (drop_add_residual_stochastic_depth), S a
   * random subset of the b samples of size max(⌊b(1 − p)⌋, 1) (the first |S| of a random
   * permutation). The scatter is a gather: [branch rows · b/|S|; a zero row] indexed by each
   * sample's position in S (the zero row for the others), whose gradient is the selection back.
   */
  private subsetResidual(x: Tensor, branch: (xs: Tensor) => Tensor): Tensor {
    const b = x.shape[0];
    const size = Math.max(Math.floor(b * (1 - this.dropPath)), 1);
    const perm = Array.from({ length: b }, (_, i) => i);
    for (let i = b - 1; i > 0; i--) {
      const j = this.dropRng.int(i + 1);
      [perm[i], perm[j]] = [perm[j], perm[i]];
    }
    const subset = perm.slice(0, size);
    const residual = branch(ops.indexSelect(x, 0, subset)).mul(b / size); // (|S|, N, D)
    const where = new Array<number>(b).fill(size);
    subset.forEach((r, k) => (where[r] = k));
    const padded = ops.concat([residual, this.engine.zeros([1, ...x.shape.slice(1)])], 0); // (|S| + 1, N, D)
    return x.add(ops.indexSelect(padded, 0, where));
  }

  /** (B, N, D) → (B, N, D); `rope`: DINOv3's tables for this block's q and k. */
  forward(x: Tensor, returnProbs: boolean | 'cls' = false, rope?: RopeTables): { out: Tensor; probs?: Tensor } {
    if (this.training && this.subsets && !returnProbs) {
      x = this.subsetResidual(x, (xs) => {
        const out = this.f32(this.attn.forward(this.norm1.forward(xs), false, rope).out);
        return this.ls1 ? this.ls1.forward(out) : out;
      });
      x = this.subsetResidual(x, (xs) => {
        const out = this.f32(this.mlp.forward(this.norm2.forward(xs)));
        return this.ls2 ? this.ls2.forward(out) : out;
      });
      return { out: x };
    }
    const a = this.attn.forward(this.norm1.forward(x), returnProbs, rope);
    let branch = this.ls1 ? this.ls1.forward(a.out) : a.out;
    x = x.add(this.dropPathBranch(branch));
    branch = this.mlp.forward(this.norm2.forward(x));
    if (this.ls2) branch = this.ls2.forward(branch);
    return { out: x.add(this.dropPathBranch(branch)), probs: a.probs };
  }
}

/**
 * Which patches a forward masks (DINOv2/v3 iBOT): (B, h·w), true / non-zero = replace that patch
 * embedding by mask_token. A tensor of 0/1 values or host values in row-major order.
 */
export type PatchMasks = Tensor | ArrayLike<number | boolean>;

/** What {@link VisionTransformer.forwardFeatures} returns: the official forward_features dict. */
export interface ViTFeatures {
  /** norm(x)[:, 0]: (B, D). */
  xNormClsToken: Tensor;
  /** norm(x)[:, 1 : 1 + R]: (B, R, D), registers or storage tokens (R may be 0). */
  xNormRegTokens: Tensor;
  /** norm(x)[:, 1 + R :]: (B, h·w, D), row-major over the patch grid. */
  xNormPatchTokens: Tensor;
  /** The tokens before the final norm: (B, 1 + R + h·w, D). */
  xPrenorm: Tensor;
  /** The patch grid. */
  h: number;
  w: number;
  /** The last block's attention probabilities when asked: (B, heads, N, N), or (B, heads, 1, N) for `'cls'`. */
  attention?: Tensor;
}

export class VisionTransformer extends Module {
  readonly cfg: ViTConfig;
  readonly patchEmbed: PatchEmbed;
  readonly blocks: Block[] = [];
  readonly norm: LayerNorm;
  /** DINOv3 7B / SAT ViT-L: loaded with the weights, unused by these forwards. */
  readonly localClsNorm: LayerNorm | null = null;
  readonly ropeEmbed: RopePositionEmbedding | null = null;
  clsToken: Tensor;
  posEmbed: Tensor | null = null;
  registerTokens: Tensor | null = null;
  maskToken: Tensor | null = null;
  /** Generator of the drop-path masks (its state belongs in checkpoints for exact resume). */
  readonly dropRng: Rng;
  private readonly resizeCache = new Map<string, Tensor>();

  constructor(ctx: ModuleContext, cfg: ViTConfig) {
    super(ctx);
    this.cfg = cfg;
    if (cfg.embedDim % cfg.numHeads !== 0) throw new Error(`embedDim ${cfg.embedDim} is not divisible by numHeads ${cfg.numHeads}`);
    this.dropRng = new Rng(ctx.rng.nextU32());
    const D = cfg.embedDim;
    const grid = Math.floor(cfg.imgSize / cfg.patchSize);
    this.patchEmbed = this.child('patch_embed', new PatchEmbed(ctx, cfg.patchSize, cfg.inChans, D));
    this.clsToken = this.param('cls_token', [1, 1, D], init.truncNormal(0.02));
    if (cfg.posEmbed === 'learned') this.posEmbed = this.param('pos_embed', [1, grid * grid + 1, D], init.truncNormal(0.02));
    if (cfg.numRegisterTokens > 0) {
      // DINOv2 registers start near 0 (N(0, 1e-6)); DINOv3 storage tokens as its CLS (N(0, 0.02)).
      const std = cfg.registerTokensName === 'storage_tokens' ? 0.02 : 1e-6;
      this.registerTokens = this.param(cfg.registerTokensName, [1, cfg.numRegisterTokens, D], init.truncNormal(std));
    }
    if (cfg.maskToken) this.maskToken = this.param('mask_token', [1, D], init.zeros());
    if (cfg.posEmbed === 'rope') {
      const headDim = D / cfg.numHeads;
      if (headDim % 4 !== 0) throw new Error(`RoPE needs a head dim divisible by 4, got ${headDim}`);
      this.ropeEmbed = this.child('rope_embed', new RopePositionEmbedding(ctx, headDim, cfg.rope, new Rng(ctx.rng.nextU32())));
    }
    for (let i = 0; i < cfg.depth; i++) {
      const dp = cfg.dropPathUniform ? cfg.dropPathRate : cfg.depth > 1 ? (cfg.dropPathRate * i) / (cfg.depth - 1) : 0;
      this.blocks.push(this.child(`blocks.${i}`, new Block(ctx, cfg, dp, this.dropRng)));
    }
    this.norm = this.child('norm', new LayerNorm(ctx, D, cfg.eps));
    if (cfg.localClsNorm) this.localClsNorm = this.child('local_cls_norm', new LayerNorm(ctx, D, cfg.eps));
  }

  protected override onReplace(name: string, t: Tensor): void {
    if (name === 'pos_embed') this.clearResizeCache(); // resize matrices follow pos_embed's dtype
    if (name === 'cls_token') this.clsToken = t;
    if (name === 'pos_embed') this.posEmbed = t;
    if (name === this.cfg.registerTokensName) this.registerTokens = t;
    if (name === 'mask_token') this.maskToken = t;
  }

  /** Strict loading (Module.loadStateDict), then the RoPE periods' host copy from the loaded buffer. */
  override loadStateDict(tensors: ReadonlyMap<string, { shape: readonly number[]; data: Float32Array }>, opts: { strict?: boolean } = {}): void {
    super.loadStateDict(tensors, opts);
    const periods = tensors.get('rope_embed.periods');
    if (this.ropeEmbed && periods) this.ropeEmbed.setPeriods(periods.data);
  }

  /** The storage type of the weights, and so of the activations: 'f32', or 'f16' after castParameters('f16'). */
  get dtype(): Tensor['dtype'] {
    return this.clsToken.dtype;
  }

  get embedDim(): number {
    return this.cfg.embedDim;
  }

  /** Tokens before the patches: CLS and the registers / storage tokens. */
  get numPrefixTokens(): number {
    return 1 + this.cfg.numRegisterTokens;
  }

  /** The patch grid of an input (B, C, H, W): ⌊H/p⌋ × ⌊W/p⌋ (the strided conv drops a remainder). */
  patchGrid(x: Tensor): [number, number] {
    const [, , H, W] = x.shape;
    const p = this.cfg.patchSize;
    return [Math.floor(H / p), Math.floor(W / p)];
  }

  /**
   * pos_embed for an h×w patch grid: the stored one when it matches, else the patch part resized
   * bicubically as interpolate_pos_encoding does: rows to h, columns to w, by scale factor
   * (n + offset)/M (DINO, DINOv2: offset 0.1, plain bicubic) or by size (DINOv2 `_reg`: offset 0,
   * antialiased), as a matmul with a fixed resize matrix so gradients flow back to pos_embed.
   */
  interpolatePosEncoding(h: number, w: number): Tensor {
    const pe = this.posEmbed;
    if (!pe) throw new Error('interpolatePosEncoding: this model has no pos_embed (RoPE)');
    const N = pe.shape[1] - 1;
    if (h * w === N && h === w) return pe;
    const M = Math.round(Math.sqrt(N));
    const key = `${h}x${w}_${pe.dtype}`;
    let R = this.resizeCache.get(key);
    if (!R) {
      // The official code passes (w0, h0) = (H/p, W/p) for the (rows, columns) of the grid: its
      // "w" is the image's dim 2, the height, so rows follow h.
      const { antialias, offset } = this.cfg.posEmbedInterpolation;
      const to = (n: number): ResizeTo => (offset ? { scaleFactor: (n + offset) / M } : { size: n });
      const { matrix, outRows, outCols } = bicubicResizeMatrixTo(M, M, to(h), to(w), antialias);
      if (outRows !== h || outCols !== w) throw new Error(`position embedding resize gave ${outRows}×${outCols}, expected ${h}×${w}`);
      R = this.engine.keep(this.engine.tensor(matrix, [h * w, N], { label: `pos_resize_${key}`, dtype: pe.dtype }));
      this.resizeCache.set(key, R);
    }
    const D = this.cfg.embedDim;
    const cls = pe.slice(1, 0, 1); // (1, 1, D)
    const patch = pe.slice(1, 1, N + 1).reshape(N, D);
    const resized = ops.matmul(R, patch).reshape(1, h * w, D);
    return ops.concat([cls, resized], 1); // (1, 1 + hw, D)
  }

  /** (B, hw) masks as (B, hw, 1) 0/1 floats. */
  private maskTensor(masks: PatchMasks, B: number, n: number): Tensor {
    if (masks instanceof Tensor) {
      const m = masks;
      if (m.size !== B * n) throw new RangeError(`masks ${JSON.stringify(m.shape)} do not cover ${B} images × ${n} patches`);
      return m.reshape(B, n, 1);
    }
    const host = masks;
    if (host.length !== B * n) throw new RangeError(`masks hold ${host.length} values, not ${B} images × ${n} patches`);
    return this.engine.tensor(Float32Array.from({ length: B * n }, (_, i) => (host[i] ? 1 : 0)), [B, n, 1], { label: 'masks' });
  }

  /**
   * prepare_tokens_with_masks: the tokens entering block 0, (B, 1 + R + hw, D), and the grid.
   * Masked patch embeddings are replaced by mask_token before the position embedding:
   * where(m, mask_token, x) = x·(1 − m) + mask_token·m for m ∈ {0, 1} (exact; gradients to x on
   * unmasked and to mask_token on masked patches, as torch.where's).
   */
  prepareTokensWithMasks(x: Tensor, masks?: PatchMasks): { tokens: Tensor; h: number; w: number } {
    const [h, w] = this.patchGrid(x);
    const B = x.shape[0];
    const D = this.cfg.embedDim;
    // f16 weights (castParameters): the image is rounded to f16 too, and every activation stays f16.
    if (x.dtype !== this.dtype) x = x.cast(this.dtype);
    let patches = this.patchEmbed.forward(x); // (B, hw, D)
    if (masks !== undefined) {
      if (!this.maskToken) throw new Error('masked forward: this model has no mask_token');
      const m = this.maskTensor(masks, B, h * w).cast(this.dtype); // (B, hw, 1)
      patches = patches.mul(ops.rsub(m, 1)).add(m.mul(this.maskToken)); // (B, hw, D)
    }
    const cls = ops.expand(this.clsToken, [B, 1, D]);
    const regs = this.registerTokens ? [ops.expand(this.registerTokens, [B, this.cfg.numRegisterTokens, D])] : [];
    if (!this.posEmbed) return { tokens: ops.concat([cls, ...regs, patches], 1), h, w }; // DINOv3: RoPE in the blocks
    const tokens = ops.concat([cls, patches], 1).add(this.interpolatePosEncoding(h, w)); // (B, 1 + hw, D)
    if (!regs.length) return { tokens, h, w };
    // DINOv2 registers: after the CLS token, without position embedding.
    return { tokens: ops.concat([tokens.slice(1, 0, 1), ...regs, tokens.slice(1, 1, tokens.shape[1])], 1), h, w };
  }

  /** Tokens after patch embedding, CLS, position embedding (and registers): (B, 1 [+R] + hw, D). */
  prepareTokens(x: Tensor): Tensor {
    return this.prepareTokensWithMasks(x).tokens;
  }

  /** Block i on the tokens of an h×w grid (with its RoPE tables when the model has RoPE). */
  blockForward(i: number, t: Tensor, h: number, w: number, returnProbs: boolean | 'cls' = false): { out: Tensor; probs?: Tensor } {
    // Drawn per block: in training with coordinate augmentation each block gets its own (as the
    // official loop calls rope_embed inside it); in eval one cached table per grid.
    const rope = this.ropeEmbed?.tables(h, w, this.numPrefixTokens);
    return this.blocks[i].forward(t, returnProbs, rope);
  }

  /**
   * forward_features: every output of the official dict from one pass (see {@link ViTFeatures});
   * `masks` (B, hw) for masked-patch training, `attention` to also return the last block's
   * attention probabilities (`'cls'`: the CLS query's row only, see {@link Attention.forward}).
   */
  forwardFeatures(x: Tensor, opts: { masks?: PatchMasks; attention?: boolean | 'cls' } = {}): ViTFeatures {
    const { tokens, h, w } = this.prepareTokensWithMasks(x, opts.masks);
    let t = tokens;
    let attention: Tensor | undefined;
    for (let i = 0; i < this.blocks.length; i++) {
      const r = this.blockForward(i, t, h, w, i === this.blocks.length - 1 ? (opts.attention ?? false) : false);
      t = r.out;
      attention = r.probs;
    }
    const xn = this.norm.forward(t); // (B, N, D)
    const [B, N, D] = xn.shape;
    const P = this.numPrefixTokens;
    return {
      xNormClsToken: xn.slice(1, 0, 1).reshape(B, D),
      xNormRegTokens: xn.slice(1, 1, P),
      xNormPatchTokens: xn.slice(1, P, N),
      xPrenorm: t,
      h,
      w,
      attention,
    };
  }

  /** The CLS token after the final norm: (B, D). */
  forward(x: Tensor): Tensor {
    return this.forwardFeatures(x).xNormClsToken;
  }

  /** The last block's CLS-query attention (B, heads, 1, N), computed on norm1 of its input. */
  lastClsAttention(x: Tensor): Tensor {
    return this.forwardFeatures(x, { attention: 'cls' }).attention!;
  }

  /** The last block's attention probabilities (B, heads, N, N), computed on norm1 of its input. */
  lastSelfAttention(x: Tensor): Tensor {
    const { tokens, h, w } = this.prepareTokensWithMasks(x);
    let t = tokens;
    const L = this.blocks.length;
    for (let i = 0; i < L - 1; i++) t = this.blockForward(i, t, h, w).out;
    const last = this.blocks[L - 1];
    return last.attn.forward(last.norm1.forward(t), true, this.ropeEmbed?.tables(h, w, this.numPrefixTokens)).probs!;
  }

  /** norm(x) after each of the last `n` blocks: n tensors (B, N, D). */
  intermediateLayers(x: Tensor, n = 1): Tensor[] {
    const { tokens, h, w } = this.prepareTokensWithMasks(x);
    let t = tokens;
    const out: Tensor[] = [];
    for (let i = 0; i < this.blocks.length; i++) {
      t = this.blockForward(i, t, h, w).out;
      if (this.blocks.length - i <= n) out.push(this.norm.forward(t));
    }
    return out;
  }

  private clearResizeCache(): void {
    for (const m of this.resizeCache.values()) m.dispose();
    this.resizeCache.clear();
  }

  override dispose(): void {
    super.dispose();
    this.clearResizeCache();
    this.ropeEmbed?.releaseTables();
  }
}

/** A DINOv2 / DINOv3 ViT from a preset name or architecture: `createDinoViT(ctx, 'dinov2_vits14_reg')`. */
export function createDinoViT(ctx: ModuleContext, arch: DinoArch | string, overrides: Partial<ViTConfig> = {}): VisionTransformer {
  return new VisionTransformer(ctx, dinoViTConfig(arch, overrides));
}

/** A ViT from a preset: `createViT(ctx, 'vit_small', { patchSize: 16 })`. */
export function createViT(ctx: ModuleContext, arch: ViTArch | Partial<ViTConfig>, overrides: Partial<ViTConfig> = {}): VisionTransformer {
  return new VisionTransformer(ctx, vitConfig(arch, overrides));
}
