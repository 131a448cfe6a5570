/**
 * The buffer pool: storage buffers grouped in size buckets, reused instead of created and
 * destroyed every step.
 *
 * Buckets: sizes are rounded up to a multiple of 256 bytes below 4 KiB and, above that, to the next
 * of four steps per power of two (4096, 5120, 6144, 7168, 8192, ...), so waste is under 25 %.
 *
 * Invariant: a buffer released to the pool may be handed out again immediately, even while
 * dispatches that read it are recorded but not yet submitted: dispatches execute in recording order.
 *
 * Stats: `liveBytes` are bytes held by tensors, `pooledBytes` bytes free in the pool, `peakBytes` the
 * largest live + pooled total seen (since `resetPeak`), `acquiredBytes` the bucket bytes handed out
 * so far (reuses included: what a step allocates is the difference across it). The pool never
 * relies on garbage collection.
 */
/// <reference types="@webgpu/types" />

export interface PoolStats {
  /** Bytes of buffers currently owned by tensors (bucket sizes). */
  liveBytes: number;
  /** Bytes of free buffers kept for reuse. */
  pooledBytes: number;
  /** Largest live + pooled total so far. */
  peakBytes: number;
  /** Number of buffers currently owned by tensors. */
  liveBuffers: number;
  /** Buffers created so far (a reuse does not count). */
  created: number;
  /** Buffers handed out so far, reuses included. */
  acquired: number;
  /** Bytes (bucket sizes) handed out so far, reuses included. */
  acquiredBytes: number;
}

export const STORAGE_USAGE = 0x80 /* STORAGE */ | 0x04 /* COPY_SRC */ | 0x08; /* COPY_DST */

export function bucketSize(bytes: number): number {
  const b = Math.max(bytes, 16);
  if (b <= 4096) return Math.ceil(b / 256) * 256;
  const pow = 2 ** Math.floor(Math.log2(b));
  const step = pow / 4;
  return Math.ceil(b / step) * step;
}

export class BufferPool {
  private readonly free = new Map<number, GPUBuffer[]>();
  private readonly sizes = new WeakMap<GPUBuffer, number>();
  readonly stats: PoolStats = { liveBytes: 0, pooledBytes: 0, peakBytes: 0, liveBuffers: 0, created: 0, acquired: 0, acquiredBytes: 0 };

  constructor(
    private readonly device: GPUDevice,
    private readonly maxBufferSize: number,
  ) {}

  /** A buffer of at least `bytes` bytes (contents undefined). */
  acquire(bytes: number, label?: string): GPUBuffer {
    const size = bucketSize(bytes);
    if (size > this.maxBufferSize) {
      throw new RangeError(
        `webdino: a buffer of ${bytes} bytes exceeds the device's maxBufferSize (${this.maxBufferSize} bytes)`,
      );
    }
    const list = this.free.get(size);
    let buf = list?.pop();
    if (buf) {
      this.stats.pooledBytes -= size;
    } else {
      buf = this.device.createBuffer({ size, usage: STORAGE_USAGE, label });
      this.sizes.set(buf, size);
      this.stats.created++;
    }
    this.stats.liveBytes += size;
    this.stats.liveBuffers++;
    this.stats.acquired++;
    this.stats.acquiredBytes += size;
    this.stats.peakBytes = Math.max(this.stats.peakBytes, this.stats.liveBytes + this.stats.pooledBytes);
    return buf;
  }

  /** Returns a buffer obtained from `acquire` to the pool. */
  release(buf: GPUBuffer): void {
    const size = this.sizes.get(buf);
    if (size === undefined) throw new Error('webdino: releasing a buffer that the pool did not hand out');
    this.stats.liveBytes -= size;
    this.stats.liveBuffers--;
    let list = this.free.get(size);
    if (!list) this.free.set(size, (list = []));
    list.push(buf);
    this.stats.pooledBytes += size;
  }

  /** Restarts the peak from the current live + pooled total (to measure the peak of one piece of work). */
  resetPeak(): void {
    this.stats.peakBytes = this.stats.liveBytes + this.stats.pooledBytes;
  }

  /** Destroys every free buffer (live ones are untouched). */
  trim(): void {
    for (const list of this.free.values()) for (const b of list) b.destroy();
    this.free.clear();
    this.stats.pooledBytes = 0;
  }
}
