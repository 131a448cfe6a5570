// DINOv2 probe (bench/lab): a short run of DINOv2's recipe at the CPU-default size with any
// DinoV2Config override (key=value; ibot=w and koleo=w set the loss weights, aug.KEY=value the
// augmentation; data=DIR trains on DIR's training split and evaluates on its held-out split, as
// bench/lab/dino-probe.ts: an IDX folder with t10k files such as Fashion-MNIST), with the teacher's
// k-NN (k = 20; on real data a memory of knnTrain = 5000 evenly spaced training images and the
// first valN = 2000 held-out images) and, on the embedded data, its attention-map segmentation
// (64 px input, 200 held-out images: seg64) and two patch-level figures of the teacher's patch
// tokens (patch64: a linear segmentation, kmeans64: k-means k = 2; see patchSegmentation) at
// initialisation and every evalEvery steps. recipe=dino runs DINO's CPU default through the same
// harness instead (the keys are then TrainConfig's). evalOnly=1 stops after the evaluation at
// initialisation, weights=FILE (with evalOnly=1) evaluates a saved teacher backbone instead,
// noInit=1 skips the evaluation at initialisation.
// Build: npx esbuild --bundle --platform=node --format=esm bench/lab/dinov2-probe.ts --outfile=dist/lab/dinov2.mjs --external:webgpu
//        (inside the repository, so that the external webgpu package resolves from node_modules)
// Run:   node dist/lab/dinov2.mjs steps=780 evalEvery=390              (the DINOv2 CPU default)
//        node dist/lab/dinov2.mjs steps=390 evalEvery=390 ibot=0        (iBOT off)
//        node dist/lab/dinov2.mjs data=/tmp/data/fmnist epochLength=156 steps=390 evalEvery=390
//        node dist/lab/dinov2.mjs epochs=3 epochLength=100 steps=300 evalEvery=150 KEY=VALUE   (compressed schedule)
//        node dist/lab/dinov2.mjs recipe=dino evalOnly=1 weights=RUN/teacher_backbone.safetensors
import { init } from '../../index.js';
import { DinoTrainer, CPU_DEFAULT_CONFIG } from '../../train/trainer.js';
import { DinoV2Trainer, DINOV2_CPU_DEFAULT_CONFIG } from '../../train/dinov2-trainer.js';
import { DataLoader } from '../../train/data/loader.js';
import { openDataset } from '../../train/data/open-node.js';
import { knnEvaluator, firstN } from '../../train/eval-hooks-node.js';
import { segmentationEvaluator, datasetSegmentationSource, squareInput, maskToImage, type SegmentationSample } from '../../eval/segment.js';
import { jaccard } from '../../eval/attention-maps.js';
import type { VisionTransformer } from '../../models/vit.js';
import type { Engine } from '../../engine/engine.js';
import { loadBackbone } from '../../models/backbone-node.js';

/**
 * The patch-level figure: a linear segmentation of the teacher's patch tokens (x_norm_patchtokens,
 * 64 px input, 8×8 grid at patch 8). A ridge regression (λ = 1e-3 · mean diagonal of XᵀX, on the
 * bias too) of "this cell is object" (0/1: at least half of the cell's ground-truth pixels) on
 * [features, 1] is fitted on samples[evalN:] and scored on samples[:evalN]: cell predicted object
 * when w·x > 0.5, upsampled to the image as eval/segment.ts does, mean Jaccard against the mask.
 * It reads the patch features themselves (what iBOT trains), where the attention figure reads the
 * CLS token's attention.
 */
