/**
 * `webdino embed`: CLS features (and optionally the last layer's CLS attention) of a folder of
 * images or a normalised NCHW .npy array, through a ViT backbone loaded from safetensors or a
 * PyTorch checkpoint (official DINO checkpoints included). See models/backbone.ts and eval/embed-node.ts for how the
 * weights and their architecture are read.
 *
 * Outputs are written only at the end, each atomically (temporary file + rename): a failure at
 * any point (bad weights, a hostile pickle, an unreadable image, strict-loading errors) exits 1
 * with one message and leaves no output file.
 */
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import cliProgress from 'cli-progress';
import { init } from '../../index.js';
import { writeFileAtomic } from '../../models/io/node-files.js';
import { writeNpy } from '../../models/io/npy.js';
import { type ArchRequest, describeArch } from '../../models/backbone.js';
import { loadBackbone } from '../../models/backbone-node.js';
import { embedAll, openEmbedInput } from '../../eval/embed-node.js';
import { type Command, type Io, intOption, type OptionSpec, strOption, UsageError, type Values } from '../command.js';

const ARCHS = ['vit_tiny', 'vit_small', 'vit_base', 'custom'] as const;

/** The options that pick the weights and the architecture (shared with `webdino attention`). */
export const WEIGHT_OPTIONS: Record<string, OptionSpec> = {
  weights: { type: 'string', value: '<file>', description: 'Backbone weights: .safetensors, or a PyTorch .pth/.pt checkpoint (required)' },
  'checkpoint-key': { type: 'string', value: '<key>', description: "Entry of a full training checkpoint to use (default: teacher)" },
  arch: {
    type: 'string',
    value: '<arch>',
    description: `${ARCHS.join(', ')} (default: what the weights record, else inferred from their shapes)`,
  },
  'patch-size': { type: 'string', value: '<n>', description: 'Patch size (default: recorded or inferred, else 16)' },
  'embed-dim': { type: 'string', value: '<n>', description: 'Width of a custom ViT' },
  depth: { type: 'string', value: '<n>', description: 'Blocks of a custom ViT' },
  heads: { type: 'string', value: '<n>', description: 'Attention heads of a custom ViT' },
};

/** The architecture the command line asks for; usage errors for inconsistent options. */
export function archRequest(v: Values): ArchRequest {
  const arch = strOption(v.arch);
  if (arch !== undefined && !(ARCHS as readonly string[]).includes(arch)) throw new UsageError(`--arch must be one of ${ARCHS.join(', ')}, got '${arch}'`);
  const req: ArchRequest = {
    arch: arch as ArchRequest['arch'],
    patchSize: intOption('patch-size', v['patch-size'], 1, 1024),
    embedDim: intOption('embed-dim', v['embed-dim'], 1, 65536),
    depth: intOption('depth', v.depth, 1, 1024),
    numHeads: intOption('heads', v.heads, 1, 1024),
  };
  if (arch !== 'custom' && (req.embedDim !== undefined || req.depth !== undefined || req.numHeads !== undefined)) {
    throw new UsageError('--embed-dim, --depth and --heads need --arch custom');
  }
  return req;
}

/** The required --weights value. */
export function weightsOption(v: Values): string {
  const w = strOption(v.weights);
  if (!w) throw new UsageError('--weights is required');
  return w;
}

/** Progress of a batch loop: a bar on a terminal, otherwise a line at the start, every 10 s and at the end. */
export class BatchProgress {
  private bar: cliProgress.SingleBar | null = null;
  private lastLine = -Infinity;
  private readonly started = performance.now();
  private readonly tty = Boolean(process.stderr.isTTY);

  constructor(private readonly io: Io, private readonly label: string) {}

  /** `done` of `total` items finished. */
  update(done: number, total: number): void {
    const elapsed = (performance.now() - this.started) / 1000;
    const ips = (done / Math.max(elapsed, 1e-9)).toFixed(1);
    if (this.tty) {
      if (!this.bar) {
        this.bar = new cliProgress.SingleBar(
          { format: `${this.label} [{bar}] {value}/{total} | {ips} img/s | eta {eta_formatted}`, hideCursor: true, etaBuffer: 20 },
          cliProgress.Presets.shades_classic,
        );
        this.bar.start(total, 0, { ips });
      }
      this.bar.update(done, { ips });
      return;
    }
    const now = performance.now();
    if (now - this.lastLine >= 10_000 || done === total) {
      this.lastLine = now;
      this.io.out(`${this.label} ${done}/${total} images, ${ips} img/s (${elapsed.toFixed(0)} s)`);
    }
  }

  /** Removes the bar (before other output). */
  done(): void {
    this.bar?.stop();
    this.bar = null;
  }
}

/** Creates the folder of `path` if needed, then writes it atomically. */
async function writeOutput(path: string, bytes: Uint8Array): Promise<void> {
  mkdirSync(dirname(resolve(path)), { recursive: true });
  await writeFileAtomic(path, bytes);
}

