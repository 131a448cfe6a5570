/**
 * DataLoader: batches of samples from a Dataset in a deterministic order per epoch, with an exact,
 * resumable position, unreadable samples skipped and counted, and the next batch prefetched while
 * the current one is consumed. Runs in Node and in browsers (no Node built-ins); in Node,
 * image-folder-node.ts gives ImageFolder a worker-thread decoder (loader-node.ts), so the samples
 * this loader requests are decoded off the main thread.
 *
 * Order: epoch e visits the dataset in `order(e)`: the identity, or (shuffle) a Fisher–Yates
 * permutation driven by the engine's Rng seeded with `seed + e` (as DINO's DistributedSampler seeds
 * torch.randperm with seed + epoch; the permutations themselves differ from torch's).
 *
 * Position: `{epoch, index}` = the next epoch to read and how many entries of order(epoch) have been
 * consumed. A batch takes entries from `index` onwards until it holds `batchSize` readable samples;
 * an unreadable sample (the dataset rejects with SampleReadError) is left out, remembered, and the
 * batch is refilled from the following entries. So the batches depend only on (seed, epoch, index,
 * the set of unreadable samples), and resuming from a saved position reproduces the run exactly,
 * whether or not the unreadable samples were already known. After the last batch of an epoch the
 * position is {epoch + 1, 0}. With dropLast (DINO's setting) a final incomplete batch is dropped.
 *
 * Skipping: `skipped` counts distinct unreadable samples. When a pass over `batches()` ends (normally
 * or by the consumer breaking out) and it found new unreadable samples, ONE warning summarises them:
 * "skipped 3 unreadable samples (first: path: reason)". Known-unreadable samples are not read again,
 * so later epochs stay silent. Any other error from the dataset propagates. A pass over a whole
 * epoch that yields no batch at all throws NoBatchError (every later epoch would be the same: a
 * consumer looping over epochs would otherwise spin).
 *
 * Prefetch: while the consumer holds batch k, batch k+1 (up to `prefetch` batches ahead) is being
 * loaded. The load starts from a macrotask, so the consumer first gets to submit its GPU work; the
 * reads/decodes then overlap it (worker threads in Node; the main thread, between GPU waits, for
 * synthetic data and browsers).
 */

import { Rng } from '../../engine/random.js';
import { errorMessage, type Dataset, type Sample, SampleReadError } from './dataset.js';

/** Where a DataLoader stands: entries of order(epoch) consumed so far. */
export interface LoaderPosition {
  epoch: number;
  index: number;
}

/** One batch of samples. */
export interface Batch {
  /** The samples, in load order. */
  samples: Sample[];
  /** Their dataset indices. */
  indices: number[];
  /** The epoch the batch belongs to. */
  epoch: number;
  /** The loader's position after this batch: save it to resume right after this batch. */
  next: LoaderPosition;
}

/** Options of {@link DataLoader}. */
export interface DataLoaderOptions {
  /** Samples per batch (>= 1). */
  batchSize: number;
  /** Shuffle every epoch (default true). */
  shuffle?: boolean;
  /** Seed of the shuffle; epoch e uses seed + e (default 0). */
  seed?: number;
  /** Drop the final incomplete batch of an epoch (default true, as DINO). */
  dropLast?: boolean;
  /** Batches loaded ahead of the consumer (default 1; 0 disables prefetching). */
  prefetch?: number;
  /** Receives the skip summary (default console.warn). */
  onWarning?: (message: string) => void;
}

interface Loaded {
  samples: Sample[];
  indices: number[];
  /** Position in the epoch order after this batch (not normalised). */
  end: number;
}

/** Deterministic, resumable, prefetching batch loader over a Dataset (see the file header). */
export class DataLoader {
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly seed: number;
  readonly dropLast: boolean;
  readonly prefetch: number;
  private readonly onWarning: (message: string) => void;
  private pos: LoaderPosition = { epoch: 0, index: 0 };
  /** Unreadable samples: dataset index → "source: reason". */
  private readonly bad = new Map<number, string>();
  /** Bad samples not yet reported in a warning. */
  private unreported: number[] = [];
  private iterating = false;

