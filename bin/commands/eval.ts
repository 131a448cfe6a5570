/**
 * The `webdino eval` commands:
 * - `eval knn`: DINO's weighted k-NN evaluation (eval_knn.py) of a backbone: CLS features of the
 *   evaluation transform (resize, centre crop, ImageNet normalisation), l2-normalised; each test
 *   image's k nearest training images vote with weight exp(similarity / T); top-1 and top-5 for each k.
 * - `eval segment`: Jaccard index of the last layer's CLS-attention masks (60 % of the mass, per
 *   head) against ground-truth masks (eval/segment.ts).
 * - `eval linear`: DINO's linear probe (eval_linear.py) on frozen features (eval/linear-probe.ts).
 */
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { init } from '../../index.js';
import { writeFileAtomic } from '../../models/io/node-files.js';
import { writeSafetensors } from '../../models/io/safetensors.js';
import { openDataset } from '../../train/data/open-node.js';
import { describeArch } from '../../models/backbone.js';
import { loadBackbone } from '../../models/backbone-node.js';
import { firstN } from '../../train/eval-hooks-node.js';
import { datasetFeatures } from '../../eval/features.js';
import { knnClassify } from '../../eval/knn.js';
import { LINEAR_CPU_DEFAULTS, linearProbe, linearProbeConfig } from '../../eval/linear-probe.js';
import { datasetSegmentationSource, evaluateSegmentation, type SegmentationSource } from '../../eval/segment.js';
import { openMaskFolder } from '../../eval/segment-node.js';
import { type Command, intOption, numOption, strOption, UsageError } from '../command.js';
import { archRequest, BatchProgress, WEIGHT_OPTIONS, weightsOption } from './embed.js';

/** Writes a JSON summary atomically (creating its folder). */
async function writeJson(path: string, value: unknown): Promise<void> {
  mkdirSync(dirname(resolve(path)), { recursive: true });
  await writeFileAtomic(path, JSON.stringify(value, null, 2) + '\n');
}

/** `synthetic[:val]` as a masked dataset, or a folder of image/mask pairs. */
function openSegmentationData(spec: string, io: { err(l: string): void }): SegmentationSource {
  const m = /^synthetic(?::(train|val))?$/.exec(spec);
  if (m) return datasetSegmentationSource(openDataset(spec, { defaultSplit: 'val' }), spec);
  const folder = openMaskFolder(spec);
  const skipped = folder.unmatchedImages.length + folder.unmatchedMasks.length;
  if (skipped) io.err(`warning: ${spec}: left out ${folder.unmatchedImages.length} images without a mask and ${folder.unmatchedMasks.length} masks without an image`);
  return folder;
}

/** The first `n` items of a segmentation source. */
function firstSamples(src: SegmentationSource, n: number): SegmentationSource {
  return n >= src.length ? src : { length: n, get: (i) => src.get(i) };
}

