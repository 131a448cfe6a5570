/**
 * Node-only: listing an ImageFolder directory (torchvision layout) and opening it with a worker-thread
 * decoder.
 *
 * Layout and order follow torchvision.datasets.ImageFolder: classes are the sorted names of the
 * sub-folders of `root`; each class folder is walked recursively (symlinks followed), directories in
 * sorted path order, files sorted by name within a directory; label = class index. Two deliberate
 * differences: hidden sub-folders of root (".ipynb_checkpoints", ".git") are not classes, and only
 * .jpg/.jpeg/.png files are images (the decoders we have); other image files (.webp, .bmp, ...) are
 * ignored and reported in one warning, hidden files are ignored silently. Sorting is by UTF-16 code
 * units, which agrees with Python's code-point order except for characters outside the BMP.
 */

import { readdirSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';

import { ImageFolder, type ImageFolderListing } from './dataset.js';
import { compareStrings, IMAGE_EXTENSIONS, walkFiles } from './image-files-node.js';
import { createNodeImageReader, type NodeImageReaderOptions } from './loader-node.js';

/** Image extensions torchvision accepts that we cannot decode: reported, not silently dropped. */
const UNSUPPORTED_IMAGE_EXTENSIONS = new Set(['.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp', '.gif', '.heic', '.heif', '.avif']);

/** A listing plus the image files that were left out for their format. */
export interface ImageFolderScan extends ImageFolderListing {
  /** Image files with a format we cannot decode (paths). */
  unsupported: string[];
  /** FIFOs, sockets and devices found in the class folders (never read). */
  special: string[];
}

/** Options of {@link scanImageFolder}. */
export interface ScanImageFolderOptions {
  /** Accept classes without any image (torchvision's allow_empty; default false: error). */
  allowEmptyClasses?: boolean;
}

/**
 * Class folders without any image: refused by default, since their labels would exist with no
 * sample (torchvision's ImageFolder refuses them too); `allowEmptyClasses` keeps them.
 */
export class EmptyClassesError extends Error {
  override name = 'EmptyClassesError';
  constructor(
    readonly root: string,
    readonly classes: readonly string[],
  ) {
    super(`${EmptyClassesError.describe(root, classes)} (pass allowEmptyClasses to keep empty classes)`);
  }

  /** What is wrong, without the advice (callers with other options give their own). */
  static describe(root: string, classes: readonly string[]): string {
    return `ImageFolder: no .jpg/.jpeg/.png images in class folder${classes.length === 1 ? '' : 's'} ${classes.join(', ')} of ${root}`;
  }
}

/** Lists `root/<class>/**` (see the file header). Throws a clear Error for a missing or empty root. */
export function scanImageFolder(root: string, options: ScanImageFolderOptions = {}): ImageFolderScan {
  let rootStat;
  try {
    rootStat = statSync(root);
  } catch (e) {
    throw new Error(`ImageFolder: cannot open ${root}: ${(e as Error).message}`, { cause: e });
  }
  if (!rootStat.isDirectory()) throw new Error(`ImageFolder: ${root} is not a directory`);

  const classNames = readdirSync(root)
    .filter((name) => !name.startsWith('.') && isDirectory(join(root, name)))
    .sort(compareStrings);
  if (classNames.length === 0) {
    throw new Error(`ImageFolder: no class sub-folders in ${root} (expected ${join(root, '<class>', '<image>.jpg')})`);
  }

  const files: { path: string; label: number }[] = [];
  const unsupported: string[] = [];
  const special: string[] = [];
  const empty: string[] = [];
  classNames.forEach((name, label) => {
    const before = files.length;
    walkFiles(
      join(root, name),
      (path) => {
        const ext = extname(path).toLowerCase();
        if (IMAGE_EXTENSIONS.includes(ext)) files.push({ path, label });
        else if (UNSUPPORTED_IMAGE_EXTENSIONS.has(ext)) unsupported.push(path);
      },
      (path) => special.push(path),
    );
    if (files.length === before) empty.push(name);
  });
  if (files.length === 0) {
    throw new Error(`ImageFolder: no .jpg/.jpeg/.png images under ${root}` + (unsupported.length ? ` (${unsupported.length} files in other formats: ${describeExtensions(unsupported)})` : ''));
  }
  if (empty.length && !options.allowEmptyClasses) throw new EmptyClassesError(root, empty);
  return { root, classNames, files, unsupported, special };
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false; // a dangling symlink
  }
}

function describeExtensions(paths: string[]): string {
  const counts = new Map<string, number>();
  for (const p of paths) counts.set(extname(p).toLowerCase(), (counts.get(extname(p).toLowerCase()) ?? 0) + 1);
  return [...counts].map(([ext, n]) => `${ext} ×${n}`).join(', ');
}

/** Options of {@link openImageFolder}. */
export interface OpenImageFolderOptions extends ScanImageFolderOptions, NodeImageReaderOptions {
  /** Receives the one warning about unsupported files (default console.warn). */
  onWarning?: (message: string) => void;
}

/**
 * Lists `root` and returns an ImageFolder that decodes in a pool of worker threads (main thread when
 * workers is 0 or no worker script is built; `folder.decoder` says which). Call `close()` when done.
 */
export function openImageFolder(root: string, options: OpenImageFolderOptions = {}): ImageFolder {
  const scan = scanImageFolder(root, options);
  if (scan.unsupported.length) {
    (options.onWarning ?? ((m: string) => console.warn(m)))(
      `ImageFolder: ignored ${scan.unsupported.length} image file${scan.unsupported.length === 1 ? '' : 's'} in formats that cannot be decoded (${describeExtensions(scan.unsupported)}; first: ${scan.unsupported[0]}); only .jpg/.jpeg/.png are read`,
    );
  }
  if (scan.special.length) {
    (options.onWarning ?? ((m: string) => console.warn(m)))(
      `ImageFolder: ignored ${scan.special.length} entr${scan.special.length === 1 ? 'y' : 'ies'} that are not regular files (FIFOs, sockets or devices; first: ${scan.special[0]})`,
    );
  }
  const reader = createNodeImageReader(options);
  return new ImageFolder(scan, reader.read, { close: reader.close, decoder: reader.description });
}
