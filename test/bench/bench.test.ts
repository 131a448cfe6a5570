/**
 * `webdino bench` and the CLI: the suite runs in-process at quick sizes and its JSON lines carry
 * the required fields with positive finite numbers; GPU timing brackets the recorded work; the
 * built command (`node bin/webdino.js`, after `npm run build`) rejects bad command lines with exit
 * code 2 and a usage, and runs a quick bench end to end.
 */
import { execFile, spawnSync } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { formatRow, runBench } from '../../bench/run.js';
import { BENCH_KERNELS, type BenchCase, benchCases, DEFAULT_KERNELS } from '../../bench/suite.js';
import { median, timeKernel } from '../../engine/timing.js';
import { getEngine } from '../helpers.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const run = promisify(execFile);

/** Runs `node bin/webdino.js args...` (with extra environment); resolves to exit code, stdout and stderr. */
async function webdino(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, ['bin/webdino.js', ...args], {
      cwd: root,
      timeout: 120_000,
      env: { ...process.env, ...env },
    });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof err.code === 'number' ? err.code : -1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

/** Asserts that a parsed JSON line is a well-formed bench row. */
function checkRow(row: Record<string, unknown>): void {
  const what = JSON.stringify(row);
  expect(BENCH_KERNELS as readonly string[], what).toContain(row.kernel);
  expect(typeof row.shape, what).toBe('string');
  expect(['cpu', 'gpu'], what).toContain(row.variant);
  expect(typeof row.adapter === 'string' && row.adapter.length > 0, what).toBe(true);
  expect(row.error, `a row failed: ${what}`).toBeUndefined();
  if (row.skipped !== undefined) {
    // Only a kernel that is still a stub may be skipped.
    expect(row.skipped, what).toMatch(/not implemented/i);
    return;
  }
  const positive = (x: unknown) => typeof x === 'number' && Number.isFinite(x) && x > 0;
  expect(Number.isInteger(row.reps) && (row.reps as number) >= 1, what).toBe(true);
  expect(positive(row.ms), what).toBe(true);
  expect(positive(row.wallMs), what).toBe(true);
  expect(row.gpuMs === null || positive(row.gpuMs), what).toBe(true);
  expect(['timestamp', 'wall'], what).toContain(row.timing);
  expect(positive(row.gflops) || positive(row.gbps), what).toBe(true);
}

describe('timeKernel', () => {
  it('times the recorded work between GPU timestamps, and frees what the work creates', async () => {
    const wd = await getEngine();
    const before = wd.memory().liveBytes;
    await wd.scope(async () => {
      const a = wd.randn([1 << 20], { seed: 1 });
      const b = wd.randn([1 << 20], { seed: 2 });
      // Ten dependent-free adds of 4 MiB: tens of ms on a CPU driver, well above timer resolution.
      const t = await timeKernel(wd, () => {
        for (let i = 0; i < 10; i++) a.add(b);
      }, { warmup: 1, reps: 3 });
      expect(t.reps).toBe(3);
      expect(t.samples.wall).toHaveLength(3);
      expect(t.wallMs).toBe(median(t.samples.wall));
      if (wd.device.features.timestampQuery) {
        expect(t.method).toBe('timestamp');
        expect(t.samples.gpu).toHaveLength(3);
        const gpu = t.gpuMs!;
        // The bracket lies inside the wall interval of each run, so its median does too (10 %
        // slack for two clocks). It must contain the adds: an empty bracket would measure ~0.
        expect(gpu).toBeLessThanOrEqual(t.wallMs * 1.1);
        expect(gpu).toBeGreaterThan(0.2 * t.wallMs);
        expect(t.ms).toBe(gpu);
      } else {
        expect(t.method).toBe('wall');
        expect(t.gpuMs).toBeNull();
      }
    });
    await wd.sync();
    expect(wd.memory().liveBytes).toBe(before);
  });

  it('falls back to wall clock when asked to', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      const a = wd.randn([4096], { seed: 3 });
      const t = await timeKernel(wd, () => a.exp(), { warmup: 0, reps: 2, timestamps: false });
      expect(t.method).toBe('wall');
      expect(t.gpuMs).toBeNull();
      expect(t.ms).toBe(t.wallMs);
      expect(t.ms).toBeGreaterThan(0);
    });
  });

  it('automatic repetitions: fewer than minReps (at least one) for work far slower than the budget', async () => {
    const wd = await getEngine();
    const sleep = () => new Promise((r) => setTimeout(r, 60));
    const slow = await timeKernel(wd, sleep, { warmup: 1, budgetMs: 10, minReps: 3 });
    expect(slow.reps).toBe(1);
    const fast = await timeKernel(wd, () => undefined, { warmup: 1, budgetMs: 5, minReps: 2, maxReps: 4 });
    expect(fast.reps).toBeGreaterThanOrEqual(2);
    expect(fast.reps).toBeLessThanOrEqual(4);
  });

  it('median', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(() => median([])).toThrow();
  });
});

