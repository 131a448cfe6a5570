/**
 * Element types found in weight files and their conversion to float32.
 *
 * Shared by the safetensors, .npy and PyTorch readers. Pure TypeScript (no Node built-ins): works
 * on any Uint8Array, whatever its byte offset or alignment, on little- and big-endian data.
 *
 * Budget: {@link toFloat32} allocates exactly `count` float32s and checks that the source bytes
 * exist; whether `count` is acceptable is the caller's decision, made before calling (each
 * reader's header states its bound, see budget.ts).
 */

/** An element type, by its storage layout. */
export type ElementType =
  | 'f64'
  | 'f32'
  | 'f16'
  | 'bf16'
  | 'f8_e4m3'
  | 'f8_e5m2'
  | 'i64'
  | 'i32'
  | 'i16'
  | 'i8'
  | 'u64'
  | 'u32'
  | 'u16'
  | 'u8'
  | 'bool';

/** Bytes per element of each {@link ElementType}. */
export const ELEMENT_BYTES: Readonly<Record<ElementType, number>> = {
  f64: 8,
  f32: 4,
  f16: 2,
  bf16: 2,
  f8_e4m3: 1,
  f8_e5m2: 1,
  i64: 8,
  i32: 4,
  i16: 2,
  i8: 1,
  u64: 8,
  u32: 4,
  u16: 2,
  u8: 1,
  bool: 1,
};

const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

let halfTable: Float32Array | undefined;
let e4m3Table: Float32Array | undefined;

/** The float value of IEEE 754 binary16 bits `h` (0..65535), subnormals, infinities and NaN included. */
export function halfBitsToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

function getHalfTable(): Float32Array {
  if (!halfTable) {
    halfTable = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) halfTable[h] = halfBitsToFloat(h);
  }
  return halfTable;
}

/** float8 e4m3fn: bias 7, no infinities, S.1111.111 is NaN. */
function getE4m3Table(): Float32Array {
  if (!e4m3Table) {
    e4m3Table = new Float32Array(256);
    for (let b = 0; b < 256; b++) {
      const sign = b & 0x80 ? -1 : 1;
      const exp = (b >> 3) & 0xf;
      const mant = b & 7;
      if (exp === 15 && mant === 7) e4m3Table[b] = NaN;
      else if (exp === 0) e4m3Table[b] = sign * mant * 2 ** -9;
      else e4m3Table[b] = sign * (1 + mant / 8) * 2 ** (exp - 7);
    }
  }
  return e4m3Table;
}

/**
 * Converts `count` elements of `type` stored at `bytes[offset...]` to a new, contiguous
 * Float32Array. 64-bit integers lose precision above 2^24 (as any f32 does); booleans become 0/1.
 * The caller checks that `offset + count * ELEMENT_BYTES[type] <= bytes.length`.
 */
export function toFloat32(
  bytes: Uint8Array,
  offset: number,
  count: number,
  type: ElementType,
  littleEndian = true,
): Float32Array {
  const size = ELEMENT_BYTES[type];
  const end = offset + count * size;
  if (offset < 0 || end > bytes.length) {
    throw new RangeError(`toFloat32: bytes [${offset}, ${end}) outside a buffer of ${bytes.length}`);
  }
  const out = new Float32Array(count);
  if (count === 0) return out;
  const native = littleEndian === HOST_LITTLE_ENDIAN;

  if (type === 'f32' && native) {
    new Uint8Array(out.buffer).set(bytes.subarray(offset, end));
    return out;
  }
  if (size === 1) {
    const src = bytes.subarray(offset, end);
    if (type === 'u8') out.set(src);
    else if (type === 'bool') for (let i = 0; i < count; i++) out[i] = src[i] ? 1 : 0;
    else if (type === 'i8') out.set(new Int8Array(src.buffer, src.byteOffset, count));
    else if (type === 'f8_e4m3') {
      const t = getE4m3Table();
      for (let i = 0; i < count; i++) out[i] = t[src[i]];
    } else {
      // f8_e5m2 is the top byte of a binary16.
      const t = getHalfTable();
      for (let i = 0; i < count; i++) out[i] = t[src[i] << 8];
    }
    return out;
  }

  const dv = new DataView(bytes.buffer, bytes.byteOffset + offset, count * size);
  const le = littleEndian;
  switch (type) {
    case 'f32':
      for (let i = 0; i < count; i++) out[i] = dv.getFloat32(i * 4, le);
      break;
    case 'f64':
      for (let i = 0; i < count; i++) out[i] = dv.getFloat64(i * 8, le);
      break;
    case 'f16': {
      const t = getHalfTable();
      for (let i = 0; i < count; i++) out[i] = t[dv.getUint16(i * 2, le)];
      break;
    }
    case 'bf16': {
      // bfloat16 is the top half of a float32: copy the bits (keeps NaN payloads exactly).
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < count; i++) bits[i] = dv.getUint16(i * 2, le) << 16;
      break;
    }
    case 'i16':
      for (let i = 0; i < count; i++) out[i] = dv.getInt16(i * 2, le);
      break;
    case 'u16':
      for (let i = 0; i < count; i++) out[i] = dv.getUint16(i * 2, le);
      break;
    case 'i32':
      for (let i = 0; i < count; i++) out[i] = dv.getInt32(i * 4, le);
      break;
    case 'u32':
      for (let i = 0; i < count; i++) out[i] = dv.getUint32(i * 4, le);
      break;
    case 'i64':
    case 'u64': {
      const signed = type === 'i64';
      for (let i = 0; i < count; i++) {
        const lo = dv.getUint32(i * 8 + (le ? 0 : 4), le);
        const hi = signed ? dv.getInt32(i * 8 + (le ? 4 : 0), le) : dv.getUint32(i * 8 + (le ? 4 : 0), le);
        out[i] = hi * 4294967296 + lo;
      }
      break;
    }
    default:
      throw new Error(`toFloat32: unhandled element type ${type as string}`);
  }
  return out;
}

/** Number of elements of a shape (1 for a scalar, `[]`). */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** True when `shape` is an array of non-negative safe integers whose product is a safe integer. */
export function isValidShape(shape: unknown): shape is number[] {
  if (!Array.isArray(shape)) return false;
  let n = 1;
  for (const d of shape) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) return false;
    n *= d;
  }
  return Number.isSafeInteger(n);
}

/** `[2, 3]` as written in error messages. */
export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}
