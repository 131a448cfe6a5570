/**
 * A backbone's forward pass for features: CLS features and, when asked, the last layer's CLS
 * attention over the patch tokens, from one pass; and DINO's visualize_attention up to the maps.
 * Browser-safe (eval/embed-node.ts reads files and batches over them).
 *
 * Features are exactly `VisionTransformer.forward` (final norm, CLS row). The attention is row 0
 * (the CLS query) of the last block's [B, heads, N, N] probabilities, columns of the patch tokens
 * (the CLS and register columns are dropped).
 */
import type { Engine } from '../engine/engine.js';
import type { Tensor } from '../engine/tensor.js';
import { cropBatchRaw, IMAGENET_NORM, uploadImages } from '../kernels/augment.js';
import type { RgbImage } from '../models/io/image.js';
import type { VisionTransformer } from '../models/vit.js';
import { evalCropParams } from '../train/data/transforms.js';

/**
 * One pass of the backbone: CLS features [B, D] (= `model.forward(x)`) and, when asked, the last
 * layer's CLS attention over the patch tokens [B, heads, patches] (contiguous).
 */
export function embedForward(model: VisionTransformer, x: Tensor, withAttention: boolean): { features: Tensor; attention?: Tensor } {
  let t = model.prepareTokens(x);
  const L = model.blocks.length;
  for (let i = 0; i < L - 1; i++) t = model.blocks[i].forward(t).out;
  const last = model.blocks[L - 1].forward(t, withAttention);
  const [B, N, D] = last.out.shape;
  const features = model.norm.forward(last.out).slice(1, 0, 1).reshape(B, D);
  if (!withAttention) return { features };
  const first = 1 + model.cfg.numRegisterTokens; // first patch token
  const attention = last.probs!.slice(2, 0, 1).slice(3, first, N).contiguous().reshape(B, model.cfg.numHeads, N - first);
  return { features, attention };
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
      const { attention } = embedForward(model, x, true);
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
