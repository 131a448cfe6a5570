/**
 * Node only: .npy embedding shards as one row source (and the expansion of `webdino embed`
 * manifests into their shards). `POOL.npy,POOL2.npy,…` are the rows of
 * each file in turn (pool row r of the second file is rows(first) + its own row). Only the
 * headers are read up front; `read` fetches the bytes of a row range with positioned reads, so
 * memory stays bounded by the chunk however large the files are.
 *
 * Checks, each with a message that names the file: it exists and is a .npy (v1–v3, C order), the
 * array is 2-D [N, D] with N ≥ 1, the dtype is numeric (f2/f4/f8 and integers are converted to
 * float32), every shard has the same D, and the file holds all N·D elements. Non-finite values
 * are reported with file and row when a read meets them (see source.ts).
 */
import { closeSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import { ELEMENT_BYTES, type ElementType, toFloat32 } from '../../models/io/dtypes.js';
import { NpyError, parseDescr, readNpyHeader } from '../../models/io/npy.js';
import { EmbedManifestError, readEmbedManifest } from '../embed-shards-node.js';
import { checkFinite, CurateInputError, type RowSource } from './source.js';

interface Shard {
  path: string;
  fd: number;
  rows: number;
  /** First pool row of this shard. */
  start: number;
  dataOffset: number;
  type: ElementType;
  littleEndian: boolean;
}

/** What a shard is, for checkpoint fingerprints: path, size, modification time, shape. */
export interface ShardInfo {
  path: string;
  bytes: number;
  mtimeMs: number;
  rows: number;
  dim: number;
  dtype: string;
}

/** Reads the header of one .npy file through its descriptor (at most the first 1 MiB). */
function header(fd: number, path: string): ReturnType<typeof readNpyHeader> {
  const size = fstatSync(fd).size;
  const head = new Uint8Array(Math.min(size, 1 << 20));
  readSync(fd, head, 0, head.length, 0);
  try {
    return readNpyHeader(head);
  } catch (e) {
    if (e instanceof NpyError) throw new CurateInputError(`${path}: ${e.message}`);
    throw e;
  }
}

export class NpyShards implements RowSource {
  readonly rows: number;
  readonly dim: number;
  readonly info: ShardInfo[] = [];
  private readonly shards: Shard[] = [];

  /** Opens the shards (headers only); `what` names the option in messages ("--embeddings"). */
  constructor(paths: readonly string[], what: string) {
    if (paths.length === 0) throw new CurateInputError(`${what}: no .npy file given`);
    let rows = 0;
    let dim = -1;
    try {
      for (const path of paths) {
        let fd: number;
        try {
          fd = openSync(path, 'r');
        } catch (e) {
          throw new CurateInputError(`${what}: cannot open ${path}: ${(e as Error).message}`);
        }
        const st = fstatSync(fd);
        const shard: Shard = { path, fd, rows: 0, start: rows, dataOffset: 0, type: 'f32', littleEndian: true };
        this.shards.push(shard);
        if (st.size === 0) throw new CurateInputError(`${what}: ${path} is empty (0 bytes)`);
        const h = header(fd, path);
        if (h.shape.length !== 2) {
          throw new CurateInputError(`${what}: ${path} holds an array of shape (${h.shape.join(', ')}); embeddings must be 2-D [N, D]`);
        }
        const [n, d] = h.shape;
        if (n === 0 || d === 0) throw new CurateInputError(`${what}: ${path} is empty (shape (${n}, ${d}))`);
        if (dim >= 0 && d !== dim) {
          throw new CurateInputError(`${what}: ${path} has rows of width ${d}, but ${paths[0]} has ${dim}: all shards must have the same dimension`);
        }
        const dt = parseDescr(h.descr);
        if (!dt || dt.type === 'bool') throw new CurateInputError(`${what}: ${path} has dtype '${h.descr}'; embeddings must be numeric (f2, f4, f8, integers)`);
        const need = h.dataOffset + n * d * ELEMENT_BYTES[dt.type];
        if (st.size < need) throw new CurateInputError(`${what}: ${path} is truncated: shape (${n}, ${d}) '${h.descr}' needs ${need} bytes, the file has ${st.size}`);
        Object.assign(shard, { rows: n, dataOffset: h.dataOffset, type: dt.type, littleEndian: dt.littleEndian });
        this.info.push({ path, bytes: st.size, mtimeMs: st.mtimeMs, rows: n, dim: d, dtype: h.descr });
        rows += n;
        dim = d;
      }
    } catch (e) {
      this.close();
      throw e;
    }
    this.rows = rows;
    this.dim = dim;
  }

  read(start: number, end: number): Float32Array {
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > this.rows || start > end) {
      throw new RangeError(`read(${start}, ${end}) outside rows [0, ${this.rows})`);
    }
    const D = this.dim;
    const out = new Float32Array((end - start) * D);
    for (const s of this.shards) {
      const a = Math.max(start, s.start);
      const b = Math.min(end, s.start + s.rows);
      if (a >= b) continue;
      const size = ELEMENT_BYTES[s.type];
      const bytes = new Uint8Array((b - a) * D * size);
      let got = 0;
      while (got < bytes.length) {
        const r = readSync(s.fd, bytes, got, bytes.length - got, s.dataOffset + (a - s.start) * D * size + got);
        if (r === 0) throw new CurateInputError(`${s.path}: unexpected end of file`);
        got += r;
      }
      out.set(toFloat32(bytes, 0, (b - a) * D, s.type, s.littleEndian), (a - start) * D);
    }
    checkFinite(out, D, start, (i) => this.where(i));
    return out;
  }

  where(i: number): string {
    for (const s of this.shards) if (i < s.start + s.rows) return `${s.path} row ${i - s.start}${s.start ? ` (pool row ${i})` : ''}`;
    return `row ${i}`;
  }

  close(): void {
    for (const s of this.shards) {
      try {
        closeSync(s.fd);
      } catch {
        // already closed
      }
    }
    this.shards.length = 0;
  }
}