/** `webdino eval knn`: DINO's weighted k-NN accuracy. */
export const evalKnn: Command = {
  name: 'eval knn',
  summary: "Weighted k-NN accuracy of a backbone (DINO's eval_knn: k = 10, 20, 100, 200, T = 0.07)",
  description:
    'Extracts CLS features of --train and --val with the evaluation transform and classifies each\n' +
    'validation image by the exp(sim/T)-weighted votes of its k nearest training images (GPU matmul +\n' +
    "top-k). DATA is 'synthetic:train' / 'synthetic:val' (the embedded dataset), an ImageFolder or a CIFAR folder.\n" +
    'Weights: a teacher_backbone.safetensors from `webdino train`, a training checkpoint, or official DINO weights.',
  options: {
    ...WEIGHT_OPTIONS,
    train: { type: 'string', value: '<data>', description: "Training (memory) images (default: synthetic:train)" },
    val: { type: 'string', value: '<data>', description: "Evaluated images (default: synthetic:val)" },
    k: { type: 'string', value: '<list>', description: 'Comma-separated k values (default: 10,20,100,200)' },
    temperature: { type: 'string', value: '<T>', description: 'Vote temperature (default: 0.07)' },
    'image-size': { type: 'string', value: '<px>', description: 'Centre-crop size fed to the model (default: the size it was trained at, else 224)' },
    'batch-size': { type: 'string', value: '<n>', description: 'Images per forward (default: 64)' },
    'train-limit': { type: 'string', value: '<n>', description: 'Use only the first n training images' },
    'val-limit': { type: 'string', value: '<n>', description: 'Use only the first n evaluated images' },
  },
  async run(v, io) {
    const weights = weightsOption(v);
    const req = archRequest(v);
    const ks = (strOption(v.k) ?? '10,20,100,200').split(',').map((x) => {
      const n = Number(x.trim());
      if (!Number.isInteger(n) || n < 1) throw new UsageError(`--k: '${x}' is not a positive integer`);
      return n;
    });
    const T = numOption('temperature', v.temperature, 1e-6, 1e6) ?? 0.07;
    const batchSize = intOption('batch-size', v['batch-size'], 1, 4096) ?? 64;
    const limit = (name: string) => intOption(name, v[name], 1, 1e9) ?? Infinity;
    const trainSet = firstN(openDataset(strOption(v.train) ?? 'synthetic:train', { defaultSplit: 'train', onWarning: (m) => io.err(`warning: ${m}`) }), limit('train-limit'));
    const valSet = firstN(openDataset(strOption(v.val) ?? 'synthetic:val', { defaultSplit: 'val', onWarning: (m) => io.err(`warning: ${m}`) }), limit('val-limit'));
    const usable = ks.filter((k) => k <= trainSet.length);
    if (!usable.length) throw new UsageError(`every k exceeds the ${trainSet.length} training images`);
    const wd = await init();
    try {
      const { model, spec } = await loadBackbone(wd, weights, req);
      const crop = intOption('image-size', v['image-size'], 8, 4096) ?? spec.imgSize ?? 224;
      io.out(`backbone: ${weights} (${spec.arch ?? 'custom'}, dim ${spec.embedDim}, patch ${spec.patchSize}); crop ${crop} px`);
      const t0 = performance.now();
      const tr = await datasetFeatures(wd, model, trainSet, { crop, batchSize });
      const va = await datasetFeatures(wd, model, valSet, { crop, batchSize });
      const results = await knnClassify({
        trainFeatures: tr.features,
        trainLabels: tr.labels,
        testFeatures: va.features,
        testLabels: va.labels,
        numClasses: Math.max(trainSet.numClasses, valSet.numClasses),
        ks: usable,
        T,
      });
      for (const r of results) io.out(`k=${r.k}: top-1 ${r.top1.toFixed(2)} %, top-5 ${r.top5.toFixed(2)} %`);
      io.out(`${trainSet.length} train / ${valSet.length} val images in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      tr.features.dispose();
      va.features.dispose();
      model.dispose();
      return 0;
    } finally {
      wd.destroy();
    }
  },
};

/** `webdino eval segment`: Jaccard of the CLS-attention masks against ground-truth masks. */
export const evalSegment: Command = {
  name: 'eval segment',
  summary: 'Jaccard (IoU) of the CLS-attention masks (60 % of the mass, per head) against ground-truth masks',
  description:
    "Resizes each image of --data to S×S (S = --image-size rounded down to a multiple of the patch), takes the\n" +
    "last layer's CLS attention of each head, keeps the patches holding --threshold of its mass (DINO's\n" +
    'visualize_attention th_attn), upsamples the mask to the image (nearest) and scores it against the\n' +
    'ground-truth mask with the Jaccard index. Prints the mean Jaccard of every head, the best head (highest\n' +
    "mean) and the per-image best head (an oracle bound). DATA: 'synthetic:val' (default; the embedded\n" +
    'dataset has object masks), or a folder of pairs: images/NAME.jpg + masks/NAME.png, or NAME.jpg +\n' +
    'NAME_mask.png (mask: object where the brightest channel is at least half of the mask\'s maximum).',
  options: {
    ...WEIGHT_OPTIONS,
    data: { type: 'string', value: '<data>', description: "Images with masks: 'synthetic:val' (default) or a folder of image/mask pairs" },
    limit: { type: 'string', value: '<n>', description: 'Use only the first n images' },
    'image-size': { type: 'string', value: '<px>', description: 'Side the images are resized to (default: the size the model was trained at, else 224)' },
    threshold: { type: 'string', value: '<t>', description: 'Fraction of attention mass each mask keeps (default: 0.6)' },
    'batch-size': { type: 'string', value: '<n>', description: 'Images per forward (default: 32)' },
    json: { type: 'string', value: '<file>', description: 'Also write the figures (and per-image values) as JSON' },
  },
  async run(v, io) {
    const weights = weightsOption(v);
    const req = archRequest(v);
    const spec0 = strOption(v.data) ?? 'synthetic:val';
    const threshold = numOption('threshold', v.threshold, 0, 1) ?? 0.6;
    const batchSize = intOption('batch-size', v['batch-size'], 1, 4096) ?? 32;
    const limit = intOption('limit', v.limit, 1, 1e9) ?? Infinity;
    const jsonOut = strOption(v.json);
    const source = firstSamples(openSegmentationData(spec0, io), limit);
    const wd = await init();
    const progress = new BatchProgress(io, 'segment');
    try {
      const { model, spec } = await loadBackbone(wd, weights, { ...req, checkpointKey: strOption(v['checkpoint-key']) });
      try {
        const size = intOption('image-size', v['image-size'], 1, 4096) ?? spec.imgSize ?? 224;
        if (size < spec.patchSize) throw new UsageError(`--image-size ${size} is smaller than the patch size ${spec.patchSize}`);
        io.out(`backbone: ${weights} (${describeArch(spec)})`);
        const t0 = performance.now();
        const r = await evaluateSegmentation(wd, model, source, { size, threshold, batchSize, onProgress: (d, n) => progress.update(d, n) });
        progress.done();
        const pct = (x: number) => `${(100 * x).toFixed(2)} %`;
        io.out(`${r.images} images of ${spec0}, input ${r.side}x${r.side} (${r.grid[0]}x${r.grid[1]} patches), masks keep ${threshold} of the attention mass`);
        r.perHead.forEach((j, k) => io.out(`head ${k}: Jaccard ${pct(j)}`));
        io.out(`best head: ${r.bestHead}, Jaccard ${pct(r.bestHeadJaccard)}`);
        io.out(`per-image best head (oracle): Jaccard ${pct(r.oracleJaccard)}`);
        io.out(`${((performance.now() - t0) / 1000).toFixed(1)} s`);
        if (jsonOut) {
          await writeJson(jsonOut, {
            weights, data: spec0, images: r.images, side: r.side, grid: r.grid, threshold, heads: r.heads,
            jaccard_per_head: r.perHead, best_head: r.bestHead, best_head_jaccard: r.bestHeadJaccard, oracle_jaccard: r.oracleJaccard,
            per_image: Array.from({ length: r.images }, (_, i) => Array.from(r.perImage.subarray(i * r.heads, (i + 1) * r.heads))),
          });
          io.out(`wrote ${jsonOut}`);
        }
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

/** `webdino eval linear`: DINO's linear probe on frozen features. */
export const evalLinear: Command = {
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
  options: {
    ...WEIGHT_OPTIONS,
    train: { type: 'string', value: '<data>', description: 'Training images (default: synthetic:train)' },
    val: { type: 'string', value: '<data>', description: 'Evaluated images (default: synthetic:val)' },
    epochs: { type: 'string', value: '<n>', description: `Epochs (default: ${LINEAR_CPU_DEFAULTS.epochs})` },
    'batch-size': { type: 'string', value: '<n>', description: `Images per step (default: ${LINEAR_CPU_DEFAULTS.batchSize})` },
    lr: { type: 'string', value: '<x>', description: `Base learning rate, scaled by batch/256 (default: ${LINEAR_CPU_DEFAULTS.lr})` },
    'weight-decay': { type: 'string', value: '<x>', description: 'SGD weight decay (default: 0)' },
    'n-last-blocks': { type: 'string', value: '<n>', description: 'CLS tokens of the last n blocks (default: 4, or the depth if smaller)' },
    avgpool: { type: 'boolean', description: "Add the last block's mean patch token (DINO's --avgpool_patchtokens)" },
    augment: { type: 'boolean', description: "Train on DINO's RandomResizedCrop + flip views (default: the eval transform, features computed once)" },
    views: { type: 'string', value: '<n>', description: `With --augment: views per image computed and cycled over the epochs (default: ${LINEAR_CPU_DEFAULTS.views}; 0: fresh crops every epoch, as DINO)` },
    'image-size': { type: 'string', value: '<px>', description: 'Crop side fed to the model (default: the size it was trained at, else 224)' },
    'train-limit': { type: 'string', value: '<n>', description: 'Use only the first n training images' },
    'val-limit': { type: 'string', value: '<n>', description: 'Use only the first n evaluated images' },
    seed: { type: 'string', value: '<n>', description: 'Seed of the init, shuffling and crops (default: 0)' },
    save: { type: 'string', value: '<file>', description: 'Write the classifier (linear.weight, linear.bias) as safetensors' },
    json: { type: 'string', value: '<file>', description: 'Write the per-epoch figures as JSON' },
  },
  async run(v, io) {
    const weights = weightsOption(v);
    const req = archRequest(v);
    const limit = (name: string) => intOption(name, v[name], 1, 1e9) ?? Infinity;
    const opts = {
      epochs: intOption('epochs', v.epochs, 1, 100000),
      batchSize: intOption('batch-size', v['batch-size'], 1, 4096),
      lr: numOption('lr', v.lr, 1e-9, 1e3),
      weightDecay: numOption('weight-decay', v['weight-decay'], 0, 10),
      nLastBlocks: intOption('n-last-blocks', v['n-last-blocks'], 1, 1024),
      avgpool: v.avgpool === true ? true : undefined,
      augment: v.augment === true ? true : undefined,
      views: intOption('views', v.views, 0, 100000),
      seed: intOption('seed', v.seed, 0, 2 ** 31),
    };
    const saveOut = strOption(v.save);
    const jsonOut = strOption(v.json);
    const warn = (m: string) => io.err(`warning: ${m}`);
    const trainSpec = strOption(v.train) ?? 'synthetic:train';
    const valSpec = strOption(v.val) ?? 'synthetic:val';
    const trainSet = firstN(openDataset(trainSpec, { defaultSplit: 'train', onWarning: warn }), limit('train-limit'));
    const valSet = firstN(openDataset(valSpec, { defaultSplit: 'val', onWarning: warn }), limit('val-limit'));
    const wd = await init();
    let progress: BatchProgress | null = null;
    try {
      const { model, spec } = await loadBackbone(wd, weights, { ...req, checkpointKey: strOption(v['checkpoint-key']) });
      try {
        if (opts.nLastBlocks !== undefined && opts.nLastBlocks > spec.depth) {
          throw new UsageError(`--n-last-blocks ${opts.nLastBlocks} exceeds the model's ${spec.depth} blocks`);
        }
        const crop = intOption('image-size', v['image-size'], 8, 4096) ?? spec.imgSize ?? 224;
        io.out(`backbone: ${weights} (${describeArch(spec)}); crop ${crop} px`);
        io.out(`data: ${trainSpec} (${trainSet.length} images) → ${valSpec} (${valSet.length} images)`);
        const t0 = performance.now();
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
        io.out(`${((performance.now() - t0) / 1000).toFixed(1)} s`);
        if (saveOut) {
          mkdirSync(dirname(resolve(saveOut)), { recursive: true });
          const meta = { webdino_linear: JSON.stringify({ ...c, features: r.features, classes: r.classes, weights }) };
          await writeFileAtomic(saveOut, writeSafetensors({ 'linear.weight': { shape: [r.classes, r.features], data: r.weight }, 'linear.bias': { shape: [r.classes], data: r.bias } }, meta));
          io.out(`classifier: ${saveOut}`);
        }
        if (jsonOut) {
          await writeJson(jsonOut, { weights, train: trainSpec, val: valSpec, config: c, features: r.features, classes: r.classes, best: r.best, last: r.last, epochs: r.epochs });
          io.out(`wrote ${jsonOut}`);
        }
        return 0;
      } finally {
        model.dispose();
      }
    } finally {
      (progress as BatchProgress | null)?.done();
      wd.destroy();
    }
  },
};
