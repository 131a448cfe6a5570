// DINOv2 probe (bench/lab): a short run of DINOv2's recipe at the CPU-default size with any
// DinoV2Config override (key=value; ibot=w and koleo=w set the loss weights, aug.KEY=value the
// augmentation; data=DIR trains on DIR's training split and evaluates on its held-out split, as
// bench/lab/dino-probe.ts: an IDX folder with t10k files such as Fashion-MNIST), with the teacher's
// k-NN (k = 20; on real data a memory of knnTrain = 5000 evenly spaced training images and the
// first valN = 2000 held-out images) and, on the embedded data, its attention-map segmentation
// (64 px input, 200 held-out images) at initialisation and every evalEvery steps. recipe=dino runs DINO's CPU
// default through the same harness instead (the keys are then TrainConfig's).
// Build: npx esbuild --bundle --platform=node --format=esm bench/lab/dinov2-probe.ts --outfile=dist/lab/dinov2.mjs --external:webgpu
//        (inside the repository, so that the external webgpu package resolves from node_modules)
// Run:   node dist/lab/dinov2.mjs steps=780 evalEvery=390              (the DINOv2 CPU default)
//        node dist/lab/dinov2.mjs steps=390 evalEvery=390 ibot=0        (iBOT off)
//        node dist/lab/dinov2.mjs data=/tmp/data/fmnist epochLength=156 steps=390 evalEvery=390
import { init } from '../../index.js';
import { DinoTrainer, CPU_DEFAULT_CONFIG } from '../../train/trainer.js';
import { DinoV2Trainer, DINOV2_CPU_DEFAULT_CONFIG } from '../../train/dinov2-trainer.js';
import { DataLoader } from '../../train/data/loader.js';
import { openDataset } from '../../train/data/open-node.js';
import { knnEvaluator, firstN } from '../../train/eval-hooks-node.js';
import { segmentationEvaluator, datasetSegmentationSource } from '../../eval/segment.js';

const args: Record<string, string> = Object.fromEntries(process.argv.slice(2).map((a) => a.split('=')));
const v1 = args.recipe === 'dino';
const cfg: any = v1 ? { ...CPU_DEFAULT_CONFIG } : { ...DINOV2_CPU_DEFAULT_CONFIG, lossWeights: { dino: 1, koleo: 0.1, ibot: 1 } };
cfg.augment = { ...cfg.augment };
const value = (v: string) => (v.includes(',') ? v.split(',').map(Number) : v === 'true' ? true : v === 'false' ? false : isNaN(Number(v)) ? v : Number(v));
for (const [k, v] of Object.entries(args)) {
  if (k.startsWith('aug.')) cfg.augment[k.slice(4)] = value(v);
  else if (k === 'ibot' || k === 'koleo') cfg.lossWeights[k] = Number(v);
  else if (!['steps', 'evalEvery', 'data', 'recipe', 'valN', 'knnTrain'].includes(k)) cfg[k] = value(v);
}
const wd = await init();
const data = args.data;
const ds = data ? openDataset(data, { defaultSplit: 'train' }) : openDataset('synthetic', { defaultSplit: 'train' });
const val = data ? firstN(openDataset(data, { defaultSplit: 'val' }), Number(args.valN ?? 2000)) : openDataset('synthetic:val', { defaultSplit: 'val' });
const loader = new DataLoader(ds, { batchSize: cfg.batchSize, shuffle: true, seed: cfg.seed ?? 0, dropLast: true });
const tr: DinoTrainer | DinoV2Trainer = v1 ? new DinoTrainer(wd, cfg) : new DinoV2Trainer(wd, { epochLength: loader.batchesPerEpoch, ...cfg });
if (tr instanceof DinoTrainer) tr.setItersPerEpoch(loader.batchesPerEpoch);
const knn = knnEvaluator(wd, { train: ds, val, ...(data ? { trainLimit: Number(args.knnTrain ?? 5000) } : {}) });
const seg = data ? null : segmentationEvaluator(wd, datasetSegmentationSource(firstN(val, 200), 'val'));
const ev = async () => {
  const k = await knn(tr);
  const s = seg ? await seg({ teacherBackbone: tr.teacherBackbone, config: { globalSize: 64 } }) : {};
  // DINOv2's trainable weight_g of the teacher's DINO head (DINO v1 fixes it at 1): its mean.
  let g: number | undefined;
  if (tr instanceof DinoV2Trainer) {
    const w = tr.teacher.dinoHead.namedParameters().find(([n]) => n === 'last_layer.weight_g')?.[1];
    if (w) g = +((await w.toArray()).reduce((a, b) => a + b, 0) / w.size).toFixed(3);
  }
  return { knn_top1: +k.knn_top1.toFixed(1), ...(seg ? { seg64: +(s as Record<string, number>).seg_jaccard_best_head.toFixed(1) } : {}), ...(g !== undefined ? { weight_g: g } : {}) };
};
console.log('init', JSON.stringify(await ev()));
const steps = Number(args.steps ?? tr.totalIterations);
const every = Number(args.evalEvery ?? 100);
const t0 = performance.now();
const hist: Record<string, number[]> = {};
const push = (k: string, x: number) => (hist[k] ??= []).push(x);
const mean = (k: string) => (hist[k] ?? [NaN]).slice(-25).reduce((a, b) => a + b, 0) / Math.min(25, hist[k]?.length ?? 1);
outer: while (true)
  for await (const b of loader.batches()) {
    const r = await tr.stepImages(b.samples.map((s) => s.image));
    push('loss', r.loss);
    if ('losses' in r) {
      for (const [k, x] of Object.entries(r.losses)) push(k, x);
      push('ent', r.teacherEntropy.cls);
      push('marg', r.teacherMarginalEntropy.cls);
      push('entP', r.teacherEntropy.patch);
    } else {
      push('ent', r.teacherEntropy);
      push('marg', r.teacherMarginalEntropy);
    }
    if (tr.iteration % 25 === 0) {
      const parts = Object.keys(hist).map((k) => `${k} ${mean(k).toFixed(3)}`);
      console.log(`it ${tr.iteration} ${parts.join(' ')} ${((performance.now() - t0) / tr.iteration).toFixed(0)} ms/it`);
    }
    if (tr.iteration % every === 0 || tr.iteration >= steps) console.log(`eval@${tr.iteration}`, JSON.stringify(await ev()));
    if (tr.iteration >= steps) break outer;
  }
console.log(`total ${((performance.now() - t0) / 1000).toFixed(0)} s`, JSON.stringify(cfg));
tr.dispose();
process.exit(0);
