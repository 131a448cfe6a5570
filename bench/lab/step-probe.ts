/**
 * Lab probe: wall time of DINO training steps, for before/after comparisons of the step.
 * It imports only what main had before the step work (DinoTrainer, CPU_DEFAULT_CONFIG, init), so
 * the same file bundles against an older tree and the two bundles can run in alternating pairs:
 *
 *   npx esbuild bench/lab/step-probe.ts --bundle --platform=node --format=esm --external:webgpu \
 *     --outfile=dist/step-probe.mjs
 *   node dist/step-probe.mjs config=cpu steps=6 [profile]
 *
 * Prints one JSON line: per-step wall ms (after 2 warm-up steps), the median, the process CPU ms
 * per step (lavapipe's threads run in this process: on a loaded machine CPU ms / 2 cores is a
 * steadier figure than wall time), dispatches per step,
 * the loss of every step (bitwise comparison of runs: same seed, same crops) and, with `profile`,
 * the per-kernel GPU time of one more step.
 */
import { init } from '../../index.js';
import { CPU_DEFAULT_CONFIG, DinoTrainer, resolveConfig } from '../../train/trainer.js';

const args = Object.fromEntries(process.argv.slice(2).map((a) => (a.includes('=') ? a.split('=') : [a, 'true'])));
const which = args.config ?? 'cpu';
const steps = Number(args.steps ?? 6);
const config =
  which === 'vits'
    ? resolveConfig({ arch: 'vit_small', batchSize: Number(args.batch ?? 8) })
    : resolveConfig({ ...CPU_DEFAULT_CONFIG, batchSize: Number(args.batch ?? 32) });

const wd = await init();
const trainer = new DinoTrainer(wd, config);
trainer.setItersPerEpoch(1_000_000);
const B = config.batchSize;
const globals = wd.randn([2 * B, 3, config.globalSize, config.globalSize], { seed: 11 });
const locals = wd.randn([config.localCrops * B, 3, config.localSize, config.localSize], { seed: 12 });
const times: number[] = [];
const cpu: number[] = [];
const losses: number[] = [];
let dispatches = 0;
for (let i = 0; i < steps + 2; i++) {
  await wd.sync();
  const d0 = wd.device.stats.dispatches;
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const r = await trainer.step(globals, locals);
  await wd.sync();
  const ms = performance.now() - t0;
  const c1 = process.cpuUsage(c0);
  if (i >= 2) cpu.push((c1.user + c1.system) / 1000);
  losses.push(r.loss);
  if (i >= 2) times.push(ms);
  dispatches = wd.device.stats.dispatches - d0;
}
const sorted = [...times].sort((a, b) => a - b);
const median = sorted.length % 2 ? sorted[sorted.length >> 1] : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
let profile: { kernel: string; ms: number; count: number }[] | undefined;
if (args.profile) {
  wd.device.startProfile();
  await trainer.step(globals, locals);
  profile = await wd.device.stopProfile();
}
console.log(JSON.stringify({ config: which, batch: B, times: times.map((t) => +t.toFixed(1)), median: +median.toFixed(1), cpuMs: cpu.map((t) => +t.toFixed(0)), dispatches, losses, profile }));
trainer.dispose();
wd.destroy();
