/**
 * `webdino visualize`: for a folder of images (or one image), per-head attention maps overlaid on
 * each image and a PCA of the patch features as RGB (eval/visualize.ts). The PCA is fitted
 * jointly on every patch of every image, so colours mean the same thing across the folder.
 *
 * Writes into --out, for an image NAME.ext: NAME-input.png (what the model saw: the whole image
 * resized to S×S), NAME-attn-head{k}.png (the last layer's CLS attention of head k, viridis,
 * blended over the input) and NAME-pca.png. Everything is computed first and then written, each
 * file atomically.
 */
import { mkdirSync, statSync } from 'node:fs';
import { basename, extname, join } from 'node:path';
import { init } from '../../index.js';
import { encodePng, type RgbImage } from '../../models/io/image.js';
import { writeFileAtomic } from '../../models/io/node-files.js';
import { describeArch } from '../../models/backbone.js';
import { loadBackbone } from '../../models/backbone-node.js';
import { listImageFiles, readImage } from '../../train/data/image-files-node.js';
import { computeVisuals } from '../../eval/visualize.js';
import { type Command, intOption, numOption, strOption, UsageError } from '../command.js';
import { archRequest, WEIGHT_OPTIONS, weightsOption } from './embed.js';

/** The image files of --input: a folder's JPEG/PNG files (sorted) or one image file. */
function inputFiles(path: string): string[] {
  let isDir: boolean;
  try {
    isDir = statSync(path).isDirectory();
  } catch {
    throw new Error(`input ${path}: no such file or folder`);
  }
  const files = isDir ? listImageFiles(path) : [path];
  if (!files.length) throw new Error(`input ${path}: no .jpg, .jpeg or .png files in this folder`);
  return files;
}

/** `webdino visualize`: attention overlays and PCA pictures for a folder of images. */
export const visualize: Command = {
  name: 'visualize',
  summary: 'Per-head attention overlays and a PCA of patch features (RGB) for a folder of images',
  description:
    'Resizes each image of --input to S×S (S = --image-size rounded down to a multiple of the patch) and\n' +
    "writes into --out NAME-input.png, NAME-attn-head{k}.png (the last layer's CLS attention of head k\n" +
    'as a viridis heat map over the image, upsampled ×patch) and NAME-pca.png (the first three principal\n' +
    'components of the last layer\'s patch features as RGB; the PCA is fitted jointly on all images).',
  options: {
    ...WEIGHT_OPTIONS,
    input: { type: 'string', value: '<dir|file>', description: 'A folder of .jpg/.png images, or one image (required)' },
    out: { type: 'string', value: '<dir>', description: 'Output folder (required; created if needed)' },
    'image-size': { type: 'string', value: '<px>', description: 'Side the images are resized to (default: the size the model was trained at, else 224)' },
    alpha: { type: 'string', value: '<a>', description: 'Weight of the heat map over the image (default: 0.6)' },
    limit: { type: 'string', value: '<n>', description: 'Only the first n images' },
  },
  async run(v, io) {
    const weights = weightsOption(v);
    const req = archRequest(v);
    const input = strOption(v.input);
    if (!input) throw new UsageError('--input is required');
    const outDir = strOption(v.out);
    if (!outDir) throw new UsageError('--out is required');
    const alpha = numOption('alpha', v.alpha, 0, 1) ?? 0.6;
    const files = inputFiles(input).slice(0, intOption('limit', v.limit, 1, 1e9) ?? Infinity);
    const images: RgbImage[] = [];
    for (const f of files) images.push(await readImage(f));
    const wd = await init();
    try {
      const { model, spec } = await loadBackbone(wd, weights, { ...req, checkpointKey: strOption(v['checkpoint-key']) });
      try {
        const size = intOption('image-size', v['image-size'], 1, 4096) ?? spec.imgSize ?? 224;
        if (size < spec.patchSize) throw new UsageError(`--image-size ${size} is smaller than the patch size ${spec.patchSize}`);
        io.out(`model: ${describeArch(spec)} from ${weights}`);
        const t0 = performance.now();
        const r = await computeVisuals(wd, model, images, { size, alpha });
        const outputs: [string, Uint8Array][] = [];
        const png = (im: RgbImage) => encodePng(im.width, im.height, im.data, 3);
        const names = new Set<string>();
        r.images.forEach((im, i) => {
          let name = basename(files[i], extname(files[i]));
          // Two inputs with one stem (a.jpg, a.png): keep both.
          if (names.has(name)) name = basename(files[i]).replace(/\./g, '_');
          names.add(name);
          outputs.push([`${name}-input.png`, png(im.input)]);
          im.attention.forEach((a, k) => outputs.push([`${name}-attn-head${k}.png`, png(a)]));
          outputs.push([`${name}-pca.png`, png(im.pca)]);
        });
        mkdirSync(outDir, { recursive: true });
        for (const [name, bytes] of outputs) await writeFileAtomic(join(outDir, name), bytes);
        io.out(`${images.length} images at ${r.side}x${r.side} (${r.grid[0]}x${r.grid[1]} patches, ${r.heads} heads) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
        io.out(`wrote ${outputs.length} files to ${outDir}: NAME-input.png, NAME-attn-head0..${r.heads - 1}.png, NAME-pca.png`);
        return 0;
      } finally {
        model.dispose();
      }
    } finally {
      wd.destroy();
    }
  },
};
