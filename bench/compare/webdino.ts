/**
 * The webdino side of bench/compare/run.sh: one workload per process (so the shell can put a
 * timeout on each), printed as one JSON line, and the final table over everyone's lines.
 *
 *   node webdino.mjs run <workload> [--quick]   → {"impl":"webdino",...} on stdout
 *   node webdino.mjs table <results.jsonl>      → the comparison table
 *   node webdino.mjs list [--quick]             → the workloads, one per line
 *
 * Workloads (full / --quick), the same as bench/compare/torch_bench.py runs:
 *   matmul      4096³ f32                             / 256³
 *   attention   softmax(QKᵀ/√d)V fwd+bwd, B64 H6 N197 d64 / B2 H2 N17 d16
 *   dino-step   one DINO step, ViT-S/16, batch 64, 2×224 + 8×96 px (DINO's defaults) / a tiny ViT
 *   dinov2-inf  ViT-S/14 forward (CLS features), batch 64 at 224 px / batch 2 at 28 px
 *
 * dinov2-inf: DINOv2's ViT-S/14 shape (patch 14, LayerScale 1e-5, a 37×37 position grid resized
 * to 16×16 at 224 px) built with models/vit.ts, which is what this tree has of DINOv2 (its
 * checkpoint loader reads such weights into the same VisionTransformer); DINOv2's SwiGLU (ViT-g
 * only) and registers are not used by ViT-S/14. The flop are the same as DINOv2's.
 *
 * Timing: wall clock, median of `reps` runs after warm-up, each run ending with the device idle
 * (so comparable with torch's timing, which synchronises CUDA); the step includes its one loss
 * readback, as training does. Rates: GFLOP/s (matmul, attention: 12·B·H·N²·d flop for fwd+bwd)
 * and images/s (step, inference); the step's flop model is bench/train-step.ts's.
 */
import { init } from '../../index.js';
import * as ops from '../../engine/ops/index.js';
import { median } from '../../engine/timing.js';
import { Rng } from '../../engine/random.js';
import { VisionTransformer, vitConfig } from '../../models/vit.js';
import { CPU_DEFAULT_CONFIG, DinoTrainer, resolveConfig } from '../../train/trainer.js';
import { dinoStepFlops } from '../train-step.js';
import { readFileSync } from 'node:fs';

/** What one workload reports. */
export interface CompareResult {
  impl: string;
  workload: string;
  shape: string;
  ms: number;
  reps: number;
  gflops?: number;
  imagesPerSec?: number;
  device: string;
  note?: string;
}

const WORKLOADS = ['matmul', 'attention', 'dino-step', 'dinov2-inf'] as const;
type Workload = (typeof WORKLOADS)[number];

async function timeRuns(run: () => Promise<void>, warmup: number, reps: number): Promise<{ ms: number; reps: number }> {
  for (let i = 0; i < warmup; i++) await run();
  const t: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await run();
    t.push(performance.now() - t0);
  }
  return { ms: median(t), reps };
}

