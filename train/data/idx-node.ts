/**
 * The IDX files of MNIST and Fashion-MNIST (and the many sets distributed the same way), as a
 * Dataset, and their opening from a folder (Node).
 *
 * IDX layout (big-endian): bytes 0–1 are zero, byte 2 is the element type (0x08 = unsigned byte,
 * the only one image sets use), byte 3 the number of dimensions d; then d uint32 sizes; then the
 * elements, row-major. Images are `…-images-idx3-ubyte` [N, rows, cols] (0 = black, 255 = white,
 * as drawn: MNIST digits are white on black), labels `…-labels-idx1-ubyte` [N].
 *
 * A folder holds the training split as `train-images-idx3-ubyte` + `train-labels-idx1-ubyte` and the
 * held-out split as `t10k-…` (MNIST's names; `test-…` is accepted too), each gzipped (`.gz`) or
 * not; `train-images.idx3-ubyte` (a dot instead of the dash, as some mirrors unpack them) is read
 * too. Samples are grey RGB images (the value repeated in the three channels), so every transform of
 * the trainer applies unchanged. Class names are the label numbers.
 *
 * Invariants: `get(i)` is a pure function of i; labels lie in [0, numClasses), where numClasses is
 * one more than the largest label of the training split (both splits of one folder agree: the
 * held-out split is opened with the training split's count).
 */

import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';

import { checkIndex, type Dataset, type Sample } from './dataset.js';

/** One parsed IDX file: its sizes and its unsigned-byte elements. */
export interface IdxArray {
  dims: number[];
  data: Uint8Array;
}

const UBYTE = 0x08;

/**
 * Parses an IDX file (gunzips it first when it starts with the gzip magic 1f 8b). `name` only
 * appears in messages. Throws a clear Error for a bad header, a type other than unsigned byte, or a
 * size that does not match the header.
 */
export function parseIdx(bytes: Uint8Array, name = 'IDX file'): IdxArray {
  const b = bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b ? new Uint8Array(gunzipSync(bytes)) : bytes;
  if (b.length < 4 || b[0] !== 0 || b[1] !== 0) throw new Error(`${name}: not an IDX file (the first two bytes must be zero)`);
  if (b[2] !== UBYTE) throw new Error(`${name}: IDX element type 0x${b[2]!.toString(16).padStart(2, '0')} is not unsigned byte (0x08)`);
  const d = b[3]!;
  if (d === 0 || b.length < 4 + 4 * d) throw new Error(`${name}: IDX header with ${d} dimensions is truncated`);
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const dims = Array.from({ length: d }, (_, i) => view.getUint32(4 + 4 * i, false));
  const count = dims.reduce((a, x) => a * x, 1);
  const start = 4 + 4 * d;
  if (b.length - start !== count) {
    throw new Error(`${name}: the header says ${dims.join('×')} = ${count} bytes of data, the file has ${b.length - start}`);
  }
  return { dims, data: b.subarray(start) };
}

/** Writes an IDX file of unsigned bytes (uncompressed): the inverse of {@link parseIdx}. */
export function idxBytes(dims: readonly number[], data: Uint8Array): Uint8Array {
  const count = dims.reduce((a, x) => a * x, 1);
  if (data.length !== count) throw new Error(`idxBytes: ${data.length} elements for dims ${dims.join('×')}`);
  const out = new Uint8Array(4 + 4 * dims.length + count);
  const view = new DataView(out.buffer);
  out[2] = UBYTE;
  out[3] = dims.length;
  dims.forEach((x, i) => view.setUint32(4 + 4 * i, x, false));
  out.set(data, 4 + 4 * dims.length);
  return out;
}

function maxLabel(labels: Uint8Array): number {
  let m = 0;
  for (const l of labels) m = Math.max(m, l);
  return m;
}

/** Options of {@link IdxDataset}. */
export interface IdxDatasetOptions {
  /** Number of classes (default: largest label + 1). */
  numClasses?: number;
  /** Names of the two files, for `describe` and messages. */
  source?: string;
}

/** Images [N, rows, cols] and labels [N] of one split, as grey RGB samples. */
export class IdxDataset implements Dataset {
  readonly numClasses: number;
  readonly classNames: readonly string[];
  readonly length: number;
  readonly width: number;
  readonly height: number;
  private readonly pixels: Uint8Array;
  private readonly labels: Uint8Array;
  private readonly source: string;