/** `webdino embed`: CLS features (and last-layer CLS attention) of images or an NCHW array to .npy. */
export const embed: Command = {
  name: 'embed',
  summary: 'CLS features (and last-layer attention) of images with a ViT backbone, to .npy',
  description:
    "Runs a ViT backbone over --input and writes the CLS features [N, D] as float32 .npy to --out, and\n" +
    "with --attn the last layer's CLS attention over the patches [N, heads, patches]. Input: a folder\n" +
    'of .jpg/.jpeg/.png files (not recursive, sorted by name; DINO\'s eval transform: resize to\n' +
    'round(S·256/224), centre crop S = --image-size, ImageNet normalisation), one image file, or a\n' +
    'float .npy [N, 3, H, W] used as is (already normalised). Weights: safetensors (our\n' +
    'teacher_backbone.safetensors records its architecture) or a PyTorch checkpoint (DINO\'s\n' +
    "official ones: the teacher of a full checkpoint, 'module.'/'backbone.' stripped, head ignored),\n" +
    'loaded strictly. An image that cannot be decoded stops the run with its path, unless\n' +
    '--skip-bad (then it is skipped, reported and counted, and the rows are the readable images in\n' +
    'order). Outputs are written only when everything succeeded, atomically.',
  options: {
    ...WEIGHT_OPTIONS,
    input: { type: 'string', value: '<dir|file>', description: 'Folder of images, an image, or an NCHW float .npy (required)' },
    out: { type: 'string', value: '<file.npy>', description: 'Output features [N, D] (required)' },
    attn: { type: 'string', value: '<file.npy>', description: "Also write the last layer's CLS attention [N, heads, patches]" },
    'batch-size': { type: 'string', value: '<n>', description: 'Images per forward pass (default: 16)' },
    'image-size': { type: 'string', value: '<px>', description: 'Centre-crop side for image inputs (default: 224)' },
    'skip-bad': { type: 'boolean', description: 'Skip (and count) images that fail to decode instead of stopping' },
  },
  async run(v, io) {
    const weightsPath = weightsOption(v);
    const req = archRequest(v);
    const inputPath = strOption(v.input);
    if (!inputPath) throw new UsageError('--input is required');
    const out = strOption(v.out);
    if (!out) throw new UsageError('--out is required');
    const attnOut = strOption(v.attn);
    if (attnOut !== undefined && resolve(attnOut) === resolve(out)) throw new UsageError('--attn and --out must be different files');
    const batchSize = intOption('batch-size', v['batch-size'], 1, 4096) ?? 16;
    const crop = intOption('image-size', v['image-size'], 1, 4096) ?? 224;

    const input = await openEmbedInput(inputPath);
    const wd = await init();
    const progress = new BatchProgress(io, 'embed');
    try {
      const { model, spec, weights } = await loadBackbone(wd, weightsPath, { ...req, checkpointKey: strOption(v['checkpoint-key']) });
      try {
        const total = input.kind === 'images' ? input.files.length : input.shape[0];
        io.out(`adapter: ${wd.device.adapterName()} (${wd.device.variants} kernels)`);
        io.out(
          `model: ${describeArch(spec)} from ${weightsPath} (${weights.format}${weights.droppedHead ? `, ${weights.droppedHead} head entries ignored` : ''})`,
        );
        io.out(
          `input: ${input.kind === 'images' ? `${total} image file${total === 1 ? '' : 's'}, ${crop}x${crop} crops` : `array [${input.shape.join(', ')}]`}, batch ${batchSize}`,
        );
        const r = await embedAll(wd, model, input, {
          batchSize,
          crop,
          attention: attnOut !== undefined,
          skipBad: v['skip-bad'] === true,
          onWarning: (m) => {
            progress.done();
            io.err(`warning: ${m}`);
          },
          onProgress: (done, n) => progress.update(done, n),
        });
        progress.done();
        const n = r.featuresShape[0];
        await writeOutput(out, writeNpy({ shape: r.featuresShape, data: r.features }));
        if (attnOut !== undefined) await writeOutput(attnOut, writeNpy({ shape: r.attentionShape!, data: r.attention! }));
        if (r.skipped.length) io.err(`skipped ${r.skipped.length} image${r.skipped.length === 1 ? '' : 's'} that could not be decoded`);
        io.out(`features: ${out} [${r.featuresShape.join(', ')}]`);
        if (attnOut !== undefined) io.out(`attention: ${attnOut} [${r.attentionShape!.join(', ')}]`);
        io.out(`${n} images in ${r.seconds.toFixed(2)} s: ${(n / r.seconds).toFixed(2)} images/s`);
        return 0;
      } finally {
        model.dispose();
      }
    } finally {
      progress.done();
      wd.destroy();
    }
  },
};
