/**
 * Kernel-lab probe: dispatches and wall time of one DINOv2 / DINOv3 backbone forward (random
 * weights, `createDinoViT`, eval mode, no gradient), the figure behind the fused SiLU/SwiGLU and
 * RoPE kernels (kernels/elementwise.ts `silu`/`swiglu`, kernels/rope.ts). Per preset: one warm-up
 * forward (pipelines compiled), then `reps` timed forwards, each ending with the CLS features read
 * back (so the time covers the GPU work); prints dispatches per forward and the median and minimum
 * wall time, with the load average (the machine is shared: the minimum is the steadier figure).
 * With `grad`, also one forward + backward of sum(CLS) (eval mode, parameters requiring gradients).
 *
 *   npx esbuild bench/lab/dino-forward-probe.ts --bundle --platform=node --format=esm --external:webgpu \
 *     --outfile=./.probe.mjs && node ./.probe.mjs [presets=dinov3_vits16,dinov3_vits16plus] [batch=8] \
 *     [size=224] [reps=3] [grad] ; rm ./.probe.mjs
 */
import { loadavg } from 'node:os';
import { createDinoViT, init, Rng } from '../../index.js';

const args = new Map(
  process.argv.slice(2).map((a) => {
    const [k, v] = a.split('=');
    return [k, v ?? 'true'] as [string, string];
  }),
);
const presets = (args.get('presets') ?? 'dinov3_vits16,dinov3_vits16plus').split(',');
const B = Number(args.get('batch') ?? 8);
const S = Number(args.get('size') ?? 224);
const reps = Number(args.get('reps') ?? 3);

const wd = await init();
console.log(`adapter: ${wd.device.adapterName()} (${wd.device.variants} kernels); batch ${B} at ${S} px, ${reps} timed forwards`);
for (const preset of presets) {
  const model = createDinoViT({ engine: wd, rng: new Rng(0) }, preset);
  model.eval();
  const x = wd.keep(wd.tensor(new Rng(1).fillUniform(new Float32Array(B * 3 * S * S), -2, 2), [B, 3, S, S]));
  const forward = () => wd.noGrad(() => wd.scope(() => model.forward(x).toArray()));
  await forward(); // compiles the pipelines
  const times: number[] = [];
  let dispatches = 0;
  for (let r = 0; r < reps; r++) {
    const d0 = wd.device.stats.dispatches;
    const t0 = performance.now();
    await forward();
    times.push(performance.now() - t0);
    dispatches = wd.device.stats.dispatches - d0;
  }
  times.sort((a, b) => a - b);
  let line = `${preset.padEnd(18)} forward: ${dispatches} dispatches, median ${times[times.length >> 1].toFixed(0)} ms, min ${times[0].toFixed(0)} ms`;
  if (args.has('grad')) {
    const d0 = wd.device.stats.dispatches;
    const t0 = performance.now();
    await wd.scope(async () => {
      const loss = model.forward(x).sum();
      loss.backward();
      await loss.item();
    });
    line += `; forward+backward: ${wd.device.stats.dispatches - d0} dispatches, ${(performance.now() - t0).toFixed(0)} ms`;
    for (const [, p] of model.namedParameters()) {
      p.grad?.dispose();
      p.grad = null;
    }
  }
  console.log(`${line} (load ${loadavg()[0].toFixed(1)})`);
  x.dispose();
  model.dispose();
}
wd.destroy();
