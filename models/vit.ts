/**
 * The Vision Transformer of the official DINO code (vision_transformer.py), with its parameter names.
 *
 *   x (B, 3, H, W) → patch_embed.proj (conv, stride = patch) → (B, D, h, w) → (B, hw, D)
 *   prepend cls_token → (B, 1 + hw, D); add pos_embed (bicubic-interpolated for other sizes, with
 *   DINO's +0.1 offset) → blocks: x + attn(norm1(x)), x + mlp(norm2(x)) (pre-norm, eps 1e-6, qkv
 *   bias, exact GELU, MLP ratio 4) → norm → CLS token (B, D).
 *
 * Room for DINOv2: `numRegisterTokens` inserts register tokens after the CLS token (no position
 * embedding, as DINOv2), and `layerScale` multiplies each branch by a learned per-channel gamma
 * (`ls1.gamma`, `ls2.gamma`). Both default to off, which is exactly DINO v1.
 *
 * Stochastic depth (drop path) follows the linear rule linspace(0, rate, depth) and is active only
 * in training mode with rate > 0 (the student; the teacher is built without it).
 */
import type { Tensor } from '../engine/tensor.js';
import { Rng } from '../engine/random.js';
import * as ops from '../engine/ops/index.js';
import { Conv2d, init, LayerNorm, Linear, Module, type ModuleContext } from './nn.js';
import { bicubicResizeMatrix } from './interpolate.js';

export interface ViTConfig {
  imgSize: number;
  patchSize: number;
  inChans: number;
  embedDim: number;
  depth: number;
  numHeads: number;
  mlpRatio: number;
  qkvBias: boolean;
  /** Stochastic depth rate of the last block (linear rule from 0). 0 for the teacher. */
  dropPathRate: number;
  /** DINOv2 register tokens (0 in DINO v1). */
  numRegisterTokens: number;
  /** DINOv2 LayerScale init value (0 = off, as DINO v1). */
  layerScale: number;
  /** LayerNorm epsilon (1e-6 in DINO). */
  eps: number;
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
    numRegisterTokens: 0,
    layerScale: 0,
    eps: 1e-6,
    ...base,
    ...(typeof arch === 'string' ? {} : arch),
    ...overrides,
  };
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

class Attention extends Module {
  readonly qkv: Linear;
  readonly proj: Linear;
  constructor(ctx: ModuleContext, readonly dim: number, readonly numHeads: number, qkvBias: boolean) {
    super(ctx);
    const tn = init.truncNormal(0.02);
    this.qkv = this.child('qkv', new Linear(ctx, dim, dim * 3, { bias: qkvBias, weightInit: tn, biasInit: init.zeros() }));
    this.proj = this.child('proj', new Linear(ctx, dim, dim, { weightInit: tn, biasInit: init.zeros() }));
  }
  /** (B, N, D) → (B, N, D), and the attention probabilities (B, heads, N, N) when asked. */
  forward(x: Tensor, returnProbs = false): { out: Tensor; probs?: Tensor } {
    const [B, N, D] = x.shape;
    const H = this.numHeads;
    const qkv = this.qkv.forward(x).reshape(B, N, 3, H, D / H).permute(2, 0, 3, 1, 4); // (3, B, H, N, d)
    // q, k, v are read in place from the permuted projection; one gradient flows back into it.
    const a = ops.attentionPacked(qkv, { scale: (D / H) ** -0.5, returnProbs });
    const merged = a.out.reshape(B, H, N, D / H).transpose(1, 2).reshape(B, N, D); // (B, N, H, d) → (B, N, D)
    const probs = a.probs?.reshape(B, H, N, N);
    return { out: this.proj.forward(merged), probs };
  }
}

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
  readonly mlp: Mlp;
  readonly ls1: LayerScale | null;
  readonly ls2: LayerScale | null;
  constructor(ctx: ModuleContext, cfg: ViTConfig, readonly dropPath: number, private readonly dropRng: Rng) {
    super(ctx);
    this.norm1 = this.child('norm1', new LayerNorm(ctx, cfg.embedDim, cfg.eps));
    this.attn = this.child('attn', new Attention(ctx, cfg.embedDim, cfg.numHeads, cfg.qkvBias));
    this.ls1 = cfg.layerScale > 0 ? this.child('ls1', new LayerScale(ctx, cfg.embedDim, cfg.layerScale)) : null;
    this.norm2 = this.child('norm2', new LayerNorm(ctx, cfg.embedDim, cfg.eps));
    this.mlp = this.child('mlp', new Mlp(ctx, cfg.embedDim, Math.floor(cfg.embedDim * cfg.mlpRatio)));
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

  forward(x: Tensor, returnProbs = false): { out: Tensor; probs?: Tensor } {
    const a = this.attn.forward(this.norm1.forward(x), returnProbs);
    let branch = this.ls1 ? this.ls1.forward(a.out) : a.out;
    x = x.add(this.dropPathBranch(branch));
    branch = this.mlp.forward(this.norm2.forward(x));
    if (this.ls2) branch = this.ls2.forward(branch);
    return { out: x.add(this.dropPathBranch(branch)), probs: a.probs };
  }
}

