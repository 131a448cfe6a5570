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
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { init } from '../../index.js';
import { encodePng } from '../../models/io/image.js';
import { writeFileAtomic } from '../../models/io/node-files.js';
import { writeNpy } from '../../models/io/npy.js';
import { attentionMasks, heatmapRgb, maskedMass, maskRgb, upsampleNearest } from '../../eval/attention-maps.js';
import { describeArch } from '../../models/backbone.js';
import { loadBackbone } from '../../models/backbone-node.js';
import { readImage } from '../../train/data/image-files-node.js';
import { computeAttentionMaps } from '../../eval/embed.js';
import { type Command, intOption, numOption, strOption, UsageError } from '../command.js';
import { archRequest, WEIGHT_OPTIONS, weightsOption } from './embed.js';

/** Both inference commands from one module (bin/cli.ts imports them together). */
export { embed } from './embed.js';

/** `webdino attention`: per-head attention heat maps and threshold masks of one image (visualize_attention.py). */
export const attention: Command = {
  name: 'attention',
  summary: "Last-layer CLS attention maps of one image per head, as DINO's visualize_attention.py",
  description:
    'Resizes --image to S×S (S = --image-size, default 224; DINO uses 480), keeps the top-left crop\n' +
    "whose side is a multiple of the patch size, and writes into --out the last layer's CLS attention\n" +
    'of each head: attn-head{i}.png (heat map), mask-head{i}.png (the patches holding --threshold of\n' +
    "the head's attention mass, DINO's th_attn), both upsampled by the patch size; img.png (the\n" +
    'input crop) and attention.npy ([heads, h, w]).',
  options: {
    ...WEIGHT_OPTIONS,
    image: { type: 'string', value: '<file>', description: 'A .jpg or .png image (required)' },
    out: { type: 'string', value: '<dir>', description: 'Output folder (required; created if needed)' },
    'image-size': { type: 'string', value: '<px>', description: 'Side the image is resized to (default: 224)' },
    threshold: { type: 'string', value: '<t>', description: 'Fraction of attention mass the masks keep (default: 0.6)' },
  },
  async run(v, io) {
    const weightsPath = weightsOption(v);
    const req = archRequest(v);
    const imagePath = strOption(v.image);
    if (!imagePath) throw new UsageError('--image is required');
    const outDir = strOption(v.out);
    if (!outDir) throw new UsageError('--out is required');
    const size = intOption('image-size', v['image-size'], 1, 4096) ?? 224;
    const threshold = numOption('threshold', v.threshold, 0, 1) ?? 0.6;

    const image = await readImage(imagePath);
    const wd = await init();
    try {
      const { model, spec } = await loadBackbone(wd, weightsPath, { ...req, checkpointKey: strOption(v['checkpoint-key']) });
      try {
        io.out(`model: ${describeArch(spec)} from ${weightsPath}`);
        const t0 = performance.now();
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
        mkdirSync(outDir, { recursive: true });
        for (const [name, bytes] of files) await writeFileAtomic(join(outDir, name), bytes);
        io.out(`input ${image.width}x${image.height} → ${maps.image.width}x${maps.image.height} crop, ${h}x${w} patches, ${heads} heads (${((performance.now() - t0) / 1000).toFixed(2)} s)`);
        io.out(`mask mass kept (threshold ${threshold}): ${Array.from(mass, (m) => m.toFixed(3)).join(', ')}`);
        io.out(`wrote ${files.length} files to ${outDir}: img.png, attn-head0..${heads - 1}.png, mask-head0..${heads - 1}.png, attention.npy`);
        return 0;
      } finally {
        model.dispose();
      }
    } finally {
      wd.destroy();
    }
  },
};
