/**
 * GPU timing of recorded work: how long a piece of work takes on the device, measured two ways.
 *
 * - GPU time (when the device has `timestamp-query`): the work is bracketed by two empty compute
 *   passes that write timestamps, one at its beginning and one at its end:
 *
 *     [pass: beginningOfPassWrite → q[2i]]  fn()'s dispatches (any number of passes/submits)
 *     [pass: endOfPassWrite → q[2i+1]]
 *
 *   so everything `fn` records is inside the bracket however many passes, copies or automatic
 *   flushes it involves. GPU ms = (q[2i+1] − q[2i]) / 1e6. The device is created with Dawn's
 *   `timestamp_quantization` disabled (engine/node-gpu.ts), so the values are nanoseconds, not
 *   multiples of 65.5 µs. Timestamps go through the device's own encoder (`encoderForCopy()`), so
 *   they stay in recording order with the dispatches; the uniform upload of a submit
 *   (`queue.writeBuffer`) happens before the command buffer runs and is outside the bracket.
 * - Wall time: from just before `fn` is called until `queue.onSubmittedWorkDone()` resolves after
 *   the submit: includes recording (bind groups, JS), submission and the GPU work.
 *
 * Invariants
 * - Every repetition starts on an idle device (`sync()` first), so one repetition's work never
 *   overlaps the next one's timestamps.
 * - `fn` runs inside a scope per repetition: every tensor it creates is disposed, including what it
 *   returns. Warm-up repetitions compile pipelines and fill the buffer pool, so timed repetitions
 *   allocate nothing new.
 * - Reported figures are medians over the timed repetitions.
 */
/// <reference types="@webgpu/types" />
import type { Engine } from './engine.js';

export interface TimeKernelOptions {
  /** Untimed runs first (pipeline compilation, pool warm-up). Default 1. */
  warmup?: number;
  /**
   * Timed runs. A number, or 'auto' (default): enough runs to fill `budgetMs`, judged from the
   * last warm-up run, between `minReps` and `maxReps`; fewer than `minReps` (at least 1) when
   * `minReps` runs would take more than 5 × `budgetMs`.
   */
  reps?: number | 'auto';
  /** Target total time of the timed runs when `reps` is 'auto'. Default 1000 ms. */
  budgetMs?: number;
  /** Bounds of the automatic repetition count. Defaults 3 and 50. */
  minReps?: number;
  maxReps?: number;
  /** Use GPU timestamps when the device has them (default true); false: wall clock only. */
  timestamps?: boolean;
  /**
   * Untimed preparation before every run (warm-up and timed), e.g. gathering gradients before an
   * optimizer step. Its work is submitted and finished before the clock starts; it runs in the
   * caller's scope (what it creates is the caller's to free).
   */
  beforeEach?: () => unknown;
}

export interface KernelTiming {
  /** Median GPU time per run in ms from timestamp queries; null without `timestamp-query`. */
  gpuMs: number | null;
  /** Median wall-clock time per run in ms (recording + submit + GPU, until the queue is idle). */
  wallMs: number;
  /** The headline figure: `gpuMs` when available, else `wallMs`. */
  ms: number;
  /** Which clock `ms` comes from. */
  method: 'timestamp' | 'wall';
  /** Number of timed runs. */
  reps: number;
  /** Per-run samples in ms (gpu is empty without timestamps). */
  samples: { gpu: number[]; wall: number[] };
}

/** Most timed runs of one call: two timestamps each, and a query set holds at most 4096. */
export const MAX_REPS = 2048;

/** The median of a non-empty list. */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) throw new RangeError('median of an empty list');
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** One run of `fn` in its own scope; whatever it creates or returns is disposed. */
async function runOnce(engine: Engine, fn: () => unknown): Promise<void> {
  await engine.scope(async () => {
    await fn();
  });
}

/** Records an empty compute pass that writes one timestamp, in recording order. */
function timestampPass(engine: Engine, querySet: GPUQuerySet, index: number, at: 'begin' | 'end'): void {
  const enc = engine.device.encoderForCopy();
  const pass = enc.beginComputePass({
    timestampWrites: at === 'begin' ? { querySet, beginningOfPassWriteIndex: index } : { querySet, endOfPassWriteIndex: index },
  });
  pass.end();
}

