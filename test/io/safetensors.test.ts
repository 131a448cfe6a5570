import { describe, expect, it } from 'vitest';

import {
  parseSafetensors,
  parseSafetensorsWithMetadata,
  readSafetensorsHeader,
  SafetensorsError,
  writeSafetensors,
} from '../../models/io/safetensors.js';
import { ascii, concat, expectExact, fixture, fixtureJson, rng } from './fixtures.js';

const expected = fixtureJson('safetensors.expected.json');

/** A safetensors file from a header object and a data section. */
function build(header: unknown, data: Uint8Array = new Uint8Array(0), lengthOverride?: number): Uint8Array {
  const json = ascii(JSON.stringify(header));
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(lengthOverride ?? json.length), true);
  return concat(len, json, data);
}

describe('parseSafetensors', () => {
  it('reads F32/F16/BF16/F64/I64/I32/U8 tensors exactly (fixture written by the Python script)', () => {
    const { tensors, metadata } = parseSafetensorsWithMetadata(fixture('mixed.safetensors'));
    expect(metadata).toEqual({ format: 'pt', note: 'webdino fixture' });
    expect(new Set(tensors.keys())).toEqual(new Set(Object.keys(expected.mixed)));
    const dtypes: Record<string, string> = {
      float32: 'F32',
      float16: 'F16',
      bfloat16: 'BF16',
      float64: 'F64',
      int64: 'I64',
      int32: 'I32',
      uint8: 'U8',
    };
    for (const [name, exp] of Object.entries<any>(expected.mixed)) {
      const t = tensors.get(name)!;
      expect(t.dtype, name).toBe(dtypes[exp.dtype]);
      expect(t.shape, name).toEqual(exp.shape);
      expectExact(t.data, exp.values, name);
    }
  });

  it('keeps header order and exposes offsets through readSafetensorsHeader', () => {
    const bytes = fixture('mixed.safetensors');
    const h = readSafetensorsHeader(bytes);
    expect(h.dataStart % 8).toBe(0);
    expect(h.dataStart).toBe(8 + h.headerLength);
    // Data order, as the writer laid it out (dtype rank descending, then name).
    expect(h.entries.map((e) => e.dtype)).toEqual(['I64', 'F64', 'F32', 'F32', 'F32', 'F32', 'I32', 'BF16', 'F16', 'U8']);
    expect(h.entries.at(-1)!.end).toBe(h.dataLength);
    expect([...parseSafetensors(bytes).keys()]).toEqual(h.entries.map((e) => e.name));
  });

  it('names the header length and file size when the header does not fit', () => {
    const bytes = build({}, new Uint8Array(0), 123456);
    const file = concat(bytes, new Uint8Array(100 - bytes.length));
    expect(file.length).toBe(100);
    expect(() => parseSafetensors(file)).toThrow(new SafetensorsError('safetensors: header length 123456 exceeds file size 100'));
    // A u64 far beyond 2^53 too.
    const huge = new Uint8Array(16).fill(0xff);
    expect(() => parseSafetensors(huge)).toThrow(/header length 18446744073709551615 exceeds file size 16/);
  });

  it('reports truncated files naming the tensor and the byte range', () => {
    const full = fixture('f32.safetensors');
    const h = readSafetensorsHeader(full);
    const last = h.entries.reduce((a, b) => (b.end > a.end ? b : a));
    const cut = full.subarray(0, full.length - 3);
    expect(() => parseSafetensors(cut)).toThrow(
      `safetensors: truncated file: tensor '${last.name}' needs bytes [${last.begin},${last.end}) but data section has ${h.dataLength - 3}`,
    );
    expect(() => parseSafetensors(full.subarray(0, 5))).toThrow('safetensors: file is 5 bytes, too short for the 8-byte header length');
    expect(() => parseSafetensors(full.subarray(0, 40))).toThrow(`safetensors: header length ${h.headerLength} exceeds file size 40`);
    // Every cut is a SafetensorsError (never a RangeError or a silent success).
    for (let n = 0; n < full.length; n++) {
      expect(() => parseSafetensors(full.subarray(0, n))).toThrow(SafetensorsError);
    }
  });

  it('rejects malformed headers with clear messages', () => {
    const f32 = (shape: number[], offsets: unknown) => ({ t: { dtype: 'F32', shape, data_offsets: offsets } });
    const data = new Uint8Array(16);
    expect(() => parseSafetensors(build([1, 2]))).toThrow('header is not a JSON object (got an array)');
    expect(() => parseSafetensors(concat(build({}), ascii('')).map((b, i) => (i === 8 ? 0x5b : b)))).toThrow(
      /header is not valid JSON/,
    );
    expect(() => parseSafetensors(build(f32([2, 2], [0, 12]), data))).toThrow(
      "safetensors: tensor 't': shape [2, 2] of F32 needs 16 bytes but data_offsets [0,12) span 12",
    );
    expect(() => parseSafetensors(build(f32([2], [8, 0]), data))).toThrow('end before they begin');
    expect(() => parseSafetensors(build(f32([2], [0]), data))).toThrow("tensor 't': invalid data_offsets [0]");
    expect(() => parseSafetensors(build(f32([-1], [0, 0]), data))).toThrow("tensor 't': invalid shape [-1]");
    expect(() => parseSafetensors(build({ t: { dtype: 'C64', shape: [1], data_offsets: [0, 8] } }, data))).toThrow(
      /tensor 't': unsupported dtype "C64"/,
    );
    expect(() => parseSafetensors(build({ __metadata__: { a: 1 } }))).toThrow(`"__metadata__" value for 'a' is not a string`);
    expect(() => parseSafetensors(build({ t: 5 }))).toThrow("tensor 't': entry is not a JSON object");
  });

  it('never throws anything but SafetensorsError on mutated files', () => {
    const good = fixture('mixed.safetensors');
    const rand = rng(1);
    for (let i = 0; i < 500; i++) {
      const bad = good.slice();
      const flips = 1 + Math.floor(rand() * 4);
      for (let k = 0; k < flips; k++) bad[Math.floor(rand() * Math.min(bad.length, 400))] = Math.floor(rand() * 256);
      try {
        parseSafetensors(bad);
      } catch (e) {
        expect(e).toBeInstanceOf(SafetensorsError);
      }
    }
  });
});

