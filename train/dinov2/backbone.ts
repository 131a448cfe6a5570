/**
 * The DINOv2 backbone the recipe trains: models/vit.ts's VisionTransformer with a `mask_token`
 * (ViTConfig.maskToken), LayerScale and registers, read through its masked forward
 * (`forwardFeatures(x, { masks })`, the official prepare_tokens_with_masks: masked patch
 * embeddings replaced by mask_token before the position embedding).
 *
 * The recipe reads, per batch of crops x (n, 3, S, S) and an optional patch mask:
 *   cls     = x_norm_clstoken    (n, D)
 *   patches = x_norm_patchtokens (n, hw, D), registers excluded
 */
import { fmt, ShapeError } from '../../engine/shape.js';
import type { Tensor } from '../../engine/tensor.js';
import type { ModuleContext } from '../../models/nn.js';
import { VisionTransformer, type ViTConfig } from '../../models/vit.js';

/** The backbone outputs the recipe reads. */
export interface BackboneFeatures {
  /** (n, D) CLS token after the final norm. */
  cls: Tensor;
  /** (n, hw, D) patch tokens after the final norm. */
  patches: Tensor;
}

/** A ViT with mask_token, and the two outputs the recipe reads. */
export class DinoV2ViT extends VisionTransformer {
  constructor(ctx: ModuleContext, cfg: ViTConfig) {
    super(ctx, { ...cfg, maskToken: true });
  }

  /**
   * CLS and patch tokens after the final norm. `masks`: (n, hw, 1) with 1 where the student sees
   * mask_token, or null (teacher, local crops).
   */
  features(x: Tensor, masks: Tensor | null = null): BackboneFeatures {
    const f = this.forwardFeatures(x, masks ? { masks } : {});
    const hw = f.h * f.w;
    if (masks && (masks.rank !== 3 || masks.shape[0] !== x.shape[0] || masks.shape[1] !== hw || masks.shape[2] !== 1)) {
      throw new ShapeError(`DINOv2 backbone: masks ${fmt(masks.shape)} are not (${x.shape[0]}, ${hw}, 1)`);
    }
    return { cls: f.xNormClsToken, patches: f.xNormPatchTokens };
  }
}

/** The student's mask tensor (n, hw, 1) from collate's bytes (1 = masked). */
export function maskTensor(x: Tensor, masks: Uint8Array, n: number, hw: number): Tensor {
  if (masks.length !== n * hw) throw new ShapeError(`DINOv2 masks: ${masks.length} bytes for ${n} crops of ${hw} patches`);
  return x.engine.tensor(Float32Array.from(masks), [n, hw, 1], { label: 'ibot-masks' });
}

export type { ViTConfig };
