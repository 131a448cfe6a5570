/**
 * Image files on disk: listing a folder's JPEG/PNG files (its own, or its whole tree in
 * ImageFolder order) and decoding one, with errors that name the file. Node only.
 */
import { readdirSync, realpathSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { decodeImage, type RgbImage } from '../../models/io/image.js';
import { readBytes } from '../../models/io/node-files.js';

/** The image extensions every folder reader accepts (case-insensitive). */
export const IMAGE_EXTENSIONS: readonly string[] = ['.jpg', '.jpeg', '.png'];

/** True when `name` ends in one of {@link IMAGE_EXTENSIONS}. */
export function isImageName(name: string): boolean {
  return IMAGE_EXTENSIONS.includes(extname(name).toLowerCase());
}

/** Orders strings by UTF-16 code units (Python's code-point order inside the BMP). */
export function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** JPEG/PNG files (by extension, case-insensitive) directly in `dir`, sorted by name. */
export function listImageFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .filter((d) => (d.isFile() || d.isSymbolicLink()) && isImageName(d.name))
    .map((d) => d.name)
    .sort()
    .map((n) => join(dir, n));
}

/**
 * JPEG/PNG files anywhere under `dir`, in the order {@link walkFiles} visits them (folders by
 * full path, files by name within a folder: for a one-level ImageFolder, its order). Hidden files
 * are left out.
 */
export function listImageFilesRecursive(dir: string): string[] {
  const files: string[] = [];
  walkFiles(dir, (path) => {
    if (isImageName(path)) files.push(path);
  });
  return files;
}

/**
 * Visits the regular files under `dir` (recursively, symlinks followed, cycles cut; FIFOs, sockets
 * and devices go to `special`, never to `visit`: reading one could block forever) in the order of Python's
 * `for root, _, fnames in sorted(os.walk(dir)): for fname in sorted(fnames)`: directories by their
 * full path string, files by name within one directory. Hidden files are skipped.
 */
export function walkFiles(dir: string, visit: (path: string) => void, special?: (path: string) => void): void {
  const dirs: { path: string; files: string[] }[] = [];
  const seen = new Set<string>();
  const collect = (d: string): void => {
    let real: string;
    try {
      real = realpathSync(d);
    } catch {
      return;
    }
    if (seen.has(real)) return; // a symlink cycle
    seen.add(real);
    const files: string[] = [];
    const subdirs: string[] = [];
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const path = join(d, entry.name);
      const kind = entry.isSymbolicLink() ? kindOf(path) : entry.isDirectory() ? 'dir' : entry.isFile() ? 'file' : 'special';
      if (kind === 'dir') subdirs.push(path);
      else if (entry.name.startsWith('.')) continue;
      else if (kind === 'file') files.push(entry.name);
      else if (kind === 'special') special?.(path);
    }
    dirs.push({ path: d, files: files.sort(compareStrings) });
    for (const sub of subdirs) collect(sub);
  };
  collect(dir);
  dirs.sort((a, b) => compareStrings(a.path, b.path));
  for (const d of dirs) for (const f of d.files) visit(join(d.path, f));
}

/** What a path is after following symlinks; 'special' for FIFOs, sockets and devices. */
function kindOf(path: string): 'dir' | 'file' | 'special' | 'missing' {
  try {
    const st = statSync(path);
    return st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'special';
  } catch {
    return 'missing'; // a dangling symlink
  }
}

/** Reads and decodes one image; the error names the file. */
export async function readImage(path: string): Promise<RgbImage> {
  try {
    return decodeImage(await readBytes(path));
  } catch (e) {
    throw new Error(`${path}: ${(e as Error).message}`, { cause: e });
  }
}
