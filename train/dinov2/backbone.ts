/**
 * SEAM — the DINOv2 backbone the recipe trains, until models/vit.ts has it.
 *
 * The recipe needs from the backbone, per batch of crops x (n, 3, S, S) and an optional patch mask:
 *   tokens = norm(blocks(prepare_tokens_with_masks(x, masks)))
 *   cls     = tokens[:, 0]                 x_norm_clstoken    (n, D)
 *   patches = tokens[:, 1 + R:]            x_norm_patchtokens (n, hw, D), R = register tokens
 * where prepare_tokens_with_masks (dinov2/models/vision_transformer.py) replaces the masked patch
 * embeddings by `mask_token` (shape (1, D), zero-initialised) BEFORE the CLS token is prepended and
 * the position embedding added:
 *   x = patch_embed(x);  x = where(mask, mask_token, x) = x·(1 − m) + m·mask_token
 *   x = [cls; x] + pos;  registers inserted after the CLS token (no position embedding)
 *
 * The models helper is adding mask_token and `forward(x, {masks})` to models/vit.ts. Until that
 * lands, this subclass adds `mask_token` (the official name, so parameter groups and checkpoints
 * already see `backbone.mask_token`) and the masked forward, built from the ViT's public pieces
 * (patchEmbed, clsToken, interpolatePosEncoding, registerTokens, blocks, norm); LayerScale and
 * registers are the ViT's own (`layerScale`, `numRegisterTokens`). At the merge this file is
 * replaced by a call to the ViT's masked forward; nothing else in the recipe changes.
 *
 * Not yet DINOv2's: stochastic depth. The ViT's drop path is DINO's per-sample DropPath with the
 * linear rule; DINOv2 uses a uniform rate with the batch-subset form (models helper).
 */
import * as ops from '../../engine/ops.js';
import { fmt, ShapeError } from '../../engine/shape.js';
import type { Tensor } from '../../engine/tensor.js';
import type { ModuleContext } from '../../models/nn.js';
import { init } from '../../models/nn.js';
import { VisionTransformer, type ViTConfig } from '../../models/vit.js';

/** The backbone outputs the recipe reads. */
export interface BackboneFeatures {
  /** (n, D) CLS token after the final norm. */
  cls: Tensor;
  /** (n, hw, D) patch tokens after the final norm. */
  patches: Tensor;
}

export class DinoV2ViT extends VisionTransformer {
  maskToken: Tensor;

  constructor(ctx: ModuleContext, cfg: ViTConfig) {
    super(ctx, cfg);
    this.maskToken = this.param('mask_token', [1, cfg.embedDim], init.zeros());
  }

  protected override onReplace(name: string, t: Tensor): void {
    super.onReplace(name, t);
    if (name === 'mask_token') this.maskToken = t;
  }

  /**
   * CLS and patch tokens after the final norm. `masks`: (n, hw, 1) with 1 where the student sees
   * mask_token, or null (teacher, local crops).
   */
  features(x: Tensor, masks: Tensor | null = null): BackboneFeatures {
    const [n, , H, W] = x.shape;
    const p = this.cfg.patchSize;
    const h = Math.floor(H / p);
    const w = Math.floor(W / p);
    const D = this.cfg.embedDim;
    let patches = this.patchEmbed.forward(x); // (n, hw, D)
    if (masks) {
      if (masks.rank !== 3 || masks.shape[0] !== n || masks.shape[1] !== h * w || masks.shape[2] !== 1) {
        throw new ShapeError(`DINOv2 backbone: masks ${fmt(masks.shape)} are not (${n}, ${h * w}, 1)`);
      }
      patches = patches.mul(ops.rsub(masks, 1)).add(masks.mul(this.maskToken)); // where(m, mask_token, x)
    }
    const cls = ops.expand(this.clsToken, [n, 1, D]);
    let tokens = ops.concat([cls, patches], 1).add(this.interpolatePosEncoding(h, w)); // (n, 1 + hw, D)
    const R = this.registerTokens ? this.cfg.numRegisterTokens : 0;
    if (this.registerTokens) {
      const regs = ops.expand(this.registerTokens, [n, R, D]);
      tokens = ops.concat([tokens.slice(1, 0, 1), regs, tokens.slice(1, 1, tokens.shape[1])], 1); // (n, 1 + R + hw, D)
    }
    for (const b of this.blocks) tokens = b.forward(tokens).out;
    const normed = this.norm.forward(tokens);
    return {
      cls: normed.slice(1, 0, 1).reshape(n, D),
      patches: normed.slice(1, 1 + R, 1 + R + h * w), // (n, hw, D)
    };
  }
}

/** The student's mask tensor (n, hw, 1) from collate's bytes (1 = masked). */
export function maskTensor(x: Tensor, masks: Uint8Array, n: number, hw: number): Tensor {
  if (masks.length !== n * hw) throw new ShapeError(`DINOv2 masks: ${masks.length} bytes for ${n} crops of ${hw} patches`);
  return x.engine.tensor(Float32Array.from(masks), [n, hw, 1], { label: 'ibot-masks' });
}

export type { ViTConfig };
