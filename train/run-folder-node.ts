/**
 * A training run's folder (`webdino train --out`): which run it holds, and which process trains in
 * it. Two rules keep runs from being destroyed:
 *
 * - a folder holding a run is never reused silently: `inspectRunFolder` tells what is there, and
 *   the caller refuses to start over it unless asked (`webdino train` wants --resume or --force);
 * - one process at a time: `RunFolderLock` is OUT/.lock, created exclusively and holding the pid and
 *   host of the process that trains there. A second run in the same folder refuses. A lock whose
 *   process is gone (killed, crashed: it had no chance to remove it) is stale and taken over; a lock
 *   from another host cannot be checked and is reported instead.
 *
 * The state comes from the checkpoint's metadata, read from the safetensors header alone (a
 * ViT-B checkpoint is over a gigabyte; its metadata is a few kilobytes). Every error names the file.
 */
import { closeSync, existsSync, openSync, readFileSync, readSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { CHECKPOINT_FORMATS, type CheckpointMeta } from './checkpoint.js';
import type { DinoV2CheckpointMeta } from './dinov2/checkpoint.js';

/** The metadata of a checkpoint of either recipe (`format` tells which). */
export type RunMeta = CheckpointMeta | DinoV2CheckpointMeta;

/** The files of a run folder (train/run-node.ts writes them). */
export const RUN_FILES = {
  checkpoint: 'checkpoint.safetensors',
  teacher: 'teacher_backbone.safetensors',
  metrics: 'metrics.jsonl',
  lock: '.lock',
} as const;

/** The largest safetensors header read for the metadata (safetensors' own limit is 100 MB). */
const MAX_HEADER_BYTES = 100_000_000;

/** A checkpoint's metadata from its safetensors header; errors name the file. */
export function readCheckpointMetaFile(path: string): RunMeta {
  const fail = (why: string): never => {
    throw new Error(`checkpoint ${path}: ${why}`);
  };
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    return fail((e as Error).message);
  }
  try {
    const size = statSync(path).size;
    const head = Buffer.alloc(8);
    if (size < 8 || readSync(fd, head, 0, 8, 0) !== 8) fail(`${size} bytes, too short for a safetensors file`);
    const n = head.readBigUInt64LE(0);
    if (n > BigInt(Math.min(size - 8, MAX_HEADER_BYTES))) fail(`header length ${n} does not fit the file (${size} bytes): truncated or not safetensors`);
    const text = Buffer.alloc(Number(n));
    if (readSync(fd, text, 0, text.length, 8) !== text.length) fail('the header could not be read whole');
    let header: { __metadata__?: { webdino?: unknown } };
    try {
      header = JSON.parse(text.toString('utf8')) as typeof header;
    } catch (e) {
      return fail(`the header is not valid JSON (${(e as Error).message})`);
    }
    const raw = header?.__metadata__?.webdino;
    if (typeof raw !== 'string') return fail('not a webdino training checkpoint (no webdino metadata); to evaluate weights use `webdino embed --weights`');
    let meta: RunMeta;
    try {
      meta = JSON.parse(raw) as CheckpointMeta;
    } catch (e) {
      return fail(`the webdino metadata is not valid JSON (${(e as Error).message})`);
    }
    if (!CHECKPOINT_FORMATS.includes(meta?.format)) fail(`unknown format '${String(meta?.format)}'`);
    return meta;
  } finally {
    closeSync(fd);
  }
}

/** What a run folder holds. */
export type RunFolderState =
  | { kind: 'empty' }
  /** metrics.jsonl or a teacher without a checkpoint: a run stopped before it saved anything to resume from. */
  | { kind: 'unsaved' }
  | { kind: 'interrupted' | 'finished'; meta: RunMeta; iteration: number; total: number };

