/**
 * The dataset layer of the trainer: the `Dataset` interface every source implements, the `Sample`
 * it yields, and two file-backed sources that run in Node and in browsers alike:
 *
 * - `ImageFolder`: the torchvision layout `root/<class>/**\/*.{jpg,jpeg,png}`; classes are the
 *   sorted sub-folder names, label = index in that order, files sorted within a class (the order
 *   torchvision's `ImageFolder` uses, so label numbers and sample indices agree with PyTorch runs).
 *   This file holds only the browser-safe part: a listing plus an `ImageReader` that turns a path into
 *   RGB pixels. Listing a directory and decoding in worker threads live in image-folder-node.ts and
 *   loader-node.ts.
 * - `Cifar`: the CIFAR-10 / CIFAR-100 *binary* distribution (the `-binary.tar.gz` archives), from the
 *   file contents the caller supplies (cifar-node.ts reads them from disk). Records are fixed size:
 *     CIFAR-10:  1 label byte (0..9)                        + 3072 pixel bytes  = 3073 bytes
 *     CIFAR-100: 1 coarse label byte (0..19) + 1 fine (0..99) + 3072 pixel bytes = 3074 bytes
 *   The 3072 pixel bytes are planar: 1024 red, then 1024 green, then 1024 blue, each 32×32 row-major.
 *   `get` interleaves them to RGB.
 *
 * Invariants: `get(i)` is defined for integer 0 <= i < length and always yields the same sample for
 * the same i; labels are integers in [0, numClasses). A sample that cannot be read (corrupt file,
 * vanished file) rejects with `SampleReadError`; the DataLoader skips and counts those and lets every
 * other error propagate, so bugs are not silently swallowed.
 */

import { decodeImage, type RgbImage } from '../../models/io/image.js';

export type { RgbImage } from '../../models/io/image.js';

/** One labelled image. */
export interface Sample {
  /** 8-bit RGB pixels, row-major, 3 bytes per pixel. */
  image: RgbImage;
  /** Class index in [0, numClasses). */
  label: number;
  /** Optional per-pixel object mask, width*height bytes, 1 = object, 0 = background. */
  mask?: Uint8Array;
}

/** A finite, indexable collection of labelled images. */
export interface Dataset {
  /** Number of classes; labels lie in [0, numClasses). */
  readonly numClasses: number;
  /** Human-readable class names, `classNames[label]`. */
  readonly classNames: readonly string[];
  /** Number of samples. */
  readonly length: number;
  /** Sample `index` (0 <= index < length). Rejects with `SampleReadError` when it cannot be read. */
  get(index: number): Promise<Sample>;
  /** Synchronous `get`, for sources that never wait on I/O (synthetic data, in-memory CIFAR). */
  getSync?(index: number): Sample;
  /** Where sample `index` comes from, for messages: a file path, `data_batch_1.bin[17]`, ... */
  describe?(index: number): string;
}

/** A subset view of the first `n` samples of a dataset. */
export function firstN(ds: Dataset, n: number): Dataset {
  if (n >= ds.length) return ds;
  return { ...ds, numClasses: ds.numClasses, classNames: ds.classNames, length: n, get: (i: number) => ds.get(i) } as Dataset;
}

/**
 * A subset view of `n` evenly spaced samples (indices ⌊i·length/n⌋): every part of the dataset is
 * represented, also when it is sorted by class (an ImageFolder), which `firstN` is not.
 */
export function evenlySpaced(ds: Dataset, n: number): Dataset {
  if (n >= ds.length) return ds;
  const index = (i: number) => Math.floor((i * ds.length) / n);
  const view: Dataset = { numClasses: ds.numClasses, classNames: ds.classNames, length: n, get: (i: number) => ds.get(index(i)) };
  const getSync = ds.getSync?.bind(ds);
  return getSync ? { ...view, getSync: (i: number) => getSync(index(i)) } : view;
}

/**
 * Whether the images carry no colour: in every pixel of `samples` evenly spaced images, R, G and B
 * differ by at most `tolerance` levels (MNIST, Fashion-MNIST, scans, X-rays; a grey PNG decodes to
 * R = G = B, a grey photo saved as a colour JPEG to within a level or two of it). One coloured pixel
 * in the sampled images is enough to say no. Samples that cannot be read are passed over; a dataset
 * none of whose sampled images can be read is not called grey.
 */