/**
 * The pool's .npy files from --embeddings: each .json item is a manifest of `webdino embed
 * --shard-size` (eval/embed-shards-node.ts) and stands for its shards, in order; other items are
 * .npy files. `paths` lists the manifests' paths files (one per shard, in row order) when every
 * item was a manifest, else null.
 */
export function expandEmbeddings(items: readonly string[]): { npy: string[]; paths: string[] | null } {
  const npy: string[] = [];
  const paths: string[] = [];
  let allManifests = items.length > 0;
  for (const item of items) {
    if (!/\.json$/i.test(item)) {
      npy.push(item);
      allManifests = false;
      continue;
    }
    let m;
    try {
      m = readEmbedManifest(item);
    } catch (e) {
      if (e instanceof EmbedManifestError) throw new CurateInputError(`--embeddings: ${e.message}`);
      throw e;
    }
    npy.push(...m.npy);
    paths.push(...m.paths);
  }
  return { npy, paths: allManifests ? paths : null };
}

/**
 * The lines of one or more paths files, concatenated (one line per pool row); trailing empty
 * lines of each file are ignored. Throws when the count differs from `rows`; `what` names the
 * source in messages.
 */
export function readPaths(files: readonly string[], rows: number, what = '--paths'): string[] {
  const lines: string[] = [];
  for (const path of files) {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (e) {
      throw new CurateInputError(`${what}: cannot read ${path}: ${(e as Error).message}`);
    }
    const own = text.split(/\r?\n/);
    while (own.length && own[own.length - 1] === '') own.pop();
    lines.push(...own);
  }
  if (lines.length !== rows) {
    const src = files.length === 1 ? `${files[0]} has` : `${files.length} files have`;
    throw new CurateInputError(`${what}: ${src} ${lines.length} lines but the embeddings have ${rows} rows (one path per row)`);
  }
  return lines;
}
