// DINO probe (bench/lab): a short DINO run of any TrainConfig (key=value; aug.KEY=value for augmentation
// overrides; style=confetti|scene, scale=lo,hi, rotation=deg and clutter=c (scene) for the dataset), with k-NN and segmentation of the teacher at
// initialisation and every evalEvery steps. data=DIR trains on a real set instead (an IDX folder with
// t10k files, see bench/data/), with k-NN on its held-out split (first valN=2000) against
// knnTrain=5000 evenly spaced training images, and no segmentation.
// Build: npx esbuild --bundle --platform=node --format=esm bench/lab/dino-probe.ts --outfile=/tmp/dino.mjs --external:webgpu
// Run:   node /tmp/dino.mjs steps=300 evalEvery=100          (the CPU default on the default data)
//        node /tmp/dino.mjs steps=450 epochs=3 evalEvery=150 style=scene scale=0.6,0.9 clutter=0.25 aug.brightness=0.4 aug.contrast=0.4
import { init } from '../../index.js';
import { DinoTrainer, CPU_DEFAULT_CONFIG, itersPerEpochOf } from '../../train/trainer.js';
import { SyntheticShapes } from '../../train/data/synthetic.js';
import { DataLoader } from '../../train/data/loader.js';
import { knnEvaluator, firstN } from '../../train/eval-hooks-node.js';
import { openDataset } from '../../train/data/open-node.js';
import type { Dataset } from '../../train/data/dataset.js';
import { segmentationEvaluator, datasetSegmentationSource } from '../../eval/segment.js';
const args: Record<string, string> = Object.fromEntries(process.argv.slice(2).map((a) => a.split("=")));
const cfg: any = { ...CPU_DEFAULT_CONFIG };
cfg.augment = { ...cfg.augment };
for (const [k, v] of Object.entries(args)) if (k.startsWith('aug.')) cfg.augment[k.slice(4)] = v.includes(',') ? v.split(',').map(Number) : Number(v); else if (!['steps', 'scale', 'evalEvery', 'clutter', 'style', 'rotation', 'data', 'valN', 'knnTrain'].includes(k)) cfg[k] = v.includes(',') ? v.split(',').map(Number) : isNaN(Number(v)) ? v : Number(v);
const scale = args.scale ? (args.scale.split(',').map(Number) as [number, number]) : undefined;
const clutter = args.clutter ? Number(args.clutter) : undefined;
const style = args.style as 'confetti' | 'scene' | undefined;
const rotation = args.rotation ? Number(args.rotation) : undefined;
const wd = await init();
const tr = new DinoTrainer(wd, cfg);
const real = args.data;
const ds: Dataset = real ? openDataset(real, { defaultSplit: 'train' }) : new SyntheticShapes({ style, scale, clutter, rotation });
const val: Dataset = real ? firstN(openDataset(real, { defaultSplit: 'val' }), Number(args.valN ?? 2000)) : new SyntheticShapes({ split: 'val', style, scale, clutter, rotation });
const loader = new DataLoader(ds, { batchSize: tr.config.batchSize, shuffle: true, seed: 0, dropLast: true });
tr.setItersPerEpoch(itersPerEpochOf(tr.config, loader.batchesPerEpoch));
const knn = knnEvaluator(wd, { train: ds, val, trainLimit: Number(args.knnTrain ?? 5000) });
const seg = real ? null : segmentationEvaluator(wd, datasetSegmentationSource(firstN(val, 200), 'val'));
const ev = async () => ({ ...(await knn(tr)), ...(seg ? await seg(tr) : {}) });
console.log('init', JSON.stringify(await ev()));
const steps = Number(args.steps ?? tr.totalIterations), every = Number(args.evalEvery ?? 100);
const t0 = performance.now();
let losses: number[] = [], ents: number[] = [], margs: number[] = [];
outer: while (true) for await (const b of loader.batches()) {
  const r = await tr.stepImages(b.samples.map((s) => s.image));
  losses.push(r.loss); ents.push(r.teacherEntropy); margs.push(r.teacherMarginalEntropy);
  if (tr.iteration % 25 === 0) console.log(`it ${tr.iteration} loss ${(losses.slice(-25).reduce((a, b) => a + b) / 25).toFixed(3)} ent ${ents.at(-1)!.toFixed(2)} marg ${margs.at(-1)!.toFixed(2)} ${((performance.now() - t0) / tr.iteration).toFixed(0)} ms/it`);
  if (tr.iteration % every === 0 || tr.iteration >= steps) console.log(`eval@${tr.iteration}`, JSON.stringify(await ev()));
  if (tr.iteration >= steps) break outer;
}
console.log(`total ${((performance.now() - t0) / 1000).toFixed(0)} s`, JSON.stringify(cfg));