export async function isGreyscale(ds: Dataset, samples = 32, tolerance = 3): Promise<boolean> {
  const view = evenlySpaced(ds, samples);
  let seen = 0;
  for (let i = 0; i < view.length; i++) {
    let image: RgbImage;
    try {
      image = (await view.get(i)).image;
    } catch (e) {
      if (e instanceof SampleReadError) continue;
      throw e;
    }
    const d = image.data;
    for (let p = 0; p < d.length; p += 3) {
      if (Math.abs(d[p] - d[p + 1]) > tolerance || Math.abs(d[p] - d[p + 2]) > tolerance || Math.abs(d[p + 1] - d[p + 2]) > tolerance) return false;
    }
    seen++;
  }
  return seen > 0;
}

/**
 * `evaluated` with its labels renumbered to `reference`'s classes by name, so that label k means
 * the same class in both (two ImageFolders number their own sorted class folders: a held-out
 * folder missing one class would shift every label after it). Returns `evaluated` itself when the
 * class names already agree. Throws when `evaluated` has a class the reference does not know.
 */
export function alignClasses(reference: Dataset, evaluated: Dataset): Dataset {
  const same = evaluated.classNames.length <= reference.classNames.length && evaluated.classNames.every((n, i) => reference.classNames[i] === n);
  if (same) return evaluated;
  const index = new Map(reference.classNames.map((n, i) => [n, i]));
  const missing = evaluated.classNames.filter((n) => !index.has(n));
  if (missing.length) {
    const list = (names: readonly string[]) => names.slice(0, 10).join(', ') + (names.length > 10 ? `, … (${names.length} in all)` : '');
    throw new Error(`the evaluated images have classes the training images do not: ${list(missing)} (training classes: ${list(reference.classNames)})`);
  }
  const map = evaluated.classNames.map((n) => index.get(n)!);
  const relabel = (s: Sample): Sample => ({ ...s, label: map[s.label] });
  const view: Dataset = {
    numClasses: reference.numClasses,
    classNames: reference.classNames,
    length: evaluated.length,
    get: async (i) => relabel(await evaluated.get(i)),
    describe: evaluated.describe ? (i) => evaluated.describe!(i) : undefined,
  };
  if (evaluated.getSync) (view as { getSync?: (i: number) => Sample }).getSync = (i) => relabel(evaluated.getSync!(i));
  return view;
}

/** Sample `source` exists but cannot be read or decoded; the loader skips such samples. */
export class SampleReadError extends Error {
  override name = 'SampleReadError';
  /**
   * @param source where the sample comes from (usually a file path)
   * @param reason why it could not be read
   */
  constructor(
    readonly source: string,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(`${source}: ${reason}`, options);
  }
}

/**
 * The image reader itself failed (its worker threads cannot start, it was closed), as opposed to one
 * file being unreadable. ImageFolder lets it propagate instead of turning it into a skipped sample.
 */
export class ReaderFailedError extends Error {
  override name = 'ReaderFailedError';
}

/** Throws RangeError unless `index` is an integer in [0, length). */
export function checkIndex(index: number, length: number, what: string): void {
  if (!Number.isInteger(index) || index < 0 || index >= length) {
    throw new RangeError(`${what}: index ${index} out of range [0, ${length})`);
  }
}

// ----------------------------------------------------------------------------------------------
// ImageFolder
// ----------------------------------------------------------------------------------------------

/** The files of an ImageFolder: class names (sorted) and one entry per image. */
export interface ImageFolderListing {
  /** The folder the listing was made from (for messages). */
  root: string;
  /** Sorted sub-folder names; label = index. */
  classNames: string[];
  /** Every image, class by class, sorted by path within a class. */
  files: { path: string; label: number }[];
}

/** Turns a path into decoded RGB pixels (main thread, a worker pool, fetch + decode in a browser). */
export type ImageReader = (path: string) => Promise<RgbImage>;

