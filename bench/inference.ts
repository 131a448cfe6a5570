/**
 * Backbone inference as benchmark cases (`webdino bench --only inference`): one forward of a
 * released architecture on a batch of images, with random weights (the models' own init; the
 * time does not depend on the values), in eval mode and without the autograd tape.
 *
 * Rows (full sizes): batch 8 at 224 px, the reference row first
 *   DINO ViT-S/16           DINO v1's vit_small: 197 tokens, learned pos_embed of the 14×14 grid.
 *   DINOv2 ViT-S/14         the `dinov2_vits14` preset: LayerScale, pos_embed of the 37×37 grid
 *                           (518 px) bicubically resized to 16×16 (the resize matrix is built once
 *                           per grid, in the warm-up run); 257 tokens.
 *   DINOv3 ViT-S/16         the `dinov3_vits16` preset: 4 storage tokens, RoPE on the patch
 *                           tokens (tables cached per grid), masked key bias, LN eps 1e-5;
 *                           201 tokens.
 * Quick sizes: the same three families at width 32, depth 2, batch 2, 2×2 patch grids.
 *
 * What a run computes: `forwardFeatures`, the official forward_features (normed CLS and patch
 * tokens from one pass: what `webdino embed --patch-out` writes), outputs left on the device.
 * Timing: wall clock (recording + submit + GPU until the queue is idle), the time a user waits
 * for a batch; images/s = batch / that time. Comparable with ONNX Runtime's session.run
 * (bench/compare/ort/).
 *
 * Flop model (multiply-add = 2; softmax, norms, GELU and RoPE not counted), per image at N
 * tokens, width D, depth L, FFN hidden H, h·w patches of p×p:
 *   patch embedding 2·hw·3p²·D; per block: qkv 6·N·D², proj 2·N·D², attention 4·N²·D,
 *   MLP 4·N·D·H (two matrices), SwiGLU 6·N·D·H (three).
 */
import { Rng } from '../engine/random.js';
import { dinoViTConfig, ffnHiddenOf, VisionTransformer, type ViTConfig, vitConfig } from '../models/vit.js';
import type { BenchCase } from './suite.js';

/** Flop of one image of `size`² px through a ViT of config `cfg` (forward, see the header). */
export function vitForwardFlops(cfg: ViTConfig, size: number): number {
  const D = cfg.embedDim;
  const hw = Math.floor(size / cfg.patchSize) ** 2;
  const N = 1 + cfg.numRegisterTokens + hw;
  const H = ffnHiddenOf(cfg);
  const ffn = (cfg.ffn === 'mlp' ? 4 : 6) * N * D * H;
  const block = 8 * N * D * D + 4 * N * N * D + ffn;
  return 2 * hw * 3 * cfg.patchSize ** 2 * D + cfg.depth * block;
}

/** One inference row: a label, the model's config, the input batch and size. */
interface InferenceConfig {
  label: string;
  cfg: ViTConfig;
  batch: number;
  size: number;
}

/** Width 32, depth 2, 2 heads, the FFN hidden width by the rule (0; the presets fix 1536): the quick rows' shrink of each family. */
const TINY = { embedDim: 32, depth: 2, numHeads: 2, ffnHidden: 0 } as const;

/** The suite's inference configurations (see the header). */
export function inferenceConfigs(quick: boolean): InferenceConfig[] {
  if (quick) {
    return [
      { label: 'DINO tiny p16, 32 px, B2', cfg: vitConfig('vit_small', { ...TINY, imgSize: 32 }), batch: 2, size: 32 },
      { label: 'DINOv2 tiny p14, 28 px, B2', cfg: dinoViTConfig('dinov2_vits14', TINY), batch: 2, size: 28 },
      { label: 'DINOv3 tiny p16, 32 px, B2', cfg: dinoViTConfig('dinov3_vits16', TINY), batch: 2, size: 32 },
    ];
  }
  return [
    { label: 'DINO ViT-S/16, 224 px, B8', cfg: vitConfig('vit_small'), batch: 8, size: 224 },
    { label: 'DINOv2 ViT-S/14 (dinov2_vits14), 224 px, B8', cfg: dinoViTConfig('dinov2_vits14'), batch: 8, size: 224 },
    { label: 'DINOv3 ViT-S/16 (dinov3_vits16), 224 px, B8', cfg: dinoViTConfig('dinov3_vits16'), batch: 8, size: 224 },
  ];
}

/** The forward case of one configuration. */
export function inferenceCase(c: InferenceConfig): BenchCase {
  return {
    kernel: 'inference',
    pass: 'fwd',
    shape: c.label,
    flops: c.batch * vitForwardFlops(c.cfg, c.size),
    images: c.batch,
    timing: 'wall',
    setup(wd) {
      const model = new VisionTransformer({ engine: wd, rng: new Rng(0) }, c.cfg);
      model.eval();
      const x = wd.randn([c.batch, 3, c.size, c.size], { seed: 14 });
      return {
        run: () =>
          wd.noGrad(() => {
            const f = model.forwardFeatures(x); // outputs freed by the runner after each run
            return [f.xNormClsToken, f.xNormPatchTokens];
          }),
        dispose: () => model.dispose(),
      };
    },
  };
}
