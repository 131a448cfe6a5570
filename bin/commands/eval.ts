/**
 * The `webdino eval` commands:
 * - `eval knn`: DINO's weighted k-NN evaluation (eval_knn.py) of a backbone: CLS features of the
 *   evaluation transform (resize, centre crop, ImageNet normalisation), l2-normalised; each test
 *   image's k nearest training images vote with weight exp(similarity / T); top-1 and top-5 for each k.
 * - `eval segment`: Jaccard index of the last layer's CLS-attention masks (60 % of the mass, per
 *   head) against ground-truth masks (eval/segment.ts).
 * - `eval linear`: DINO's linear probe (eval_linear.py) on frozen features (eval/linear-probe.ts).
 */
import { resolve } from 'node:path';
import { writeSafetensors } from '../../models/io/safetensors.js';
import { describeArch } from '../../models/backbone.js';
import { firstN } from '../../train/eval-hooks-node.js';
import { datasetFeatures } from '../../eval/features.js';
import { knnClassify } from '../../eval/knn.js';
import { LINEAR_CPU_DEFAULTS, linearProbe, linearProbeConfig } from '../../eval/linear-probe.js';
import { datasetSegmentationSource, evaluateSegmentation, type SegmentationSource } from '../../eval/segment.js';
import { openMaskFolder } from '../../eval/segment-node.js';
import { type Context, defineCommand, UsageError } from '../command.js';
import { flag, int, ints, num, orDerived, path, str } from '../options.js';
import { BatchProgress } from '../progress.js';
import { openData, withBackbone } from '../resources.js';
import { BACKBONE_OPTIONS, backboneRequest } from './backbone-options.js';

/** `synthetic[:val]` as a masked dataset, or a folder of image/mask pairs. */
function openSegmentationData(spec: string, ctx: Context): SegmentationSource {
  if (/^synthetic(?::(train|val))?$/.test(spec)) return datasetSegmentationSource(openData(ctx, spec, { defaultSplit: 'val' }), spec);
  const folder = openMaskFolder(resolve(ctx.cwd, spec));
  const skipped = folder.unmatchedImages.length + folder.unmatchedMasks.length;
  if (skipped) ctx.io.err(`warning: ${spec}: left out ${folder.unmatchedImages.length} images without a mask and ${folder.unmatchedMasks.length} masks without an image`);
  return folder;
}

/** The first `n` items of a segmentation source. */
function firstSamples(src: SegmentationSource, n: number): SegmentationSource {
  return n >= src.length ? src : { length: n, get: (i) => src.get(i) };
}

/** The crop fed to the model: given, else the size the weights record, else the declared fallback. */
const imageSize = (help: string) => int({ min: 8, max: 4096, derived: 'the size the model was trained at', default: 224, value: '<px>', help });

const DATA_OPTIONS = {
  train: str({ value: '<data>', default: 'synthetic:train', help: 'Training images (the k-NN memory, or what the classifier learns from)' }),
  val: str({ value: '<data>', default: 'synthetic:val', help: 'Evaluated images' }),
  'train-limit': int({ min: 1, max: 1e9, value: '<n>', help: 'Use only the first n training images' }),
  'val-limit': int({ min: 1, max: 1e9, value: '<n>', help: 'Use only the first n evaluated images' }),
  'allow-empty-classes': flag({ help: 'ImageFolder: keep class folders that hold no image' }),
};

const knnOptions = {
  ...BACKBONE_OPTIONS,
  ...DATA_OPTIONS,
  k: ints({ min: 1, max: 1e6, default: [10, 20, 100, 200], value: '<list>', help: 'Comma-separated k values' }),
  temperature: num({ min: 1e-6, max: 1e6, default: 0.07, value: '<T>', help: 'Vote temperature' }),
  'image-size': imageSize('Centre-crop size fed to the model'),
  'batch-size': int({ min: 1, max: 4096, default: 64, value: '<n>', help: 'Images per forward' }),
};