describe('bench suite', () => {
  it('puts matmul 1024³ first and covers every kernel family', () => {
    const full = benchCases(false);
    expect(full[0].kernel).toBe('matmul');
    expect(full[0].shape).toBe('1024x1024 @ 1024x1024');
    expect(full[0].flops).toBe(2 * 1024 ** 3);
    for (const cases of [full, benchCases(true)]) {
      expect(new Set(cases.map((c) => c.kernel))).toEqual(new Set(BENCH_KERNELS));
      for (const c of cases) expect((c.flops ?? 0) > 0 || (c.bytes ?? 0) > 0, `${c.kernel} ${c.shape}`).toBe(true);
    }
  });

  it('--quick --json: every line is a well-formed row, nothing leaks', async () => {
    const wd = await getEngine();
    const before = wd.memory().liveBytes;
    const lines: string[] = [];
    const info: string[] = [];
    const rows = await runBench(wd, { quick: true, json: true, reps: 2 }, (l) => lines.push(l), (l) => info.push(l));
    expect(info.join('\n')).toContain(wd.device.adapterName());
    // Without --only: every case but the training step (DEFAULT_KERNELS).
    expect(lines).toHaveLength(benchCases(true).filter((c) => DEFAULT_KERNELS.includes(c.kernel)).length);
    expect(rows).toHaveLength(lines.length);
    const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    parsed.forEach(checkRow);
    expect(parsed[0].kernel).toBe('matmul');
    // The elementwise reference row needs no pending kernel: it is always measured.
    expect(parsed.find((r) => r.kernel === 'add')?.ms).toBeGreaterThan(0);
    expect(wd.memory().liveBytes).toBe(before);
  });

  it('a stub kernel is skipped, another error fails its row, and the suite goes on', async () => {
    const wd = await getEngine();
    const before = wd.memory().liveBytes;
    const stub = (kernel: 'matmul' | 'softmax', message: string): BenchCase => ({
      kernel,
      pass: 'fwd',
      shape: '1',
      flops: 1,
      setup(e) {
        const x = e.zeros([8]); // created before the throw: must still be freed
        void x;
        return {
          run() {
            throw new Error(message);
          },
        };
      },
    });
    const add = benchCases(true).find((c) => c.kernel === 'add')!;
    const lines: string[] = [];
    const rows = await runBench(
      wd,
      { json: true, reps: 1, cases: [stub('matmul', 'matmul: not implemented yet'), stub('softmax', 'bad\nsecond line'), add] },
      (l) => lines.push(l),
      () => undefined,
    );
    expect(rows.map((r) => r.status)).toEqual(['skipped', 'failed', 'ok']);
    expect(JSON.parse(lines[0])).toMatchObject({ kernel: 'matmul', skipped: 'matmul: not implemented yet' });
    expect(JSON.parse(lines[1])).toMatchObject({ kernel: 'softmax', error: 'bad' });
    expect(formatRow(rows[0])).toMatch(/skipped: matmul: not implemented yet$/);
    expect(formatRow(rows[1])).toMatch(/FAILED: bad$/);
    expect(wd.memory().liveBytes).toBe(before);
  });

  it('--only and --variants: one table line per (case, variant); the device variant is restored', async () => {
    const wd = await getEngine();
    const variant = wd.device.variants;
    const lines: string[] = [];
    const rows = await runBench(wd, { quick: true, only: ['add'], reps: 1, variants: ['cpu', 'gpu'] }, (l) => lines.push(l));
    expect(rows.map((r) => [r.kernel, r.variant])).toEqual([
      ['add', 'cpu'],
      ['add', 'gpu'],
    ]);
    expect(lines.slice(-2)[0]).toMatch(/^add\s+fwd\s+65536\s+cpu\s+[\d.]+\s+[\d.]+\s+[\d.]+ GB\/s$/);
    expect(lines.slice(-1)[0]).toMatch(/^add\s+fwd\s+65536\s+gpu\s/);
    expect(wd.device.variants).toBe(variant);
  });

  it('--only train: a DINO step row counts its dispatches, allocations and peak, and its profile accounts for every dispatch', async () => {
    const wd = await getEngine();
    const before = wd.memory().liveBytes;
    const lines: string[] = [];
    const rows = await runBench(wd, { quick: true, only: ['train'], reps: 1 }, (l) => lines.push(l));
    expect(rows).toHaveLength(1);
    const row = rows[0];
    checkRow(JSON.parse(JSON.stringify({ ...row, status: undefined })));
    if (row.status !== 'ok') throw new Error('the train row did not run');
    expect(row.imagesPerSec).toBeGreaterThan(0);
    const d = row.details as { dispatches: number; copies: number; submits: number; allocations: number; allocatedBytes: number; peakBytes: number; profile?: { kernel: string; count: number }[] };
    // A step of the tiny ViT (1 block, two crop sizes, head, loss, clip, AdamW, EMA) records
    // hundreds of dispatches; the count is of one step, not of the timed ones before it.
    expect(d.dispatches).toBeGreaterThan(100);
    expect(d.dispatches).toBeLessThan(2000);
    expect(d.submits).toBeGreaterThanOrEqual(1);
    expect(d.allocations).toBeGreaterThan(0);
    expect(d.allocatedBytes).toBeGreaterThanOrEqual(4 * d.allocations);
    expect(d.peakBytes).toBeGreaterThan(0);
    if (wd.device.features.timestampQuery) {
      // The profiled step runs the same graph: one timed entry per dispatch.
      expect(d.profile!.reduce((s, p) => s + p.count, 0)).toBe(d.dispatches);
      expect(lines.some((l) => /GPU profile of one step/.test(l))).toBe(true);
    }
    expect(lines.some((l) => new RegExp(`per step: ${d.dispatches} dispatches`).test(l))).toBe(true);
    expect(wd.memory().liveBytes).toBe(before);
  });
});

