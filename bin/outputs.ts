/**
 * The files a command writes. Two guarantees:
 *
 * - an output never replaces one of the command's inputs: `embed --out w.safetensors --weights
 *   w.safetensors` is refused before anything runs. Inputs are registered with `protect` (the
 *   input path options do this from their declaration); an output matches an input when both
 *   resolve to the same real path (symlinks followed) or, for an existing file, the same device and
 *   inode (hard links);
 * - a folder that cannot be created says why (models/io/node-files.ts `makeDir`: EROFS, EACCES, a
 *   file in the way, where Node's recursive mkdir says ENOENT).
 *
 * Writes themselves go through models/io/node-files.ts writeFileAtomic (regular files only,
 * through symlinks, temporary file + rename).
 */
import { realpathSync, statSync, type Stats } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { atomicWriteTarget, makeDir, writeFileAtomic } from '../models/io/node-files.js';

interface Protected {
  path: string;
  /** The option or listing it came from, for the message. */
  what: string;
  real: string;
  dev: number;
  ino: number;
}

/** The real path of `path`, also when it does not exist yet (its folder's real path + its name). */
function realPath(path: string): string {
  const abs = resolve(path);
  try {
    return realpathSync(abs);
  } catch {
    try {
      return join(realpathSync(dirname(abs)), basename(abs));
    } catch {
      return abs;
    }
  }
}

/** The command's outputs: checked against its inputs, folders created with real reasons, atomic writes. */
export class Outputs {
  private readonly inputs: Protected[] = [];

  /**
   * Registers an input file: no output may replace it. Folders and paths that do not exist are
   * ignored (there is no file to lose).
   */
  protect(path: string, what = path): void {
    let st: Stats;
    try {
      st = statSync(path);
    } catch {
      return;
    }
    if (st.isDirectory()) return;
    this.inputs.push({ path, what, real: realPath(path), dev: st.dev, ino: st.ino });
  }

  /** The input that writing `path` would replace, or undefined. */
  inputAt(path: string): string | undefined {
    const real = realPath(path);
    let st: Stats | null = null;
    try {
      st = statSync(path);
    } catch {
      st = null;
    }
    const hit = this.inputs.find((i) => i.real === real || (st !== null && st.dev === i.dev && st.ino === i.ino));
    return hit?.what;
  }

  /**
   * Throws when `path` cannot be written: it would replace an input, or it exists and is not a
   * regular file (a device, a FIFO, a folder: see writeFileAtomic). Commands check every output
   * before their work, so a bad output fails in a second, not after the computation.
   */
  check(path: string): void {
    const input = this.inputAt(path);
    if (input !== undefined) throw new Error(`refusing to write ${path}: it is an input of this command (${input})`);
    atomicWriteTarget(path);
  }

  /** Creates a folder (and its parents), with the real reason when it cannot. */
  makeDir(dir: string): void {
    makeDir(dir);
  }

  /** Checks `path` against the inputs, creates its folder, writes it atomically. */
  async write(path: string, content: Uint8Array | string): Promise<void> {
    this.check(path);
    makeDir(dirname(resolve(path)));
    await writeFileAtomic(path, content);
  }
}
