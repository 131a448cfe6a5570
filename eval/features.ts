/**
 * Features of a whole dataset: images through DINO's evaluation transform (resize, centre crop,
 * ImageNet normalisation) and a backbone, batch by batch, concatenated into one kept [N, D] tensor
 * with the labels. Used by k-NN evaluation, the linear probe and `webdino embed`.
 */
import type { Engine } from '../engine/engine.js';
import type { Tensor } from '../engine/tensor.js';
import type { Dataset } from '../train/data/dataset.js';
import { DataLoader } from '../train/data/loader.js';
import { evalTransform } from '../train/data/transforms.js';
import { extractFeatures } from './knn.js';

export interface DatasetFeaturesOptions {
  /** Side of the centre crop fed to the backbone. */
  crop: number;
  batchSize?: number;
  /** Called after each batch with the number of images done. */
  onProgress?: (done: number, total: number) => void;
  onWarning?: (message: string) => void;
}

export async function datasetFeatures(
  engine: Engine,
  backbone: { forward(x: Tensor): Tensor },
  dataset: Dataset,
  opts: DatasetFeaturesOptions,
): Promise<{ features: Tensor; labels: Int32Array }> {
  const loader = new DataLoader(dataset, { batchSize: opts.batchSize ?? 64, shuffle: false, dropLast: false, onWarning: opts.onWarning });
  const labels: number[] = [];
  let done = 0;
  async function* batches(): AsyncGenerator<Tensor> {
    for await (const b of loader.batches()) {
      for (const s of b.samples) labels.push(s.label);
      const x = evalTransform(engine, b.samples.map((s) => s.image), { crop: opts.crop });
      done += b.samples.length;
      yield x;
      opts.onProgress?.(done, dataset.length);
    }
  }
  const features = await extractFeatures(backbone, batches(), { disposeBatches: true });
  return { features, labels: Int32Array.from(labels) };
}
