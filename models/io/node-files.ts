/**
 * Node-only file helpers for the format layer: reading files as Uint8Array, atomic writes, and
 * zlib's raw inflate for zips with compressed entries. The parsers themselves (safetensors.ts,
 * npy.ts, torch.ts, image.ts, ...) never import Node built-ins; only this file does.
 *
 * Budget: files are read whole (the callers' loaders bound what they allocate from them, see
 * budget.ts); inflation is capped at the declared size of the zip entry.
 *
 * Atomic write: the content goes to a temporary file in the destination's directory (same file
 * system), is flushed with fsync, then renamed over the destination. On any error the temporary
 * file is removed and the destination is left as it was (absent, or its previous content), so a
 * partial output file never appears.
 *
 * Only regular files are written. A destination that exists and is something else (a character or
 * block device such as /dev/full, a FIFO, a socket, a folder) is refused before anything is
 * created: renaming over it would replace the device node itself. A symbolic link is written
 * through: its target file is replaced and the link stays (a dangling link is refused).
 */

import { kMaxLength } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { closeSync, constants, fstatSync, fsyncSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, realpathSync, renameSync, type Stats, statSync, unlinkSync, writeSync } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { inflateRawSync } from 'node:zlib';

import { loadTorchCheckpoint, type TorchLoadSyncOptions } from './torch.js';
import type { InflateRawSync } from './zip.js';

/**
 * Reads a whole regular file as a plain Uint8Array (a view of the Buffer's memory, no copy).
 *
 * The file is opened non-blocking and checked with fstat before anything is read: a FIFO, socket
 * or device named like a data file (`pipe.jpg`) is refused at once instead of blocking forever or
 * reading without end, and the check is on the opened descriptor, so a swap between a stat and
 * the open cannot slip past it.
 */
export async function readBytes(path: string): Promise<Uint8Array> {
  const fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new Error(notRegular(path, st));
    const buf = await fh.readFile();
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  } finally {
    await fh.close();
  }
}

/** Synchronous {@link readBytes}. */
export function readBytesSync(path: string): Uint8Array {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new Error(notRegular(path, st));
    const buf = readFileSync(fd);
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  } finally {
    closeSync(fd);
  }
}

/** "PATH is a FIFO, not a regular file" (and the like). */
function notRegular(path: string, st: Stats): string {
  const kind = st.isDirectory()
    ? 'a directory'
    : st.isFIFO()
      ? 'a FIFO (named pipe)'
      : st.isSocket()
        ? 'a socket'
        : st.isCharacterDevice() || st.isBlockDevice()
          ? 'a device'
          : 'not a regular file';
  return `${path} is ${kind}, not a regular file`;
}

/**
 * Raw-deflate decompression with Node's zlib, for `ZipArchive.read` / `loadTorchCheckpoint`. zlib
 * stops with ERR_BUFFER_TOO_LARGE once the output would pass `maxOutputLength`, so a zip bomb is
 * never inflated past the size its entry declares.
 */
export const nodeInflateRaw: InflateRawSync = (data, maxOutputLength) => {
  const cap = maxOutputLength === undefined ? undefined : Math.min(Math.max(1, maxOutputLength), kMaxLength);
  const out = inflateRawSync(data, cap === undefined ? {} : { maxOutputLength: cap });
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
};

/** Streams content into an atomic write: call `write` for each chunk, in order. */
export type AtomicWriter = (write: (chunk: Uint8Array | string) => Promise<void>) => Promise<void> | void;
/** Synchronous {@link AtomicWriter}. */
export type AtomicWriterSync = (write: (chunk: Uint8Array | string) => void) => void;

/**
 * Removes the temporary files that atomic writes of `path` left behind when their process was
 * killed mid-write (`.NAME.<pid>.<hex>.tmp` whose pid is no longer running). Returns the removed
 * paths. Files of live processes (a concurrent writer) are left alone.
 */
