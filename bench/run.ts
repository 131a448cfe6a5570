/**
 * The runner of `webdino bench`: times each case of bench/suite.ts under each requested kernel
 * variant and prints a table (or one JSON object per line) as the rows complete.
 *
 * Rows
 * - measured: ms is the median GPU-timestamp time when the device has `timestamp-query`, else the
 *   median wall time (see engine/timing.ts); the rate is GFLOP/s = flop / ms / 1e6 or
 *   GB/s = bytes / ms / 1e6 (decimal giga).
 * - skipped: the kernel is still a stub ("... not implemented ..."); the suite continues.
 * - failed: any other error; the suite continues and the result reports it (the CLI exits 1).
 *
 * Invariants: every tensor a case creates is disposed when its row is done (one scope per case),
 * and the buffer pool is trimmed between cases, so the suite's peak memory is that of its largest
 * case. The device's kernel variant is restored when the suite ends.
 */
import type { Engine } from '../engine/engine.js';
import { timeKernel } from '../engine/timing.js';
import { type BenchCase, type BenchDetails, type BenchKernel, type BenchPass, benchCases, DEFAULT_KERNELS } from './suite.js';

/** Untimed runs before the timed ones, by default: one compiles the pipelines and fills the pool. */
export const DEFAULT_WARMUP = 1;

export interface BenchOptions {
  /** Kernel families to run (default: all but 'train', see DEFAULT_KERNELS). */
  only?: readonly BenchKernel[];
  /** Timed runs per row; default: automatic (enough to fill ~1 s, 3 to 50; quick: ~0.1 s, 2 to 5). */
  reps?: number;
  /** Untimed runs before the timed ones (default DEFAULT_WARMUP). */
  warmup?: number;
  /** Kernel variants to run each case under; 'auto': the device's own pick. */
  variants?: 'auto' | readonly ('cpu' | 'gpu')[];
  /** Small shapes (seconds in total), for tests and smoke runs. */
  quick?: boolean;
  /** One JSON object per line instead of a table. */
  json?: boolean;
  /** The cases to run instead of bench/suite.ts's (`only` still filters them). */
  cases?: readonly BenchCase[];
}

interface RowBase {
  kernel: BenchKernel;
  pass: BenchPass;
  shape: string;
  variant: 'cpu' | 'gpu';
  adapter: string;
}

/** A row of results: measured, skipped (stub kernel) or failed. */
export type BenchRow =
  | (RowBase & {
      status: 'ok';
      reps: number;
      /** Median ms: GPU timestamps when available, else wall clock (see `timing`). */
      ms: number;
      gpuMs: number | null;
      wallMs: number;
      timing: 'timestamp' | 'wall';
      gflops?: number;
      gbps?: number;
      flops?: number;
      bytes?: number;
      imagesPerSec?: number;
      /** Extra figures of the case (training steps: dispatches, memory, profile). */
      details?: Record<string, unknown>;
    })
  | (RowBase & { status: 'skipped'; skipped: string })
  | (RowBase & { status: 'failed'; error: string });

/** Table columns: header and width (the last one is free-width). */
const COLUMNS: [string, number][] = [
  ['kernel', 12],
  ['pass', 8],
  ['shape', 38],
  ['variant', 8],
  ['ms', 11],
  ['wall ms', 11],
  ['rate', 0],
];

function tableLine(cells: string[]): string {
  return cells
    .map((c, i) => {
      const w = COLUMNS[i][1];
      const numeric = i === 4 || i === 5;
      return w === 0 ? c : numeric ? c.padStart(w - 1) + ' ' : c.padEnd(w);
    })
    .join('')
    .trimEnd();
}

/** A number with about 4 significant digits, without exponent for usual values. */
function fmtNum(x: number): string {
  if (x >= 1000) return x.toFixed(0);
  if (x >= 100) return x.toFixed(1);
  if (x >= 10) return x.toFixed(2);
  if (x >= 1) return x.toFixed(3);
  return x.toPrecision(3);
}

/** Formats one row as a table line. */
export function formatRow(r: BenchRow): string {
  const head = [r.kernel, r.pass, r.shape, r.variant];
  if (r.status === 'skipped') return tableLine([...head, '', '', `skipped: ${r.skipped}`]);
  if (r.status === 'failed') return tableLine([...head, '', '', `FAILED: ${r.error}`]);
  let rate = r.gflops !== undefined ? `${fmtNum(r.gflops)} GFLOP/s` : r.gbps !== undefined ? `${fmtNum(r.gbps)} GB/s` : '';
  if (r.imagesPerSec !== undefined) rate = `${fmtNum(r.imagesPerSec)} images/s, ${rate}`;
  return tableLine([...head, fmtNum(r.ms), fmtNum(r.wallMs), rate]);
}

/** The table header (two lines). */
export function tableHeader(): string[] {
  const h = tableLine(COLUMNS.map(([name]) => name));
  return [h, '-'.repeat(Math.max(h.length, 100))];
}

