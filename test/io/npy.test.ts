import { describe, expect, it } from 'vitest';

import { NpyError, parseNpy, readNpyHeader, writeNpy } from '../../models/io/npy.js';
import { ascii, concat, expectExact, fixture, fixtureJson, rng } from './fixtures.js';

const expected = fixtureJson('npy.expected.json');

describe('parseNpy', () => {
  for (const name of Object.keys(expected)) {
    it(`reads ${name}.npy (${expected[name].descr}, shape [${expected[name].shape}]) exactly`, () => {
      const a = parseNpy(fixture(`${name}.npy`));
      expect(a.descr).toBe(expected[name].descr);
      expect(a.shape).toEqual(expected[name].shape);
      expectExact(a.data, expected[name].values);
    });
  }

  it('reads format versions 1, 2 and 3', () => {
    expect(readNpyHeader(fixture('f4_2d.npy')).version).toEqual([1, 0]);
    expect(readNpyHeader(fixture('f4_v2.npy')).version).toEqual([2, 0]);
    expect(readNpyHeader(fixture('f4_v3.npy')).version).toEqual([3, 0]);
    expect(readNpyHeader(fixture('f4_2d.npy')).dataOffset % 64).toBe(0);
  });

  it('refuses Fortran-order arrays with a clear error', () => {
    expect(() => parseNpy(fixture('f4_fortran.npy'))).toThrow(
      new NpyError('npy: Fortran-order arrays are not supported (save a C-contiguous array: np.ascontiguousarray)'),
    );
  });

  it('reports bad magic, bad version, truncation, bad headers and unsupported dtypes', () => {
    expect(() => parseNpy(ascii('PK\x03\x04 not npy at all'))).toThrow('npy: not a .npy file (bad magic; first bytes: 50 4b 03 04 20 6e 6f 74)');
    expect(() => parseNpy(new Uint8Array(0))).toThrow('first bytes: none');
    const good = fixture('f4_2d.npy');
    const v9 = good.slice();
    v9[6] = 9;
    expect(() => parseNpy(v9)).toThrow('npy: unsupported format version 9.0 (supported: 1.0, 2.0, 3.0)');
    expect(() => parseNpy(good.subarray(0, 50))).toThrow('npy: truncated file: header needs 118 bytes after byte 10 but the file has 50');
    expect(() => parseNpy(good.subarray(0, good.length - 1))).toThrow(
      "npy: truncated file: shape [3, 4] of '<f4' needs 48 data bytes but the file has 47",
    );
    for (let n = 0; n < good.length; n++) expect(() => parseNpy(good.subarray(0, n))).toThrow(NpyError);

    const withHeader = (h: string) => {
      const text = ascii(h.padEnd(118) + '\n');
      return concat([0x93], ascii('NUMPY'), [1, 0, text.length & 0xff, text.length >> 8], text, new Uint8Array(64));
    };
    expect(() => parseNpy(withHeader("{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }"))).toThrow(
      "npy: unsupported dtype '<c8'",
    );
    expect(() => parseNpy(withHeader("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }"))).toThrow(
      'structured dtypes are not supported',
    );
    expect(() => parseNpy(withHeader("{'descr': '<f4', 'shape': (2,), }"))).toThrow("header lacks 'descr', 'fortran_order' or 'shape'");
    expect(() => parseNpy(withHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -1), }"))).toThrow('invalid shape');
    expect(() => parseNpy(withHeader("{'descr': '<f4', 'fortran_order': False 'shape': (2,)}"))).toThrow(/malformed header/);
  });

  it('accepts Python 2 style long integers in the shape', () => {
    const text = ascii("{'descr': '<f4', 'fortran_order': False, 'shape': (2L,), }".padEnd(117) + '\n');
    const bytes = concat([0x93], ascii('NUMPY'), [1, 0, text.length, 0], text, new Uint8Array(new Float32Array([1, 2]).buffer));
    expect(parseNpy(bytes)).toEqual({ descr: '<f4', shape: [2], data: new Float32Array([1, 2]) });
  });

  it('never throws anything but NpyError on mutated files', () => {
    const good = fixture('u1_3d.npy');
    const rand = rng(2);
    for (let i = 0; i < 500; i++) {
      const bad = good.slice();
      for (let k = 0; k < 3; k++) bad[Math.floor(rand() * 128)] = Math.floor(rand() * 256);
      try {
        parseNpy(bad);
      } catch (e) {
        expect(e).toBeInstanceOf(NpyError);
      }
    }
  });
});

describe('writeNpy', () => {
  it('is byte-identical to np.save for float32, uint8, int32, float64 and scalars', () => {
    for (const [name, Ctor] of [
      ['f4_2d', Float32Array],
      ['u1_3d', Uint8Array],
      ['i4_2d', Int32Array],
      ['f8_1d', Float64Array],
      ['f4_scalar', Float32Array],
      ['f4_empty', Float32Array],
    ] as const) {
      const original = fixture(`${name}.npy`);
      const h = readNpyHeader(original);
      const raw = original.slice(h.dataOffset);
      const data = new Ctor(raw.buffer, 0, raw.byteLength / Ctor.BYTES_PER_ELEMENT);
      const written = writeNpy({ shape: h.shape, data });
      expect(Buffer.from(written).equals(Buffer.from(original)), name).toBe(true);
    }
  });

  it('round-trips through parseNpy and switches to version 2 for huge headers', () => {
    const data = new Float32Array([0.5, -1, NaN, Infinity, -0, 3]);
    expect(parseNpy(writeNpy({ shape: [2, 3], data }))).toEqual({ descr: '<f4', shape: [2, 3], data });
    const many = new Array(30000).fill(1);
    const big = writeNpy({ shape: many, data: new Float32Array(1) });
    const h = readNpyHeader(big);
    expect(h.version).toEqual([2, 0]);
    expect(h.shape.length).toBe(30000);
    expect(h.dataOffset % 64).toBe(0);
  });

  it('rejects a shape that does not match the data', () => {
    expect(() => writeNpy({ shape: [2, 2], data: new Float32Array(3) })).toThrow(
      'npy: shape [2, 2] has 4 elements but data has 3',
    );
  });
});