async function runWorkload(w: Workload, quick: boolean): Promise<CompareResult> {
  const wd = await init();
  const device = wd.device.adapterName();
  try {
    const base = { impl: 'webdino', workload: w, device };
    if (w === 'matmul') {
      const n = quick ? 256 : 4096;
      const a = wd.randn([n, n], { seed: 1 });
      const b = wd.randn([n, n], { seed: 2 });
      const run = () =>
        wd.scope(async () => {
          ops.matmul(a, b);
          await wd.sync();
        });
      const r = await timeRuns(run, 1, quick ? 3 : 5);
      return { ...base, shape: `${n}x${n} @ ${n}x${n}`, ...r, gflops: (2 * n ** 3) / r.ms / 1e6 };
    }
    if (w === 'attention') {
      const [B, H, N, d] = quick ? [2, 2, 17, 16] : [64, 6, 197, 64];
      const [q, k, v] = [1, 2, 3].map((seed) => wd.randn([B, H, N, d], { seed, requiresGrad: true }));
      const g = wd.randn([B, H, N, d], { seed: 4 });
      const run = () =>
        wd.scope(async () => {
          ops.attention(q, k, v).out.backward(g);
          for (const t of [q, k, v]) t.zeroGrad();
          await wd.sync();
        });
      const r = await timeRuns(run, 1, quick ? 3 : 5);
      return { ...base, shape: `fwd+bwd B${B} H${H} N${N} d${d}`, ...r, gflops: (12 * B * H * N * N * d) / r.ms / 1e6 };
    }
    if (w === 'dino-step') {
      const c = quick
        ? resolveConfig({ ...CPU_DEFAULT_CONFIG, embedDim: 32, depth: 1, numHeads: 2, globalSize: 16, localSize: 8, localCrops: 2, batchSize: 2, outDim: 64, headHidden: 64, headBottleneck: 32 })
        : resolveConfig({ arch: 'vit_small', batchSize: 64 });
      const trainer = new DinoTrainer(wd, c);
      trainer.setItersPerEpoch(1_000_000);
      const B = c.batchSize;
      const globals = wd.randn([2 * B, 3, c.globalSize, c.globalSize], { seed: 11 });
      const locals = wd.randn([c.localCrops * B, 3, c.localSize, c.localSize], { seed: 12 });
      const r = await timeRuns(
        async () => {
          await trainer.step(globals, locals);
        },
        1,
        quick ? 3 : 2,
      );
      trainer.dispose();
      const shape = quick ? `tiny ViT d32 L1, 2x16+2x8 px, B${B}` : `ViT-S/16, 2x224+${c.localCrops}x96 px, B${B}`;
      return { ...base, shape, ...r, imagesPerSec: B / (r.ms / 1000), gflops: dinoStepFlops(c) / r.ms / 1e6 };
    }
    // dinov2-inf
    const [B, S] = quick ? [2, 28] : [64, 224];
    const vit = new VisionTransformer({ engine: wd, rng: new Rng(0) }, vitConfig('vit_small', { patchSize: 14, imgSize: 518, layerScale: 1e-5 }));
    vit.eval();
    const x = wd.randn([B, 3, S, S], { seed: 13 });
    const run = () =>
      wd.noGrad(() =>
        wd.scope(async () => {
          await vit.forward(x).toArray(); // (B, 384) CLS features, read back as a user would
        }),
      );
    const r = await timeRuns(run, 1, quick ? 3 : 5);
    vit.dispose();
    return { ...base, shape: `ViT-S/14 (DINOv2 shape) fwd, B${B} at ${S} px`, ...r, imagesPerSec: B / (r.ms / 1000) };
  } finally {
    wd.destroy();
  }
}

/** The comparison table of results.jsonl: one row per workload, torch's columns when present. */
function table(path: string): string {
  const rows = readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l.trim().startsWith('{'))
    .map((l) => JSON.parse(l) as CompareResult & { error?: string });
  const impls = ['webdino', 'torch-fp32', 'torch-amp'];
  const by = (w: string, impl: string) => rows.find((r) => r.workload === w && r.impl === impl);
  const fmt = (r: (CompareResult & { error?: string }) | undefined) => {
    if (!r) return 'not run';
    if (r.error) return r.error;
    const rate = r.imagesPerSec !== undefined ? `${r.imagesPerSec.toPrecision(3)} img/s` : r.gflops !== undefined ? `${r.gflops.toPrecision(3)} GFLOP/s` : '';
    return `${r.ms.toPrecision(4)} ms (${rate})`;
  };
  const ratio = (a?: CompareResult & { error?: string }, b?: CompareResult & { error?: string }) =>
    a && b && !a.error && !b.error ? `${(a.ms / b.ms).toPrecision(3)}×` : '–';
  const head = ['workload', 'shape', ...impls, 'webdino / torch fp32', 'webdino / torch amp'];
  const lines = [head];
  for (const w of WORKLOADS.filter((x) => rows.some((r) => r.workload === x))) {
    const wdRow = by(w, 'webdino');
    const shape = wdRow?.shape ?? rows.find((r) => r.workload === w)?.shape ?? '';
    lines.push([w, shape, ...impls.map((i) => fmt(by(w, i))), ratio(wdRow, by(w, 'torch-fp32')), ratio(wdRow, by(w, 'torch-amp'))]);
  }
  const widths = head.map((_, i) => Math.max(...lines.map((l) => l[i].length)));
  const out = lines.map((l) => l.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd());
  out.splice(1, 0, widths.map((n) => '-'.repeat(n)).join('  '));
  const devices = [...new Set(rows.filter((r) => r.device).map((r) => `${r.impl}: ${r.device}`))];
  const notes = rows.filter((r) => r.note).map((r) => `${r.impl} ${r.workload}: ${r.note}`);
  return [...out, '', 'ratios: webdino time / torch time (> 1: webdino is slower)', ...devices, ...notes].join('\n');
}

const [cmd, arg, ...rest] = process.argv.slice(2);
const quick = [arg, ...rest].includes('--quick');
if (cmd === 'list') {
  console.log(WORKLOADS.join('\n'));
} else if (cmd === 'run' && (WORKLOADS as readonly string[]).includes(arg)) {
  console.log(JSON.stringify(await runWorkload(arg as Workload, quick)));
} else if (cmd === 'table' && arg) {
  console.log(table(arg));
} else {
  console.error(`usage: webdino.mjs run <${WORKLOADS.join('|')}> [--quick] | table <results.jsonl> | list`);
  process.exit(2);
}
