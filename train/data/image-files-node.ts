/**
 * Image files on disk: listing a folder's JPEG/PNG files and decoding one, with errors that name
 * the file. Node only.
 */
import { readdirSync } from 'node:fs';
import { extname, join } from 'node:path';
import { decodeImage, type RgbImage } from '../../models/io/image.js';
import { readBytes } from '../../models/io/node-files.js';

/** The image extensions every folder reader accepts (case-insensitive). */
export const IMAGE_EXTENSIONS: readonly string[] = ['.jpg', '.jpeg', '.png'];

/** True when `name` ends in one of {@link IMAGE_EXTENSIONS}. */
export function isImageName(name: string): boolean {
  return IMAGE_EXTENSIONS.includes(extname(name).toLowerCase());
}

/** JPEG/PNG files (by extension, case-insensitive) directly in `dir`, sorted by name. */
export function listImageFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .filter((d) => (d.isFile() || d.isSymbolicLink()) && isImageName(d.name))
    .map((d) => d.name)
    .sort()
    .map((n) => join(dir, n));
}

/** Reads and decodes one image; the error names the file. */
export async function readImage(path: string): Promise<RgbImage> {
  try {
    return decodeImage(await readBytes(path));
  } catch (e) {
    throw new Error(`${path}: ${(e as Error).message}`, { cause: e });
  }
}