/** `webdino eval knn`: DINO's weighted k-NN accuracy. */
export const evalKnn = defineCommand({
  name: 'eval knn',
  summary: "Weighted k-NN accuracy of a backbone (DINO's eval_knn: k = 10, 20, 100, 200, T = 0.07)",
  description:
    'Extracts CLS features of --train and --val with the evaluation transform and classifies each\n' +
    'validation image by the exp(sim/T)-weighted votes of its k nearest training images (GPU matmul +\n' +
    "top-k). DATA is 'synthetic:train' / 'synthetic:val' (the embedded dataset), an ImageFolder or a CIFAR folder.\n" +
    'Weights: a teacher_backbone.safetensors from `webdino train`, a training checkpoint, or official DINO weights.',
  options: knnOptions,
  async run(v, ctx) {
    const { io } = ctx;
    const request = backboneRequest(v);
    const allowEmptyClasses = v['allow-empty-classes'];
    const trainSet = firstN(openData(ctx, v.train, { defaultSplit: 'train', allowEmptyClasses }), v['train-limit'] ?? Infinity);
    const valSet = firstN(openData(ctx, v.val, { defaultSplit: 'val', allowEmptyClasses }), v['val-limit'] ?? Infinity);
    const usable = v.k.filter((k) => k <= trainSet.length);
    if (!usable.length) throw new UsageError(`every k exceeds the ${trainSet.length} training images`);
    return withBackbone(request, async ({ wd, model, spec }) => {
      const crop = orDerived(v['image-size'], spec.imgSize, knnOptions['image-size']);
      io.out(`backbone: ${v.weights} (${describeArch(spec)}); crop ${crop} px`);
      const t0 = io.now();
      const tr = await datasetFeatures(wd, model, trainSet, { crop, batchSize: v['batch-size'] });
      try {
        const va = await datasetFeatures(wd, model, valSet, { crop, batchSize: v['batch-size'] });
        try {
          const results = await knnClassify({
            trainFeatures: tr.features,
            trainLabels: tr.labels,
            testFeatures: va.features,
            testLabels: va.labels,
            numClasses: Math.max(trainSet.numClasses, valSet.numClasses),
            ks: usable,
            T: v.temperature,
          });
          for (const r of results) io.out(`k=${r.k}: top-1 ${r.top1.toFixed(2)} %, top-5 ${r.top5.toFixed(2)} %`);
        } finally {
          va.features.dispose();
        }
      } finally {
        tr.features.dispose();
      }
      io.out(`${trainSet.length} train / ${valSet.length} val images in ${((io.now() - t0) / 1000).toFixed(1)} s`);
      return 0;
    });
  },
});

const segmentOptions = {
  ...BACKBONE_OPTIONS,
  data: str({ value: '<data>', default: 'synthetic:val', help: "Images with masks: 'synthetic:val' or a folder of image/mask pairs" }),
  limit: int({ min: 1, max: 1e9, value: '<n>', help: 'Use only the first n images' }),
  'image-size': imageSize('Side the images are resized to'),
  threshold: num({ min: 0, max: 1, default: 0.6, value: '<t>', help: 'Fraction of attention mass each mask keeps' }),
  'batch-size': int({ min: 1, max: 4096, default: 32, value: '<n>', help: 'Images per forward' }),
  json: path({ role: 'output', value: '<file>', help: 'Also write the figures (and per-image values) as JSON' }),
};

/** `webdino eval segment`: Jaccard of the CLS-attention masks against ground-truth masks. */
export const evalSegment = defineCommand({
  name: 'eval segment',
  summary: 'Jaccard (IoU) of the CLS-attention masks (60 % of the mass, per head) against ground-truth masks',
  description:
    "Resizes each image of --data to S×S (S = --image-size rounded down to a multiple of the patch), takes the\n" +
    "last layer's CLS attention of each head, keeps the patches holding --threshold of its mass (DINO's\n" +
    'visualize_attention th_attn), upsamples the mask to the image (nearest) and scores it against the\n' +
    'ground-truth mask with the Jaccard index. Prints the mean Jaccard of every head, the best head (highest\n' +
    "mean) and the per-image best head (an oracle bound). DATA: 'synthetic:val' (the embedded\n" +
    'dataset has object masks), or a folder of pairs: images/NAME.jpg + masks/NAME.png, or NAME.jpg +\n' +
    'NAME_mask.png (mask: object where the brightest channel is at least half of the mask\'s maximum).',
  options: segmentOptions,
  async run(v, ctx) {
    const { io, outputs } = ctx;
    const request = backboneRequest(v);
    if (v.json !== undefined) outputs.check(v.json);
    const source = firstSamples(openSegmentationData(v.data, ctx), v.limit ?? Infinity);
    const progress = new BatchProgress(io, 'segment');
    try {
      return await withBackbone(request, async ({ wd, model, spec }) => {
        const size = orDerived(v['image-size'], spec.imgSize, segmentOptions['image-size']);
        if (size < spec.patchSize) throw new UsageError(`--image-size ${size} is smaller than the patch size ${spec.patchSize}`);
        io.out(`backbone: ${v.weights} (${describeArch(spec)})`);
        const t0 = io.now();
        const r = await evaluateSegmentation(wd, model, source, { size, threshold: v.threshold, batchSize: v['batch-size'], onProgress: (d, n) => progress.update(d, n) });
        progress.done();
        const pct = (x: number) => `${(100 * x).toFixed(2)} %`;
        io.out(`${r.images} images of ${v.data}, input ${r.side}x${r.side} (${r.grid[0]}x${r.grid[1]} patches), masks keep ${v.threshold} of the attention mass`);
        r.perHead.forEach((j, k) => io.out(`head ${k}: Jaccard ${pct(j)}`));
        io.out(`best head: ${r.bestHead}, Jaccard ${pct(r.bestHeadJaccard)}`);
        io.out(`per-image best head (oracle): Jaccard ${pct(r.oracleJaccard)}`);
        io.out(`${((io.now() - t0) / 1000).toFixed(1)} s`);
        if (v.json !== undefined) {
          const summary = {
            weights: v.weights, data: v.data, images: r.images, side: r.side, grid: r.grid, threshold: v.threshold, heads: r.heads,
            jaccard_per_head: r.perHead, best_head: r.bestHead, best_head_jaccard: r.bestHeadJaccard, oracle_jaccard: r.oracleJaccard,
            per_image: Array.from({ length: r.images }, (_, i) => Array.from(r.perImage.subarray(i * r.heads, (i + 1) * r.heads))),
          };
          await outputs.write(v.json, JSON.stringify(summary, null, 2) + '\n');
          io.out(`wrote ${v.json}`);
        }
        return 0;
      });
    } finally {
      progress.done();
    }
  },
});