  /**
   * @param dataset the samples
   * @param options batch size, shuffle, seed, dropLast, prefetch depth, warning sink
   */
  constructor(
    readonly dataset: Dataset,
    options: DataLoaderOptions,
  ) {
    const { batchSize } = options;
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError(`DataLoader: batchSize must be a positive integer, got ${batchSize}`);
    this.batchSize = batchSize;
    this.shuffle = options.shuffle ?? true;
    this.seed = options.seed ?? 0;
    if (!Number.isInteger(this.seed)) throw new RangeError(`DataLoader: seed must be an integer, got ${this.seed}`);
    this.dropLast = options.dropLast ?? true;
    this.prefetch = options.prefetch ?? 1;
    if (!Number.isInteger(this.prefetch) || this.prefetch < 0) throw new RangeError(`DataLoader: prefetch must be a non-negative integer, got ${this.prefetch}`);
    this.onWarning = options.onWarning ?? ((m) => console.warn(m));
  }

  /** Distinct samples found unreadable so far (left out of every batch). */
  get skipped(): number {
    return this.bad.size;
  }

  /** The unreadable samples found so far: dataset index and "source: reason". */
  skippedSamples(): { index: number; reason: string }[] {
    return [...this.bad].map(([index, reason]) => ({ index, reason }));
  }

  /**
   * Batches in one epoch given what is known now: floor((length − skipped) / batchSize) with
   * dropLast, else ceil. Before the first pass an unreadable sample is not yet known, so this can
   * shrink by one after it.
   */
  get batchesPerEpoch(): number {
    const n = this.dataset.length - this.bad.size;
    return this.dropLast ? Math.floor(n / this.batchSize) : Math.ceil(n / this.batchSize);
  }

  /** The position the next `batches()` starts from (a copy). */
  get position(): LoaderPosition {
    return { ...this.pos };
  }

  /** Moves to a saved position (e.g. `batch.next` from a checkpoint). */
  seek(position: LoaderPosition): void {
    const { epoch, index } = position;
    if (!Number.isInteger(epoch) || epoch < 0 || !Number.isInteger(index) || index < 0 || index > this.dataset.length) {
      throw new RangeError(`DataLoader.seek: invalid position {epoch: ${epoch}, index: ${index}} for ${this.dataset.length} samples`);
    }
    if (this.iterating) throw new Error('DataLoader.seek: a batches() pass is in progress');
    this.pos = this.normalise(epoch, index);
  }

  /** The visiting order of epoch `epoch`: a permutation of 0..length−1. */
  order(epoch: number): Uint32Array {
    const n = this.dataset.length;
    const order = new Uint32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
    if (!this.shuffle) return order;
    const rng = new Rng(this.seed + epoch);
    for (let i = n - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      const t = order[i]!;
      order[i] = order[j]!;
      order[j] = t;
    }
    return order;
  }

  /**
   * The batches from the current position to the end of its epoch; `position` advances as each batch
   * is handed out (so a consumer that breaks out can resume from `position`). One pass at a time.
   */
  async *batches(): AsyncGenerator<Batch, void, undefined> {
    if (this.iterating) throw new Error('DataLoader.batches: another pass is in progress');
    this.iterating = true;
    const { epoch, index: start } = this.pos;
    const order = this.order(epoch);
    // queue: batches requested but not yet handed out; tail: the latest batch requested. Batch k+1
    // starts where batch k ended, so each load is chained on the previous one.
    const queue: Promise<Loaded | null>[] = [];
    let tail: Promise<Loaded | null> | null = null;
    const extend = (): void => {
      const prev = tail;
      const p = prev
        ? prev.then(async (b) => (b && b.end < order.length ? (await nextMacrotask(), this.load(order, b.end)) : null))
        : this.load(order, start);
      // Errors surface when the promise is awaited below; this handler only keeps an abandoned
      // prefetch from becoming an unhandled rejection.
      p.catch(() => undefined);
      queue.push(p);
      tail = p;
    };
    let yielded = 0;
    try {
      for (;;) {
        while (queue.length < 1 + this.prefetch) extend();
        const b = await queue.shift()!;
        if (!b) break;
        const next = this.normalise(epoch, b.end);
        this.pos = next;
        yielded++;
        yield { samples: b.samples, indices: b.indices, epoch, next: { ...next } };
      }
      // A whole epoch without one batch: every later epoch is the same, so a consumer looping over
      // epochs would spin forever. Say why instead.
      if (start === 0 && yielded === 0) throw new NoBatchError(this.noBatchMessage());
      this.pos = { epoch: epoch + 1, index: 0 };
    } finally {
      this.iterating = false;
      this.warnSkipped();
    }
  }

