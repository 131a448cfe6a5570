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
 */

import { kMaxLength } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { closeSync, constants, fstatSync, fsyncSync, openSync, readdirSync, readFileSync, renameSync, type Stats, unlinkSync, writeSync } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
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
export async function writeFileAtomic(path: string, content: Uint8Array | string | AtomicWriter): Promise<void> {
  const tmp = tempPathFor(path);
  const fh = await open(tmp, 'wx');
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
    await rename(tmp, path);
  } catch (err) {
    if (!closed) await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await syncDir(dirname(path));
}

/** Synchronous {@link writeFileAtomic}. */
export function writeFileAtomicSync(path: string, content: Uint8Array | string | AtomicWriterSync): void {
  const tmp = tempPathFor(path);
  const fd = openSync(tmp, 'wx');
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
    renameSync(tmp, path);
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