export function removeStaleTempFiles(path: string): string[] {
  const dir = dirname(path);
  const prefix = `.${basename(path)}.`;
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return removed;
  }
  for (const name of names) {
    if (!name.startsWith(prefix) || !name.endsWith('.tmp')) continue;
    const m = /^(\d+)\.[0-9a-f]+\.tmp$/.exec(name.slice(prefix.length));
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || processAlive(pid)) continue;
    try {
      unlinkSync(join(dir, name));
      removed.push(join(dir, name));
    } catch {
      // Gone already, or not ours to remove: leave it.
    }
  }
  return removed;
}

/** True when a process with this pid exists (signal 0 checks without sending anything). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The text of an errno error without Node's "CODE: " prefix and path suffix: "read-only file system (EROFS)". */
function errnoReason(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  const m = /^[A-Z]+: ([^,]+)/.exec(err.message ?? '');
  return m ? `${m[1]} (${err.code})` : String(err.message ?? e);
}

/** The file-system calls makeDir uses (injectable: tests fake a read-only file system). */
export interface DirFs {
  mkdirSync(path: string, options?: { recursive?: boolean }): unknown;
  statSync(path: string): Pick<Stats, 'isDirectory'>;
}

const nodeDirFs: DirFs = { mkdirSync, statSync };

/**
 * Creates `dir` and its parents. When that fails, the error names the folder and the real reason:
 * Node's recursive mkdir reports ENOENT for a level it could not create on a read-only file system,
 * so the first missing level is created alone to learn why it cannot be (EROFS, EACCES), and a
 * file where a folder should be is reported as such.
 */
export function makeDir(dir: string, fs: DirFs = nodeDirFs): void {
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw Object.assign(new Error(`cannot create the folder ${dir}: ${whyNoDir(dir, e, fs)}`, { cause: e }), { code: (e as NodeJS.ErrnoException).code });
  }
}

function whyNoDir(dir: string, first: unknown, fs: DirFs): string {
  const kind = (p: string): 'folder' | 'file' | null => {
    try {
      return fs.statSync(p).isDirectory() ? 'folder' : 'file';
    } catch {
      return null;
    }
  };
  // Walk up to the first missing level below one that exists.
  let missing = resolve(dir);
  for (;;) {
    const here = kind(missing);
    if (here === 'file') return `${missing} is a file, not a folder`;
    if (here === 'folder') return errnoReason(first);
    const parent = dirname(missing);
    if (parent === missing) return errnoReason(first);
    const up = kind(parent);
    if (up === 'file') return `${parent} is a file, not a folder`;
    if (up === 'folder') break;
    missing = parent;
  }
  // Creating that one level alone gives the error that applies to it.
  try {
    fs.mkdirSync(missing);
  } catch (e) {
    return `${missing}: ${errnoReason(e)}`;
  }
  return errnoReason(first);
}

/** The file-system queries that decide what an atomic write replaces (injectable for tests). */
export interface TargetFs {
  lstatSync(path: string): Pick<Stats, 'isFile' | 'isDirectory' | 'isSymbolicLink' | 'isCharacterDevice' | 'isBlockDevice' | 'isFIFO' | 'isSocket'>;
  realpathSync(path: string): string;
}

const nodeTargetFs: TargetFs = { lstatSync, realpathSync };

/** Options of {@link writeFileAtomic}. */
export interface AtomicWriteOptions {
  /** How the destination is inspected (default: node:fs). */
  fs?: TargetFs;
}

function describeNonRegular(st: ReturnType<TargetFs['lstatSync']>): string | null {
  if (st.isFile()) return null;
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isSocket()) return 'a socket';
  if (st.isDirectory()) return 'a folder';
  return 'not a regular file';
}

/**
 * The file an atomic write of `path` replaces: `path` itself, or the real path of the file a
 * symbolic link at `path` points to. Throws when that exists and is not a regular file, or when
 * the link is dangling.
 */
