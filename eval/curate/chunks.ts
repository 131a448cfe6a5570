/**
 * A row source on the GPU, chunk by chunk: each chunk is rows [start, start + rows) as the
 * kernels want them (kernels/kmeans.ts GpuRows: zero-padded to a multiple of 4 columns, squared
 * norms computed here in float64), optionally l2-normalised first (cosine searches).
 *
 * Memory: chunks hold at most `chunkRows` rows, sized so a chunk stays under 64 MiB and half the
 * adapter's maxStorageBufferBindingSize (the pool rounds buffers up by < 25 %). When the whole
 * source fits in `residentBytes`, chunks are uploaded once and kept until `dispose()`; otherwise
 * they stream: uploaded before use, disposed after, and the next chunk is read from disk while
 * the GPU works on the current one (two chunks alive at most).
 *
 * Chunk sizes are multiples of D2_BLOCK (256 rows) unless the caller forces another size, so the
 * k-means++ block sums cover the same global rows whatever the chunk size (see kmeans.ts).
 */
import type { Engine } from '../../engine/engine.js';
import type { Tensor } from '../../engine/tensor.js';
import { D2_BLOCK, type GpuRows } from '../../kernels/kmeans.js';
import type { RowSource } from './source.js';

/** Default largest chunk, in bytes of padded rows. */
const CHUNK_BYTES = 64 * 1024 * 1024;
/** Default GPU memory a source may occupy to stay resident. */
export const DEFAULT_RESIDENT_BYTES = 1024 * 1024 * 1024;

export interface Chunk extends GpuRows {
  /** First source row. */
  start: number;
  rows: number;
  /** The squared norms on the host too (distances = ‖x‖² + the assign kernel's partial minimum). */
  xnHost: Float32Array;
}

export interface ChunkOptions {
  /** Rows per chunk (default: as many as fit 64 MiB, a multiple of 256). */
  chunkRows?: number;
  /** l2-normalise every row (x / max(‖x‖, 1e-12), as torch's normalize) before upload. */
  normalize?: boolean;
  /** Keep all chunks on the GPU when the padded source takes at most this many bytes (default 1 GiB; 0: always stream). */
  residentBytes?: number;
}

/** Columns after zero-padding to a multiple of 4. */
export function paddedDim(dim: number): number {
  return Math.ceil(dim / 4) * 4;
}

/** The default rows per chunk for rows of `dim` columns on this engine's device. */
export function defaultChunkRows(engine: Engine, dim: number): number {
  const lim = engine.device.limits;
  const bytes = Math.min(CHUNK_BYTES, lim.maxStorageBufferBindingSize / 2, lim.maxBufferSize / 2);
  const rows = Math.floor(bytes / (4 * paddedDim(dim)));
  return Math.max(D2_BLOCK, Math.floor(rows / D2_BLOCK) * D2_BLOCK);
}

/**
 * Rows → padded float32 [n, D4] and float64-accurate squared norms (after normalising, if asked).
 */
export function padRows(data: Float32Array, dim: number, normalize: boolean): { x: Float32Array; xn: Float32Array } {
  const n = data.length / dim;
  const D4 = paddedDim(dim);
  const x = new Float32Array(n * D4);
  const xn = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let d = 0; d < dim; d++) s += data[i * dim + d] ** 2;
    const scale = normalize ? 1 / Math.max(Math.sqrt(s), 1e-12) : 1;
    let s2 = 0;
    for (let d = 0; d < dim; d++) {
      const v = Math.fround(data[i * dim + d] * scale);
      x[i * D4 + d] = v;
      s2 += v * v;
    }
    xn[i] = s2;
  }
  return { x, xn };
}

export class ChunkedRows {
  readonly chunkRows: number;
  readonly count: number;
  readonly D4: number;
  readonly resident: boolean;
  private readonly normalize: boolean;
  private cache: (Chunk | null)[] = [];

  constructor(
    readonly engine: Engine,
    readonly source: RowSource,
    opts: ChunkOptions = {},
  ) {
    this.D4 = paddedDim(source.dim);
    const rows = opts.chunkRows ?? defaultChunkRows(engine, source.dim);
    if (!Number.isInteger(rows) || rows < 1) throw new RangeError(`chunkRows must be a positive integer (got ${rows})`);
    const maxRows = Math.floor(Math.min(engine.device.limits.maxStorageBufferBindingSize / 2, engine.device.limits.maxBufferSize / 2) / (4 * this.D4));
    if (rows > maxRows) throw new RangeError(`chunkRows ${rows} × ${this.D4} columns exceeds half the adapter's storage binding limit (${maxRows} rows)`);
    this.chunkRows = Math.min(rows, Math.max(source.rows, 1));
    this.count = Math.ceil(source.rows / this.chunkRows);
    this.normalize = opts.normalize ?? false;
    const bytes = source.rows * (this.D4 + 1) * 4;
    this.resident = bytes <= (opts.residentBytes ?? DEFAULT_RESIDENT_BYTES);
    this.cache = Array(this.count).fill(null);
  }

  /** Rows of chunk i. */
  rowsOf(i: number): number {
    return Math.min(this.chunkRows, this.source.rows - i * this.chunkRows);
  }

  /** Chunk i on the GPU (a kept tensor pair; cached when resident). */
  load(i: number): Chunk {
    const cached = this.cache[i];
    if (cached) return cached;
    const start = i * this.chunkRows;
    const rows = this.rowsOf(i);
    const { x, xn } = padRows(this.source.read(start, start + rows), this.source.dim, this.normalize);
    const e = this.engine;
    const c: Chunk = { start, rows, x: e.keep(e.tensor(x, [rows, this.D4])), xn: e.keep(e.tensor(xn, [rows])), xnHost: xn };
    if (this.resident) this.cache[i] = c;
    return c;
  }

  private release(c: Chunk): void {
    if (this.resident) return;
    c.x.dispose();
    c.xn.dispose();
  }

  /**
   * Runs `fn` on every chunk in order. `fn` records its GPU work synchronously and may return a
   * promise (its readbacks); meanwhile the next chunk is read and uploaded. A streamed chunk is
   * disposed once `fn`'s promise settles.
   */
  async forEach(fn: (c: Chunk, index: number) => Promise<void> | void): Promise<void> {
    if (this.count === 0) return;
    let next: Chunk | null = this.load(0);
    for (let i = 0; i < this.count; i++) {
      const cur: Chunk = next!;
      let done: Promise<void> | void;
      try {
        done = fn(cur, i);
        next = i + 1 < this.count ? this.load(i + 1) : null;
        await done;
      } catch (e) {
        this.release(cur);
        if (next && next !== cur) this.release(next);
        throw e;
      }
      this.release(cur);
    }
  }

  /** Frees the resident chunks. */
  dispose(): void {
    for (const c of this.cache) {
      c?.x.dispose();
      c?.xn.dispose();
    }
    this.cache = Array(this.count).fill(null);
  }
}

/** A kept f32 tensor holding u32 bits (indices, offsets), on `engine`. */
export function u32Tensor(engine: Engine, values: Uint32Array): Tensor {
  const t = engine.keep(engine.empty([Math.max(values.length, 1)], { label: 'u32' }));
  if (values.length) engine.device.write(t.buffer, 0, values);
  return t;
}

/** Reads a tensor of u32 bits back. */
export async function readU32(t: Tensor, count = t.size): Promise<Uint32Array> {
  return new Uint32Array(await t.engine.device.read(t.buffer, 0, count * 4));
}
