/**
 * `webdino eval knn`: DINO's weighted k-NN evaluation (eval_knn.py) of a backbone: CLS features of
 * the evaluation transform (resize, centre crop, ImageNet normalisation), l2-normalised; each test
 * image's k nearest training images vote with weight exp(similarity / T); top-1 and top-5 for each k.
 */
import { init } from '../../index.js';
import { openDataset } from '../../train/datasets-node.js';
import { datasetFeatures } from '../../train/features.js';
import { knnClassify } from '../../train/knn.js';
import { firstN } from '../../train/eval-node.js';
import { loadBackbone } from '../../train/embed-node.js';
import { archRequest, weightsOption, WEIGHT_OPTIONS } from './embed.js';
import { type Command, intOption, numOption, strOption, UsageError } from '../command.js';

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
