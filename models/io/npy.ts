/**
 * NumPy .npy reader and writer (format versions 1.0, 2.0 and 3.0).
 *
 * Layout: magic "\x93NUMPY", major and minor version bytes, header length (u16 LE in v1, u32 LE
 * in v2/v3), then a Python dict literal such as
 * `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }` padded with spaces and a newline,
 * then the raw array data. Only C-order arrays of plain numeric dtypes are supported.
 *
 * Budget: the header is parsed in time linear in its length (bounded by the file) with nesting at
 * most {@link MAX_HEADER_DEPTH} deep (a header of 100000 '(' once overflowed the call stack), and
 * the array's byte size (shape x dtype) must fit in the file before anything is allocated, so the
 * float32 output is at most 4x the data bytes (1-byte dtypes).
 *
 * Pure TypeScript, no Node built-ins. Reading converts every dtype to float32.
 */

import { ELEMENT_BYTES, type ElementType, formatShape, isValidShape, numel, toFloat32 } from './dtypes.js';
import { clip, firstBytes } from './error-text.js';
import { sniffFormat, wrongFormatMessage } from './sniff.js';

/**
 * Deepest nesting of brackets accepted in a header. NumPy writes a dict holding a shape tuple
 * (depth 2); structured dtypes, which this reader refuses anyway, nest a few levels more.
 */
export const MAX_HEADER_DEPTH = 32;

/** A malformed or unsupported .npy file (or invalid input to the writer). */
export class NpyError extends Error {
  override name = 'NpyError';
}

function fail(message: string): never {
  throw new NpyError(`npy: ${message}`);
}

/** The parsed header of a .npy file. */
export interface NpyHeader {
  /** Format version, e.g. [1, 0]. */
  version: [number, number];
  /** NumPy dtype string, e.g. '<f4'. */
  descr: string;
  shape: number[];
  /** Absolute byte offset of the array data. */
  dataOffset: number;
}

/** An array read from a .npy file, converted to float32. */
export interface NpyArray {
  /** NumPy dtype string as stored, e.g. '<f8'. */
  descr: string;
  shape: number[];
  data: Float32Array;
}

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

/**
 * Element type + endianness of a simple dtype string, or undefined when unsupported. Exported for
 * readers that stream row ranges of a .npy file instead of parsing it whole (eval/curate).
 */
export function parseDescr(descr: string): { type: ElementType; littleEndian: boolean } | undefined {
  const m = /^([<>|=]?)([fiub])(\d+)$/.exec(descr);
  if (!m) return undefined;
  const [, order, kind, sizeText] = m;
  const size = Number(sizeText);
  const key = `${kind}${size}`;
  const types: Record<string, ElementType> = {
    f2: 'f16',
    f4: 'f32',
    f8: 'f64',
    i1: 'i8',
    i2: 'i16',
    i4: 'i32',
    i8: 'i64',
    u1: 'u8',
    u2: 'u16',
    u4: 'u32',
    u8: 'u64',
    b1: 'bool',
  };
  const type = types[key];
  if (!type) return undefined;
  if (order === '|' && size !== 1) return undefined;
  return { type, littleEndian: order !== '>' };
}

// ---------------------------------------------------------------------------------------------
// A parser for the tiny subset of Python literals used in .npy headers: dicts, tuples, lists,
// strings, integers, True/False/None.
// ---------------------------------------------------------------------------------------------

type PyLiteral = string | number | boolean | null | PyLiteral[] | Map<string, PyLiteral>;

class LiteralParser {
  private pos = 0;
  /** Brackets open around the current position (bounded by {@link MAX_HEADER_DEPTH}). */
  private depth = 0;
  private static readonly NUMBER = /[-+]?\d+L?/y;
  constructor(private readonly s: string) {}

  parseAll(): PyLiteral {
    const v = this.value();
    this.ws();
    if (this.pos !== this.s.length) this.error('unexpected text after the header dict');
    return v;
  }

  private error(msg: string): never {
    fail(`malformed header (${msg} at character ${this.pos}): ${JSON.stringify(clip(this.s.trim()))}`);
  }

  private ws(): void {
    while (this.pos < this.s.length && /\s/.test(this.s[this.pos]!)) this.pos++;
  }

