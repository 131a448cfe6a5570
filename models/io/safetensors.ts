/**
 * safetensors reader and writer (https://github.com/huggingface/safetensors, format description).
 *
 * Layout: an unsigned 64-bit little-endian header length N, then N bytes of UTF-8 JSON (an object:
 * tensor name -> {dtype, shape, data_offsets: [begin, end]}, plus an optional "__metadata__"
 * string -> string map), then the data section; offsets are relative to the data section.
 *
 * Pure TypeScript, no Node built-ins: bytes in, Float32Arrays out. Every tensor is converted to
 * float32 (F16, BF16, F64, integers, BOOL, F8). Malformed files raise {@link SafetensorsError}
 * naming the problem and the tensor.
 *
 * Budget: the header is at most 100 MB (the reference implementation's limit; JSON.parse turns it
 * into JS objects several times that size, a million entries once took 1.5 GB), and the tensors'
 * `data_offsets` must tile the data section exactly, as the reference requires: sorted, no overlap,
 * no hole, nothing left over. So every stored byte belongs to exactly one tensor and the float32
 * output is at most 4x the data section (1-byte dtypes), all checked before any tensor is
 * converted. (Overlapping entries once let 50 tensors alias one 8 MB section: 1.6 GB from 8 MB.)
 */

import { ELEMENT_BYTES, type ElementType, formatShape, isValidShape, numel, toFloat32 } from './dtypes.js';
import { clip, firstBytes, quoteName } from './error-text.js';
import { looksLikeSafetensorsHeader, sniffFormat, wrongFormatMessage } from './sniff.js';

/** dtype names used in safetensors headers. */
export type SafetensorsDtype =
  | 'F64'
  | 'F32'
  | 'F16'
  | 'BF16'
  | 'F8_E4M3'
  | 'F8_E5M2'
  | 'I64'
  | 'I32'
  | 'I16'
  | 'I8'
  | 'U64'
  | 'U32'
  | 'U16'
  | 'U8'
  | 'BOOL';

const DTYPES: Readonly<Record<SafetensorsDtype, ElementType>> = {
  F64: 'f64',
  F32: 'f32',
  F16: 'f16',
  BF16: 'bf16',
  F8_E4M3: 'f8_e4m3',
  F8_E5M2: 'f8_e5m2',
  I64: 'i64',
  I32: 'i32',
  I16: 'i16',
  I8: 'i8',
  U64: 'u64',
  U32: 'u32',
  U16: 'u16',
  U8: 'u8',
  BOOL: 'bool',
};

