/**
 * Node-only: decoding JPEG/PNG files in a pool of worker threads, so that a DataLoader's prefetch of
 * the next batch runs on other cores while the main thread drives the GPU.
 *
 * The pool has N = min(4, cores) workers by default. Each worker runs decode-worker-node.ts: it reads
 * the file and calls the same `decodeImage` as the main thread, so the pixels are byte-identical to
 * main-thread decoding; the pixel buffer is transferred back (no copy). Tasks are queued and handed to
 * idle workers in arrival order. A worker holds the process open only while it has a task.
 *
 * Worker script: Node cannot start a worker from TypeScript, so the worker runs the bundled
 * `dist/decode-worker.js` (scripts/build.mjs builds it next to dist/cli.js). `findDecodeWorkerScript`
 * looks for it next to this module (the bundled CLI) and in the package's dist/ (running from
 * sources); `createNodeImageReader` falls back to main-thread decoding when there is none (and says
 * so), as browsers always do.
 *
 * Failures: a file that cannot be read or decoded rejects its task with an Error carrying the reason
 * (ImageFolder turns it into a skipped sample). A worker that dies while decoding fails only that
 * task and is replaced. A worker that dies before it ever came online means the pool cannot work: every
 * pending and later task rejects with ReaderFailedError, which the loader does not swallow ("came
 * online" = posted DECODE_WORKER_READY, i.e. its script loaded; Node's own 'online' event fires before
 * the module is loaded, so it cannot tell a broken script).
 */

import { existsSync } from 'node:fs';
import { readBytes } from '../../models/io/node-files.js';
import { availableParallelism } from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';

import { decodeImage, ImageDecodeError, type RgbImage } from '../../models/io/image.js';
import { type ImageReader, mainThreadReader, ReaderFailedError } from './dataset.js';
import { DECODE_WORKER_READY, type DecodeRequest, type DecodeResponse } from './decode-protocol.js';

export { DECODE_WORKER_READY, type DecodeRequest, type DecodeResponse } from './decode-protocol.js';

/** The default pool size: min(4, available cores). */
export function defaultDecodeWorkers(): number {
  return Math.max(1, Math.min(4, availableParallelism()));
}

/** The built worker script: next to this module when bundled, else the package's dist/; or undefined. */
export function findDecodeWorkerScript(): URL | undefined {
  for (const rel of ['./decode-worker.js', '../../dist/decode-worker.js']) {
    const url = new URL(rel, import.meta.url);
    if (existsSync(fileURLToPath(url))) return url;
  }
  return undefined;
}

/** Options of {@link DecodePool}. */
export interface DecodePoolOptions {
  /** Number of worker threads (default min(4, cores)). */
  workers?: number;
  /** The worker script (default: findDecodeWorkerScript()). A path or file URL. */
  workerUrl?: URL | string;
  /** Passed to decodeImage: refuse images with more pixels (default: decodeImage's). */
  maxPixels?: number;
}

interface Task {
  request: Omit<DecodeRequest, 'id'>;
  transfer: ArrayBuffer[];
  resolve: (img: RgbImage) => void;
  reject: (e: unknown) => void;
}

interface Slot {
  worker: Worker;
  /** The worker has posted DECODE_WORKER_READY (its script loaded). */
  online: boolean;
  task: { id: number; task: Task } | null;
}

/** A fixed-size pool of decode worker threads (see the file header). */
export class DecodePool {
  /** Number of worker threads. */
  readonly size: number;
  private readonly url: URL;
  private readonly maxPixels: number | undefined;
  private readonly slots: Slot[] = [];
  private readonly queue: Task[] = [];
  private nextId = 1;
  private broken: ReaderFailedError | null = null;
  private closed = false;

  /** Starts the workers; throws ReaderFailedError when no worker script is found. */
  constructor(options: DecodePoolOptions = {}) {
    this.size = options.workers ?? defaultDecodeWorkers();
    if (!Number.isInteger(this.size) || this.size < 1) throw new RangeError(`DecodePool: workers must be a positive integer, got ${this.size}`);
    const url = options.workerUrl ?? findDecodeWorkerScript();
    if (!url) throw new ReaderFailedError('DecodePool: no decode worker script found (run `npm run build` to create dist/decode-worker.js)');
    this.url = typeof url === 'string' ? (/^file:/.test(url) ? new URL(url) : pathToFileURL(url)) : url;
    if (this.url.protocol === 'file:' && !existsSync(fileURLToPath(this.url))) {
      throw new ReaderFailedError(`DecodePool: worker script ${fileURLToPath(this.url)} does not exist`);
    }
    this.maxPixels = options.maxPixels;
    for (let i = 0; i < this.size; i++) this.slots.push(this.spawn());
  }

  /** Reads and decodes the file at `path` in a worker. */
  decodeFile(path: string): Promise<RgbImage> {
    return this.submit({ path, maxPixels: this.maxPixels }, []);
  }

