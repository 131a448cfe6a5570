/**
 * `webdino embed`: CLS features (and optionally the last layer's CLS attention) of a folder of
 * images or a normalised NCHW .npy array, through a ViT backbone loaded from safetensors or a
 * PyTorch checkpoint (official DINO checkpoints included). See models/backbone.ts and
 * eval/embed-node.ts for how the weights and their architecture are read.
 *
 * Two ways to write:
 * - whole (the default): outputs are written only at the end, each atomically (temporary file +
 *   rename): a failure at any point (bad weights, a hostile pickle, an unreadable image,
 *   strict-loading errors) exits 1 with one message and leaves no output file;
 * - in shards (`--shard-size N`, for curation pools): eval/embed-shards-node.ts writes the
 *   features N images at a time with a manifest, resumes a stopped run at the shard it was on,
 *   and `--shard i/n` runs one of n independent jobs.
 * An output that would replace an input (the weights, an input image) is refused before anything
 * runs. Ctrl-C, SIGTERM and SIGHUP stop between batches (exit 128 + n); in shards, what was
 * finished stays and the same command continues.
 */
import { writeNpy } from '../../models/io/npy.js';
import { describeArch } from '../../models/backbone.js';
import { embedAll, EmbedStoppedError, openEmbedInput } from '../../eval/embed-node.js';
import { embedShards, type EmbedShardPlan, manifestPaths, planEmbedShards } from '../../eval/embed-shards-node.js';
import { type Context, defineCommand, SIGNAL_NUMBERS, type StopSignal, UsageError } from '../command.js';
import { flag, int, part, path, type Values } from '../options.js';
import { BatchProgress } from '../progress.js';
import { type Backbone, withBackbone } from '../resources.js';
import { BACKBONE_OPTIONS, backboneRequest } from './backbone-options.js';

const options = {
  ...BACKBONE_OPTIONS,
  input: path({ role: 'input', required: true, value: '<dir|file>', help: 'Folder of images, an image, or an NCHW float .npy' }),
  recursive: flag({ help: "Take the images of the input folder's whole tree (sub-folders sorted by path), not only its own" }),
  out: path({ role: 'output', required: true, value: '<file.npy>', help: 'Output features [N, D] (with --shard-size: the stem of the shard files)' }),
  normalize: flag({ help: 'L2-normalise each feature row (cosine-ready, for webdino curate)' }),
  'paths-out': path({ role: 'output', value: '<file.txt>', help: 'Also write the image path of each feature row, one per line, in row order' }),
  attn: path({ role: 'output', value: '<file.npy>', help: "Also write the last layer's CLS attention [N, heads, patches]" }),
  'patch-out': path({ role: 'output', value: '<file.npy>', help: 'Also write the normed patch tokens [N, h·w, D] (x_norm_patchtokens; registers and storage tokens excluded)' }),
  'shard-size': int({ min: 1, max: 1e9, value: '<n>', help: 'Write the features of every n images to OUT-00000.npy, OUT-00001.npy, … with paths files and OUT-manifest.json; re-running resumes' }),
  shard: part({ max: 1e6, value: '<i/n>', help: 'With --shard-size: embed only job i of n (its contiguous share of the shards; manifest OUT-manifest-i-of-n.json)' }),
  'batch-size': int({ min: 1, max: 4096, default: 16, value: '<n>', help: 'Images per forward pass' }),
  'image-size': int({ min: 1, max: 4096, default: 224, value: '<px>', help: 'Centre-crop side for image inputs' }),
  'skip-bad': flag({ help: 'Skip (and count) images that fail to decode instead of stopping; they get no row' }),
};

type EmbedValues = Values<typeof options>;

/** Aborts on the first stop request of the process; `stop()` unsubscribes. */
function stopRequests(ctx: Context): { signal: AbortSignal; stop(): void } {
  const abort = new AbortController();
  const unsubscribe = ctx.io.onStop?.((s) => {
    if (abort.signal.aborted) return;
    ctx.io.err(`\nwebdino embed: ${s}: stopping after this batch`);
    abort.abort(s);
  });
  return { signal: abort.signal, stop: () => unsubscribe?.() };
}

/** The exit code of a run stopped by `reason` (a StopSignal). */
function stoppedCode(reason: unknown): number {
  return 128 + (SIGNAL_NUMBERS[reason as StopSignal] ?? 0);
}

