#!/usr/bin/env node
/**
 * The webdino side of bench/compare/pairs.sh: times the DINO step at the CPU default config (as
 * issue 16 measured it: ViT dim 64, depth 4, patch 8, batch 32, 2×32 + 6×16 px) in one process and prints one JSON line.
 *
 *   node bench/compare/dino-step-cpu.mjs [--root DIR] [--reps N] [--warmup N] [--profile] [--current]
 *   node bench/compare/dino-step-cpu.mjs --summarize pairs.jsonl      (bench/compare/pairs.sh's table)
 *
 * --root is a built webdino checkout (its dist/index.js, from `npm run build`; default: this one),
 * so the same script times two commits side by side (before / after). Plain JavaScript rather than
 * TypeScript for that reason: it imports the checkout's bundle at run time and uses only the API
 * that every commit since the trainer landed has (init, DinoTrainer, resolveConfig,
 * CPU_DEFAULT_CONFIG, Engine.randn, device.stats.dispatches).
 *
 * Config: the CPU default as issue 16 measured it (see issueConfig), or with --current the
 * checkout's own CPU_DEFAULT_CONFIG (not comparable across commits whose default differs).
 *
 * Timing: wall clock, median of `reps` steps after `warmup` untimed ones (the first compiles the
 * pipelines); a step ends with its one loss readback, so the device is idle between steps, as in
 * torch_bench.py's dino-step-cpu. The crops are fixed random tensors: augmentation is not timed.
 * Dispatches: counted over one more step. --profile adds one profiled step (each dispatch timed
 * on its own, so slower than a plain step): `profile` lists kernel, GPU ms and dispatch count.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL, fileURLToPath } from 'node:url';

function option(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

/**
 * The CPU default config as issue 16 measured it (commit ae6ff10 and before): ViT dim 64, depth 4,
 * 2 heads, patch 8, batch 32, 2×32 + 6×16 px, DINO head 512 → 128 → 1024 prototypes without
 * BatchNorm, EMA centering. Later commits changed the default head (64 prototypes, BatchNorm,
 * Sinkhorn-Knopp targets; --current times that); the keys they added are turned off here so that
 * every commit runs the same step as torch_bench.py's dino-step-cpu.
 */
function issueConfig(cpuDefault) {
  const c = { ...cpuDefault, outDim: 1024, headHidden: 512, headBottleneck: 128 };
  if ('useBnInHead' in cpuDefault) c.useBnInHead = false;
  if ('centering' in cpuDefault) c.centering = 'center';
  return c;
}

/** The median of a non-empty list. */
function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/**
 * The summary of pairs.sh's lines: per root (in order of first appearance), each pair ratio
 * torch ms / webdino ms, their median, median images/s of both sides and dispatches per step;
 * with two or more roots, each root's median ratio over the first root's.
 */
function summarize(path) {
  const lines = readFileSync(path, 'utf8').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
  const roots = [...new Set(lines.map((l) => l.root))];
  const out = [];
  const medians = [];
  for (const root of roots) {
    const rs = lines.filter((l) => l.root === root);
    const ratios = rs.map((l) => l.torch.ms / l.webdino.ms);
    const m = median(ratios);
    medians.push(m);
    const w = rs[0].webdino;
    out.push(
      `${w.commit} (${root}): ${rs.length} pairs, ratios ${ratios.map((r) => r.toFixed(3)).join(' ')}`,
      `  median ratio ${m.toFixed(3)}; webdino ${median(rs.map((l) => l.webdino.imagesPerSec)).toFixed(1)} images/s, ` +
        `torch ${median(rs.map((l) => l.torch.imagesPerSec)).toFixed(1)} images/s (medians); ` +
        `${[...new Set(rs.map((l) => l.webdino.dispatches))].join('/')} dispatches per step; load ${rs.map((l) => l.load).join(' ')}`,
    );
  }
  for (let i = 1; i < roots.length; i++) out.push(`median ratio of ${lines.find((l) => l.root === roots[i]).webdino.commit} / ${lines.find((l) => l.root === roots[0]).webdino.commit}: ${(medians[i] / medians[0]).toFixed(2)}×`);
  return out.join('\n');
}

if (process.argv.includes('--summarize')) {
  console.log(summarize(option('--summarize')));
  process.exit(0);
}

const root = resolve(option('--root', fileURLToPath(new URL('../..', import.meta.url))));
const reps = Number(option('--reps', '5'));
const warmup = Number(option('--warmup', '2'));

/** The checkout's commit (short hash), or '?' outside git. */
function commitOf(dir) {
  try {
    return execFileSync('git', ['-C', dir, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  } catch {
    return '?';
  }
}

const wd0 = await import(pathToFileURL(`${root}/dist/index.js`).href);
const wd = await wd0.init();
const c = wd0.resolveConfig(process.argv.includes('--current') ? { ...wd0.CPU_DEFAULT_CONFIG } : issueConfig(wd0.CPU_DEFAULT_CONFIG));
const trainer = new wd0.DinoTrainer(wd, c);
trainer.setItersPerEpoch(10_000); // schedules long enough for any run here, cheap to build
const B = c.batchSize;
const globals = wd.randn([2 * B, 3, c.globalSize, c.globalSize], { seed: 11 });
const locals = wd.randn([c.localCrops * B, 3, c.localSize, c.localSize], { seed: 12 });
const step = () => trainer.step(globals, locals);

for (let i = 0; i < warmup; i++) await step();
const times = [];
for (let i = 0; i < reps; i++) {
  const t0 = performance.now();
  await step();
  times.push(performance.now() - t0);
}
const d0 = wd.device.stats.dispatches;
await step();
const dispatches = wd.device.stats.dispatches - d0;
let profile;
if (process.argv.includes('--profile') && wd.device.features.timestampQuery) {
  wd.device.startProfile();
  await step();
  profile = await wd.device.stopProfile();
}
await wd.sync(); // the optimizer's last dispatches may still be unsubmitted
trainer.dispose();
wd.destroy();

const ms = median(times);
console.log(
  JSON.stringify({
    impl: 'webdino',
    workload: 'dino-step-cpu',
    root,
    commit: commitOf(root),
    device: wd.device.adapterName(),
    ms,
    times,
    imagesPerSec: B / (ms / 1000),
    dispatches,
    ...(profile ? { profile } : {}),
  }),
);