const D = LINEAR_CPU_DEFAULTS;
const linearOptions = {
  ...BACKBONE_OPTIONS,
  ...DATA_OPTIONS,
  epochs: int({ min: 1, max: 100000, default: D.epochs, value: '<n>', help: 'Epochs' }),
  'batch-size': int({ min: 1, max: 4096, default: D.batchSize, value: '<n>', help: 'Images per step' }),
  lr: num({ min: 1e-9, max: 1e3, default: D.lr, value: '<x>', help: 'Base learning rate, scaled by batch/256' }),
  'weight-decay': num({ min: 0, max: 10, default: D.weightDecay, value: '<x>', help: 'SGD weight decay' }),
  'n-last-blocks': int({ min: 1, max: 1024, derived: `${D.nLastBlocks}, or the depth if smaller`, value: '<n>', help: 'CLS tokens of the last n blocks' }),
  avgpool: flag({ help: "Add the last block's mean patch token (DINO's --avgpool_patchtokens)" }),
  augment: flag({ help: "Train on DINO's RandomResizedCrop + flip views (default: the eval transform, features computed once)" }),
  views: int({ min: 0, max: 100000, default: D.views, value: '<n>', help: 'With --augment: views per image computed and cycled over the epochs (0: fresh crops every epoch, as DINO)' }),
  'image-size': imageSize('Crop side fed to the model'),
  seed: int({ min: 0, max: 2 ** 31, default: D.seed, value: '<n>', help: 'Seed of the init, shuffling and crops' }),
  save: path({ role: 'output', value: '<file>', help: 'Write the classifier (linear.weight, linear.bias) as safetensors' }),
  json: path({ role: 'output', value: '<file>', help: 'Write the per-epoch figures as JSON' }),
};