function describeModel(io: Context['io'], b: Backbone, weights: string): void {
  io.out(`adapter: ${b.wd.device.adapterName()} (${b.wd.device.variants} kernels)`);
  io.out(`model: ${describeArch(b.spec)} from ${weights} (${b.weights.format}${b.weights.droppedHead ? `, ${b.weights.droppedHead} head entries ignored` : ''})`);
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

/** --shard-size: job `v.shard` of the pool in shards (eval/embed-shards-node.ts). */
async function runSharded(v: EmbedValues, ctx: Context, files: string[], plan: EmbedShardPlan, signal: AbortSignal): Promise<number> {
  const { io, outputs } = ctx;
  const progress = new BatchProgress(io, 'embed');
  try {
    return await withBackbone(backboneRequest(v), async (b) => {
      describeModel(io, b, v.weights);
      const job = v.shard ? `job ${v.shard.i}/${v.shard.n}: ` : '';
      io.out(`input: ${plural(files.length, 'image file')}, ${v['image-size']}x${v['image-size']} crops, batch ${v['batch-size']}; ${job}${plan.shards.length ? `shards ${plan.shards[0].index}–${plan.shards[plan.shards.length - 1].index}` : 'no shard'} of ${plan.totalShards} (${v['shard-size']} images each)`);
      const r = await embedShards(b.wd, b.model, plan, {
        batchSize: v['batch-size'],
        crop: v['image-size'],
        normalize: v.normalize,
        skipBad: v['skip-bad'],
        signal,
        onWarning: (m) => {
          progress.done();
          io.err(`warning: ${m}`);
        },
        onProgress: (done, n) => progress.update(done, n),
      });
      progress.done();
      if (r.resumed) io.out(`resumed: ${plural(r.resumed, 'shard')} already done (${plan.manifest})`);
      if (r.skipped) io.err(`skipped ${plural(r.skipped, 'image')} that could not be decoded (listed in the manifest)`);
      if (v['paths-out'] !== undefined) {
        await outputs.write(v['paths-out'], manifestPaths(plan.manifest));
        io.out(`paths: ${v['paths-out']}`);
      }
      io.out(`features: ${plural(r.rows, 'row')} of width ${r.manifest.dim ?? '?'} in ${plural(r.manifest.done.filter((d) => d.rows > 0).length, 'shard')}; manifest: ${plan.manifest}`);
      io.out(`${plural(r.written, 'shard')} written in ${r.seconds.toFixed(2)} s`);
      return 0;
    });
  } catch (e) {
    if (!(e instanceof EmbedStoppedError)) throw e;
    io.out(`stopped by ${String(e.reason)}: the finished shards are recorded in ${plan.manifest}; run the same command again to continue`);
    return stoppedCode(e.reason);
  } finally {
    progress.done();
  }
}

/** `webdino embed`: CLS features (and last-layer CLS attention) of images or an NCHW array to .npy. */
export const embed = defineCommand({
  name: 'embed',
  summary: 'CLS features (and last-layer attention) of images with a ViT backbone, to .npy (in shards for curation pools)',
  description:
    'Runs a ViT backbone (DINO, DINOv2 or DINOv3, architecture read from the weights) over --input and\n' +
    'writes the normed CLS features [N, D] as float32 .npy to --out, with --patch-out the normed patch\n' +
    "tokens [N, h·w, D], and with --attn the last layer's CLS attention over the patches [N, heads,\n" +
    'patches]. Input: a folder\n' +
    "of .jpg/.jpeg/.png files (sorted by name; --recursive: the folder's whole tree; DINO's eval\n" +
    'transform: resize to round(S·256/224), centre crop S = --image-size, ImageNet normalisation), one\n' +
    'image file, or a float .npy [N, 3, H, W] used as is (already normalised). Weights: safetensors\n' +
    "(our teacher_backbone.safetensors records its architecture) or a PyTorch checkpoint (DINO's\n" +
    "official ones: the teacher of a full checkpoint, 'module.'/'backbone.' stripped, head ignored),\n" +
    'loaded strictly. An image that cannot be decoded stops the run with its path, unless --skip-bad\n' +
    '(then it is skipped, reported and counted, and gets no row). Outputs are written atomically and\n' +
    'never over an input.\n' +
    'Pools for `webdino curate`: --normalize --paths-out PATHS --shard-size N writes OUT-00000.npy …\n' +
    'and OUT-manifest.json (give the manifest to curate --embeddings); a stopped run continues from\n' +
    'its manifest when re-run; --shard i/n splits the work into n independent jobs.',
  options,
  async run(v, ctx) {
    const { io, outputs } = ctx;
    const request = backboneRequest(v);
    const outs = [v.out, v.attn, v['patch-out'], v['paths-out']].filter((o): o is string => o !== undefined);
    if (new Set(outs).size !== outs.length) throw new UsageError('--out, --attn, --patch-out and --paths-out must be different files');
    if (v.shard && v['shard-size'] === undefined) throw new UsageError('--shard i/n needs --shard-size (each job writes its own shards)');
    if (v['shard-size'] !== undefined && v.attn !== undefined) throw new UsageError('--attn is not written in shards: drop --attn or --shard-size');
    if (v['shard-size'] !== undefined && v['patch-out'] !== undefined) throw new UsageError('--patch-out is not written in shards: drop --patch-out or --shard-size');
    const batchSize = v['batch-size'];
    const crop = v['image-size'];
    const input = await openEmbedInput(v.input, { recursive: v.recursive });
    if (input.kind === 'images') for (const f of input.files) outputs.protect(f, `the input image ${f}`);
    if (input.kind !== 'images' && (v['paths-out'] !== undefined || v['shard-size'] !== undefined)) {
      throw new UsageError('--paths-out and --shard-size need image inputs (a folder or an image), not an array');
    }
    for (const o of outs) outputs.check(o);
    const stop = stopRequests(ctx);
    try {
      if (v['shard-size'] !== undefined && input.kind === 'images') {
        const plan = planEmbedShards({ files: input.files, out: v.out, shardSize: v['shard-size'], job: v.shard ?? { i: 0, n: 1 }, weights: v.weights, crop, normalize: v.normalize });
        for (const s of plan.shards) for (const f of [s.npy, s.paths]) outputs.check(f);
        outputs.check(plan.manifest);
        return await runSharded(v, ctx, input.files, plan, stop.signal);
      }
      const progress = new BatchProgress(io, 'embed');
      try {
        return await withBackbone(request, async (b) => {
          const total = input.kind === 'images' ? input.files.length : input.shape[0];
          describeModel(io, b, v.weights);
          io.out(`input: ${input.kind === 'images' ? `${plural(total, 'image file')}, ${crop}x${crop} crops` : `array [${input.shape.join(', ')}]`}, batch ${batchSize}`);
          const r = await embedAll(b.wd, b.model, input, {
            batchSize,
            crop,
            attention: v.attn !== undefined,
            patchTokens: v['patch-out'] !== undefined,
            normalize: v.normalize,
            skipBad: v['skip-bad'],
            signal: stop.signal,
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
          if (v['paths-out'] !== undefined && input.kind === 'images') {
            const bad = new Set(r.skipped);
            await outputs.write(v['paths-out'], `${input.files.filter((f) => !bad.has(f)).join('\n')}\n`);
          }
          if (r.skipped.length) io.err(`skipped ${plural(r.skipped.length, 'image')} that could not be decoded`);
          io.out(`features: ${v.out} [${r.featuresShape.join(', ')}]${v.normalize ? ', L2-normalised' : ''}`);
          if (v.attn !== undefined) io.out(`attention: ${v.attn} [${r.attentionShape!.join(', ')}]`);
          if (v['patch-out'] !== undefined) io.out(`patch tokens: ${v['patch-out']} [${r.patchTokensShape!.join(', ')}]`);
          if (v['paths-out'] !== undefined) io.out(`paths: ${v['paths-out']}`);
          io.out(`${n} images in ${r.seconds.toFixed(2)} s: ${(n / r.seconds).toFixed(2)} images/s`);
          return 0;
        });
      } catch (e) {
        if (!(e instanceof EmbedStoppedError)) throw e;
        io.out(`stopped by ${String(e.reason)}: nothing was written`);
        return stoppedCode(e.reason);
      } finally {
        progress.done();
      }
    } finally {
      stop.stop();
    }
  },
});