export class VisionTransformer extends Module {
  readonly cfg: ViTConfig;
  readonly patchEmbed: PatchEmbed;
  readonly blocks: Block[] = [];
  readonly norm: LayerNorm;
  clsToken: Tensor;
  posEmbed: Tensor;
  registerTokens: Tensor | null = null;
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
    this.posEmbed = this.param('pos_embed', [1, grid * grid + 1, D], init.truncNormal(0.02));
    if (cfg.numRegisterTokens > 0) this.registerTokens = this.param('register_tokens', [1, cfg.numRegisterTokens, D], init.truncNormal(1e-6));
    for (let i = 0; i < cfg.depth; i++) {
      const dp = cfg.depth > 1 ? (cfg.dropPathRate * i) / (cfg.depth - 1) : 0;
      this.blocks.push(this.child(`blocks.${i}`, new Block(ctx, cfg, dp, this.dropRng)));
    }
    this.norm = this.child('norm', new LayerNorm(ctx, D, cfg.eps));
  }

  protected override onReplace(name: string, t: Tensor): void {
    if (name === 'cls_token') this.clsToken = t;
    if (name === 'pos_embed') this.posEmbed = t;
    if (name === 'register_tokens') this.registerTokens = t;
  }

  get embedDim(): number {
    return this.cfg.embedDim;
  }

  /**
   * pos_embed for an h×w patch grid: the stored one when it matches, else the patch part resized
   * bicubically as DINO's interpolate_pos_encoding (scale factor (w + 0.1)/√N, (h + 0.1)/√N), as
   * a matmul with a fixed resize matrix so gradients flow back to pos_embed.
   */
  interpolatePosEncoding(h: number, w: number): Tensor {
    const N = this.posEmbed.shape[1] - 1;
    if (h * w === N && h === w) return this.posEmbed;
    const side = Math.round(Math.sqrt(N));
    const key = `${h}x${w}`;
    let M = this.resizeCache.get(key);
    if (!M) {
      // DINO passes scale_factor=(w0/√N, h0/√N) for the (rows, cols) of the grid: rows follow w.
      const { matrix, outRows, outCols } = bicubicResizeMatrix(side, side, (w + 0.1) / side, (h + 0.1) / side);
      if (outRows * outCols !== h * w) throw new Error(`position embedding resize gave ${outRows}×${outCols}, expected ${h}×${w}`);
      M = this.engine.keep(this.engine.tensor(matrix, [outRows * outCols, N], { label: `pos_resize_${key}` }));
      this.resizeCache.set(key, M);
    }
    const D = this.cfg.embedDim;
    const cls = this.posEmbed.slice(1, 0, 1); // (1, 1, D)
    const patch = this.posEmbed.slice(1, 1, N + 1).reshape(N, D);
    const resized = ops.matmul(M, patch).reshape(1, h * w, D);
    return ops.concat([cls, resized], 1);
  }

  /** Tokens after patch embedding, CLS, position embedding (and registers): (B, 1 [+R] + hw, D). */
  prepareTokens(x: Tensor): Tensor {
    const [B, , H, W] = x.shape;
    const p = this.cfg.patchSize;
    const h = Math.floor(H / p);
    const w = Math.floor(W / p);
    const D = this.cfg.embedDim;
    const patches = this.patchEmbed.forward(x); // (B, hw, D)
    const cls = ops.expand(this.clsToken, [B, 1, D]);
    let tokens = ops.concat([cls, patches], 1).add(this.interpolatePosEncoding(h, w)); // (B, 1 + hw, D)
    if (this.registerTokens) {
      const R = this.cfg.numRegisterTokens;
      const regs = ops.expand(this.registerTokens, [B, R, D]);
      tokens = ops.concat([tokens.slice(1, 0, 1), regs, tokens.slice(1, 1, tokens.shape[1])], 1);
    }
    return tokens;
  }

  /** The CLS token after the final norm: (B, D). */
  forward(x: Tensor): Tensor {
    let t = this.prepareTokens(x);
    for (const b of this.blocks) t = b.forward(t).out;
    return this.norm.forward(t).slice(1, 0, 1).reshape(t.shape[0], this.cfg.embedDim);
  }

  /** The last block's attention probabilities (B, heads, N, N), computed on norm1 of its input. */
  lastSelfAttention(x: Tensor): Tensor {
    let t = this.prepareTokens(x);
    for (let i = 0; i < this.blocks.length - 1; i++) t = this.blocks[i].forward(t).out;
    const last = this.blocks[this.blocks.length - 1];
    return last.attn.forward(last.norm1.forward(t), true).probs!;
  }

  /** norm(x) after each of the last `n` blocks: n tensors (B, N, D). */
  intermediateLayers(x: Tensor, n = 1): Tensor[] {
    let t = this.prepareTokens(x);
    const out: Tensor[] = [];
    this.blocks.forEach((b, i) => {
      t = b.forward(t).out;
      if (this.blocks.length - i <= n) out.push(this.norm.forward(t));
    });
    return out;
  }

  override dispose(): void {
    super.dispose();
    for (const m of this.resizeCache.values()) m.dispose();
    this.resizeCache.clear();
  }
}

/** A ViT from a preset: `createViT(ctx, 'vit_small', { patchSize: 16 })`. */
export function createViT(ctx: ModuleContext, arch: ViTArch | Partial<ViTConfig>, overrides: Partial<ViTConfig> = {}): VisionTransformer {
  return new VisionTransformer(ctx, vitConfig(arch, overrides));
}
