/** Shared helpers of the test/io tests: fixture access and exact value comparison. */

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { expect } from 'vitest';

/** Absolute path of a file in test/fixtures/io. */
export function fixturePath(name: string): string {
  return fileURLToPath(new URL(`../fixtures/io/${name}`, import.meta.url));
}

/** Bytes of a fixture as a plain Uint8Array. */
export function fixture(name: string): Uint8Array {
  const b = readFileSync(fixturePath(name));
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** Parsed JSON fixture. */
export function fixtureJson<T = any>(name: string): T {
  return JSON.parse(readFileSync(fixturePath(name), 'utf8')) as T;
}

/** Expected values as written by make_io_fixtures.py: numbers, or "nan" / "inf" / "-inf". */
export type JsonValues = (number | string)[];

/** Decodes the JSON encoding of non-finite floats. */
export function decodeValues(values: JsonValues): number[] {
  return values.map((v) => (v === 'nan' ? NaN : v === 'inf' ? Infinity : v === '-inf' ? -Infinity : (v as number)));
}

/** Asserts bit-exact float32 values (NaN equal to NaN, -0 distinct from 0). */
export function expectExact(actual: Float32Array, expected: JsonValues, what = ''): void {
  expect(actual, what).toBeInstanceOf(Float32Array);
  expect(Array.from(actual), what).toEqual(decodeValues(expected));
}

/** Deterministic PRNG (mulberry32) for the fuzz loops. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Concatenates byte arrays. */
export function concat(...parts: (Uint8Array | number[])[]): Uint8Array {
  const arrays = parts.map((p) => (p instanceof Uint8Array ? p : Uint8Array.from(p)));
  const out = new Uint8Array(arrays.reduce((n, a) => n + a.length, 0));
  let o = 0;
  for (const a of arrays) {
    out.set(a, o);
    o += a.length;
  }
  return out;
}

/** Latin-1 / ASCII text as bytes. */
export function ascii(s: string): Uint8Array {
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

/** Minimal pickle assembler for hand-written (often hostile) test pickles. Nothing here runs them. */
export const P = {
  proto: (n = 2) => [0x80, n],
  global: (module: string, name: string) => concat([0x63], ascii(`${module}\n${name}\n`)),
  inst: (module: string, name: string) => concat([0x69], ascii(`${module}\n${name}\n`)),
  str(s: string): Uint8Array {
    const b = new TextEncoder().encode(s);
    const len = new Uint8Array(4);
    new DataView(len.buffer).setUint32(0, b.length, true);
    return concat([0x58], len, b);
  },
  int: (n: number) => (n >= 0 && n < 256 ? [0x4b, n] : [0x4a, n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, (n >>> 24) & 0xff]),
  mark: [0x28],
  tuple: [0x74],
  tuple1: [0x85],
  tuple2: [0x86],
  emptyTuple: [0x29],
  emptyDict: [0x7d],
  setitem: [0x73],
  reduce: [0x52],
  binpersid: [0x51],
  stackGlobal: [0x93],
  newfalse: [0x89],
  stop: [0x2e],
};

/** A stored (uncompressed) zip archive of the given entries, as Python's zipfile would write it. */
export function makeZip(entries: [string, Uint8Array][]): Uint8Array {
  const table = new Uint32Array(256).map((_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (d: Uint8Array) => {
    let c = 0xffffffff;
    for (const b of d) c = table[(c ^ b) & 0xff]! ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const locals: Uint8Array[] = [];
  const centrals: Uint8Array[] = [];
  let offset = 0;
  for (const [name, data] of entries) {
    const n = ascii(name);
    const h = new Uint8Array(30);
    const dv = new DataView(h.buffer);
    dv.setUint32(0, 0x04034b50, true);
    dv.setUint16(4, 20, true);
    dv.setUint32(14, crc(data), true);
    dv.setUint32(18, data.length, true);
    dv.setUint32(22, data.length, true);
    dv.setUint16(26, n.length, true);
    const c = new Uint8Array(46);
    const cv = new DataView(c.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(4, 20, true);
    cv.setUint16(6, 20, true);
    cv.setUint32(16, crc(data), true);
    cv.setUint32(20, data.length, true);
    cv.setUint32(24, data.length, true);
    cv.setUint16(28, n.length, true);
    cv.setUint32(42, offset, true);
    locals.push(h, n, data);
    centrals.push(c, n);
    offset += 30 + n.length + data.length;
  }
  const cd = concat(...centrals);
  const end = new Uint8Array(22);
  const ev = new DataView(end.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, entries.length, true);
  ev.setUint16(10, entries.length, true);
  ev.setUint32(12, cd.length, true);
  ev.setUint32(16, offset, true);
  return concat(...locals, cd, end);
}
