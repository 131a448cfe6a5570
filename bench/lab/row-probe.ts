/**
 * Lab probe of the memory-bound kernels: every memory-bound case of bench/suite.ts (softmax,
 * layernorm, l2norm, elementwise, adamw, ema) under every row layout the adapter supports, in
 * interleaved rounds with the `add` reference row, so that each figure is compared with `add`
 * measured minutes apart at most (the development machine is shared and its load drifts).
 *
 *   npx esbuild bench/lab/row-probe.ts --bundle --platform=node --format=esm --external:webgpu \
 *     --outfile=dist/row-probe.mjs && node dist/row-probe.mjs rounds=3 [only=softmax,layernorm] [quick]
 *
 * Prints one line per (case, layout): the median over the rounds of the CPU-normalised GB/s (see
 * `rate`) and its ratio to the median of `add`.
 */
import { init } from '../../index.js';
import { ROW_LAYOUTS, type RowLayout } from '../../engine/device.js';
import { median, timeKernel } from '../../engine/timing.js';
import { type BenchCase, benchCases } from '../suite.js';

const args = Object.fromEntries(process.argv.slice(2).map((a) => (a.includes('=') ? a.split('=') : [a, 'true'])));
const rounds = Number(args.rounds ?? 3);
/** CPU cores lavapipe uses (its threads = the cores, LP_NUM_THREADS unset). */
const CORES = Number(args.cores ?? (await import('node:os')).availableParallelism());
const only = args.only ? new Set(String(args.only).split(',')) : null;
const ROW_FAMILIES = new Set(['softmax', 'layernorm', 'l2norm']);
const MEMORY = new Set(['softmax', 'layernorm', 'l2norm', 'elementwise', 'adamw', 'ema', 'add']);

const wd = await init();
const dev = wd.device;
// Every supported layout, then 'auto' (the device's per-shape choice).
const layouts: (RowLayout | 'auto')[] = [
  ...(args.layouts ? (String(args.layouts).split(',') as (RowLayout | 'auto')[]) : [...ROW_LAYOUTS, 'auto' as const]),
].filter((l) => l === 'auto' || dev.rowLayoutSupported(l));
const cases = benchCases(args.quick === 'true').filter((c) => MEMORY.has(c.kernel) && (!only || only.has(c.kernel) || c.kernel === 'add'));
const auto = dev.rowLayout;

/**
 * GB/s of one case under the current layout, CPU-normalised: bytes / (process CPU time / cores)
 * over a few runs (lavapipe's worker threads run in this process; with the cores to itself the
 * kernel would take CPU time / cores of wall time). Steadier than timestamps on a loaded machine.
 */
async function rate(c: BenchCase): Promise<number> {
  return wd.scope(async () => {
    const work = await c.setup(wd);
    try {
      const t = await timeKernel(wd, work.run, { warmup: 1, reps: 1, beforeEach: work.beforeEach });
      const reps = Math.max(2, Math.min(15, Math.ceil(400 / t.wallMs)));
      let cpu = 0;
      for (let i = 0; i < reps; i++) {
        await work.beforeEach?.();
        await dev.sync();
        const c0 = process.cpuUsage();
        await wd.scope(async () => {
          await work.run();
        });
        await dev.sync();
        const c1 = process.cpuUsage(c0);
        cpu += (c1.user + c1.system) / 1000;
      }
      return c.bytes! / (cpu / reps / CORES) / 1e6;
    } finally {
      work.dispose?.();
      await dev.sync();
      wd.pool.trim();
    }
  });
}

const results = new Map<string, number[]>();
const push = (key: string, v: number) => results.set(key, [...(results.get(key) ?? []), v]);
for (let r = 0; r < rounds; r++) {
  for (const c of cases) {
    const name = `${c.kernel} ${c.pass} ${c.shape}`;
    for (const l of ROW_FAMILIES.has(c.kernel) ? layouts : [auto]) {
      dev.rowLayout = l;
      push(`${name}|${ROW_FAMILIES.has(c.kernel) ? l : '-'}`, await rate(c));
    }
  }
  dev.rowLayout = auto;
  process.stderr.write(`round ${r + 1}/${rounds} done\n`);
}
const addKey = [...results.keys()].find((k) => k.startsWith('add '))!;
const add = median(results.get(addKey)!);
console.log(`adapter: ${dev.adapterName()}; auto row layout: ${auto}; rounds: ${rounds}`);
for (const [key, v] of results) {
  const [name, layout] = key.split('|');
  const m = median(v);
  console.log(`${name.padEnd(58)} ${layout.padEnd(19)} ${m.toFixed(3).padStart(8)} GB/s ${((100 * m) / add).toFixed(0).padStart(5)} % of add   [${v.map((x) => x.toFixed(2)).join(' ')}]`);
}
wd.destroy();
