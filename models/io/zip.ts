/**
 * A minimal, read-only zip reader for PyTorch checkpoints (torch.save >= 1.6 writes a zip).
 *
 * Supports stored entries (what torch writes; no dependency, zero-copy) and deflated entries
 * (through an injected raw-inflate function, or `DecompressionStream('deflate-raw')` in the async
 * path), ZIP64 sizes and offsets, and checks CRC-32 of what it returns. Encrypted entries,
 * multi-disk archives and other compression methods are refused with {@link ZipError}.
 *
 * Budget: the directory costs memory linear in the archive. Stored entries are views of the
 * archive (no allocation). A deflated entry's declared size is charged to a {@link LoadBudget}
 * (given, or by default 8x the archive size, at least 64 MiB, over all entries read) before it is
 * inflated, and inflation is capped at that declared size: an entry that inflates past it is
 * refused as a zip bomb (or corrupt) without the rest being produced. Torch never compresses, so
 * a compressed checkpoint far larger than its file is suspect from the start.
 *
 * Pure TypeScript, no Node built-ins.
 */

import { formatBytes, LoadBudget } from './budget.js';
import { clip, quoteName } from './error-text.js';

/** A malformed or unsupported zip archive. */
export class ZipError extends Error {
  override name = 'ZipError';
}

function fail(message: string): never {
  throw new ZipError(`zip: ${message}`);
}

/**
 * Synchronous raw-deflate decompressor (e.g. Node's `zlib.inflateRawSync`). It should stop (throw)
 * once the output would pass `maxOutputLength` bytes; output longer than that is refused anyway,
 * but only after the decompressor has produced it.
 */
export type InflateRawSync = (data: Uint8Array, maxOutputLength: number) => Uint8Array;
/** Raw-deflate decompressor that may be asynchronous (same contract as {@link InflateRawSync}). */
export type InflateRaw = (data: Uint8Array, maxOutputLength: number) => Uint8Array | Promise<Uint8Array>;

/** Options of {@link ZipArchive}. */
export interface ZipOptions {
  /** Verify CRC-32 of entries as they are read (default true). */
  verifyCrc?: boolean;
  /** Budget that inflated entries are charged to (default: {@link LoadBudget.forFile} of the archive). */
  budget?: LoadBudget;
}