describe('webdino CLI (built)', () => {
  beforeAll(() => {
    // `npm run build`; only the CLI bundle matters here (index.ts may be mid-edit elsewhere).
    const b = spawnSync(process.execPath, ['scripts/build.mjs'], { cwd: root, encoding: 'utf8' });
    expect(b.stdout, b.stderr).toContain('bin/entry.ts -> dist/cli.js');
  });

  it('--help lists the commands; bench --help lists its options', async () => {
    const top = await webdino(['--help']);
    expect(top.code).toBe(0);
    expect(top.stdout).toContain('Usage: webdino <command> [options]');
    expect(top.stdout).toMatch(/^\s+bench\s+/m);
    const b = await webdino(['bench', '--help']);
    expect(b.code).toBe(0);
    for (const o of ['--only', '--reps', '--variants', '--quick', '--json']) expect(b.stdout).toContain(o);
  });

  it('usage errors exit with code 2, a message and the usage', async () => {
    const cases: [string[], RegExp][] = [
      [['bench', '--frobnicate'], /webdino bench: unknown option '--frobnicate'/],
      [['frob'], /webdino: unknown command 'frob'/],
      [[], /webdino: no command given/],
      [['bench', '--reps', 'x'], /--reps must be an integer from 1 to 2048, got 'x'/],
      [['bench', '--reps', '0'], /--reps must be an integer from 1 to 2048, got '0'/],
      [['bench', '--only', 'matmul,nope'], /--only: unknown value 'nope'/],
      [['bench', '--variants', 'tpu'], /--variants: unknown value 'tpu'/],
    ];
    for (const [args, message] of cases) {
      const r = await webdino(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stderr).toContain('Usage: webdino');
      expect(r.stdout).toBe('');
    }
  });

  // The Vulkan loader's driver list is how "no adapter" can be provoked; other platforms differ.
  it.runIf(process.platform === 'linux')('an engine error prints its message without a stack and exits with 1', async () => {
    const none = { VK_DRIVER_FILES: '/nonexistent/icd.json', VK_ICD_FILENAMES: '/nonexistent/icd.json' };
    const r = await webdino(['bench', '--quick', '--only', 'add'], none);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('webdino: no WebGPU adapter found');
    expect(r.stderr).not.toMatch(/^\s+at .*cli\.js/m);
    const verbose = await webdino(['bench', '--quick', '--only', 'add', '--verbose'], none);
    expect(verbose.code).toBe(1);
    expect(verbose.stderr).toMatch(/^\s+at .*cli\.js/m);
  });

  it('bench --quick --json --only add runs end to end', async () => {
    const r = await webdino(['bench', '--quick', '--json', '--only', 'add', '--reps', '2']);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const row = JSON.parse(lines[0]) as Record<string, unknown>;
    checkRow(row);
    expect(row.reps).toBe(2);
    expect(r.stderr).toContain('adapter:');
  });
});
