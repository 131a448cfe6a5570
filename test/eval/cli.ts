/**
 * Shared by the evaluation tests: run `webdino` in-process through bin/cli.ts's `main`
 * (test/bin/harness.ts), and a tiny
 * random ViT (dim 32, depth 2, 2 heads, patch 8, 32 px) saved as our own export (safetensors with
 * webdino_arch metadata), so the commands load it as they load a trained teacher backbone.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Rng } from '../../index.js';
import { createViT, type VisionTransformer } from '../../models/vit.js';
import { writeSafetensors } from '../../models/io/safetensors.js';
import { getEngine } from '../helpers.js';

export { webdino } from '../bin/harness.js';

/** The tiny test architecture. */
export const TINY = { embedDim: 32, depth: 2, numHeads: 2, patchSize: 8, imgSize: 32 } as const;

/** Builds the tiny ViT (eval mode) with seed `seed` and writes it to DIR/vit.safetensors. */
export async function tinyBackbone(dir: string, seed = 11): Promise<{ model: VisionTransformer; path: string }> {
  const wd = await getEngine();
  const model = createViT({ engine: wd, rng: new Rng(seed) }, TINY);
  model.eval();
  const meta = JSON.stringify({ arch: 'custom', embed_dim: 32, depth: 2, num_heads: 2, patch_size: 8, img_size: 32 });
  const path = join(dir, 'vit.safetensors');
  writeFileSync(path, writeSafetensors(await model.stateDict(), { webdino_arch: meta }));
  return { model, path };
}
