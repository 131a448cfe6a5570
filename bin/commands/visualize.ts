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
import { statSync } from 'node:fs';
import { basename, extname, join } from 'node:path';
import { encodePng, type RgbImage } from '../../models/io/image.js';
import { describeArch } from '../../models/backbone.js';
import { listImageFiles, readImage } from '../../train/data/image-files-node.js';
import { computeVisuals } from '../../eval/visualize.js';
import { defineCommand, UsageError } from '../command.js';
import { int, num, orDerived, path } from '../options.js';
import { withBackbone } from '../resources.js';
import { BACKBONE_OPTIONS, backboneRequest } from './backbone-options.js';

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

const options = {
  ...BACKBONE_OPTIONS,
  input: path({ role: 'input', required: true, value: '<dir|file>', help: 'A folder of .jpg/.png images, or one image' }),
  out: path({ role: 'output', required: true, value: '<dir>', help: 'Output folder (created if needed)' }),
  'image-size': int({ min: 1, max: 4096, derived: 'the size the model was trained at', default: 224, value: '<px>', help: 'Side the images are resized to' }),
  alpha: num({ min: 0, max: 1, default: 0.6, value: '<a>', help: 'Weight of the heat map over the image' }),
  limit: int({ min: 1, max: 1e9, value: '<n>', help: 'Only the first n images' }),
};

/** `webdino visualize`: attention overlays and PCA pictures for a folder of images. */
export const visualize = defineCommand({
  name: 'visualize',
  summary: 'Per-head attention overlays and a PCA of patch features (RGB) for a folder of images',
  description:
    'Resizes each image of --input to S×S (S = --image-size rounded down to a multiple of the patch) and\n' +
    "writes into --out NAME-input.png, NAME-attn-head{k}.png (the last layer's CLS attention of head k\n" +
    'as a viridis heat map over the image, upsampled ×patch) and NAME-pca.png (the first three principal\n' +
    'components of the last layer\'s patch features as RGB; the PCA is fitted jointly on all images).',
  options,
  async run(v, { io, outputs }) {
    const request = backboneRequest(v);
    const files = inputFiles(v.input).slice(0, v.limit ?? Infinity);
    for (const f of files) outputs.protect(f, `the input image ${f}`);
    const images: RgbImage[] = [];
    for (const f of files) images.push(await readImage(f));
    return withBackbone(request, async ({ wd, model, spec }) => {
      const size = orDerived(v['image-size'], spec.imgSize, options['image-size']);
      if (size < spec.patchSize) throw new UsageError(`--image-size ${size} is smaller than the patch size ${spec.patchSize}`);
      io.out(`model: ${describeArch(spec)} from ${v.weights}`);
      const t0 = io.now();
      const r = await computeVisuals(wd, model, images, { size, alpha: v.alpha });
      const written: [string, Uint8Array][] = [];
      const png = (im: RgbImage) => encodePng(im.width, im.height, im.data, 3);
      const names = new Set<string>();
      r.images.forEach((im, i) => {
        let name = basename(files[i], extname(files[i]));
        // Two inputs with one stem (a.jpg, a.png): keep both.
        if (names.has(name)) name = basename(files[i]).replace(/\./g, '_');
        names.add(name);
        written.push([`${name}-input.png`, png(im.input)]);
        im.attention.forEach((a, k) => written.push([`${name}-attn-head${k}.png`, png(a)]));
        written.push([`${name}-pca.png`, png(im.pca)]);
      });
      for (const [name] of written) outputs.check(join(v.out, name));
      for (const [name, bytes] of written) await outputs.write(join(v.out, name), bytes);
      io.out(`${images.length} images at ${r.side}x${r.side} (${r.grid[0]}x${r.grid[1]} patches, ${r.heads} heads) in ${((io.now() - t0) / 1000).toFixed(1)} s`);
      io.out(`wrote ${written.length} files to ${v.out}: NAME-input.png, NAME-attn-head0..${r.heads - 1}.png, NAME-pca.png`);
      return 0;
    });
  },
});
