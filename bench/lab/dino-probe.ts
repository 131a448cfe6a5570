// DINO probe (bench/lab): a short DINO run of any TrainConfig (key=value; aug.KEY=value for augmentation
// overrides; scale=lo,hi and clutter=c for the dataset), with k-NN and segmentation of the teacher at
// initialisation and every evalEvery steps.
// Build: npx esbuild --bundle --platform=node --format=esm bench/lab/dino-probe.ts --outfile=/tmp/dino.mjs --external:webgpu
// Run:   node /tmp/dino.mjs steps=450 epochs=3 evalEvery=150 patchSize=8 scale=0.6,0.9 clutter=0.25 teacherTemp=0.02 warmupTeacherTemp=0.02
import { init } from '../../index.js';
import { DinoTrainer, CPU_DEFAULT_CONFIG } from '../../train/trainer.js';
import { SyntheticShapes } from '../../train/data/synthetic.js';
import { DataLoader } from '../../train/data/loader.js';
import { knnEvaluator, firstN } from '../../train/eval-node.js';
import { segmentationEvaluator, datasetSegmentationSource } from '../../train/segment.js';
const args: Record<string, string> = Object.fromEntries(process.argv.slice(2).map((a) => a.split("=")));
const cfg: any = { ...CPU_DEFAULT_CONFIG };
cfg.augment = {};
for (const [k, v] of Object.entries(args)) if (k.startsWith('aug.')) cfg.augment[k.slice(4)] = v.includes(',') ? v.split(',').map(Number) : Number(v); else if (!['steps', 'scale', 'evalEvery', 'clutter'].includes(k)) cfg[k] = v.includes(',') ? v.split(',').map(Number) : isNaN(Number(v)) ? v : Number(v);
const scale = args.scale ? (args.scale.split(',').map(Number) as [number, number]) : undefined;
const clutter = args.clutter ? Number(args.clutter) : undefined;
const wd = await init();
const tr = new DinoTrainer(wd, cfg);
const ds = new SyntheticShapes({ scale, clutter }), val = new SyntheticShapes({ split: 'val', scale, clutter });
const loader = new DataLoader(ds, { batchSize: tr.config.batchSize, shuffle: true, seed: 0, dropLast: true });
tr.setItersPerEpoch(loader.batchesPerEpoch);
const knn = knnEvaluator(wd, { train: ds, val });
const seg = segmentationEvaluator(wd, datasetSegmentationSource(firstN(val, 200), 'val'));
const ev = async () => ({ ...(await knn(tr)), ...(await seg(tr)) });
console.log('init', JSON.stringify(await ev()));
const steps = Number(args.steps ?? tr.totalIterations), every = Number(args.evalEvery ?? 100);
const t0 = performance.now();
let losses: number[] = [], ents: number[] = [];
outer: while (true) for await (const b of loader.batches()) {
  const r = await tr.stepImages(b.samples.map((s) => s.image));
  losses.push(r.loss); ents.push(r.teacherEntropy);
  if (tr.iteration % 25 === 0) console.log(`it ${tr.iteration} loss ${(losses.slice(-25).reduce((a, b) => a + b) / 25).toFixed(3)} ent ${ents.at(-1)!.toFixed(2)} ${((performance.now() - t0) / tr.iteration).toFixed(0)} ms/it`);
  if (tr.iteration % every === 0 || tr.iteration >= steps) console.log(`eval@${tr.iteration}`, JSON.stringify(await ev()));
  if (tr.iteration >= steps) break outer;
}
console.log(`total ${((performance.now() - t0) / 1000).toFixed(0)} s`, JSON.stringify(cfg));