/**
 * An ImageReader that fetches bytes with `readBytes` and decodes them on the calling thread with
 * `decodeImage`: the fallback where no worker pool is available (browsers, or Node without a
 * built worker script).
 */
export function mainThreadReader(readBytes: (path: string) => Promise<Uint8Array>): ImageReader {
  return async (path) => decodeImage(await readBytes(path));
}

/** Options of {@link ImageFolder}. */
export interface ImageFolderOptions {
  /** Releases what the reader holds (worker threads); called by `close()`. */
  close?: () => Promise<void> | void;
  /** How images are decoded, for logs ("4 worker threads", "main thread"). */
  decoder?: string;
}

/**
 * torchvision's ImageFolder over a listing (see image-folder-node.ts `openImageFolder` for the Node
 * entry point). `get` reads and decodes one image; any failure becomes a `SampleReadError` naming the
 * file, except `ReaderFailedError` (the reader is broken, not the file), which propagates.
 */
export class ImageFolder implements Dataset {
  readonly numClasses: number;
  readonly classNames: readonly string[];
  readonly length: number;
  readonly root: string;
  /** How images are decoded ("main thread" unless the creator says otherwise). */
  readonly decoder: string;
  private readonly files: readonly { path: string; label: number }[];
  private readonly closeHook: (() => Promise<void> | void) | undefined;

  /**
   * @param listing class names and files (labels must be valid indices into classNames)
   * @param read decodes one file
   */
  constructor(
    listing: ImageFolderListing,
    private readonly read: ImageReader,
    options: ImageFolderOptions = {},
  ) {
    for (const f of listing.files) {
      if (!Number.isInteger(f.label) || f.label < 0 || f.label >= listing.classNames.length) {
        throw new RangeError(`ImageFolder: ${f.path} has label ${f.label}, but there are ${listing.classNames.length} classes`);
      }
    }
    this.root = listing.root;
    this.classNames = [...listing.classNames];
    this.numClasses = listing.classNames.length;
    this.files = listing.files.map((f) => ({ ...f }));
    this.length = this.files.length;
    this.closeHook = options.close;
    this.decoder = options.decoder ?? 'main thread';
  }

  /** Reads and decodes image `index`; rejects with SampleReadError when that fails. */
  async get(index: number): Promise<Sample> {
    checkIndex(index, this.length, 'ImageFolder.get');
    const { path, label } = this.files[index]!;
    let image: RgbImage;
    try {
      image = await this.read(path);
    } catch (e) {
      if (e instanceof SampleReadError || e instanceof ReaderFailedError) throw e;
      throw new SampleReadError(path, errorMessage(e), { cause: e });
    }
    return { image, label };
  }

  /** The file path of sample `index`. */
  describe(index: number): string {
    checkIndex(index, this.length, 'ImageFolder.describe');
    return this.files[index]!.path;
  }

  /** The label of sample `index`, without reading the file. */
  labelOf(index: number): number {
    checkIndex(index, this.length, 'ImageFolder.labelOf');
    return this.files[index]!.label;
  }

  /** Releases the reader's resources (worker threads). Safe to call twice. */
  async close(): Promise<void> {
    await this.closeHook?.();
  }
}

/** The message of an error-like value, without a stack. */
export function errorMessage(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}

// ----------------------------------------------------------------------------------------------
// CIFAR-10 / CIFAR-100
// ----------------------------------------------------------------------------------------------

/** Which CIFAR. */
export type CifarVariant = 'cifar10' | 'cifar100';

/** The class names of CIFAR-10 (batches.meta.txt), in label order. */
export const CIFAR10_CLASSES: readonly string[] = [
  'airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck',
];

/** The 20 coarse class names of CIFAR-100 (coarse_label_names.txt), in label order. */
export const CIFAR100_COARSE_CLASSES: readonly string[] = [
  'aquatic_mammals', 'fish', 'flowers', 'food_containers', 'fruit_and_vegetables',
  'household_electrical_devices', 'household_furniture', 'insects', 'large_carnivores',
  'large_man-made_outdoor_things', 'large_natural_outdoor_scenes', 'large_omnivores_and_herbivores',
  'medium_mammals', 'non-insect_invertebrates', 'people', 'reptiles', 'small_mammals', 'trees',
  'vehicles_1', 'vehicles_2',
];

