/**
 * Image decoding (JPEG, PNG) to 8-bit RGB, and PNG encoding.
 *
 * Decoding is done by two pure-JavaScript libraries that run in Node and in browser bundles:
 * `jpeg-js` (baseline and progressive JPEG, grayscale/YCbCr/CMYK) and `fast-png` (every PNG color
 * type and bit depth, interlaced or not). This module sniffs the format from the magic bytes,
 * bounds the pixel count before anything large is allocated, converts every layout to RGB (alpha
 * is dropped, 16-bit samples keep their high byte, low bit depths are scaled to 0..255) and turns
 * every failure into {@link ImageDecodeError}.
 */

import { decode as pngDecode, encode as pngEncode } from 'fast-png';
import jpeg from 'jpeg-js';

/** The bytes are not a JPEG/PNG image, or the image is corrupt, truncated or too large. */
export class ImageDecodeError extends Error {
  override name = 'ImageDecodeError';
}

/** An 8-bit RGB image, row-major, 3 bytes per pixel. */
export interface RgbImage {
  width: number;
  height: number;
  /** width * height * 3 bytes: R, G, B. */
  data: Uint8Array;
}

/** Options of {@link decodeImage}. */
export interface DecodeImageOptions {
  /** Refuse images with more pixels than this (default 100 million). */
  maxPixels?: number;
  /**
   * Longest side an image is decoded to (default {@link DEFAULT_MAX_SIDE}; Infinity keeps every
   * image at full resolution). A larger image is reduced by the smallest integer factor f that
   * brings its longer side within the limit, each output pixel the mean of an f×f box (partial
   * boxes at the right and bottom edges average the pixels they hold), as PIL's Image.reduce.
   */
  maxSide?: number;
}

/**
 * Default longest side of a decoded image. No model here looks at more than a few hundred pixels
 * of an image (DINO's crops are 224 px from the shorter side resized to 256, or random crops of
 * it), while a 12 MP photo is 48 MB as the RGBX words the GPU reads: a batch of them would exceed a
 * storage binding (128 MiB on lavapipe). Reducing at decode bounds every image to 2048² pixels
 * (16 MiB on the GPU), whatever the input.
 */
export const DEFAULT_MAX_SIDE = 2048;

/** `img` box-reduced by the smallest integer factor that makes its longer side <= maxSide. */
export function reduceToMaxSide(img: RgbImage, maxSide: number): RgbImage {
  const { width: w, height: h, data } = img;
  if (!(maxSide >= 1)) throw new RangeError(`maxSide must be >= 1, got ${maxSide}`);
  if (Math.max(w, h) <= maxSide) return img;
  const f = Math.ceil(Math.max(w, h) / maxSide);
  const ow = Math.ceil(w / f);
  const oh = Math.ceil(h / f);
  const sums = new Float64Array(ow * 3);
  const out = new Uint8Array(ow * oh * 3);
  for (let oy = 0; oy < oh; oy++) {
    sums.fill(0);
    const y1 = Math.min(h, (oy + 1) * f);
    for (let y = oy * f; y < y1; y++) {
      const row = y * w * 3;
      for (let x = 0; x < w; x++) {
        const o = Math.floor(x / f) * 3;
        const i = row + x * 3;
        sums[o] += data[i];
        sums[o + 1] += data[i + 1];
        sums[o + 2] += data[i + 2];
      }
    }
    const rows = y1 - oy * f;
    for (let ox = 0; ox < ow; ox++) {
      const n = rows * (Math.min(w, (ox + 1) * f) - ox * f);
      for (let c = 0; c < 3; c++) out[(oy * ow + ox) * 3 + c] = Math.round(sums[ox * 3 + c] / n);
    }
  }
  return { width: ow, height: oh, data: out };
}

const PNG_MAGIC = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** 'jpeg' or 'png' from the magic bytes, or undefined. */
export function sniffImageFormat(bytes: Uint8Array): 'jpeg' | 'png' | undefined {
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return 'jpeg';
  if (bytes.length >= 8 && PNG_MAGIC.every((b, i) => bytes[i] === b)) return 'png';
  return undefined;
}

function otherFormatHint(b: Uint8Array): string {
  const ascii = (from: number, to: number): string => String.fromCharCode(...b.subarray(from, to));
  if (ascii(0, 4) === 'GIF8') return '; looks like GIF';
  if (ascii(0, 4) === 'RIFF' && ascii(8, 12) === 'WEBP') return '; looks like WebP';
  if (ascii(0, 2) === 'BM') return '; looks like BMP';
  if (ascii(0, 4) === 'II*\0' || ascii(0, 4) === 'MM\0*') return '; looks like TIFF';
  if (ascii(4, 8) === 'ftyp') return '; looks like HEIF/AVIF';
  return '';
}

function firstBytes(b: Uint8Array): string {
  return Array.from(b.subarray(0, 12), (x) => x.toString(16).padStart(2, '0')).join(' ') || 'none';
}

/**
 * Decodes a JPEG or PNG (sniffed from its magic bytes) to 8-bit RGB, reduced to at most `maxSide`
 * pixels on the longer side (see {@link DecodeImageOptions}). Anything else, corrupt or truncated
 * data, or more than `maxPixels` pixels, throws {@link ImageDecodeError}.
 */
