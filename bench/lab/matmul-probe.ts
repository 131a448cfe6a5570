/**
 * Kernel-lab probe for the matmul family: GFLOP/s of square f32 matmuls (n×n @ n×n) for a list of
 * cpu tiles, with warm-up and repeated timed batches (`await dev.sync()` around R dispatches),
 * reporting the median. Two rates per batch: wall-clock, and CPU-normalised = flop / (process CPU
 * seconds / cores), i.e. what the kernel would reach alone on the machine. lavapipe's worker
 * threads live in this process, so on a shared, overloaded machine the CPU-normalised rate is the
 * stable one (the wall-clock rate then mostly measures the other processes). The load average is
 * printed with each result. Each rate is printed as median/max over the timed batches.
 *
 *   npx esbuild bench/lab/matmul-probe.ts --bundle --platform=node --format=esm --external:webgpu \
 *     --outfile=./.probe.mjs && node ./.probe.mjs [sizes=256,512,1024 or MxKxN,...] [tiles=16x1x64,8x4x64] \
 *     [trans=NN] [reps=5] [toggles=disable_robustness] [novec] [nosg] [variant=cpu|gpu] ; rm ./.probe.mjs
 *
 * A tile is TMxTNxW[xORDER] (rows per invocation × columns per invocation × invocations per
 * workgroup, multiply-add order kr|rk|tree; see CpuTile).
 */
import { availableParallelism, loadavg } from 'node:os';
import { init } from '../../index.js';
import { type CpuTile, matmulRaw } from '../../kernels/matmul.js';

const args = new Map(
  process.argv.slice(2).map((a) => {
    const [k, v] = a.split('=');
    return [k, v ?? 'true'] as [string, string];
  }),
);
const sizes = (args.get('sizes') ?? '256,512,1024,2048').split(',');
/** A size is n (n×n @ n×n) or MxKxN. */
const dims = (size: string): [number, number, number] => {
  const v = size.split('x').map(Number);
  return v.length === 3 ? [v[0], v[1], v[2]] : [v[0], v[0], v[0]];
};
const tiles: CpuTile[] = (args.get('tiles') ?? '16x1x64').split(',').map((s) => {
  const [TM, TN, W, order] = s.split('x');
  return { TM: Number(TM), TN: Number(TN), W: Number(W), order: (order as CpuTile['order']) ?? 'kr' };
});
const trans = args.get('trans') ?? 'NN';
const reps = Number(args.get('reps') ?? 5);
const toggles = ['disable-dawn-features=timestamp_quantization'];
if (args.get('toggles')) toggles.push(`enable-dawn-features=${args.get('toggles')}`);
const variant = (args.get('variant') ?? 'cpu') as 'cpu' | 'gpu';

const wd = await init({ variants: variant, dawnToggles: toggles });
console.log(`adapter: ${wd.device.adapterName()}; toggles: ${toggles.join(' ')}; trans ${trans}`);

const cores = availableParallelism();
const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

for (const tile of tiles) {
  const row: string[] = [];
  for (const size of sizes) {
    const [M, K, N] = dims(size);
    await wd.scope(async () => {
      const a0 = trans[0] === 'T' ? wd.randn([K, M], { seed: 1 }) : wd.randn([M, K], { seed: 1 });
      const b0 = trans[1] === 'T' ? wd.randn([N, K], { seed: 2 }) : wd.randn([K, N], { seed: 2 });
      const a = trans[0] === 'T' ? a0.transpose() : a0;
      const b = trans[1] === 'T' ? b0.transpose() : b0;
      const run = () => matmulRaw(a, b, {}, { cpuTile: tile, variant, noVec4: args.has('novec'), subgroups: !args.has('nosg') }).y.dispose();
      const t0 = performance.now();
      run(); // compile + warm-up
      await wd.sync();
      const compileMs = performance.now() - t0;
      run();
      await wd.sync();
      const flop = 2 * M * K * N;
      // R dispatches per timed batch, so that a batch lasts ≥ ~0.3 s at ~10 GFLOP/s.
      const R = Math.max(1, Math.round(3e9 / flop));
      const rates: number[] = [];
      const cpuRates: number[] = [];
      for (let i = 0; i < reps; i++) {
        const s = performance.now();
        const c = process.cpuUsage();
        for (let r = 0; r < R; r++) run();
        await wd.sync();
        const used = process.cpuUsage(c);
        rates.push((R * flop) / ((performance.now() - s) * 1e-3) / 1e9);
        cpuRates.push((R * flop) / (((used.user + used.system) * 1e-6) / cores) / 1e9);
      }
      row.push(`${size}: cpu ${median(cpuRates).toFixed(1)}/${Math.max(...cpuRates).toFixed(1)} wall ${median(rates).toFixed(1)}/${Math.max(...rates).toFixed(1)} (first ${compileMs.toFixed(0)} ms)`);
    });
  }
  console.log(`tile ${tile.TM}x${tile.TN}x${tile.W}x${tile.order} | ${row.join(' | ')} | load ${loadavg()[0].toFixed(2)}`);
}
wd.destroy();