const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Largest header accepted (the reference implementation's limit is 100 MB too). */
const MAX_HEADER_BYTES = 100_000_000;

/** A tensor read from a safetensors file: its stored dtype, shape, and values as float32. */
export interface SafeTensor {
  dtype: SafetensorsDtype;
  shape: number[];
  data: Float32Array;
}

/** One header entry, validated; `begin`/`end` are byte offsets in the data section. */
export interface SafetensorsEntry {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  begin: number;
  end: number;
}

/** A parsed and validated header. */
export interface SafetensorsHeader {
  /** Byte length of the JSON header (N), padding included. */
  headerLength: number;
  /** Absolute byte offset of the data section (8 + N). */
  dataStart: number;
  /** Byte length of the data section. */
  dataLength: number;
  /** Entries in data-section order (the header order for files from the reference writer). */
  entries: SafetensorsEntry[];
  /** The "__metadata__" map ({} when absent). */
  metadata: Record<string, string>;
}

/** A malformed safetensors file (or invalid input to the writer). */
export class SafetensorsError extends Error {
  override name = 'SafetensorsError';
}

function fail(message: string): never {
  throw new SafetensorsError(`safetensors: ${message}`);
}

/**
 * Reads and validates the header of a safetensors file without converting any tensor data: the
 * header length must fit in the file, the header must be a JSON object, every entry must have a
 * known dtype, a valid shape, and `data_offsets` inside the data section whose span matches
 * shape x dtype size, and the entries must tile the data section exactly (see the module doc).
 * A file of another known format (a PyTorch checkpoint, an image, ...) is named as such.
 */
export function readSafetensorsHeader(bytes: Uint8Array): SafetensorsHeader {
  const other = sniffFormat(bytes);
  if (!looksLikeSafetensorsHeader(bytes) && other !== 'unknown' && other !== 'safetensors') {
    fail(wrongFormatMessage(bytes, other, 'a safetensors file'));
  }
  if (bytes.length < 8) fail(`file is ${bytes.length} bytes, too short for the 8-byte header length`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n64 = dv.getBigUint64(0, true);
  if (n64 > BigInt(bytes.length - 8)) {
    // A truncated safetensors file still shows its JSON header's '{'; other bytes are another format.
    const notJson = bytes.length > 8 && bytes[8] !== 0x7b ? ` (and no JSON header follows: not a safetensors file? first bytes: ${firstBytes(bytes)})` : '';
    fail(`header length ${n64} exceeds file size ${bytes.length}${notJson}`);
  }
  const n = Number(n64);
  if (n > MAX_HEADER_BYTES) fail(`header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  if (n < 2) fail(`header length ${n} is too small for a JSON object`);

  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + n));
  } catch {
    fail('header is not valid UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    fail(`header is not a JSON object (got ${Array.isArray(json) ? 'an array' : json === null ? 'null' : typeof json})`);
  }

  const dataStart = 8 + n;
  const dataLength = bytes.length - dataStart;
  const entries: SafetensorsEntry[] = [];
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      metadata = checkMetadata(raw);
      continue;
    }
    entries.push(checkEntry(name, raw, dataLength));
  }
  // Data order. (JSON.parse moves integer-like keys such as "10" to the front of an object, so the
  // textual header order is not available; writers lay data out in header order anyway.)
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  checkTiling(entries, dataLength);
  return { headerLength: n, dataStart, dataLength, entries, metadata };
}

/**
 * The entries, in data order, must tile [0, dataLength) exactly, as the reference implementation
 * requires: each begins where the previous one ended (zero-length tensors may share an offset).
 */
function checkTiling(entries: SafetensorsEntry[], dataLength: number): void {
  let covered = 0;
  let previous: SafetensorsEntry | undefined;
  for (const e of entries) {
    if (e.begin < covered) {
      fail(
        `tensor ${quoteName(e.name)}: data_offsets [${e.begin},${e.end}) overlap tensor ${quoteName(previous!.name)} [${previous!.begin},${previous!.end}) (tensors must not share bytes)`,
      );
    }
    if (e.begin > covered) {
      fail(
        `tensor ${quoteName(e.name)}: data_offsets [${e.begin},${e.end}) leave bytes [${covered},${e.begin}) of the data section unused (offsets must tile it without holes)`,
      );
    }
    covered = e.end;
    previous = e;
  }
  if (covered !== dataLength) {
    const after = previous ? `after tensor ${quoteName(previous.name)}` : 'with no tensors';
    fail(`data section has ${dataLength} bytes but the tensors cover ${covered}: ${dataLength - covered} bytes left over ${after}`);
  }
}

function checkMetadata(raw: unknown): Record<string, string> {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) fail('"__metadata__" is not a JSON object');
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    if (typeof v !== 'string') fail(`"__metadata__" value for ${quoteName(k)} is not a string`);
    Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

function checkEntry(name: string, raw: unknown, dataLength: number): SafetensorsEntry {
  const label = `tensor ${quoteName(name)}`;
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) fail(`${label}: entry is not a JSON object`);
  const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
  if (typeof dtype !== 'string' || !Object.hasOwn(DTYPES, dtype)) {
    fail(`${label}: unsupported dtype ${clip(JSON.stringify(dtype) ?? 'undefined')} (supported: ${Object.keys(DTYPES).join(', ')})`);
  }
  if (!isValidShape(shape)) fail(`${label}: invalid shape ${clip(JSON.stringify(shape) ?? 'undefined')}`);
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !offsets.every((o) => typeof o === 'number' && Number.isSafeInteger(o) && o >= 0)
  ) {
    fail(`${label}: invalid data_offsets ${clip(JSON.stringify(offsets) ?? 'undefined')}`);
  }
  const [begin, end] = offsets as [number, number];
  if (end < begin) fail(`${label}: data_offsets [${begin},${end}) end before they begin`);
  const sd = dtype as SafetensorsDtype;
  const need = numel(shape) * ELEMENT_BYTES[DTYPES[sd]];
  if (end - begin !== need) {
    fail(
      `${label}: shape ${clip(formatShape(shape))} of ${sd} needs ${need} bytes but data_offsets [${begin},${end}) span ${end - begin}`,
    );
  }
  if (end > dataLength) {
    fail(`truncated file: ${label} needs bytes [${begin},${end}) but data section has ${dataLength}`);
  }
  return { name, dtype: sd, shape, begin, end };
}

/**
 * Parses a safetensors file into name -> {dtype, shape, data (float32)}, in data-section order.
 * Throws {@link SafetensorsError} on any malformed input. Use
 * {@link parseSafetensorsWithMetadata} to also get the "__metadata__" map.
 */
export function parseSafetensors(bytes: Uint8Array): Map<string, SafeTensor> {
  return parseSafetensorsWithMetadata(bytes).tensors;
}

/** Like {@link parseSafetensors}, also returning the "__metadata__" string map ({} when absent). */
export function parseSafetensorsWithMetadata(bytes: Uint8Array): {
  tensors: Map<string, SafeTensor>;
  metadata: Record<string, string>;
} {
  const header = readSafetensorsHeader(bytes);
  const tensors = new Map<string, SafeTensor>();
  for (const e of header.entries) {
    const type = DTYPES[e.dtype];
    const count = (e.end - e.begin) / ELEMENT_BYTES[type];
    const data = toFloat32(bytes, header.dataStart + e.begin, count, type, true);
    tensors.set(e.name, { dtype: e.dtype, shape: e.shape.slice(), data });
  }
  return { tensors, metadata: header.metadata };
}

/** A float32 tensor to write. */
export interface WritableTensor {
  shape: readonly number[];
  data: Float32Array;
}

/** Compares strings by their UTF-8 bytes (Rust's `String` order, used by the reference writer). */
function compareUtf8(a: string, b: string): number {
  const ca = Array.from(a, (c) => c.codePointAt(0)!);
  const cb = Array.from(b, (c) => c.codePointAt(0)!);
  const len = Math.min(ca.length, cb.length);
  for (let i = 0; i < len; i++) if (ca[i] !== cb[i]) return ca[i]! - cb[i]!;
  return ca.length - cb.length;
}

/**
 * Serializes float32 tensors as a safetensors file (dtype F32), the way the reference library does:
 * tensors sorted by name (UTF-8 byte order), compact JSON header with "__metadata__" first (its
 * keys sorted), padded with spaces to a multiple of 8 bytes, then the raw little-endian data.
 * `tensors` may be a plain object or a Map; each `data.length` must equal the shape's product.
 */
export function writeSafetensors(
  tensors: Record<string, WritableTensor> | ReadonlyMap<string, WritableTensor>,
  metadata?: Record<string, string>,
): Uint8Array {
  const list: [string, WritableTensor][] =
    tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors as Record<string, WritableTensor>);
  for (const [name, t] of list) {
    if (name === '__metadata__') fail(`a tensor may not be named '__metadata__'`);
    if (!isValidShape(t.shape as number[])) fail(`tensor '${name}': invalid shape ${JSON.stringify(t.shape)}`);
    if (!(t.data instanceof Float32Array)) fail(`tensor '${name}': data must be a Float32Array`);
    if (numel(t.shape) !== t.data.length) {
      fail(`tensor '${name}': shape ${formatShape(t.shape)} has ${numel(t.shape)} elements but data has ${t.data.length}`);
    }
  }
  list.sort((a, b) => compareUtf8(a[0], b[0]));

  const parts: string[] = [];
  if (metadata !== undefined) {
    const keys = Object.keys(metadata).sort(compareUtf8);
    const inner = keys.map((k) => {
      const v = metadata[k];
      if (typeof v !== 'string') fail(`metadata value for '${k}' is not a string`);
      return `${JSON.stringify(k)}:${JSON.stringify(v)}`;
    });
    parts.push(`"__metadata__":{${inner.join(',')}}`);
  }
  let offset = 0;
  for (const [name, t] of list) {
    const bytes = t.data.length * 4;
    parts.push(
      `${JSON.stringify(name)}:{"dtype":"F32","shape":[${t.shape.join(',')}],"data_offsets":[${offset},${offset + bytes}]}`,
    );
    offset += bytes;
  }
  const json = new TextEncoder().encode(`{${parts.join(',')}}`);
  const headerLength = json.length + ((8 - (json.length % 8)) % 8);

  const out = new Uint8Array(8 + headerLength + offset);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, BigInt(headerLength), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLength);
  let pos = 8 + headerLength;
  for (const [, t] of list) {
    if (HOST_LITTLE_ENDIAN) out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), pos);
    else for (let i = 0; i < t.data.length; i++) dv.setFloat32(pos + i * 4, t.data[i]!, true);
    pos += t.data.length * 4;
  }
  return out;
}

/**
 * True when the bytes look like a safetensors file: an 8-byte little-endian header length that fits
 * the file, followed by a JSON object ('{'). Format sniffing must check this before a pickle's
 * PROTO byte (0x80), which can also be the first byte of a safetensors header length.
 */
export function looksLikeSafetensors(bytes: Uint8Array): boolean {
  return looksLikeSafetensorsHeader(bytes);
}

/**
 * True for PyTorch's legacy (pre-1.6, or `_use_new_zipfile_serialization=False`) checkpoint
 * format: a pickle of protocol 2 to 5 whose first value is torch's magic number, after the FRAME
 * opcode that protocols 4 and 5 begin with. Zip checkpoints are recognised by their header.
 */
export function looksLikeLegacyTorch(bytes: Uint8Array): boolean {
  return sniffFormat(bytes) === 'torch-legacy';
}