/** `webdino eval linear`: DINO's linear probe on frozen features. */
export const evalLinear = defineCommand({
  name: 'eval linear',
  summary: "Linear probe of a frozen backbone (DINO's eval_linear: last 4 CLS tokens, SGD + cosine, top-1/top-5)",
  description:
    'Trains a linear classifier on frozen features of --train and reports top-1 / top-5 on --val after\n' +
    'every epoch. Features: the CLS tokens (after the final norm) of the last --n-last-blocks blocks,\n' +
    'concatenated; with --avgpool also the mean patch token of the last block. SGD momentum 0.9, lr =\n' +
    '--lr · batch / 256 with a per-epoch cosine to 0, weight N(0, 0.01) init, as DINO\'s eval_linear.\n' +
    'Defaults are scaled to minutes on a CPU: the training images go through the eval transform once\n' +
    '(features kept), DINO\'s 100 epochs, batch 64 (DINO: 128/GPU), base lr 0.3 (DINO: 0.001).\n' +
    "--augment trains on DINO's RandomResizedCrop (scale 0.08-1) + flip views instead: --views of them per\n" +
    'image, cycled over the epochs (--views 0: fresh crops every epoch, DINO\'s protocol, one backbone\n' +
    "pass per epoch). Prints the best epoch (the figure DINO reports) and the last. DATA as for `eval knn`.",
  options: linearOptions,
  async run(v, ctx) {
    const { io, outputs } = ctx;
    const request = backboneRequest(v);
    const opts = {
      epochs: v.epochs,
      batchSize: v['batch-size'],
      lr: v.lr,
      weightDecay: v['weight-decay'],
      nLastBlocks: v['n-last-blocks'],
      avgpool: v.avgpool,
      augment: v.augment,
      views: v.views,
      seed: v.seed,
    };
    for (const o of [v.save, v.json]) if (o !== undefined) outputs.check(o);
    if (v.save !== undefined && v.save === v.json) throw new UsageError('--save and --json must be different files');
    const warn = (m: string) => io.err(`warning: ${m}`);
    const allowEmptyClasses = v['allow-empty-classes'];
    const trainSet = firstN(openData(ctx, v.train, { defaultSplit: 'train', allowEmptyClasses }), v['train-limit'] ?? Infinity);
    const valSet = firstN(openData(ctx, v.val, { defaultSplit: 'val', allowEmptyClasses }), v['val-limit'] ?? Infinity);
    let progress: BatchProgress | null = null;
    try {
      return await withBackbone(request, async ({ wd, model, spec }) => {
        if (opts.nLastBlocks !== undefined && opts.nLastBlocks > spec.depth) {
          throw new UsageError(`--n-last-blocks ${opts.nLastBlocks} exceeds the model's ${spec.depth} blocks`);
        }
        const crop = orDerived(v['image-size'], spec.imgSize, linearOptions['image-size']);
        io.out(`backbone: ${v.weights} (${describeArch(spec)}); crop ${crop} px`);
        io.out(`data: ${v.train} (${trainSet.length} images) → ${v.val} (${valSet.length} images)`);
        const t0 = io.now();
        const { epochs } = linearProbeConfig({ ...opts, crop }, spec.depth);
        const r = await linearProbe(wd, model, {
          ...opts,
          crop,
          numClasses: Math.max(trainSet.numClasses, valSet.numClasses),
          train: trainSet,
          val: valSet,
          onWarning: warn,
          onProgress: (done, total, epoch) => {
            progress ??= new BatchProgress(io, `epoch ${epoch + 1}/${epochs}`);
            progress.update(done, total);
          },
          onEpoch: (e) => {
            progress?.done();
            progress = null;
            io.out(`epoch ${e.epoch + 1}/${epochs}: lr ${e.lr.toPrecision(3)}, loss ${e.loss.toFixed(4)}, val top-1 ${e.top1.toFixed(2)} %, top-5 ${e.top5.toFixed(2)} %`);
          },
        });
        const c = r.config;
        io.out(
          `features: ${c.nLastBlocks} last CLS tokens${c.avgpool ? ' + mean patch token' : ''} (${r.features} dims), ${r.classes} classes; ` +
            `${c.epochs} epochs, batch ${c.batchSize}, lr ${c.lr} × ${c.batchSize}/256, ${c.augment ? `random resized crops + flips (${c.views && c.views < c.epochs ? `${c.views} views per image, cycled` : 'fresh every epoch'})` : 'eval transform, features computed once'}`,
        );
        io.out(`linear top-1 ${r.best.top1.toFixed(2)} %, top-5 ${r.best.top5.toFixed(2)} % (best epoch ${r.best.epoch + 1}); last epoch: top-1 ${r.last.top1.toFixed(2)} %, top-5 ${r.last.top5.toFixed(2)} %`);
        io.out(`${((io.now() - t0) / 1000).toFixed(1)} s`);
        if (v.save !== undefined) {
          const meta = { webdino_linear: JSON.stringify({ ...c, features: r.features, classes: r.classes, weights: v.weights }) };
          await outputs.write(v.save, writeSafetensors({ 'linear.weight': { shape: [r.classes, r.features], data: r.weight }, 'linear.bias': { shape: [r.classes], data: r.bias } }, meta));
          io.out(`classifier: ${v.save}`);
        }
        if (v.json !== undefined) {
          const summary = { weights: v.weights, train: v.train, val: v.val, config: c, features: r.features, classes: r.classes, best: r.best, last: r.last, epochs: r.epochs };
          await outputs.write(v.json, JSON.stringify(summary, null, 2) + '\n');
          io.out(`wrote ${v.json}`);
        }
        return 0;
      });
    } finally {
      (progress as BatchProgress | null)?.done();
    }
  },
});
