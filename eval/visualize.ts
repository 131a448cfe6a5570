/**
 * The pictures of `webdino visualize` and of the training report, for a list of images and a ViT:
 * the model input, each head's last-layer CLS attention as a viridis heat map over the image, and
 * the first three principal components of the patch features as RGB (the PCA is fitted jointly on
 * every patch of every image given, eval/pca.ts). Browser-safe.
 *
 * Each image is resized whole to side×side (side a multiple of the patch; eval/segment.ts
 * `squareInput`); maps are drawn on the h×w patch grid and upsampled ×patch by nearest neighbour,
 * as visualize_attention.py. Patch features are the last block's tokens after the final norm
 * (`get_intermediate_layers(n=1)`), without the CLS (and register) tokens.
 */
import type { Engine } from '../engine/engine.js';
import { IMAGENET_NORM } from '../kernels/augment.js';
import type { RgbImage } from '../models/io/image.js';
import type { VisionTransformer } from '../models/vit.js';
import { heatmapRgb, overlayRgb, upsampleNearest } from './attention-maps.js';
import { pcaRgb } from './pca.js';
import { attentionInputSide, clsAttention, squareInput } from './segment.js';

/** The pictures of one image, each side×side RGB. */
export interface ImageVisuals {
  /** What the model saw (resized, de-normalised). */
  input: RgbImage;
  /** Per head: the attention heat map blended over the input. */
  attention: RgbImage[];
  /** The PCA of the patch features as RGB. */
  pca: RgbImage;
}

/** Options of {@link computeVisuals}. */
export interface VisualsOptions {
  /** Requested input side (rounded down to a multiple of the patch). */
  size: number;
  /** Weight of the heat map in the overlay (default 0.6). */
  alpha?: number;
  /** Images per forward pass (default 16). */
  batchSize?: number;
}

/** All pictures of `images` (see the file header). The model should be in eval mode. */
export async function computeVisuals(
  engine: Engine,
  model: VisionTransformer,
  images: readonly RgbImage[],
  opts: VisualsOptions,
): Promise<{ side: number; grid: [number, number]; heads: number; images: ImageVisuals[] }> {
  if (!images.length) throw new RangeError('computeVisuals: no images');
  const p = model.cfg.patchSize;
  const side = attentionInputSide(opts.size, p);
  const h = side / p;
  const n = h * h;
  const D = model.cfg.embedDim;
  const heads = model.cfg.numHeads;
  const bs = opts.batchSize ?? 16;
  const first = model.numPrefixTokens; // CLS and registers / storage tokens come first
  const inputs: RgbImage[] = [];
  const attn: Float32Array[] = [];
  const tokens = new Float32Array(images.length * n * D);
  for (let s = 0; s < images.length; s += bs) {
    const batch = images.slice(s, s + bs);
    const x = squareInput(engine, batch, side);
    try {
      const a = await clsAttention(model, x);
      const per = heads * n;
      for (let b = 0; b < batch.length; b++) attn.push(a.attention.slice(b * per, (b + 1) * per));
      const [px, tok] = await engine.noGrad(() =>
        engine.scope(() => {
          const [t] = model.intermediateLayers(x, 1); // (B, N, D), after the final norm
          return Promise.all([x.toArray(), t.slice(1, first, t.shape[1]).contiguous().toArray()]);
        }),
      );
      tokens.set(tok, s * n * D);
      for (let b = 0; b < batch.length; b++) inputs.push(denormalise(px.subarray(b * 3 * side * side, (b + 1) * 3 * side * side), side));
    } finally {
      x.dispose();
    }
  }
  const pca = pcaRgb(tokens, D);
  const out = inputs.map((input, i): ImageVisuals => ({
    input,
    attention: Array.from({ length: heads }, (_, k) => {
      const heat = upsampleNearest(heatmapRgb(attn[i].subarray(k * n, (k + 1) * n), h, h), h, h, 3, p);
      return { width: side, height: side, data: overlayRgb(input.data, heat, opts.alpha ?? 0.6) };
    }),
    pca: { width: side, height: side, data: upsampleNearest(pca.slice(i * n * 3, (i + 1) * n * 3), h, h, 3, p) },
  }));
  return { side, grid: [h, h], heads, images: out };
}

/** A normalised [3, S, S] image back to 8-bit RGB. */
function denormalise(px: Float32Array, S: number): RgbImage {
  const { mean, std } = IMAGENET_NORM;
  const rgb = new Uint8Array(S * S * 3);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < S * S; i++) rgb[i * 3 + c] = Math.max(0, Math.min(255, Math.round((px[c * S * S + i] * std[c] + mean[c]) * 255)));
  }
  return { width: S, height: S, data: rgb };
}
