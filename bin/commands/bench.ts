/** `webdino bench`: times the kernels on this adapter. */
import { init } from '../../index.js';
import { type BenchOptions, runBench } from '../../bench/run.js';
import { BENCH_KERNELS, type BenchKernel } from '../../bench/suite.js';
import { MAX_REPS } from '../../engine/timing.js';
import { type Command, intOption, listOf, type Values } from '../command.js';

function benchOptions(values: Values): BenchOptions {
  let variants: BenchOptions['variants'] = 'auto';
  if (typeof values.variants === 'string' && values.variants !== 'auto') {
    variants = listOf('variants', values.variants, ['cpu', 'gpu'] as const);
  }
  return {
    only: typeof values.only === 'string' ? listOf<BenchKernel>('only', values.only, BENCH_KERNELS) : undefined,
    reps: intOption('reps', values.reps, 1, MAX_REPS),
    warmup: intOption('warmup', values.warmup, 0, 1000),
    variants,
    quick: values.quick === true,
    json: values.json === true,
  };
}

export const bench: Command = {
  name: 'bench',
  summary: 'Time the kernels (matmul, attention, softmax, layernorm, AdamW, EMA) on this adapter',
  description:
    'Times each kernel on the WebGPU adapter and prints ms per run (median of GPU timestamps when the\n' +
    'adapter has timestamp-query, and wall clock) with GFLOP/s or GB/s. The matmul 1024³ row comes first.\n' +
    'Kernels that are not implemented yet are reported as skipped.',
  options: {
    only: { type: 'string', value: '<kernels>', description: `Comma-separated kernels to run: ${BENCH_KERNELS.join(', ')} (default: all)` },
    reps: { type: 'string', value: '<n>', description: 'Timed runs per row (default: automatic, 3 to 50 runs filling about 1 s; fewer for very slow rows)' },
    warmup: { type: 'string', value: '<n>', description: 'Untimed runs before the timed ones (default: 1)' },
    variants: { type: 'string', value: '<v>', description: "Kernel variants: auto (the adapter's pick), cpu, gpu, or cpu,gpu (default: auto)" },
    quick: { type: 'boolean', description: 'Small shapes (a few seconds in total), for tests and smoke runs' },
    json: { type: 'boolean', description: 'One JSON object per line on stdout (adapter description on stderr)' },
  },
  async run(values, io) {
    const opts = benchOptions(values);
    const wd = await init();
    try {
      const rows = await runBench(wd, opts, io.out, opts.json ? io.err : io.out);
      const failed = rows.filter((r) => r.status === 'failed').length;
      if (failed) io.err(`webdino bench: ${failed} row${failed > 1 ? 's' : ''} failed`);
      return failed ? 1 : 0;
    } finally {
      wd.destroy();
    }
  },
};

