/**
 * `webdino attention`: DINO's visualize_attention.py. The last layer's CLS attention of each head
 * over the patch grid of one image, as heat maps and as the masks that keep `--threshold` (0.6) of
 * each head's attention mass (eval/attention-maps.ts, DINO's `th_attn`), nearest-upsampled by the
 * patch size to the resolution of the model input.
 *
 * Writes into --out: img.png (the model input: resized, cropped to a multiple of the patch),
 * attn-head{i}.png (viridis, min-max per head), mask-head{i}.png (white = kept), and
 * attention.npy ([heads, h, w] float32, the values the maps are drawn from). Every file is
 * written atomically after everything has been computed.
 */
import { join } from 'node:path';
import { encodePng } from '../../models/io/image.js';
import { writeNpy } from '../../models/io/npy.js';
import { attentionMasks, heatmapRgb, maskedMass, maskRgb, upsampleNearest } from '../../eval/attention-maps.js';
import { describeArch } from '../../models/backbone.js';
import { readImage } from '../../train/data/image-files-node.js';
import { computeAttentionMaps } from '../../eval/embed.js';
import { defineCommand } from '../command.js';
import { int, num, path } from '../options.js';
import { withBackbone } from '../resources.js';
import { BACKBONE_OPTIONS, backboneRequest } from './backbone-options.js';

/** `webdino attention`: per-head attention heat maps and threshold masks of one image (visualize_attention.py). */
export const attention = defineCommand({
  name: 'attention',
  summary: "Last-layer CLS attention maps of one image per head, as DINO's visualize_attention.py",
  description:
    'Resizes --image to S×S (S = --image-size; DINO uses 480), keeps the top-left crop whose side is a\n' +
    "multiple of the patch size, and writes into --out the last layer's CLS attention of each head:\n" +
    'attn-head{i}.png (heat map), mask-head{i}.png (the patches holding --threshold of the head\'s\n' +
    "attention mass, DINO's th_attn), both upsampled by the patch size; img.png (the input crop) and\n" +
    'attention.npy ([heads, h, w]).',
  options: {
    ...BACKBONE_OPTIONS,
    image: path({ role: 'input', required: true, value: '<file>', help: 'A .jpg or .png image' }),
    out: path({ role: 'output', required: true, value: '<dir>', help: 'Output folder (created if needed)' }),
    'image-size': int({ min: 1, max: 4096, default: 224, value: '<px>', help: 'Side the image is resized to' }),
    threshold: num({ min: 0, max: 1, default: 0.6, value: '<t>', help: 'Fraction of attention mass the masks keep' }),
  },
  async run(v, { io, outputs }) {
    const request = backboneRequest(v);
    const size = v['image-size'];
    const threshold = v.threshold;
    const image = await readImage(v.image);
    return withBackbone(request, async ({ wd, model, spec }) => {
      io.out(`model: ${describeArch(spec)} from ${v.weights}`);
      const t0 = io.now();
      const maps = await computeAttentionMaps(wd, model, image, size);
      const { heads, h, w } = maps;
      const p = spec.patchSize;
      const masks = attentionMasks(maps.attention, heads, threshold);
      const mass = maskedMass(maps.attention, masks, heads);
      // Encode everything first, then write.
      const files: [string, Uint8Array][] = [['img.png', encodePng(maps.image.width, maps.image.height, maps.image.data, 3)]];
      for (let i = 0; i < heads; i++) {
        const a = maps.attention.subarray(i * h * w, (i + 1) * h * w);
        files.push([`attn-head${i}.png`, encodePng(w * p, h * p, upsampleNearest(heatmapRgb(a, h, w), h, w, 3, p), 3)]);
        files.push([`mask-head${i}.png`, encodePng(w * p, h * p, upsampleNearest(maskRgb(masks.subarray(i * h * w, (i + 1) * h * w)), h, w, 3, p), 3)]);
      }
      files.push(['attention.npy', writeNpy({ shape: [heads, h, w], data: maps.attention })]);
      for (const [name] of files) outputs.check(join(v.out, name));
      for (const [name, bytes] of files) await outputs.write(join(v.out, name), bytes);
      io.out(`input ${image.width}x${image.height} → ${maps.image.width}x${maps.image.height} crop, ${h}x${w} patches, ${heads} heads (${((io.now() - t0) / 1000).toFixed(2)} s)`);
      io.out(`mask mass kept (threshold ${threshold}): ${Array.from(mass, (m) => m.toFixed(3)).join(', ')}`);
      io.out(`wrote ${files.length} files to ${v.out}: img.png, attn-head0..${heads - 1}.png, mask-head0..${heads - 1}.png, attention.npy`);
      return 0;
    });
  },
});