describe('writeSafetensors', () => {
  it('writes the hand-checked header: sorted keys, metadata first, compact JSON, space padding', () => {
    const out = writeSafetensors(
      { b: { shape: [2], data: new Float32Array([3, 4]) }, a: { shape: [1, 2], data: new Float32Array([1, -2]) } },
      { format: 'pt' },
    );
    const header =
      '{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]},' +
      '"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}';
    expect(header.length).toBe(141);
    const padded = header + '   '; // 141 -> 144, a multiple of 8
    const dv = new DataView(out.buffer);
    expect(dv.getBigUint64(0, true)).toBe(144n);
    expect(new TextDecoder().decode(out.subarray(8, 8 + 144))).toBe(padded);
    expect(Array.from(new Float32Array(out.slice(152).buffer))).toEqual([1, -2, 3, 4]);
    expect(out.length).toBe(152 + 16);
  });

  it('reproduces the fixture byte for byte (same order and padding as the reference writer)', () => {
    const original = fixture('f32.safetensors');
    const { tensors, metadata } = parseSafetensorsWithMetadata(original);
    // Insert in the Python dict order, not the file order: the writer must sort.
    const order: string[] = expected.f32_order;
    const input = new Map(order.map((k) => [k, tensors.get(k)!] as const));
    const written = writeSafetensors(input, metadata);
    expect(Buffer.from(written).equals(Buffer.from(original))).toBe(true);
    const names = readSafetensorsHeader(written).entries.map((e) => e.name);
    expect(names).toEqual(['Zeta', 'blocks.10.norm1.weight', 'blocks.2.norm1.weight', 'cls_token', 'pos_embed']);
  });

  it('round-trips values exactly, including NaN/-0/Infinity, integer-like and non-ASCII names', () => {
    const tensors = {
      '10': { shape: [3], data: new Float32Array([NaN, -0, Infinity]) },
      '2': { shape: [], data: new Float32Array([1.5]) },
      'é.weight': { shape: [2, 0], data: new Float32Array(0) },
      __proto__x: { shape: [1], data: new Float32Array([7]) },
    };
    const back = parseSafetensors(writeSafetensors(tensors));
    expect([...back.keys()]).toEqual(['10', '2', '__proto__x', 'é.weight']);
    for (const [k, t] of Object.entries(tensors)) {
      expect(back.get(k)!.shape).toEqual(t.shape);
      expect(Array.from(back.get(k)!.data)).toEqual(Array.from(t.data));
    }
    // A tensor literally named __proto__ stays a tensor (no prototype games).
    const proto = parseSafetensors(writeSafetensors(new Map([['__proto__', { shape: [1], data: new Float32Array([2]) }]])));
    expect([...proto.keys()]).toEqual(['__proto__']);
    expect(Array.from(proto.get('__proto__')!.data)).toEqual([2]);
    const noMeta = writeSafetensors({ x: { shape: [1], data: new Float32Array([1]) } });
    expect(parseSafetensorsWithMetadata(noMeta).metadata).toEqual({});
  });

  it('rejects inconsistent input', () => {
    expect(() => writeSafetensors({ x: { shape: [2, 2], data: new Float32Array(3) } })).toThrow(
      "safetensors: tensor 'x': shape [2, 2] has 4 elements but data has 3",
    );
    expect(() => writeSafetensors({ __metadata__: { shape: [1], data: new Float32Array(1) } })).toThrow(SafetensorsError);
    expect(() => writeSafetensors({ x: { shape: [1], data: new Float64Array(1) as unknown as Float32Array } })).toThrow(
      'must be a Float32Array',
    );
  });
});

describe('format sniffing', () => {
  it('a safetensors file whose header length starts with byte 0x80 is not taken for a pickle', async () => {
    const { loadStateDict } = await import('../../models/io/state-dict.js');
    const { looksLikeSafetensors, looksLikeLegacyTorch } = await import('../../models/io/safetensors.js');
    // Pad the metadata until the header length's low byte is 0x80 (what PROTO looks like).
    let bytes: Uint8Array = new Uint8Array(0);
    for (let pad = 0; pad < 300; pad++) {
      bytes = writeSafetensors({ w: { shape: [2], data: new Float32Array([1, 2]) } }, { note: 'x'.repeat(pad) });
      if (bytes[0] === 0x80) break;
    }
    expect(bytes[0]).toBe(0x80);
    expect(looksLikeSafetensors(bytes)).toBe(true);
    expect(looksLikeLegacyTorch(bytes)).toBe(false);
    const sd = loadStateDict(bytes);
    expect(sd.format).toBe('safetensors');
    expect(Array.from(sd.tensors.get('w')!.data)).toEqual([1, 2]);
  });
});
