/** `webdino bench`: times the kernels on this adapter. */
import { DEFAULT_WARMUP, runBench } from '../../bench/run.js';
import { BENCH_KERNELS } from '../../bench/suite.js';
import { MAX_REPS } from '../../engine/timing.js';
import { defineCommand, UsageError } from '../command.js';
import { flag, int, list } from '../options.js';
import { withEngine } from '../resources.js';

export const bench = defineCommand({
  name: 'bench',
  summary: 'Time the kernels (matmul, attention, softmax, layernorm, AdamW, EMA) and backbone inference on this adapter',
  description:
    'Times each kernel on the WebGPU adapter and prints ms per run (median of GPU timestamps when the\n' +
    'adapter has timestamp-query, and wall clock) with GFLOP/s or GB/s. The matmul 1024³ row comes first.\n' +
    'Kernels that are not implemented yet are reported as skipped. The inference rows time one forward of\n' +
    'DINO ViT-S/16, DINOv2 ViT-S/14 and DINOv3 ViT-S/16 (random weights, 224 px, batch 8) in images/s.',
  options: {
    only: list({ choices: BENCH_KERNELS, value: '<kernels>', derived: 'all', help: `Comma-separated kernels to run: ${BENCH_KERNELS.join(', ')}` }),
    reps: int({ min: 1, max: MAX_REPS, value: '<n>', derived: 'automatic, 3 to 50 runs filling about 1 s; fewer for very slow rows', help: 'Timed runs per row' }),
    warmup: int({ min: 0, max: 1000, default: DEFAULT_WARMUP, value: '<n>', help: 'Untimed runs before the timed ones' }),
    variants: list({ choices: ['auto', 'cpu', 'gpu'], default: ['auto'], value: '<v>', help: "Kernel variants: auto (the adapter's pick), cpu, gpu, or cpu,gpu" }),
    quick: flag({ help: 'Small shapes (a few seconds in total), for tests and smoke runs' }),
    json: flag({ help: 'One JSON object per line on stdout (adapter description on stderr)' }),
  },
  async run(v, { io }) {
    const auto = v.variants.includes('auto');
    if (auto && v.variants.length > 1) throw new UsageError("--variants: 'auto' cannot be combined with cpu or gpu");
    const variants = auto ? 'auto' : v.variants.filter((x): x is 'cpu' | 'gpu' => x !== 'auto');
    return withEngine(async (wd) => {
      const rows = await runBench(wd, { only: v.only, reps: v.reps, warmup: v.warmup, variants, quick: v.quick, json: v.json }, io.out, v.json ? io.err : io.out);
      const failed = rows.filter((r) => r.status === 'failed').length;
      if (failed) io.err(`webdino bench: ${failed} row${failed > 1 ? 's' : ''} failed`);
      return failed ? 1 : 0;
    });
  },
});