  private noBatchMessage(): string {
    const n = this.dataset.length;
    const readable = n - this.bad.size;
    const first = this.bad.size ? ` (first unreadable: ${this.bad.values().next().value})` : '';
    return (
      `DataLoader: an epoch gives no ${this.dropLast ? 'full ' : ''}batch of ${this.batchSize}: ${readable} of the ${n} samples are readable, ` +
      `${this.bad.size} are not${first}`
    );
  }

  /** {epoch, index}, or {epoch + 1, 0} when no further batch can start at index. */
  private normalise(epoch: number, index: number): LoaderPosition {
    const left = this.dataset.length - index;
    if (left <= 0 || (this.dropLast && left < this.batchSize)) return { epoch: epoch + 1, index: 0 };
    return { epoch, index };
  }

  /** Loads one batch starting at order[start]; null when the epoch has no further batch. */
  private async load(order: Uint32Array, start: number): Promise<Loaded | null> {
    const samples: Sample[] = [];
    const indices: number[] = [];
    let pos = start;
    while (samples.length < this.batchSize && pos < order.length) {
      const take: number[] = [];
      while (take.length < this.batchSize - samples.length && pos < order.length) {
        const i = order[pos++]!;
        if (!this.bad.has(i)) take.push(i);
      }
      const results = await Promise.allSettled(take.map((i) => this.dataset.get(i)));
      for (let k = 0; k < take.length; k++) {
        const r = results[k]!;
        const i = take[k]!;
        if (r.status === 'fulfilled') {
          this.checkSample(i, r.value);
          samples.push(r.value);
          indices.push(i);
        } else if (r.reason instanceof SampleReadError) {
          if (!this.bad.has(i)) {
            this.bad.set(i, r.reason.message);
            this.unreported.push(i);
          }
        } else {
          throw r.reason;
        }
      }
    }
    if (samples.length === 0 || (this.dropLast && samples.length < this.batchSize)) return null;
    return { samples, indices, end: pos };
  }

  private checkSample(index: number, s: Sample): void {
    const { label, image } = s;
    if (!Number.isInteger(label) || label < 0 || label >= this.dataset.numClasses) {
      throw new RangeError(`DataLoader: sample ${this.describe(index)} has label ${label}, outside [0, ${this.dataset.numClasses})`);
    }
    if (image.data.length !== image.width * image.height * 3) {
      throw new RangeError(`DataLoader: sample ${this.describe(index)} is ${image.width}x${image.height} but has ${image.data.length} bytes (RGB needs ${image.width * image.height * 3})`);
    }
  }

  private describe(index: number): string {
    try {
      return this.dataset.describe?.(index) ?? `#${index}`;
    } catch (e) {
      return `#${index} (${errorMessage(e)})`;
    }
  }

  /** Emits one warning for the unreadable samples found since the last one. */
  private warnSkipped(): void {
    if (this.unreported.length === 0) return;
    const first = this.bad.get(this.unreported[0]!)!;
    const n = this.unreported.length;
    const total = this.bad.size === n ? '' : ` (${this.bad.size} in total)`;
    this.unreported = [];
    this.onWarning(`DataLoader: skipped ${n} unreadable sample${n === 1 ? '' : 's'}${total} (first: ${first}); they are left out from now on`);
  }
}

/** An epoch of the dataset yields no batch at all (too few readable samples for one batch). */
export class NoBatchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NoBatchError';
  }
}

/** Resolves after the current macrotask, letting the consumer run (and submit GPU work) first. */
function nextMacrotask(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}
