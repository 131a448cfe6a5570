/**
 * Kernel-lab probe: f16 against f32 inference (issue 16's "embed --dtype f16"): the CLS features
 * of a ViT forward (eval/embed.ts `embedForward`, what `webdino embed` runs per batch) with the
 * same random weights in f32 and converted to f16 (`castParameters('f16')`). One warm-up forward
 * per dtype (pipelines compiled), then `reps` pairs of timed forwards alternating f32 / f16 (the
 * machine is shared: pairs keep the load comparable), each ending with the features read back.
 * Prints per dtype the median and minimum wall time and images/s, the median of the per-pair
 * ratios, the f16 features' relative error against f32, and with `profile` the per-kernel GPU
 * time of one forward of each.
 *
 *   npx esbuild bench/lab/f16-embed-probe.ts --bundle --platform=node --format=esm --external:webgpu \
 *     --outfile=./.probe.mjs && node ./.probe.mjs [arch=vit_small] [patch=16] [batch=8] [size=224] \
 *     [reps=3] [profile] ; rm ./.probe.mjs
 */
import { loadavg } from 'node:os';
import { createViT, init, Rng } from '../../index.js';
import { embedForward } from '../../eval/embed.js';
import type { ViTArch } from '../../models/vit.js';

const args = new Map(
  process.argv.slice(2).map((a) => {
    const [k, v] = a.split('=');
    return [k, v ?? 'true'] as [string, string];
  }),
);
const arch = (args.get('arch') ?? 'vit_small') as ViTArch;
const patch = Number(args.get('patch') ?? 16);
const B = Number(args.get('batch') ?? 8);
const S = Number(args.get('size') ?? 224);
const reps = Number(args.get('reps') ?? 3);

const wd = await init();
console.log(`adapter: ${wd.device.adapterName()} (${wd.device.variants} kernels), shader-f16: ${wd.device.features.shaderF16}`);
console.log(`model: ${arch}/${patch} random weights, ${S}x${S} px, batch ${B}`);
const models = {
  f32: createViT({ engine: wd, rng: new Rng(1) }, arch, { patchSize: patch, imgSize: S }).eval(),
  f16: createViT({ engine: wd, rng: new Rng(1) }, arch, { patchSize: patch, imgSize: S }).eval(),
};
models.f16.castParameters('f16');
const x = wd.keep(wd.randn([B, 3, S, S], { seed: 2 }));

/** One forward to features on the host; returns them and the wall time in ms. */
async function forward(dtype: 'f32' | 'f16'): Promise<{ ms: number; feats: Float32Array }> {
  await wd.sync();
  const t0 = performance.now();
  const feats = await wd.noGrad(() => wd.scope(async () => embedForward(models[dtype], x).features.toArray()));
  return { ms: performance.now() - t0, feats };
}

const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
for (const d of ['f32', 'f16'] as const) {
  const t0 = performance.now();
  await forward(d);
  console.log(`warm-up ${d}: ${((performance.now() - t0) / 1000).toFixed(1)} s (compiles its pipelines)`);
}
const times = { f32: [] as number[], f16: [] as number[] };
const ratios: number[] = [];
let err = 0;
for (let r = 0; r < reps; r++) {
  const a = await forward('f32');
  const b = await forward('f16');
  times.f32.push(a.ms);
  times.f16.push(b.ms);
  ratios.push(a.ms / b.ms);
  let dn = 0;
  let nn = 0;
  for (let i = 0; i < a.feats.length; i++) {
    dn += (a.feats[i] - b.feats[i]) ** 2;
    nn += a.feats[i] ** 2;
  }
  err = Math.max(err, Math.sqrt(dn / nn));
  console.log(`pair ${r + 1}: f32 ${a.ms.toFixed(0)} ms, f16 ${b.ms.toFixed(0)} ms (load ${loadavg()[0].toFixed(1)})`);
}
for (const d of ['f32', 'f16'] as const) {
  const m = median(times[d]);
  const lo = Math.min(...times[d]);
  console.log(`${d}: median ${m.toFixed(0)} ms (${((B * 1000) / m).toFixed(2)} images/s), min ${lo.toFixed(0)} ms (${((B * 1000) / lo).toFixed(2)} images/s)`);
}
console.log(`f16 speed-up (median of f32/f16 per pair): ${median(ratios).toFixed(2)}x; f16 features vs f32: relative error ${err.toExponential(2)}`);

if (args.has('profile') && wd.device.features.timestampQuery) {
  for (const d of ['f32', 'f16'] as const) {
    wd.device.startProfile();
    await forward(d);
    const prof = await wd.device.stopProfile();
    const total = prof.reduce((s, p) => s + p.ms, 0);
    console.log(`${d} GPU time ${total.toFixed(0)} ms; top kernels: ${prof.slice(0, 8).map((p) => `${p.kernel} ${p.ms.toFixed(0)} ms ×${p.count}`).join(', ')}`);
  }
}
x.dispose();
models.f32.dispose();
models.f16.dispose();
wd.destroy();