  private value(): PyLiteral {
    this.ws();
    const c = this.s[this.pos];
    if (c === '{' || c === '(' || c === '[') return this.nested(c);
    if (c === "'" || c === '"') return this.str();
    LiteralParser.NUMBER.lastIndex = this.pos;
    const num = LiteralParser.NUMBER.exec(this.s);
    if (num) {
      this.pos += num[0].length;
      return Number(num[0].replace('L', ''));
    }
    for (const [word, v] of [
      ['True', true],
      ['False', false],
      ['None', null],
    ] as const) {
      if (this.s.startsWith(word, this.pos)) {
        this.pos += word.length;
        return v;
      }
    }
    this.error('expected a value');
  }

  /** A dict, tuple or list, one level deeper (refused past {@link MAX_HEADER_DEPTH}). */
  private nested(open: '{' | '(' | '['): PyLiteral {
    if (++this.depth > MAX_HEADER_DEPTH) this.error(`brackets nested deeper than ${MAX_HEADER_DEPTH} levels`);
    const v = open === '{' ? this.dict() : this.seq(open === '(' ? ')' : ']');
    this.depth--;
    return v;
  }

  private str(): string {
    const q = this.s[this.pos++];
    let out = '';
    while (this.pos < this.s.length) {
      const c = this.s[this.pos++]!;
      if (c === q) return out;
      if (c === '\\') {
        const n = this.s[this.pos++];
        if (n === undefined) break;
        out += n === 'n' ? '\n' : n === 't' ? '\t' : n;
      } else out += c;
    }
    this.error('unterminated string');
  }

  private seq(close: string): PyLiteral[] {
    this.pos++;
    const items: PyLiteral[] = [];
    for (;;) {
      this.ws();
      if (this.s[this.pos] === close) {
        this.pos++;
        return items;
      }
      items.push(this.value());
      this.ws();
      if (this.s[this.pos] === ',') this.pos++;
      else if (this.s[this.pos] !== close) this.error(`expected ',' or '${close}'`);
    }
  }

  private dict(): Map<string, PyLiteral> {
    this.pos++;
    const out = new Map<string, PyLiteral>();
    for (;;) {
      this.ws();
      if (this.s[this.pos] === '}') {
        this.pos++;
        return out;
      }
      const key = this.value();
      if (typeof key !== 'string') this.error('dict keys must be strings');
      this.ws();
      if (this.s[this.pos] !== ':') this.error("expected ':'");
      this.pos++;
      out.set(key, this.value());
      this.ws();
      if (this.s[this.pos] === ',') this.pos++;
      else if (this.s[this.pos] !== '}') this.error("expected ',' or '}'");
    }
  }
}

/**
 * Reads and validates a .npy header: magic, version 1/2/3, a dict with 'descr', 'fortran_order'
 * and 'shape'. Throws {@link NpyError} for Fortran-order arrays, structured dtypes, bad magic or a
 * truncated header (the data length is checked by {@link parseNpy}).
 */
export function readNpyHeader(bytes: Uint8Array): NpyHeader {
  if (bytes.length < 10 || !MAGIC.every((b, i) => bytes[i] === b)) {
    const other = sniffFormat(bytes);
    const known = other !== 'unknown' && other !== 'npy' && other !== 'empty' ? `: ${wrongFormatMessage(bytes, other, 'a .npy file')}` : '';
    fail(`not a .npy file (bad magic; first bytes: ${firstBytes(bytes)})${known}`);
  }
  const major = bytes[6]!;
  const minor = bytes[7]!;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let headerLen: number;
  let start: number;
  if (major === 1) {
    headerLen = dv.getUint16(8, true);
    start = 10;
  } else if (major === 2 || major === 3) {
    if (bytes.length < 12) fail(`truncated file: ${bytes.length} bytes, too short for a v${major} header`);
    headerLen = dv.getUint32(8, true);
    start = 12;
  } else {
    fail(`unsupported format version ${major}.${minor} (supported: 1.0, 2.0, 3.0)`);
  }
  if (start + headerLen > bytes.length) {
    fail(`truncated file: header needs ${headerLen} bytes after byte ${start} but the file has ${bytes.length}`);
  }
  const text = new TextDecoder(major === 3 ? 'utf-8' : 'latin1').decode(bytes.subarray(start, start + headerLen));
  const dict = new LiteralParser(text).parseAll();
  if (!(dict instanceof Map)) fail(`header is not a dict: ${JSON.stringify(clip(text.trim()))}`);
  const descr = dict.get('descr');
  const fortran = dict.get('fortran_order');
  const shape = dict.get('shape');
  if (descr === undefined || fortran === undefined || shape === undefined) {
    fail(`header lacks 'descr', 'fortran_order' or 'shape': ${JSON.stringify(clip(text.trim()))}`);
  }
  if (typeof descr !== 'string') fail(`structured dtypes are not supported (descr: ${clip(JSON.stringify(descr) ?? 'None')})`);
  if (typeof fortran !== 'boolean') fail(`'fortran_order' is not True or False`);
  if (fortran) fail('Fortran-order arrays are not supported (save a C-contiguous array: np.ascontiguousarray)');
  if (!isValidShape(shape)) fail(`invalid shape ${clip(JSON.stringify(shape) ?? 'None')}`);
  return { version: [major, minor], descr, shape: shape.slice(), dataOffset: start + headerLen };
}