export function atomicWriteTarget(path: string, fs: TargetFs = nodeTargetFs): string {
  let st: ReturnType<TargetFs['lstatSync']>;
  try {
    st = fs.lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return path;
    throw e;
  }
  let target = path;
  if (st.isSymbolicLink()) {
    try {
      target = fs.realpathSync(path);
    } catch {
      throw new Error(`refusing to write ${path}: it is a symbolic link to a file that does not exist`);
    }
    st = fs.lstatSync(target);
  }
  const kind = describeNonRegular(st);
  if (kind) throw new Error(`refusing to write ${path}: it is ${kind}${target !== path ? ` (${target})` : ''}; only regular files are written`);
  return target;
}

/** An error of opening the temporary file, told about the destination (the temp name means nothing to users). */
function openError(path: string, e: unknown): Error {
  return Object.assign(new Error(`cannot write ${path}: ${errnoReason(e)}`, { cause: e }), { code: (e as NodeJS.ErrnoException).code });
}

function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
}

function toBytes(chunk: Uint8Array | string): Uint8Array {
  return typeof chunk === 'string' ? new TextEncoder().encode(chunk) : chunk;
}

/** Best-effort fsync of a directory so the rename itself is durable (not possible on Windows). */
async function syncDir(dir: string): Promise<void> {
  try {
    const fh = await open(dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch {
    // Directories cannot be opened or synced on some platforms; the rename is still atomic.
  }
}

/**
 * Writes `content` (bytes, text, or a writer callback that streams chunks) to `path` atomically:
 * temp file in the same directory, fsync, rename. If anything throws (including the writer), the
 * temp file is deleted, `path` is untouched, and the error is rethrown.
 */
export async function writeFileAtomic(path: string, content: Uint8Array | string | AtomicWriter, options: AtomicWriteOptions = {}): Promise<void> {
  const target = atomicWriteTarget(path, options.fs);
  const tmp = tempPathFor(target);
  const fh = await open(tmp, 'wx').catch((e: unknown) => {
    throw openError(path, e);
  });
  let closed = false;
  try {
    const write = async (chunk: Uint8Array | string): Promise<void> => {
      const bytes = toBytes(chunk);
      let off = 0;
      while (off < bytes.length) {
        const { bytesWritten } = await fh.write(bytes, off, bytes.length - off);
        off += bytesWritten;
      }
    };
    if (typeof content === 'function') await content(write);
    else await write(content);
    await fh.sync();
    closed = true;
    await fh.close();
    await rename(tmp, target);
  } catch (err) {
    if (!closed) await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await syncDir(dirname(target));
}

/** Synchronous {@link writeFileAtomic}. */
export function writeFileAtomicSync(path: string, content: Uint8Array | string | AtomicWriterSync, options: AtomicWriteOptions = {}): void {
  const target = atomicWriteTarget(path, options.fs);
  const tmp = tempPathFor(target);
  let fd: number;
  try {
    fd = openSync(tmp, 'wx');
  } catch (e) {
    throw openError(path, e);
  }
  let closed = false;
  try {
    const write = (chunk: Uint8Array | string): void => {
      const bytes = toBytes(chunk);
      let off = 0;
      while (off < bytes.length) off += writeSync(fd, bytes, off, bytes.length - off);
    };
    if (typeof content === 'function') content(write);
    else write(content);
    fsyncSync(fd);
    closed = true;
    closeSync(fd);
    renameSync(tmp, target);
  } catch (err) {
    if (!closed) {
      try {
        closeSync(fd);
      } catch {
        // already failing; keep the original error
      }
    }
    try {
      unlinkSync(tmp);
    } catch {
      // the temp file may not exist any more
    }
    throw err;
  }
}

/**
 * Reads and parses a PyTorch checkpoint file (see `loadTorchCheckpoint`); compressed zip entries
 * are inflated with Node's zlib, and error messages name the file.
 */
export async function loadTorchCheckpointFile(path: string, options: TorchLoadSyncOptions = {}): Promise<unknown> {
  return loadTorchCheckpoint(await readBytes(path), { name: basename(path), inflateRaw: nodeInflateRaw, ...options });
}