async function patchSegmentation(engine: Engine, model: VisionTransformer, samples: SegmentationSample[], evalN: number): Promise<{ linear: number; kmeans: number }> {
  const side = 64;
  const D = model.cfg.embedDim;
  const feats: Float32Array[] = [];
  let h = 0;
  let w = 0;
  for (let start = 0; start < samples.length; start += 50) {
    const chunk = samples.slice(start, start + 50);
    const x = squareInput(engine, chunk.map((c) => c.image), side);
    const f = await engine.noGrad(() =>
      engine.scope(async () => {
        const r = model.forwardFeatures(x);
        h = r.h;
        w = r.w;
        return r.xNormPatchTokens.toArray();
      }),
    );
    x.dispose();
    const per = h * w * D;
    chunk.forEach((_, b) => feats.push(f.slice(b * per, (b + 1) * per)));
  }
  // Cell labels: the share of the cell's ground-truth pixels (cell (i, j) covers y in [i·H/h, (i+1)·H/h)).
  const labels = samples.map((s) => {
    const H = s.image.height;
    const W = s.image.width;
    const sum = new Float64Array(h * w);
    const cnt = new Float64Array(h * w);
    for (let y = 0; y < H; y++)
      for (let x = 0; x < W; x++) {
        const c = Math.floor((y * h) / H) * w + Math.floor((x * w) / W);
        sum[c] += s.mask[y * W + x] ? 1 : 0;
        cnt[c]++;
      }
    return Array.from(sum, (v, c) => (v / cnt[c] >= 0.5 ? 1 : 0));
  });
  // Normal equations over [features, 1] of every cell of the fit images.
  const P = D + 1;
  const A = new Float64Array(P * P);
  const rhs = new Float64Array(P);
  for (let i = evalN; i < samples.length; i++)
    for (let c = 0; c < h * w; c++) {
      const row = [...feats[i].subarray(c * D, (c + 1) * D), 1];
      for (let a = 0; a < P; a++) {
        rhs[a] += row[a] * labels[i][c];
        for (let b = 0; b < P; b++) A[a * P + b] += row[a] * row[b];
      }
    }
  let diag = 0;
  for (let a = 0; a < P; a++) diag += A[a * P + a] / P;
  for (let a = 0; a < P; a++) A[a * P + a] += 1e-3 * diag;
  // Gaussian elimination with partial pivoting.
  const wv = Float64Array.from(rhs);
  for (let k = 0; k < P; k++) {
    let piv = k;
    for (let r = k + 1; r < P; r++) if (Math.abs(A[r * P + k]) > Math.abs(A[piv * P + k])) piv = r;
    for (let b = 0; b < P; b++) [A[k * P + b], A[piv * P + b]] = [A[piv * P + b], A[k * P + b]];
    [wv[k], wv[piv]] = [wv[piv], wv[k]];
    for (let r = k + 1; r < P; r++) {
      const m = A[r * P + k] / A[k * P + k];
      for (let b = k; b < P; b++) A[r * P + b] -= m * A[k * P + b];
      wv[r] -= m * wv[k];
    }
  }
  for (let k = P - 1; k >= 0; k--) {
    for (let b = k + 1; b < P; b++) wv[k] -= A[k * P + b] * wv[b];
    wv[k] /= A[k * P + k];
  }
  const scoreGrids = (grids: Uint8Array[]) =>
    (100 * grids.reduce((acc, g, i) => acc + jaccard(maskToImage(g, h, w, samples[i].image.height, samples[i].image.width), samples[i].mask), 0)) / grids.length;
  const linear = scoreGrids(
    feats.slice(0, evalN).map((f) =>
      Uint8Array.from({ length: h * w }, (_, c) => {
        let v = wv[D];
        for (let d = 0; d < D; d++) v += wv[d] * f[c * D + d];
        return v > 0.5 ? 1 : 0;
      }),
    ),
  );
  return { linear, kmeans: kmeansSegmentation(feats.slice(0, evalN), h * w, D, scoreGrids) };
}

/**
 * The unsupervised patch figure: k-means (k = 2, 30 Lloyd iterations, cosine: features
 * l2-normalised) over every patch token of the evaluation images together, started from the token
 * farthest from the mean and the token farthest from that one; then one of the two clusters is
 * called "object" for the whole set, the one with the higher mean Jaccard (one choice per set, as
 * the attention figure's best head).
 */