/** One row as a JSON line (field `status` omitted: `skipped` / `error` say it). */
export function jsonRow(r: BenchRow): string {
  const { status, ...rest } = r;
  void status;
  return JSON.stringify(rest);
}

/** True for the error of a kernel that is still a stub. */
function isNotImplemented(e: unknown): boolean {
  return e instanceof Error && /not implemented/i.test(e.message);
}

/** The first line of an error's message. */
function firstLine(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  return m.split('\n')[0];
}

/** Lines to print under a table row (the case's details), kept out of the row's JSON. */
const detailLines = new WeakMap<BenchRow, string[]>();

/** Runs one case under one variant and returns its row. */
async function runCase(wd: Engine, c: BenchCase, variant: 'cpu' | 'gpu', opts: BenchOptions): Promise<BenchRow> {
  const base: RowBase = { kernel: c.kernel, pass: c.pass, shape: c.shape, variant, adapter: wd.device.adapterName() };
  wd.device.variants = variant;
  try {
    return await wd.scope(async () => {
      const work = await c.setup(wd);
      const extra: { details: BenchDetails | null } = { details: null };
      const t = await timeKernel(wd, work.run, {
        timestamps: c.timing !== 'wall',
        warmup: opts.warmup ?? DEFAULT_WARMUP,
        reps: opts.reps ?? 'auto',
        budgetMs: opts.quick ? 100 : 1000,
        minReps: opts.quick ? 2 : 3,
        maxReps: opts.quick ? 5 : 50,
        beforeEach: work.beforeEach,
      })
        .then(async (t) => {
          extra.details = work.details ? await work.details() : null;
          return t;
        })
        .finally(() => work.dispose?.());
      const row: BenchRow = {
        ...base,
        status: 'ok',
        reps: t.reps,
        ms: t.ms,
        gpuMs: t.gpuMs,
        wallMs: t.wallMs,
        timing: t.method,
      };
      if (c.flops !== undefined) Object.assign(row, { gflops: c.flops / t.ms / 1e6, flops: c.flops });
      if (c.bytes !== undefined) Object.assign(row, { gbps: c.bytes / t.ms / 1e6, bytes: c.bytes });
      if (c.images !== undefined) row.imagesPerSec = c.images / (t.ms / 1000);
      if (extra.details) {
        row.details = extra.details.fields;
        detailLines.set(row, extra.details.lines);
      }
      return row;
    });
  } catch (e) {
    if (isNotImplemented(e)) return { ...base, status: 'skipped', skipped: firstLine(e) };
    return { ...base, status: 'failed', error: firstLine(e) };
  } finally {
    // Let the pool give the case's buffers back, so the next case starts from nothing.
    await wd.device.sync().catch(() => undefined);
    wd.pool.trim();
  }
}

/** Lines describing the adapter: name, CPU or GPU, variants, features, timing method. */
export function adapterLines(wd: Engine, variants: readonly ('cpu' | 'gpu')[]): string[] {
  const d = wd.device;
  const f = d.features;
  const features = [f.shaderF16 && 'shader-f16', f.subgroups && 'subgroups', f.timestampQuery && 'timestamp-query'].filter(Boolean);
  return [
    `adapter:  ${d.adapterName()}`,
    `type:     ${d.adapter.isCpu ? 'CPU (software Vulkan)' : 'GPU'}; kernel variants: ${variants.join(', ')}`,
    `features: ${features.join(' ') || 'none'}`,
    `timing:   ${f.timestampQuery ? 'GPU timestamps (median); wall = recording + submit + GPU' : 'wall clock only (no timestamp-query)'}`,
  ];
}

/**
 * Runs the suite on `wd` and prints the results with `print` (table lines, or JSON lines with
 * `json`), row by row as they complete. The adapter description goes to `info` (stdout for the
 * table; stderr for JSON output, so stdout stays pure JSON lines). Returns all rows.
 */
export async function runBench(
  wd: Engine,
  opts: BenchOptions,
  print: (line: string) => void,
  info: (line: string) => void = print,
): Promise<BenchRow[]> {
  const initial = wd.device.variants;
  const variants = !opts.variants || opts.variants === 'auto' ? [initial] : [...opts.variants];
  const only = new Set<BenchKernel>(opts.only && opts.only.length ? opts.only : DEFAULT_KERNELS);
  const cases = (opts.cases ?? benchCases(opts.quick)).filter((c) => only.has(c.kernel));

  for (const line of adapterLines(wd, variants)) info(line);
  if (!opts.json) {
    print('');
    for (const line of tableHeader()) print(line);
  }
  const rows: BenchRow[] = [];
  try {
    for (const c of cases) {
      for (const v of variants) {
        const row = await runCase(wd, c, v, opts);
        rows.push(row);
        print(opts.json ? jsonRow(row) : formatRow(row));
        if (!opts.json) for (const line of detailLines.get(row) ?? []) print(line);
      }
    }
  } finally {
    wd.device.variants = initial;
  }
  return rows;
}
