/**
 * Row sources: an embedding pool seen as rows [0, rows) of width `dim`, read by row range, so
 * curation streams any number of rows through a bounded amount of memory. Browser-safe: the .npy
 * shard reader is shards-node.ts; here are the in-memory source, the subset view (the pool after
 * deduplication, the resampled points of a k-means level) and the finite-value check.
 *
 * Invariant: `read` returns exactly (end − start)·dim float32 values, row-major, and throws a
 * CurateInputError naming the file and row when a value is NaN or infinite (such a row would
 * poison every distance it enters; callers never see one).
 */

/** Bad input data or options: the message says what is wrong and where. */
export class CurateInputError extends Error {
  override name = 'CurateInputError';
}

export interface RowSource {
  readonly rows: number;
  readonly dim: number;
  /** Rows [start, end) as float32 [end − start, dim], row-major; throws on non-finite values. */
  read(start: number, end: number): Float32Array;
  /** Where row i comes from, for messages ("pool.npy row 12"). */
  where(i: number): string;
}

/** Throws a CurateInputError for the first non-finite value of `data` (rows from `start`). */
export function checkFinite(data: Float32Array, dim: number, start: number, where: (i: number) => string): void {
  for (let q = 0; q < data.length; q++) {
    if (!Number.isFinite(data[q])) {
      const row = start + Math.floor(q / dim);
      throw new CurateInputError(`${where(row)} has a non-finite value (${data[q]}) in column ${q % dim}: remove or recompute that row`);
    }
  }
}

/** Rows held in memory (level ≥ 2 clusters the centroids of the level below; tests). */
export class ArraySource implements RowSource {
  readonly rows: number;
  constructor(
    readonly data: Float32Array,
    readonly dim: number,
    readonly name = 'array',
  ) {
    if (!Number.isInteger(dim) || dim < 1 || data.length % dim !== 0) {
      throw new CurateInputError(`${name}: ${data.length} values do not form rows of width ${dim}`);
    }
    this.rows = data.length / dim;
  }
  read(start: number, end: number): Float32Array {
    checkRange(this, start, end);
    const out = this.data.slice(start * this.dim, end * this.dim);
    checkFinite(out, this.dim, start, (i) => this.where(i));
    return out;
  }
  where(i: number): string {
    return `${this.name} row ${i}`;
  }
}

/**
 * The rows `indices` (strictly increasing) of `base`, renumbered 0 … indices.length − 1. A read
 * fetches the base rows from the first to the last index it needs in pieces of at most
 * `span` rows and keeps the wanted ones, so sparse subsets do not read the whole gap at once.
 */
export class SubsetSource implements RowSource {
  readonly rows: number;
  readonly dim: number;
  constructor(
    readonly base: RowSource,
    readonly indices: Int32Array,
    private readonly span = 4096,
  ) {
    for (let i = 0; i < indices.length; i++) {
      const v = indices[i];
      if (v < 0 || v >= base.rows || (i > 0 && v <= indices[i - 1])) {
        throw new RangeError(`SubsetSource: indices must be strictly increasing rows of the base (index ${i} is ${v})`);
      }
    }
    this.rows = indices.length;
    this.dim = base.dim;
  }
  read(start: number, end: number): Float32Array {
    checkRange(this, start, end);
    const D = this.dim;
    const out = new Float32Array((end - start) * D);
    let i = start;
    while (i < end) {
      // A run of wanted rows whose base rows fit in one read of ≤ span rows.
      const first = this.indices[i];
      let j = i + 1;
      while (j < end && this.indices[j] - first < this.span) j++;
      const block = this.base.read(first, this.indices[j - 1] + 1);
      for (let q = i; q < j; q++) out.set(block.subarray((this.indices[q] - first) * D, (this.indices[q] - first + 1) * D), (q - start) * D);
      i = j;
    }
    return out;
  }
  where(i: number): string {
    return this.base.where(this.indices[i]);
  }
}

/** Rows [start, end) of `base`, renumbered from 0 (one shard of a fanned-out job). */
export class RangeSource implements RowSource {
  readonly rows: number;
  readonly dim: number;
  constructor(
    readonly base: RowSource,
    readonly start: number,
    readonly end: number,
  ) {
    checkRange(base, start, end);
    this.rows = end - start;
    this.dim = base.dim;
  }
  read(start: number, end: number): Float32Array {
    checkRange(this, start, end);
    return this.base.read(this.start + start, this.start + end);
  }
  where(i: number): string {
    return this.base.where(this.start + i);
  }
}

function checkRange(s: RowSource, start: number, end: number): void {
  if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > s.rows || start > end) {
    throw new RangeError(`read(${start}, ${end}) outside rows [0, ${s.rows})`);
  }
}