/** The state of the run in `dir` (a folder that does not exist is empty). */
export function inspectRunFolder(dir: string): RunFolderState {
  const ckpt = join(dir, RUN_FILES.checkpoint);
  if (existsSync(ckpt)) {
    const meta = readCheckpointMetaFile(ckpt);
    const total = meta.config.epochs * meta.itersPerEpoch;
    return { kind: meta.iteration >= total ? 'finished' : 'interrupted', meta, iteration: meta.iteration, total };
  }
  const metrics = join(dir, RUN_FILES.metrics);
  const started = (existsSync(metrics) && statSync(metrics).size > 0) || existsSync(join(dir, RUN_FILES.teacher));
  return started ? { kind: 'unsaved' } : { kind: 'empty' };
}

/** Another live process trains in the folder (or its lock cannot be checked). */
export class RunFolderBusyError extends Error {
  override name = 'RunFolderBusyError';
}

/** What a lock file says about its holder. */
interface LockHolder {
  pid: number;
  host: string;
  started: string;
}

/** True when a process with this pid exists (signal 0 checks without sending anything). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Options of {@link RunFolderLock.acquire} (injectable for tests). */
export interface LockOptions {
  pid?: number;
  host?: string;
  isAlive?: (pid: number) => boolean;
  /** Told when a stale lock is removed. */
  onStale?: (message: string) => void;
}

/** The lock of a run folder: OUT/.lock while a process trains there. */
export class RunFolderLock {
  private released = false;

  private constructor(
    readonly path: string,
    private readonly pid: number,
  ) {}

  /**
   * Takes the lock of `dir` (which must exist) or throws RunFolderBusyError naming the holder. A
   * stale lock (its process is gone) is removed and taken.
   */
  static acquire(dir: string, opts: LockOptions = {}): RunFolderLock {
    const path = join(dir, RUN_FILES.lock);
    const pid = opts.pid ?? process.pid;
    const host = opts.host ?? hostname();
    const isAlive = opts.isAlive ?? processAlive;
    for (let attempt = 0; ; attempt++) {
      let fd: number;
      try {
        fd = openSync(path, 'wx');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new Error(`cannot lock the run folder ${dir}: ${(e as Error).message}`, { cause: e });
        const holder = readHolder(path);
        const clear = `if no webdino run uses ${dir}, delete ${path}`;
        if (!holder) throw new RunFolderBusyError(`${dir} is locked by a run that is starting (${path} is being written); ${clear}`);
        if (holder.host !== host) throw new RunFolderBusyError(`${dir} is in use by process ${holder.pid} on ${holder.host} (since ${holder.started}); ${clear}`);
        if (holder.pid === pid) throw new RunFolderBusyError(`${dir} is in use by another run of this process (started ${holder.started})`);
        if (isAlive(holder.pid)) {
          throw new RunFolderBusyError(`${dir} is in use by process ${holder.pid} (a run started ${holder.started}); wait for it to end or stop it, or train elsewhere with --out (${clear})`);
        }
        if (attempt > 0) throw new RunFolderBusyError(`${dir}: the stale lock ${path} could not be replaced; ${clear}`);
        try {
          unlinkSync(path);
        } catch {
          // Another process removed it first; the next attempt tells who holds it now.
        }
        opts.onStale?.(`removed the lock of process ${holder.pid}, which is no longer running (${path})`);
        continue;
      }
      try {
        writeSync(fd, JSON.stringify({ pid, host, started: new Date().toISOString() } satisfies LockHolder) + '\n');
      } finally {
        closeSync(fd);
      }
      return new RunFolderLock(path, pid);
    }
  }

  /** Removes the lock if it is still this process's. Safe to call twice. */
  release(): void {
    if (this.released) return;
    this.released = true;
    const holder = readHolder(this.path);
    if (holder && holder.pid !== this.pid) return;
    try {
      unlinkSync(this.path);
    } catch {
      // Already gone.
    }
  }
}

/** The holder recorded in a lock file, or null when it is empty or unreadable (being written). */
function readHolder(path: string): LockHolder | null {
  try {
    const h = JSON.parse(readFileSync(path, 'utf8')) as Partial<LockHolder>;
    if (typeof h.pid !== 'number' || !Number.isInteger(h.pid) || h.pid <= 0) return null;
    return { pid: h.pid, host: typeof h.host === 'string' ? h.host : hostname(), started: typeof h.started === 'string' ? h.started : '?' };
  } catch {
    return null;
  }
}
