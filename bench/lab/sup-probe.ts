// Supervised probe (bench/lab): trains a ViT + linear classifier on the embedded dataset with labels, to
// tell "the backbone cannot learn this data in N steps" apart from "DINO does not learn".
// Build: npx esbuild --bundle --platform=node --format=esm bench/lab/sup-probe.ts --outfile=/tmp/sup.mjs --external:webgpu
// Run:   node /tmp/sup.mjs steps=400 lr=1e-3 patch=8 style=scene scale=0.7,0.9
import { init } from '../../index.js';
import { Rng } from '../../engine/random.js';
import * as ops from '../../engine/ops/index.js';
import { AdamW, ParamArena, dinoDecayMask } from '../../engine/optim.js';
import { VisionTransformer, vitConfig } from '../../models/vit.js';
import { Linear, type Module } from '../../models/nn.js';
import { SyntheticShapes } from '../../train/data/synthetic.js';
import { evalTransform } from '../../train/data/transforms.js';

const args: Record<string, string> = Object.fromEntries(process.argv.slice(2).map((a) => a.split("=")));
const num = (k: string, d: number) => (args[k] !== undefined ? Number(args[k]) : d);
const dim = num('dim', 64), depth = num('depth', 4), heads = num('heads', 2), patch = num('patch', 4);
const size = num('size', 32), steps = num('steps', 200), B = num('batch', 32), lr = num('lr', 1e-3);
const wd = await init();
const ctx = { engine: wd, rng: new Rng(1) };
const vit = new VisionTransformer(ctx, vitConfig({ embedDim: dim, depth, numHeads: heads }, { imgSize: size, patchSize: patch }));
const fc = new Linear(ctx, dim, 10);
const arena = new ParamArena(wd, { capacity: vit.numParameters() + fc.numParameters() + 64 * 200, label: 'p' });
for (const m of [vit, fc] as Module[]) for (const [name, t] of m.namedParameters()) {
  const v = arena.add(name, t, undefined, { requiresGrad: true }); m.replaceTensor(name, v).dispose(); v.requiresGrad = true;
}
const opt = new AdamW(arena, { lr, weightDecay: 0.05, wdMask: dinoDecayMask });
const scale = args.scale ? (args.scale.split(',').map(Number) as [number, number]) : undefined;
const style = args.style as 'confetti' | 'scene' | undefined;
const train = new SyntheticShapes({ split: 'train', scale, style }), val = new SyntheticShapes({ split: 'val', length: 500, scale, style });
const rng = new Rng(7);
let accs: number[] = [];
const t0 = performance.now();
for (let s = 0; s < steps; s++) {
  const idx = Array.from({ length: B }, () => rng.int(train.length));
  const samples = idx.map((i) => train.getSync(i));
  opt.lr = lr * Math.min(1, (s + 1) / 20) * 0.5 * (1 + Math.cos(Math.PI * s / steps));
  const acc = await wd.scope(async () => {
    const x = evalTransform(wd, samples.map((q) => q.image), { crop: size });
    const logits = fc.forward(vit.forward(x));
    const onehot = new Float32Array(B * 10); samples.forEach((q, i) => (onehot[i * 10 + q.label] = 1));
    const loss = ops.softCrossEntropy(wd.tensor(onehot, [B, 10]), logits).mean();
    loss.backward();
    arena.gatherGrads(); opt.step(); opt.zeroGrad();
    const lg = await logits.toArray();
    let c = 0; samples.forEach((q, i) => { let best = 0; for (let k = 1; k < 10; k++) if (lg[i * 10 + k] > lg[i * 10 + best]) best = k; if (best === q.label) c++; });
    return c / B;
  });
  accs.push(acc);
  if ((s + 1) % 25 === 0) console.log(`step ${s + 1} train-acc(last25) ${(accs.slice(-25).reduce((a, b) => a + b) / 25 * 100).toFixed(1)}% ${((performance.now() - t0) / (s + 1)).toFixed(0)} ms/step`);
}
let correct = 0;
vit.eval();
for (let i = 0; i < val.length; i += 50) {
  const samples = Array.from({ length: Math.min(50, val.length - i) }, (_, j) => val.getSync(i + j));
  await wd.noGrad(() => wd.scope(async () => {
    const lg = await fc.forward(vit.forward(evalTransform(wd, samples.map((q) => q.image), { crop: size }))).toArray();
    samples.forEach((q, k) => { let best = 0; for (let c = 1; c < 10; c++) if (lg[k * 10 + c] > lg[k * 10 + best]) best = c; if (best === q.label) correct++; });
  }));
}
console.log(`val acc ${(correct / val.length * 100).toFixed(1)}%  (${JSON.stringify(args)})`);