export function decodeImage(bytes: Uint8Array, options: DecodeImageOptions = {}): RgbImage {
  const maxPixels = options.maxPixels ?? 100_000_000;
  const format = sniffImageFormat(bytes);
  if (!format) {
    throw new ImageDecodeError(`not a JPEG or PNG image (first bytes: ${firstBytes(bytes)}${otherFormatHint(bytes)})`);
  }
  let img: RgbImage;
  try {
    img = format === 'jpeg' ? decodeJpeg(bytes, maxPixels) : decodePngRgb(bytes, maxPixels);
  } catch (e) {
    if (e instanceof ImageDecodeError) throw e;
    const what = format === 'jpeg' ? 'JPEG' : 'PNG';
    const message = (e as Error)?.message ?? String(e);
    if (/maxResolutionInMP|maxMemoryUsageInMB/.test(message)) {
      throw new ImageDecodeError(`${what} image is larger than the ${maxPixels}-pixel limit (${message})`, { cause: e });
    }
    throw new ImageDecodeError(`corrupt or truncated ${what} image: ${(e as Error)?.message ?? String(e)}`, { cause: e });
  }
  return reduceToMaxSide(img, options.maxSide ?? DEFAULT_MAX_SIDE);
}

function checkSize(width: number, height: number, maxPixels: number, what: string): void {
  if (!(width > 0 && height > 0)) throw new ImageDecodeError(`${what} image has invalid size ${width}x${height}`);
  if (width * height > maxPixels) {
    throw new ImageDecodeError(`${what} image is ${width}x${height}, more than the ${maxPixels}-pixel limit`);
  }
}

function decodeJpeg(bytes: Uint8Array, maxPixels: number): RgbImage {
  const img = jpeg.decode(bytes, {
    useTArray: true,
    formatAsRGBA: false,
    maxResolutionInMP: maxPixels / 1e6,
    maxMemoryUsageInMB: 1024,
  });
  checkSize(img.width, img.height, maxPixels, 'JPEG');
  if (img.data.length !== img.width * img.height * 3) throw new ImageDecodeError('JPEG decoder returned a wrong amount of data');
  return { width: img.width, height: img.height, data: img.data };
}

function decodePngRgb(bytes: Uint8Array, maxPixels: number): RgbImage {
  // Check the size in IHDR before the decoder allocates anything.
  if (bytes.length < 33) throw new ImageDecodeError(`truncated PNG image (${bytes.length} bytes)`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (String.fromCharCode(...bytes.subarray(12, 16)) !== 'IHDR') throw new ImageDecodeError('corrupt PNG image: IHDR chunk missing');
  checkSize(dv.getUint32(16), dv.getUint32(20), maxPixels, 'PNG');

  const png = pngDecode(bytes, { checkCrc: true });
  const { width, height, depth, channels } = png;
  const n = width * height;
  const out = new Uint8Array(n * 3);

  if (depth < 8) {
    // Packed samples (grayscale or palette, one channel), rows padded to whole bytes.
    if (channels !== 1) throw new ImageDecodeError(`unsupported PNG: ${channels} channels at ${depth} bits`);
    const rowBytes = Math.ceil((width * depth) / 8);
    const src = png.data;
    if (src.length < rowBytes * height) throw new ImageDecodeError('corrupt PNG image: not enough pixel data');
    const mask = (1 << depth) - 1;
    const palette = png.palette;
    const scale = 255 / mask;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const bit = x * depth;
        const v = (src[y * rowBytes + (bit >> 3)]! >> (8 - depth - (bit & 7))) & mask;
        const o = (y * width + x) * 3;
        if (palette) {
          const c = palette[v];
          if (!c) throw new ImageDecodeError(`corrupt PNG image: palette index ${v} out of range`);
          out[o] = c[0]!;
          out[o + 1] = c[1]!;
          out[o + 2] = c[2]!;
        } else {
          const g = Math.round(v * scale);
          out[o] = out[o + 1] = out[o + 2] = g;
        }
      }
    }
    return { width, height, data: out };
  }

  const src = png.data;
  if (src.length < n * channels) throw new ImageDecodeError('corrupt PNG image: not enough pixel data');
  const shift = depth === 16 ? 8 : 0;
  if (png.palette) {
    const palette = png.palette;
    for (let i = 0; i < n; i++) {
      const c = palette[src[i]!];
      if (!c) throw new ImageDecodeError(`corrupt PNG image: palette index ${src[i]} out of range`);
      out[i * 3] = c[0]!;
      out[i * 3 + 1] = c[1]!;
      out[i * 3 + 2] = c[2]!;
    }
  } else if (channels === 1 || channels === 2) {
    for (let i = 0; i < n; i++) {
      const g = src[i * channels]! >> shift;
      out[i * 3] = out[i * 3 + 1] = out[i * 3 + 2] = g;
    }
  } else if (channels === 3 || channels === 4) {
    for (let i = 0; i < n; i++) {
      out[i * 3] = src[i * channels]! >> shift;
      out[i * 3 + 1] = src[i * channels + 1]! >> shift;
      out[i * 3 + 2] = src[i * channels + 2]! >> shift;
    }
  } else {
    throw new ImageDecodeError(`unsupported PNG: ${channels} channels`);
  }
  return { width, height, data: out };
}

/**
 * Encodes 8-bit RGB (`channels` 3) or RGBA (`channels` 4) pixels, row-major, as a PNG file.
 * Throws RangeError when the size or the data length is wrong.
 */
export function encodePng(width: number, height: number, rgbOrRgba: Uint8Array, channels: 3 | 4): Uint8Array {
  if (!Number.isSafeInteger(width) || !Number.isSafeInteger(height) || width <= 0 || height <= 0) {
    throw new RangeError(`encodePng: invalid size ${width}x${height}`);
  }
  if (channels !== 3 && channels !== 4) throw new RangeError(`encodePng: channels must be 3 or 4, got ${String(channels)}`);
  if (rgbOrRgba.length !== width * height * channels) {
    throw new RangeError(
      `encodePng: ${width}x${height}x${channels} needs ${width * height * channels} bytes, got ${rgbOrRgba.length}`,
    );
  }
  return pngEncode({ width, height, data: rgbOrRgba, channels, depth: 8 });
}
