/**
 * `webdino embed`: CLS features (and optionally the last layer's CLS attention) of a folder of
 * images or a normalised NCHW .npy array, through a ViT backbone loaded from safetensors or a
 * PyTorch checkpoint (official DINO checkpoints included). See models/backbone.ts and eval/embed-node.ts for how the
 * weights and their architecture are read.
 *
 * Outputs are written only at the end, each atomically (temporary file + rename): a failure at
 * any point (bad weights, a hostile pickle, an unreadable image, strict-loading errors) exits 1
 * with one message and leaves no output file. An output that would replace an input (the weights,
 * an input image) is refused before anything runs.
 */
import { writeNpy } from '../../models/io/npy.js';
import { describeArch } from '../../models/backbone.js';
import { embedAll, openEmbedInput } from '../../eval/embed-node.js';
import { defineCommand, UsageError } from '../command.js';
import { flag, int, path } from '../options.js';
import { BatchProgress } from '../progress.js';
import { withBackbone } from '../resources.js';
import { BACKBONE_OPTIONS, backboneRequest } from './backbone-options.js';

/** `webdino embed`: CLS features (and last-layer CLS attention) of images or an NCHW array to .npy. */
export const embed = defineCommand({
  name: 'embed',
  summary: 'CLS features (and last-layer attention) of images with a ViT backbone, to .npy',
  description:
    "Runs a ViT backbone (DINO, DINOv2 or DINOv3, architecture read from the weights) over --input and\n" +
    'writes the normed CLS features [N, D] as float32 .npy to --out, with --patch-out the normed patch\n' +
    "tokens [N, h·w, D], and with --attn the last layer's CLS attention over the patches [N, heads,\n" +
    'patches]. Input: a folder\n' +
    'of .jpg/.jpeg/.png files (not recursive, sorted by name; DINO\'s eval transform: resize to\n' +
    'round(S·256/224), centre crop S = --image-size, ImageNet normalisation), one image file, or a\n' +
    'float .npy [N, 3, H, W] used as is (already normalised). Weights: safetensors (our\n' +
    'teacher_backbone.safetensors records its architecture) or a PyTorch checkpoint (DINO\'s\n' +
    "official ones: the teacher of a full checkpoint, 'module.'/'backbone.' stripped, head ignored),\n" +
    'loaded strictly. An image that cannot be decoded stops the run with its path, unless\n' +
    '--skip-bad (then it is skipped, reported and counted, and the rows are the readable images in\n' +
    'order). Outputs are written only when everything succeeded, atomically, and never over an input.',
  options: {
    ...BACKBONE_OPTIONS,
    input: path({ role: 'input', required: true, value: '<dir|file>', help: 'Folder of images, an image, or an NCHW float .npy' }),
    out: path({ role: 'output', required: true, value: '<file.npy>', help: 'Output features [N, D]' }),
    attn: path({ role: 'output', value: '<file.npy>', help: "Also write the last layer's CLS attention [N, heads, patches]" }),
    'patch-out': path({ role: 'output', value: '<file.npy>', help: 'Also write the normed patch tokens [N, h·w, D] (x_norm_patchtokens; registers and storage tokens excluded)' }),
    'batch-size': int({ min: 1, max: 4096, default: 16, value: '<n>', help: 'Images per forward pass' }),
    'image-size': int({ min: 1, max: 4096, default: 224, value: '<px>', help: 'Centre-crop side for image inputs' }),
    'skip-bad': flag({ help: 'Skip (and count) images that fail to decode instead of stopping' }),
  },
  async run(v, { io, outputs }) {
    const request = backboneRequest(v);
    const outs = [v.out, v.attn, v['patch-out']].filter((o): o is string => o !== undefined);
    if (new Set(outs).size !== outs.length) throw new UsageError('--out, --attn and --patch-out must be different files');
    const batchSize = v['batch-size'];
    const crop = v['image-size'];
    const input = await openEmbedInput(v.input);
    if (input.kind === 'images') for (const f of input.files) outputs.protect(f, `the input image ${f}`);
    for (const o of outs) outputs.check(o);

    const progress = new BatchProgress(io, 'embed');
    try {
      return await withBackbone(request, async ({ wd, model, spec, weights }) => {
        const total = input.kind === 'images' ? input.files.length : input.shape[0];
        io.out(`adapter: ${wd.device.adapterName()} (${wd.device.variants} kernels)`);
        io.out(`model: ${describeArch(spec)} from ${v.weights} (${weights.format}${weights.droppedHead ? `, ${weights.droppedHead} head entries ignored` : ''})`);
        io.out(`input: ${input.kind === 'images' ? `${total} image file${total === 1 ? '' : 's'}, ${crop}x${crop} crops` : `array [${input.shape.join(', ')}]`}, batch ${batchSize}`);
        const r = await embedAll(wd, model, input, {
          batchSize,
          crop,
          attention: v.attn !== undefined,
          patchTokens: v['patch-out'] !== undefined,
          skipBad: v['skip-bad'],
          onWarning: (m) => {
            progress.done();
            io.err(`warning: ${m}`);
          },
          onProgress: (done, n) => progress.update(done, n),
        });
        progress.done();
        const n = r.featuresShape[0];
        await outputs.write(v.out, writeNpy({ shape: r.featuresShape, data: r.features }));
        if (v.attn !== undefined) await outputs.write(v.attn, writeNpy({ shape: r.attentionShape!, data: r.attention! }));
        if (v['patch-out'] !== undefined) await outputs.write(v['patch-out'], writeNpy({ shape: r.patchTokensShape!, data: r.patchTokens! }));
        if (r.skipped.length) io.err(`skipped ${r.skipped.length} image${r.skipped.length === 1 ? '' : 's'} that could not be decoded`);
        io.out(`features: ${v.out} [${r.featuresShape.join(', ')}]`);
        if (v.attn !== undefined) io.out(`attention: ${v.attn} [${r.attentionShape!.join(', ')}]`);
        if (v['patch-out'] !== undefined) io.out(`patch tokens: ${v['patch-out']} [${r.patchTokensShape!.join(', ')}]`);
        io.out(`${n} images in ${r.seconds.toFixed(2)} s: ${(n / r.seconds).toFixed(2)} images/s`);
        return 0;
      });
    } finally {
      progress.done();
    }
  },
});