  constructor(images: IdxArray, labels: IdxArray, options: IdxDatasetOptions = {}) {
    const source = (this.source = options.source ?? 'IDX');
    if (images.dims.length !== 3) throw new Error(`${source}: images must have 3 dimensions [N, rows, cols], got ${images.dims.join('×')}`);
    if (labels.dims.length !== 1) throw new Error(`${source}: labels must have 1 dimension [N], got ${labels.dims.join('×')}`);
    const [n, rows, cols] = images.dims as [number, number, number];
    if (labels.dims[0] !== n) throw new Error(`${source}: ${n} images but ${labels.dims[0]} labels`);
    if (n === 0) throw new Error(`${source}: no images`);
    const largest = maxLabel(labels.data);
    this.numClasses = options.numClasses ?? largest + 1;
    if (largest >= this.numClasses) throw new Error(`${source}: label ${largest} is not below the ${this.numClasses} classes of the training split`);
    this.classNames = Array.from({ length: this.numClasses }, (_, i) => String(i));
    this.length = n;
    this.height = rows;
    this.width = cols;
    this.pixels = images.data;
    this.labels = labels.data;
  }

  /** Sample `index`: the grey image repeated in R, G and B. */
  getSync(index: number): Sample {
    checkIndex(index, this.length, 'IdxDataset.get');
    const hw = this.width * this.height;
    const grey = this.pixels.subarray(index * hw, (index + 1) * hw);
    const data = new Uint8Array(3 * hw);
    for (let i = 0; i < hw; i++) data[3 * i] = data[3 * i + 1] = data[3 * i + 2] = grey[i]!;
    return { image: { width: this.width, height: this.height, data }, label: this.labels[index]! };
  }

  async get(index: number): Promise<Sample> {
    return this.getSync(index);
  }

  /** The label of sample `index`, without building the image. */
  labelOf(index: number): number {
    checkIndex(index, this.length, 'IdxDataset.labelOf');
    return this.labels[index]!;
  }

  describe(index: number): string {
    checkIndex(index, this.length, 'IdxDataset.describe');
    return `${this.source}[${index}]`;
  }
}

/** The split of an IDX folder: 'train' (train-…) or 'test' (t10k-… or test-…). */
export type IdxSplit = 'train' | 'test';

const PREFIXES: Record<IdxSplit, readonly string[]> = { train: ['train'], test: ['t10k', 'test'] };

/** The image and label file names of `split` in `dir`, or null when the folder lacks either. */
export function findIdxFiles(dir: string, split: IdxSplit): { images: string; labels: string } | null {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return null;
  }
  for (const prefix of PREFIXES[split]) {
    const find = (kind: 'images-idx3' | 'labels-idx1') => {
      const re = new RegExp(`^${prefix}-${kind.replace('-', '[-.]')}-ubyte(\\.gz)?$`);
      return names.filter((n) => re.test(n)).sort()[0];
    };
    const images = find('images-idx3');
    const labels = find('labels-idx1');
    if (images && labels) return { images: join(dir, images), labels: join(dir, labels) };
  }
  return null;
}

/** Whether `dir` holds the IDX files of a training split. */
export function looksLikeIdx(dir: string): boolean {
  return findIdxFiles(dir, 'train') !== null;
}

/**
 * Opens a split of the IDX folder `dir`. The held-out split takes its class count from the training
 * split's labels when those are present, so both splits agree even if a test set lacks a class.
 */
export function openIdx(dir: string, split: IdxSplit): IdxDataset {
  const files = findIdxFiles(dir, split);
  if (!files) {
    const want = PREFIXES[split].map((p) => `${p}-images-idx3-ubyte[.gz] + ${p}-labels-idx1-ubyte[.gz]`).join(', or ');
    throw new Error(`openIdx: no ${split} split in ${dir} (need ${want})`);
  }
  const read = (path: string) => {
    const buf = readFileSync(path);
    return parseIdx(new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength), path);
  };
  let numClasses: number | undefined;
  const trainFiles = split === 'test' ? findIdxFiles(dir, 'train') : null;
  if (trainFiles) numClasses = maxLabel(read(trainFiles.labels).data) + 1;
  return new IdxDataset(read(files.images), read(files.labels), { numClasses, source: files.images });
}

/** Whether `dir` has a held-out IDX split. */
export function hasIdxTestSplit(dir: string): boolean {
  return existsSync(dir) && findIdxFiles(dir, 'test') !== null;
}
