/**
 * A backbone's forward pass for features: the normed CLS token, and when asked the normed patch
 * tokens and the last layer's CLS attention over the patches, from one pass; and DINO's
 * visualize_attention up to the maps. Browser-safe (eval/embed-node.ts reads files and batches
 * over them). Any family: DINO, DINOv2 (registers) and DINOv3 (storage tokens, RoPE).
 *
 * Outputs are those of the official forward_features (models/vit.ts `forwardFeatures`):
 *   features       x_norm_clstoken (B, D)            = `VisionTransformer.forward`
 *   patchTokens    x_norm_patchtokens (B, h·w, D)   row-major over the grid; registers / storage
 *                                                   tokens excluded
 *   attention      row 0 (the CLS query) of the last block's (B, heads, N, N) probabilities, the
 *                  columns of the patch tokens only (B, heads, h·w): the CLS and register /
 *                  storage columns are dropped, so a row no longer sums to 1
 */
import type { Engine } from '../engine/engine.js';
import type { Tensor } from '../engine/tensor.js';
import { cropBatchRaw, IMAGENET_NORM, uploadImages } from '../kernels/augment.js';
import type { RgbImage } from '../models/io/image.js';
import type { VisionTransformer } from '../models/vit.js';
import { evalCropParams } from '../train/data/transforms.js';

/** What {@link embedForward} computes besides the CLS features. */
export interface EmbedForwardOptions {
  /** The normed patch tokens (B, h·w, D). */
  patchTokens?: boolean;
  /** The last layer's CLS attention over the patches (B, heads, h·w). */
  attention?: boolean;
}

/** What {@link embedForward} returns (contiguous f32 tensors, whatever the model's dtype). */
export interface EmbedOutputs {
  /** x_norm_clstoken: (B, D). */
  features: Tensor;
  /** x_norm_patchtokens: (B, h·w, D). */
  patchTokens?: Tensor;
  /** (B, heads, h·w). */
  attention?: Tensor;
  /** The patch grid. */
  h: number;
  w: number;
}

/** One pass of the backbone (see the file header); `true` is `{ attention: true }`. */
export function embedForward(model: VisionTransformer, x: Tensor, opts: EmbedForwardOptions | boolean = {}): EmbedOutputs {
  const o = typeof opts === 'boolean' ? { attention: opts } : opts;
  const f = model.forwardFeatures(x, { attention: o.attention ? 'cls' : false });
  // f16 models (castParameters('f16')): the outputs are converted back to f32 here, once.
  const f32 = (t: Tensor) => (t.dtype === 'f32' ? t.contiguous() : t.cast('f32'));
  const out: EmbedOutputs = { features: f.xNormClsToken.dtype === 'f32' ? f.xNormClsToken : f32(f.xNormClsToken), h: f.h, w: f.w };
  if (o.patchTokens) out.patchTokens = f32(f.xNormPatchTokens);
  if (o.attention) {
    const [B, H, , N] = f.attention!.shape; // (B, H, 1, N)
    out.attention = f32(f.attention!.slice(3, model.numPrefixTokens, N)).reshape(B, H, N - model.numPrefixTokens);
  }
  return out;
}

/** What {@link computeAttentionMaps} returns. */
export interface AttentionMaps {
  /** The CLS attention of the last layer over the patches, [heads, h, w] row-major. */
  attention: Float32Array;
  heads: number;
  /** Patch grid rows and columns. */
  h: number;
  w: number;
  /** The model input (side × side crop) as 8-bit RGB, un-normalised. */
  image: RgbImage;
}

/**
 * DINO's visualize_attention.py up to the maps: resize the image to size × size (bicubic,
 * antialiased; DINO's Resize((480, 480)) is bilinear), keep the top-left crop whose side is a
 * multiple of the patch size, normalise (ImageNet), and take the last layer's CLS attention over
 * the patches of the one image.
 */
export async function computeAttentionMaps(engine: Engine, model: VisionTransformer, img: RgbImage, size: number): Promise<AttentionMaps> {
  const p = model.cfg.patchSize;
  const side = size - (size % p);
  if (side < p) throw new Error(`--image-size ${size} is smaller than the patch size ${p}`);
  return engine.noGrad(() =>
    engine.scope(async () => {
      const packed = uploadImages(engine, [img]);
      const params = { ...evalCropParams(0, img.width, img.height, size, 1), outW: size, outH: size, ox: 0, oy: 0 };
      const x = cropBatchRaw(engine, packed, [params], side, { norm: IMAGENET_NORM });
      packed.pixels.dispose();
      const { attention } = embedForward(model, x, { attention: true });
      const heads = model.cfg.numHeads;
      const attn = await attention!.toArray();
      const px = await x.toArray();
      const rgb = new Uint8Array(side * side * 3);
      for (let c = 0; c < 3; c++) {
        const { mean, std } = IMAGENET_NORM;
        for (let i = 0; i < side * side; i++) {
          rgb[i * 3 + c] = Math.max(0, Math.min(255, Math.round((px[c * side * side + i] * std[c] + mean[c]) * 255)));
        }
      }
      return { attention: attn, heads, h: side / p, w: side / p, image: { width: side, height: side, data: rgb } };
    }),
  );
}