/**
 * Parses a .npy file (v1/v2/v3, C order) into {descr, shape, data as float32}. Supported dtypes:
 * f2/f4/f8, i1/i2/i4/i8, u1/u2/u4/u8, b1, either byte order. Throws {@link NpyError} on bad magic,
 * truncation, Fortran order, or an unsupported dtype.
 */
export function parseNpy(bytes: Uint8Array): NpyArray {
  const h = readNpyHeader(bytes);
  const dt = parseDescr(h.descr);
  if (!dt) fail(`unsupported dtype '${clip(h.descr)}' (supported: f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1)`);
  const count = numel(h.shape);
  const need = count * ELEMENT_BYTES[dt.type];
  const have = bytes.length - h.dataOffset;
  if (need > have) {
    fail(`truncated file: shape ${clip(formatShape(h.shape))} of '${h.descr}' needs ${need} data bytes but the file has ${have}`);
  }
  return { descr: h.descr, shape: h.shape, data: toFloat32(bytes, h.dataOffset, count, dt.type, dt.littleEndian) };
}

/** Arrays {@link writeNpy} can write, and their dtype. */
export type NpyWritableData = Float32Array | Float64Array | Uint8Array | Int32Array;

function descrOf(data: NpyWritableData): string {
  if (data instanceof Float32Array) return '<f4';
  if (data instanceof Float64Array) return '<f8';
  if (data instanceof Int32Array) return '<i4';
  if (data instanceof Uint8Array) return '|u1';
  fail('data must be a Float32Array, Float64Array, Int32Array or Uint8Array');
}

/**
 * Serializes a C-order array as .npy, byte-identical to NumPy's `np.save` (version 1.0, or 2.0 when
 * the header exceeds 65535 bytes; header padded so the data starts at a multiple of 64). The dtype
 * follows the array type: Float32Array '<f4', Float64Array '<f8', Int32Array '<i4', Uint8Array '|u1'.
 */
export function writeNpy(array: { shape: readonly number[]; data: NpyWritableData }): Uint8Array {
  const { shape, data } = array;
  const descr = descrOf(data);
  if (!isValidShape(shape as number[])) fail(`invalid shape ${JSON.stringify(shape)}`);
  if (numel(shape) !== data.length) {
    fail(`shape ${formatShape(shape)} has ${numel(shape)} elements but data has ${data.length}`);
  }
  const shapeRepr = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shapeRepr}, }`;
  // NumPy leaves room to grow the first axis in place (GROWTH_AXIS_MAX_DIGITS = 21).
  if (shape.length > 0) header += ' '.repeat(Math.max(0, 21 - String(shape[0]).length));
  const headerBytes = new TextEncoder().encode(header);
  let major = 1;
  let prefix = 10;
  const padded = (p: number): number => {
    const hlen = headerBytes.length + 1;
    return hlen + (64 - ((p + hlen) % 64));
  };
  if (padded(10) > 0xffff) {
    major = 2;
    prefix = 12;
  }
  const total = padded(prefix);
  const out = new Uint8Array(prefix + total + data.byteLength);
  out.set(MAGIC, 0);
  out[6] = major;
  out[7] = 0;
  const dv = new DataView(out.buffer);
  if (major === 1) dv.setUint16(8, total, true);
  else dv.setUint32(8, total, true);
  out.set(headerBytes, prefix);
  out.fill(0x20, prefix + headerBytes.length, prefix + total - 1);
  out[prefix + total - 1] = 0x0a;
  const dataStart = prefix + total;
  const src = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 || data.BYTES_PER_ELEMENT === 1) {
    out.set(src, dataStart);
  } else {
    for (let i = 0; i < data.length; i++) {
      const o = dataStart + i * data.BYTES_PER_ELEMENT;
      if (data instanceof Float32Array) dv.setFloat32(o, data[i]!, true);
      else if (data instanceof Float64Array) dv.setFloat64(o, data[i]!, true);
      else dv.setInt32(o, data[i]!, true);
    }
  }
  return out;
}