  /** Decodes JPEG/PNG bytes in a worker (the bytes are copied, the caller keeps its array). */
  decodeBytes(bytes: Uint8Array): Promise<RgbImage> {
    const copy = bytes.slice();
    return this.submit({ bytes: copy, maxPixels: this.maxPixels }, [copy.buffer]);
  }

  /** Stops the workers; pending tasks reject with ReaderFailedError. Safe to call twice. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.fail(new ReaderFailedError('DecodePool: closed'));
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }

  private submit(request: Omit<DecodeRequest, 'id'>, transfer: ArrayBuffer[]): Promise<RgbImage> {
    if (this.closed) return Promise.reject(new ReaderFailedError('DecodePool: closed'));
    if (this.broken) return Promise.reject(this.broken);
    return new Promise<RgbImage>((resolve, reject) => {
      this.queue.push({ request, transfer, resolve, reject });
      this.pump();
    });
  }

  /** Hands queued tasks to idle workers. */
  private pump(): void {
    for (const slot of this.slots) {
      if (this.queue.length === 0) return;
      if (slot.task) continue;
      const task = this.queue.shift()!;
      const id = this.nextId++;
      slot.task = { id, task };
      slot.worker.ref(); // keep the process alive while a task is in flight
      slot.worker.postMessage({ id, ...task.request } satisfies DecodeRequest, task.transfer);
    }
  }

  private spawn(): Slot {
    const worker = new Worker(this.url, { name: 'webdino-decode' });
    const slot: Slot = { worker, online: false, task: null };
    worker.unref();
    worker.on('message', (msg: DecodeResponse | typeof DECODE_WORKER_READY) => {
      if (msg === DECODE_WORKER_READY) {
        slot.online = true;
        return;
      }
      const current = slot.task;
      if (!current || current.id !== msg.id) return;
      slot.task = null;
      worker.unref();
      if (msg.ok) current.task.resolve({ width: msg.width, height: msg.height, data: msg.data });
      else current.task.reject(msg.name === 'ImageDecodeError' ? new ImageDecodeError(msg.message) : new Error(msg.message));
      this.pump();
    });
    // 'error' (an uncaught exception in the worker) is followed by 'exit'; handle both in one place.
    let lastError: unknown = null;
    worker.on('error', (e) => {
      lastError = e;
    });
    worker.on('exit', (code) => {
      if (this.closed) return;
      const why = lastError ? String((lastError as Error).message ?? lastError) : `exit code ${code}`;
      if (!slot.online) {
        this.fail(new ReaderFailedError(`DecodePool: a decode worker failed to start (${this.url.href}): ${why}`));
        return;
      }
      // It died mid-way: fail its task only, and replace it.
      const current = slot.task;
      const i = this.slots.indexOf(slot);
      if (i >= 0) this.slots[i] = this.spawn();
      current?.task.reject(new Error(`decode worker died while decoding (${why})`));
      this.pump();
    });
    return slot;
  }

  /** The pool cannot work: reject everything pending, now and later. */
  private fail(e: ReaderFailedError): void {
    this.broken ??= e;
    for (const s of this.slots) {
      s.task?.task.reject(e);
      s.task = null;
      s.worker.unref();
    }
    for (const t of this.queue.splice(0)) t.reject(e);
  }
}

/** A Node ImageReader and how it decodes. */
export interface NodeImageReader {
  /** Reads and decodes one file. */
  read: ImageReader;
  /** Stops the worker threads (no-op on the main thread). */
  close: () => Promise<void>;
  /** Number of worker threads, 0 on the main thread. */
  workers: number;
  /** "4 worker threads" or "main thread (why)". */
  description: string;
}

/** Options of {@link createNodeImageReader}. */
export interface NodeImageReaderOptions {
  /** Worker threads (default min(4, cores)); 0 decodes on the main thread. */
  workers?: number;
  /** The worker script (default: findDecodeWorkerScript()). */
  workerUrl?: URL | string;
  /** Refuse images with more pixels than this. */
  maxPixels?: number;
}

/**
 * An ImageReader for Node: a DecodePool when workers > 0 and a worker script exists, else
 * main-thread reading + decoding (the description says why).
 */
export function createNodeImageReader(options: NodeImageReaderOptions = {}): NodeImageReader {
  const workers = options.workers ?? defaultDecodeWorkers();
  const url = options.workerUrl ?? findDecodeWorkerScript();
  if (workers > 0 && url) {
    const pool = new DecodePool({ workers, workerUrl: url, maxPixels: options.maxPixels });
    return {
      read: (path) => pool.decodeFile(path),
      close: () => pool.close(),
      workers,
      description: `${workers} worker thread${workers === 1 ? '' : 's'}`,
    };
  }
  const why = workers > 0 ? 'no built decode worker script; run `npm run build`' : 'workers: 0';
  const read = mainThreadReader(readBytes);
  const maxPixels = options.maxPixels;
  return {
    read: maxPixels === undefined ? read : async (path) => decodeImage(await readBytes(path), { maxPixels }),
    close: async () => undefined,
    workers: 0,
    description: `main thread (${why})`,
  };
}