/** One entry of the central directory. */
export interface ZipEntry {
  name: string;
  /** 0 = stored, 8 = deflate. */
  method: number;
  crc32: number;
  compressedSize: number;
  size: number;
  /** Absolute offset of the entry's (compressed) data. */
  dataOffset: number;
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_EOCD64 = 0x06064b50;
const SIG_EOCD64_LOCATOR = 0x07064b50;

let crcTables: Uint32Array | undefined;

/** CRC-32 (IEEE 802.3, as in zip and PNG) of `data`; slicing-by-8, about 1 GB/s. */
export function crc32(data: Uint8Array): number {
  if (!crcTables) {
    // Table k (at offset 256 * k) advances the CRC over a byte followed by k zero bytes.
    crcTables = new Uint32Array(256 * 8);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTables[n] = c >>> 0;
    }
    for (let n = 0; n < 256; n++) {
      for (let k = 1; k < 8; k++) {
        const prev = crcTables[256 * (k - 1) + n]!;
        crcTables[256 * k + n] = (prev >>> 8) ^ crcTables[prev & 0xff]!;
      }
    }
  }
  const t = crcTables;
  let c = 0xffffffff;
  let i = 0;
  const n = data.length;
  for (; i + 8 <= n; i += 8) {
    const a = c ^ (data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24));
    c =
      t[1792 + (a & 0xff)]! ^
      t[1536 + ((a >>> 8) & 0xff)]! ^
      t[1280 + ((a >>> 16) & 0xff)]! ^
      t[1024 + (a >>> 24)]! ^
      t[768 + data[i + 4]!]! ^
      t[512 + data[i + 5]!]! ^
      t[256 + data[i + 6]!]! ^
      t[data[i + 7]!]!;
  }
  for (; i < n; i++) c = t[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function u64(dv: DataView, at: number, what: string): number {
  const v = dv.getBigUint64(at, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail(`${what} ${v} is too large`);
  return Number(v);
}

/** A zip archive opened over a byte array (entries are read lazily). */
export class ZipArchive {
  /** Entries by name, in central-directory order. */
  readonly entries = new Map<string, ZipEntry>();
  private readonly dv: DataView;

  /** Verify CRC-32 of entries as they are read. */
  readonly verifyCrc: boolean;
  /** What inflated entries are charged to. */
  readonly budget: LoadBudget;

  /**
   * Parses the central directory of `bytes`; throws {@link ZipError} if it is not a valid zip.
   * `options` may be a boolean: whether to verify CRC-32 (default true).
   */
  constructor(
    readonly bytes: Uint8Array,
    options: boolean | ZipOptions = {},
  ) {
    const opts = typeof options === 'boolean' ? { verifyCrc: options } : options;
    this.verifyCrc = opts.verifyCrc ?? true;
    this.budget = opts.budget ?? LoadBudget.forFile(bytes.length);
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.readDirectory();
  }

  private readDirectory(): void {
    const { bytes, dv } = this;
    const n = bytes.length;
    if (n < 22) fail(`file is ${n} bytes, too short for a zip archive`);
    // End of central directory: 22 bytes + a comment of up to 65535 bytes, at the very end.
    let eocd = -1;
    for (let p = n - 22; p >= Math.max(0, n - 22 - 65535); p--) {
      if (dv.getUint32(p, true) === SIG_EOCD && p + 22 + dv.getUint16(p + 20, true) === n) {
        eocd = p;
        break;
      }
    }
    if (eocd < 0) fail('no end-of-central-directory record (not a zip file, or truncated)');
    if (dv.getUint16(eocd + 4, true) !== 0 || dv.getUint16(eocd + 6, true) !== 0) {
      fail('multi-disk archives are not supported');
    }
    let count = dv.getUint16(eocd + 10, true);
    let cdSize = dv.getUint32(eocd + 12, true);
    let cdOffset = dv.getUint32(eocd + 16, true);
    if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
      const loc = eocd - 20;
      if (loc < 0 || dv.getUint32(loc, true) !== SIG_EOCD64_LOCATOR) fail('ZIP64 locator missing');
      const rec = u64(dv, loc + 8, 'ZIP64 record offset');
      if (rec + 56 > n || dv.getUint32(rec, true) !== SIG_EOCD64) fail('ZIP64 end-of-central-directory record missing');
      count = u64(dv, rec + 32, 'entry count');
      cdSize = u64(dv, rec + 40, 'central directory size');
      cdOffset = u64(dv, rec + 48, 'central directory offset');
    }
    if (cdOffset + cdSize > n) fail(`central directory [${cdOffset}, ${cdOffset + cdSize}) outside the file (${n} bytes)`);

    const utf8 = new TextDecoder('utf-8');
    const latin1 = new TextDecoder('latin1');
    let p = cdOffset;
    for (let i = 0; i < count; i++) {
      if (p + 46 > n || dv.getUint32(p, true) !== SIG_CENTRAL) fail(`central directory entry ${i} is corrupt`);
      const flags = dv.getUint16(p + 8, true);
      const method = dv.getUint16(p + 10, true);
      const crc = dv.getUint32(p + 16, true);
      let compressedSize = dv.getUint32(p + 20, true);
      let size = dv.getUint32(p + 24, true);
      const nameLen = dv.getUint16(p + 28, true);
      const extraLen = dv.getUint16(p + 30, true);
      const commentLen = dv.getUint16(p + 32, true);
      let localOffset = dv.getUint32(p + 42, true);
      const end = p + 46 + nameLen + extraLen + commentLen;
      if (end > n) fail(`central directory entry ${i} runs past the end of the file`);
      const name = (flags & 0x800 ? utf8 : latin1).decode(bytes.subarray(p + 46, p + 46 + nameLen));
      // ZIP64 extended information: the 64-bit values present are those whose 32-bit field is all ones.
      let x = p + 46 + nameLen;
      const xEnd = x + extraLen;
      while (x + 4 <= xEnd) {
        const id = dv.getUint16(x, true);
        const len = dv.getUint16(x + 2, true);
        if (id === 0x0001) {
          let q = x + 4;
          const take = (what: string): number => {
            if (q + 8 > x + 4 + len) fail(`entry ${quoteName(name)}: short ZIP64 extra field`);
            const v = u64(dv, q, what);
            q += 8;
            return v;
          };
          if (size === 0xffffffff) size = take('size');
          if (compressedSize === 0xffffffff) compressedSize = take('compressed size');
          if (localOffset === 0xffffffff) localOffset = take('local header offset');
        }
        x += 4 + len;
      }
      if (flags & 1) fail(`entry ${quoteName(name)} is encrypted`);
      if (localOffset + 30 > n || dv.getUint32(localOffset, true) !== SIG_LOCAL) {
        fail(`entry ${quoteName(name)}: local header at ${localOffset} is missing`);
      }
      const dataOffset = localOffset + 30 + dv.getUint16(localOffset + 26, true) + dv.getUint16(localOffset + 28, true);
      if (dataOffset + compressedSize > n) {
        fail(`truncated archive: entry ${quoteName(name)} needs bytes [${dataOffset}, ${dataOffset + compressedSize}) of ${n}`);
      }
      this.entries.set(name, { name, method, crc32: crc, compressedSize, size, dataOffset });
      p = end;
    }
  }

  /** Names of all entries. */
  names(): string[] {
    return [...this.entries.keys()];
  }

  private entry(name: string): ZipEntry {
    const e = this.entries.get(name);
    if (!e) fail(`no entry ${quoteName(name)}`);
    return e;
  }

  private checked(e: ZipEntry, data: Uint8Array): Uint8Array {
    if (data.length !== e.size) fail(`entry ${quoteName(e.name)}: expected ${e.size} bytes, got ${data.length}`);
    if (this.verifyCrc && crc32(data) !== e.crc32) fail(`entry ${quoteName(e.name)}: CRC-32 mismatch (corrupt data)`);
    return data;
  }

  /** Charges a deflated entry's declared size to the budget, before it is inflated. */
  private chargeInflated(e: ZipEntry): void {
    const what = `entry ${quoteName(e.name)} (${formatBytes(e.compressedSize)} deflated, declaring ${formatBytes(e.size)} inflated)`;
    this.budget.charge(e.size, what, fail, 'a zip bomb? (torch never compresses checkpoints)');
  }

  /** The raw (possibly compressed) bytes of an entry. */
  raw(name: string): Uint8Array {
    const e = this.entry(name);
    return this.bytes.subarray(e.dataOffset, e.dataOffset + e.compressedSize);
  }

  /**
   * Contents of an entry, synchronously. Stored entries are returned as a view of the archive
   * bytes (no copy); deflated ones need `inflateRaw`, otherwise {@link ZipError} says so.
   */
  read(name: string, inflateRaw?: InflateRawSync): Uint8Array {
    const e = this.entry(name);
    if (e.method === 0) {
      if (e.compressedSize !== e.size) fail(`entry ${quoteName(name)}: stored sizes differ`);
      return this.checked(e, this.raw(name));
    }
    if (e.method === 8) {
      if (!inflateRaw) {
        fail(`entry ${quoteName(name)} is deflate-compressed; pass an inflateRaw function or use the async loader`);
      }
      this.chargeInflated(e);
      return this.checked(e, inflate(e, () => inflateRaw(this.raw(name), outputCap(e))));
    }
    fail(`entry ${quoteName(name)}: unsupported compression method ${e.method} (only stored and deflate)`);
  }

  /**
   * Contents of an entry; deflated entries go through `inflateRaw` if given, else the platform's
   * `DecompressionStream('deflate-raw')` (browsers, Node >= 20).
   */
  async readAsync(name: string, inflateRaw?: InflateRaw): Promise<Uint8Array> {
    const e = this.entry(name);
    if (e.method !== 8) return this.read(name);
    this.chargeInflated(e);
    const raw = this.raw(name);
    let out: Uint8Array;
    try {
      out = inflateRaw ? await inflateRaw(raw, outputCap(e)) : await inflateWithStream(raw, e);
    } catch (err) {
      throw inflateError(e, err);
    }
    return this.checked(e, out);
  }
}

/**
 * The output cap handed to decompressors: the declared size, plus one byte so that an entry that
 * inflates past its declaration is caught by the size check even when the decompressor returns
 * what it has instead of throwing (Node's cap must also be at least 1).
 */
function outputCap(e: ZipEntry): number {
  return e.size + 1;
}

function inflate(e: ZipEntry, run: () => Uint8Array): Uint8Array {
  try {
    return run();
  } catch (err) {
    throw inflateError(e, err);
  }
}

/** A decompressor's failure as a ZipError; passing the output cap is named as such. */
function inflateError(e: ZipEntry, err: unknown): ZipError {
  if (err instanceof ZipError) return err;
  const code = (err as { code?: unknown })?.code;
  if (code === 'ERR_BUFFER_TOO_LARGE') {
    return new ZipError(`zip: entry ${quoteName(e.name)} inflates to more than its declared ${e.size} bytes (a zip bomb, or corrupt); stopped there`, {
      cause: err,
    });
  }
  return new ZipError(`zip: entry ${quoteName(e.name)}: deflate data is corrupt (${clip(String((err as Error)?.message ?? err))})`, { cause: err });
}

/** Inflates with `DecompressionStream`, reading chunk by chunk and stopping past the declared size. */
async function inflateWithStream(data: Uint8Array, e: ZipEntry): Promise<Uint8Array> {
  if (typeof DecompressionStream === 'undefined') {
    fail('this platform has no DecompressionStream; pass an inflateRaw function');
  }
  const stream = new Blob([data as Uint8Array<ArrayBuffer>]).stream().pipeThrough(new DecompressionStream('deflate-raw'));
  const reader = stream.getReader();
  const out = new Uint8Array(e.size);
  let length = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (length + value.length > e.size) {
      await reader.cancel().catch(() => undefined);
      fail(`entry ${quoteName(e.name)} inflates to more than its declared ${e.size} bytes (a zip bomb, or corrupt); stopped there`);
    }
    out.set(value, length);
    length += value.length;
  }
  return out.subarray(0, length);
}

/** True when `bytes` starts like a zip archive (local file header signature "PK\x03\x04"). */
export function looksLikeZip(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && bytes[0] === 0x50 && bytes[1] === 0x4b && bytes[2] === 0x03 && bytes[3] === 0x04;
}