/** The 100 fine class names of CIFAR-100 (fine_label_names.txt), in label order (alphabetical). */
export const CIFAR100_FINE_CLASSES: readonly string[] = [
  'apple', 'aquarium_fish', 'baby', 'bear', 'beaver', 'bed', 'bee', 'beetle', 'bicycle', 'bottle',
  'bowl', 'boy', 'bridge', 'bus', 'butterfly', 'camel', 'can', 'castle', 'caterpillar', 'cattle',
  'chair', 'chimpanzee', 'clock', 'cloud', 'cockroach', 'couch', 'crab', 'crocodile', 'cup', 'dinosaur',
  'dolphin', 'elephant', 'flatfish', 'forest', 'fox', 'girl', 'hamster', 'house', 'kangaroo', 'keyboard',
  'lamp', 'lawn_mower', 'leopard', 'lion', 'lizard', 'lobster', 'man', 'maple_tree', 'motorcycle', 'mountain',
  'mouse', 'mushroom', 'oak_tree', 'orange', 'orchid', 'otter', 'palm_tree', 'pear', 'pickup_truck', 'pine_tree',
  'plain', 'plate', 'poppy', 'porcupine', 'possum', 'rabbit', 'raccoon', 'ray', 'road', 'rocket',
  'rose', 'sea', 'seal', 'shark', 'shrew', 'skunk', 'skyscraper', 'snail', 'snake', 'spider',
  'squirrel', 'streetcar', 'sunflower', 'sweet_pepper', 'table', 'tank', 'telephone', 'television', 'tiger', 'tractor',
  'train', 'trout', 'tulip', 'turtle', 'wardrobe', 'whale', 'willow_tree', 'wolf', 'woman', 'worm',
];

/** Image side of CIFAR. */
export const CIFAR_SIDE = 32;
const CIFAR_PIXELS = CIFAR_SIDE * CIFAR_SIDE;

/** Bytes per record: label byte(s) + 3072 pixel bytes. */
export function cifarRecordBytes(variant: CifarVariant): number {
  return (variant === 'cifar10' ? 1 : 2) + 3 * CIFAR_PIXELS;
}

/** The file names of the binary distribution, per split (as in the official archives). */
export function cifarFileNames(variant: CifarVariant, split: 'train' | 'test'): string[] {
  if (variant === 'cifar10') {
    return split === 'train' ? [1, 2, 3, 4, 5].map((i) => `data_batch_${i}.bin`) : ['test_batch.bin'];
  }
  return [split === 'train' ? 'train.bin' : 'test.bin'];
}

/** One CIFAR file's records: contents and the dataset index of its first record. */
interface CifarChunk {
  name: string;
  bytes: Uint8Array;
  first: number;
  count: number;
}

/** Options of {@link Cifar}. */
export interface CifarOptions {
  /** 'cifar10' or 'cifar100'. */
  variant: CifarVariant;
  /** The files' contents with their names (names only appear in messages), in record order. */
  files: { name: string; bytes: Uint8Array }[];
  /** CIFAR-100 only: use the 100 'fine' labels (default) or the 20 'coarse' ones. */
  labels?: 'fine' | 'coarse';
  /** Class names; default: the official ones (or `class_<i>` if the count does not match). */
  classNames?: readonly string[];
}

/**
 * CIFAR-10 / CIFAR-100 from the binary record files. Throws a clear Error when a file's size is not
 * a whole number of records (with a hint when it fits the other variant), when there are no records,
 * or when a label byte is out of range.
 */
export class Cifar implements Dataset {
  readonly numClasses: number;
  readonly classNames: readonly string[];
  readonly length: number;
  readonly variant: CifarVariant;
  private readonly recordBytes: number;
  /** Per file: contents and index of its first record. */
  private readonly chunks: CifarChunk[] = [];
  private readonly labelOffset: number;

