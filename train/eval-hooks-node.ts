/**
 * Periodic evaluation during training: weighted k-NN (DINO's eval_knn) of the teacher backbone,
 * features from the evaluation transform of a training subset and a held-out split.
 */
import type { Engine } from '../engine/engine.js';
import { alignClasses, type Dataset, evenlySpaced } from './data/dataset.js';
import { datasetFeatures } from '../eval/features.js';
import { knnClassify } from '../eval/knn.js';
import type { VisionTransformer } from '../models/vit.js';

/** What an evaluation hook reads of a trainer of either recipe: the teacher backbone and the crop size. */
export interface EvalTarget {
  teacherBackbone: VisionTransformer;
  config: { globalSize: number };
}

export interface KnnEvaluatorOptions {
  train: Dataset;
  val: Dataset;
  /** Training images used as the k-NN memory, evenly spaced over the training set (default: all). */
  trainLimit?: number;
  /** k of the reported accuracy (default 20, DINO's recommendation). */
  k?: number;
}

export { firstN } from './data/dataset.js';

/** Returns an evaluation hook for runTraining: { knn_top1, knn_top5 } of the teacher. */
export function knnEvaluator(engine: Engine, opts: KnnEvaluatorOptions): (trainer: EvalTarget) => Promise<Record<string, number>> {
  const k = opts.k ?? 20;
  return async (trainer) => {
    const backbone = trainer.teacherBackbone;
    const crop = trainer.config.globalSize;
    const trainSet = evenlySpaced(opts.train, opts.trainLimit ?? opts.train.length);
    const tr = await datasetFeatures(engine, backbone, trainSet, { crop });
    const va = await datasetFeatures(engine, backbone, alignClasses(opts.train, opts.val), { crop });
    try {
      const [r] = await knnClassify({
        trainFeatures: tr.features,
        trainLabels: tr.labels,
        testFeatures: va.features,
        testLabels: va.labels,
        numClasses: opts.train.numClasses,
        ks: [Math.min(k, trainSet.length)],
      });
      return { knn_top1: r.top1, knn_top5: r.top5 };
    } finally {
      tr.features.dispose();
      va.features.dispose();
    }
  };
}
