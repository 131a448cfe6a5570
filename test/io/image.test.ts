import { describe, expect, it } from 'vitest';

import { decodeImage, encodePng, ImageDecodeError, sniffImageFormat } from '../../models/io/image.js';
import { parseNpy } from '../../models/io/npy.js';
import { ascii, fixture, rng } from './fixtures.js';

/** PIL's decode of a fixture (H x W x 3 uint8). */
function expectedPixels(name: string): { width: number; height: number; data: Uint8Array } {
  const a = parseNpy(fixture(`${name}.expected.npy`));
  return { height: a.shape[0]!, width: a.shape[1]!, data: Uint8Array.from(a.data) };
}

/** Decoding must either succeed or throw ImageDecodeError. */
function decodeOrImageError(bytes: Uint8Array): void {
  try {
    decodeImage(bytes);
  } catch (e) {
    if (!(e instanceof ImageDecodeError)) throw e;
  }
}

describe('decodeImage: PNG', () => {
  for (const name of ['rgb.png', 'rgba.png', 'gray.png', 'gray_alpha.png', 'palette.png', 'palette4.png', 'bilevel.png', 'gray16.png']) {
    it(`decodes ${name} to the same RGB pixels as PIL`, () => {
      const img = decodeImage(fixture(name));
      const exp = expectedPixels(name);
      expect([img.width, img.height]).toEqual([exp.width, exp.height]);
      expect(img.data).toEqual(exp.data);
    });
  }
});

describe('decodeImage: JPEG', () => {
  // [file, max abs difference, mean abs difference] vs PIL/libjpeg. IDCT rounding differs by a
  // level or two; 4:2:0 chroma upsampling (libjpeg interpolates, jpeg-js replicates) by more.
  for (const [name, maxTol, meanTol] of [
    ['rgb.jpg', 3, 1],
    ['gray.jpg', 3, 1],
    ['progressive.jpg', 3, 1],
    ['rgb_420.jpg', 20, 7],
  ] as const) {
    it(`decodes ${name} close to libjpeg (max diff <= ${maxTol})`, () => {
      const img = decodeImage(fixture(name));
      const exp = expectedPixels(name);
      expect([img.width, img.height]).toEqual([exp.width, exp.height]);
      let maxDiff = 0;
      let sum = 0;
      for (let i = 0; i < img.data.length; i++) {
        const d = Math.abs(img.data[i]! - exp.data[i]!);
        maxDiff = Math.max(maxDiff, d);
        sum += d;
      }
      expect(maxDiff).toBeLessThanOrEqual(maxTol);
      expect(sum / img.data.length).toBeLessThan(meanTol);
    });
  }
});

describe('decodeImage: errors', () => {
  it('says what the bytes are not, with the first bytes', () => {
    expect(() => decodeImage(ascii('hello, world'))).toThrow(
      new ImageDecodeError('not a JPEG or PNG image (first bytes: 68 65 6c 6c 6f 2c 20 77 6f 72 6c 64)'),
    );
    expect(() => decodeImage(ascii('GIF89a\x01\x00\x01\x00'))).toThrow(/first bytes: 47 49 46 38 39 61 01 00 01 00; looks like GIF\)$/);
    expect(() => decodeImage(new Uint8Array(0))).toThrow('not a JPEG or PNG image (first bytes: none)');
    expect(sniffImageFormat(fixture('rgb.jpg'))).toBe('jpeg');
    expect(sniffImageFormat(fixture('rgb.png'))).toBe('png');
  });

  it('throws ImageDecodeError (no crash, no hang) for every truncation of a JPEG and a PNG', () => {
    for (const name of ['rgb.jpg', 'progressive.jpg', 'rgb.png', 'palette4.png']) {
      const full = fixture(name);
      const start = Date.now();
      for (let n = 0; n < full.length; n++) {
        expect(() => decodeImage(full.subarray(0, n)), `${name} cut at ${n}`).toThrow(ImageDecodeError);
      }
      expect(Date.now() - start).toBeLessThan(5000);
    }
    expect(() => decodeImage(fixture('rgb.jpg').subarray(0, 300))).toThrow(/^corrupt or truncated JPEG image: /);
  });

  it('survives random corruption of JPEG and PNG files', () => {
    const rand = rng(4);
    for (const name of ['rgb.jpg', 'progressive.jpg', 'gray.jpg', 'rgba.png', 'palette.png']) {
      const good = fixture(name);
      const start = Date.now();
      for (let i = 0; i < 150; i++) {
        const bad = good.slice();
        const flips = 1 + Math.floor(rand() * 4);
        for (let k = 0; k < flips; k++) bad[2 + Math.floor(rand() * (bad.length - 2))] = Math.floor(rand() * 256);
        decodeOrImageError(bad);
      }
      expect(Date.now() - start).toBeLessThan(10000);
    }
  });

  it('refuses images above maxPixels before decoding them', () => {
    expect(() => decodeImage(fixture('rgb.png'), { maxPixels: 100 })).toThrow(
      'PNG image is 13x9, more than the 100-pixel limit',
    );
    // A PNG header claiming 100000 x 100000 pixels: refused without allocating anything.
    const huge = fixture('rgb.png').slice();
    const dv = new DataView(huge.buffer);
    dv.setUint32(16, 100000);
    dv.setUint32(20, 100000);
    expect(() => decodeImage(huge)).toThrow('PNG image is 100000x100000, more than the 100000000-pixel limit');
    expect(() => decodeImage(fixture('rgb.jpg'), { maxPixels: 100 })).toThrow(/^JPEG image is larger than the 100-pixel limit/);
  });
});

describe('encodePng', () => {
  it('round-trips RGB exactly', () => {
    const w = 7;
    const h = 5;
    const rand = rng(5);
    const rgb = Uint8Array.from({ length: w * h * 3 }, () => Math.floor(rand() * 256));
    const png = encodePng(w, h, rgb, 3);
    expect(sniffImageFormat(png)).toBe('png');
    expect(decodeImage(png)).toEqual({ width: w, height: h, data: rgb });
  });

  it('round-trips RGBA (decoding drops alpha)', () => {
    const rgba = Uint8Array.from([255, 0, 0, 255, 0, 255, 0, 128, 0, 0, 255, 0, 10, 20, 30, 40]);
    const img = decodeImage(encodePng(2, 2, rgba, 4));
    expect(Array.from(img.data)).toEqual([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30]);
  });

  it('rejects wrong sizes and channel counts', () => {
    expect(() => encodePng(2, 2, new Uint8Array(11), 3)).toThrow('encodePng: 2x2x3 needs 12 bytes, got 11');
    expect(() => encodePng(0, 2, new Uint8Array(0), 3)).toThrow(RangeError);
    expect(() => encodePng(1, 1, new Uint8Array(2), 2 as 3)).toThrow('channels must be 3 or 4');
  });
});