  constructor(options: CifarOptions) {
    const { variant, files } = options;
    if (variant !== 'cifar10' && variant !== 'cifar100') {
      throw new Error(`Cifar: variant must be 'cifar10' or 'cifar100', got ${String(variant)}`);
    }
    const labels = options.labels ?? 'fine';
    if (variant === 'cifar10' && options.labels === 'coarse') throw new Error("Cifar: CIFAR-10 has no 'coarse' labels");
    this.variant = variant;
    this.recordBytes = cifarRecordBytes(variant);
    // CIFAR-100 records: [coarse, fine, pixels]; CIFAR-10: [label, pixels].
    this.labelOffset = variant === 'cifar100' && labels === 'fine' ? 1 : 0;
    const official = variant === 'cifar10' ? CIFAR10_CLASSES : labels === 'fine' ? CIFAR100_FINE_CLASSES : CIFAR100_COARSE_CLASSES;
    this.numClasses = official.length;
    const names = options.classNames ?? official;
    if (names.length !== this.numClasses) {
      throw new Error(`Cifar: ${names.length} class names given, ${variant} (${labels}) has ${this.numClasses} classes`);
    }
    this.classNames = [...names];

    let total = 0;
    for (const { name, bytes } of files) {
      if (bytes.length === 0 || bytes.length % this.recordBytes !== 0) {
        throw new Error(`Cifar: ${name} has ${bytes.length} bytes, not a whole number of ${variant} records of ${this.recordBytes} bytes${sizeHint(variant, bytes.length)}`);
      }
      const count = bytes.length / this.recordBytes;
      this.checkLabels(name, bytes, count);
      this.chunks.push({ name, bytes, first: total, count });
      total += count;
    }
    if (total === 0) throw new Error('Cifar: no files given');
    this.length = total;
  }

  private checkLabels(name: string, bytes: Uint8Array, count: number): void {
    const limits = this.variant === 'cifar10' ? [10] : [20, 100];
    for (let r = 0; r < count; r++) {
      for (let k = 0; k < limits.length; k++) {
        const v = bytes[r * this.recordBytes + k]!;
        if (v >= limits[k]!) {
          const which = this.variant === 'cifar10' ? 'label' : k === 0 ? 'coarse label' : 'fine label';
          throw new Error(`Cifar: ${name} record ${r} has ${which} ${v}, expected < ${limits[k]}: not a ${this.variant} binary file`);
        }
      }
    }
  }

  private locate(index: number): { chunk: CifarChunk; offset: number } {
    // Few chunks (<= 5): a linear scan is clearer than a binary search.
    for (const chunk of this.chunks) {
      if (index < chunk.first + chunk.count) return { chunk, offset: (index - chunk.first) * this.recordBytes };
    }
    throw new RangeError(`Cifar: index ${index} out of range`);
  }

  /** Sample `index`: planar record bytes interleaved to a 32×32 RGB image. */
  getSync(index: number): Sample {
    checkIndex(index, this.length, 'Cifar.get');
    const { chunk, offset } = this.locate(index);
    const b = chunk.bytes;
    const label = b[offset + this.labelOffset]!;
    const px = offset + (this.variant === 'cifar10' ? 1 : 2);
    const data = new Uint8Array(3 * CIFAR_PIXELS);
    for (let i = 0; i < CIFAR_PIXELS; i++) {
      data[3 * i] = b[px + i]!;
      data[3 * i + 1] = b[px + CIFAR_PIXELS + i]!;
      data[3 * i + 2] = b[px + 2 * CIFAR_PIXELS + i]!;
    }
    return { image: { width: CIFAR_SIDE, height: CIFAR_SIDE, data }, label };
  }

  /** Same as getSync (the records are in memory). */
  async get(index: number): Promise<Sample> {
    return this.getSync(index);
  }

  /** `<file>[<record>]` of sample `index`. */
  describe(index: number): string {
    checkIndex(index, this.length, 'Cifar.describe');
    const { chunk, offset } = this.locate(index);
    return `${chunk.name}[${offset / this.recordBytes}]`;
  }
}

function sizeHint(variant: CifarVariant, n: number): string {
  const other: CifarVariant = variant === 'cifar10' ? 'cifar100' : 'cifar10';
  if (n > 0 && n % cifarRecordBytes(other) === 0) return ` (the size fits ${other} records: wrong variant?)`;
  return ' (truncated or not a CIFAR binary file)';
}