function kmeansSegmentation(feats: Float32Array[], cells: number, D: number, score: (grids: Uint8Array[]) => number): number {
  const n = feats.length * cells;
  const X = new Float64Array(n * D);
  feats.forEach((f, i) => {
    for (let c = 0; c < cells; c++) {
      let norm = 0;
      for (let d = 0; d < D; d++) norm += f[c * D + d] ** 2;
      norm = Math.sqrt(norm) || 1;
      for (let d = 0; d < D; d++) X[(i * cells + c) * D + d] = f[c * D + d] / norm;
    }
  });
  const dist = (r: number, C: Float64Array) => {
    let s = 0;
    for (let d = 0; d < D; d++) s += (X[r * D + d] - C[d]) ** 2;
    return s;
  };
  const mean = new Float64Array(D);
  for (let r = 0; r < n; r++) for (let d = 0; d < D; d++) mean[d] += X[r * D + d] / n;
  const farthest = (from: Float64Array) => {
    let best = 0;
    for (let r = 1; r < n; r++) if (dist(r, from) > dist(best, from)) best = r;
    return X.slice(best * D, (best + 1) * D);
  };
  const C = [farthest(mean)];
  C.push(farthest(C[0]));
  const assign = new Uint8Array(n);
  for (let iter = 0; iter < 30; iter++) {
    for (let r = 0; r < n; r++) assign[r] = dist(r, C[1]) < dist(r, C[0]) ? 1 : 0;
    for (let k = 0; k < 2; k++) {
      const sum = new Float64Array(D);
      let cnt = 0;
      for (let r = 0; r < n; r++)
        if (assign[r] === k) {
          cnt++;
          for (let d = 0; d < D; d++) sum[d] += X[r * D + d];
        }
      if (cnt > 0) C[k] = sum.map((v) => v / cnt);
    }
  }
  const grids = (k: number) => feats.map((_, i) => Uint8Array.from({ length: cells }, (_, c) => (assign[i * cells + c] === k ? 1 : 0)));
  return Math.max(score(grids(0)), score(grids(1)));
}

const args: Record<string, string> = Object.fromEntries(process.argv.slice(2).map((a) => a.split('=')));
const v1 = args.recipe === 'dino';
const cfg: any = v1 ? { ...CPU_DEFAULT_CONFIG } : { ...DINOV2_CPU_DEFAULT_CONFIG, lossWeights: { dino: 1, koleo: 0.1, ibot: 1 } };
cfg.augment = { ...cfg.augment };
const value = (v: string) => (v.includes(',') ? v.split(',').map(Number) : v === 'true' ? true : v === 'false' ? false : isNaN(Number(v)) ? v : Number(v));
for (const [k, v] of Object.entries(args)) {
  if (k.startsWith('aug.')) cfg.augment[k.slice(4)] = value(v);
  else if (k === 'ibot' || k === 'koleo') cfg.lossWeights[k] = Number(v);
  else if (!['steps', 'evalEvery', 'data', 'recipe', 'valN', 'knnTrain', 'evalOnly', 'weights', 'noInit'].includes(k)) cfg[k] = value(v);
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
// Patch-level figure: fitted on held-out images 200–699, scored on the first 200 (as seg64).
const patchSource = data ? null : datasetSegmentationSource(firstN(val, 700), 'val');
const patchSamples = patchSource ? await Promise.all(Array.from({ length: patchSource.length }, (_, i) => patchSource.get(i))) : [];
// weights=FILE (with evalOnly=1): evaluate a saved teacher backbone (e.g. a `webdino train` run's
// teacher_backbone.safetensors) instead of the trainer's, at the trainer's crop size.
const loaded = args.weights ? (await loadBackbone(wd, args.weights)).model : null;
const target = () => (loaded ? { teacherBackbone: loaded, config: { globalSize: tr.config.globalSize } } : tr);
const ev = async () => {
  const k = await knn(target());
  const s = seg ? await seg({ teacherBackbone: target().teacherBackbone, config: { globalSize: 64 } }) : {};
  const patch = seg ? await patchSegmentation(wd, target().teacherBackbone, patchSamples, 200) : undefined;
  // DINOv2's trainable weight_g of the teacher's DINO head (DINO v1 fixes it at 1): its mean.
  let g: number | undefined;
  if (tr instanceof DinoV2Trainer) {
    const w = tr.teacher.dinoHead.namedParameters().find(([n]) => n === 'last_layer.weight_g')?.[1];
    if (w) g = +((await w.toArray()).reduce((a, b) => a + b, 0) / w.size).toFixed(3);
  }
  return { knn_top1: +k.knn_top1.toFixed(1), ...(seg ? { seg64: +(s as Record<string, number>).seg_jaccard_best_head.toFixed(1), patch64: +patch!.linear.toFixed(1), kmeans64: +patch!.kmeans.toFixed(1) } : {}), ...(g !== undefined ? { weight_g: g } : {}) };
};
if (!args.noInit) console.log('init', JSON.stringify(await ev()));
if (args.evalOnly) process.exit(0);
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