/**
 * Times the GPU work that `fn` records (dispatches of kernels through `engine`): warm-up runs, then
 * timed runs, each on an idle device. Returns the medians of GPU-timestamp time (when the device
 * has `timestamp-query`) and of wall-clock time. `fn` may be async; tensors it creates are disposed.
 */
export async function timeKernel(engine: Engine, fn: () => unknown, opts: TimeKernelOptions = {}): Promise<KernelTiming> {
  const dev = engine.device;
  const warmup = opts.warmup ?? 1;
  const useTimestamps = (opts.timestamps ?? true) && dev.features.timestampQuery;

  /** One run: preparation, then `fn` bracketed by timestamps `2i`, `2i+1` when a query set is given. */
  const runTimed = async (querySet: GPUQuerySet | null, i: number): Promise<number> => {
    await opts.beforeEach?.();
    await dev.sync();
    const t0 = performance.now();
    if (querySet) timestampPass(engine, querySet, 2 * i, 'begin');
    await runOnce(engine, fn);
    if (querySet) timestampPass(engine, querySet, 2 * i + 1, 'end');
    await dev.sync();
    return performance.now() - t0;
  };

  let lastWall = 0;
  for (let i = 0; i < warmup; i++) lastWall = await runTimed(null, i);
  const reps = chooseReps(opts, lastWall, warmup);

  const querySet = useTimestamps ? dev.gpu.createQuerySet({ type: 'timestamp', count: 2 * reps, label: 'webdino-timing' }) : null;
  const wall: number[] = [];
  try {
    for (let i = 0; i < reps; i++) wall.push(await runTimed(querySet, i));
    const gpu = querySet ? await readIntervals(engine, querySet, reps) : [];
    const wallMs = median(wall);
    const gpuMs = gpu.length ? median(gpu) : null;
    return {
      gpuMs,
      wallMs,
      ms: gpuMs ?? wallMs,
      method: gpuMs === null ? 'wall' : 'timestamp',
      reps,
      samples: { gpu, wall },
    };
  } finally {
    if (querySet) {
      // A run that threw may have left a recorded bracket: submit it before the query set goes.
      try {
        dev.flush();
      } catch {
        /* the device is lost or broken: nothing to submit */
      }
      querySet.destroy();
    }
  }
}

function chooseReps(opts: TimeKernelOptions, lastWallMs: number, warmup: number): number {
  const r = opts.reps ?? 'auto';
  if (r !== 'auto') {
    if (!Number.isInteger(r) || r < 1 || r > MAX_REPS) throw new RangeError(`timeKernel: reps must be an integer in [1, ${MAX_REPS}], got ${r}`);
    return r;
  }
  const lo = opts.minReps ?? 3;
  const hi = Math.min(opts.maxReps ?? 50, MAX_REPS);
  const budget = opts.budgetMs ?? 1000;
  if (warmup === 0 || !(lastWallMs > 0)) return lo;
  // Work so slow that `lo` runs would take over 5 budgets (a 2048³ matmul on a CPU driver): fewer
  // runs, at least one. Runs that long are far above the clocks' resolution anyway.
  if (lo * lastWallMs > 5 * budget) return Math.max(1, Math.floor((5 * budget) / lastWallMs));
  return Math.min(hi, Math.max(lo, Math.ceil(budget / lastWallMs)));
}

/**
 * Resolves the query set and returns the per-run intervals in ms. A run whose end timestamp is
 * not after its beginning (a driver that does not write them) is dropped; when none is left the
 * caller falls back to wall time.
 */
async function readIntervals(engine: Engine, querySet: GPUQuerySet, reps: number): Promise<number[]> {
  const dev = engine.device;
  const bytes = 2 * reps * 8;
  const resolve = dev.gpu.createBuffer({
    size: bytes,
    usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    label: 'webdino-timing-resolve',
  });
  try {
    dev.encoderForCopy().resolveQuerySet(querySet, 0, 2 * reps, resolve, 0);
    const ticks = new BigUint64Array(await dev.read(resolve, 0, bytes));
    const out: number[] = [];
    for (let i = 0; i < reps; i++) {
      const begin = ticks[2 * i];
      const end = ticks[2 * i + 1];
      if (begin > 0n && end > begin) out.push(Number(end - begin) / 1e6);
    }
    return out;
  } finally {
    resolve.destroy();
  }
}
