/**
 * Child process of destroy.test.ts (bundled by the test with esbuild, never imported): creates
 * and destroys <warm> + <cycles> engines, each running a matmul, a softmax and a readback, and
 * exits with status 1 when the resident set grew by more than <maxGrowthMB> over the last <cycles>
 * (after a garbage collection each time: run it with --expose-gc). Prints the figures.
 *
 *   node --expose-gc engine-cycles-child.mjs <warm> <cycles> <maxGrowthMB>
 */
import { init } from '../../index.js';

const [warm, cycles, maxGrowthMB] = process.argv.slice(2).map(Number);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with --expose-gc');

async function cycle(): Promise<void> {
  const wd = await init();
  await wd.scope(async () => {
    const a = wd.randn([256, 256], { seed: 1 });
    return a.matmul(a).softmax(-1).sum().item();
  });
  wd.destroy();
  gc!();
}

for (let i = 0; i < warm; i++) await cycle();
const before = process.memoryUsage().rss;
for (let i = 0; i < cycles; i++) await cycle();
const growthMB = (process.memoryUsage().rss - before) / 2 ** 20;
process.stdout.write(`rss grew ${growthMB.toFixed(1)} MB over ${cycles} engines (bound ${maxGrowthMB} MB)\n`);
process.exit(growthMB <= maxGrowthMB ? 0 : 1);
