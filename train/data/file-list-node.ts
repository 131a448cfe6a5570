/**
 * Node only: a dataset from a text file that lists its images, one per line, such as the
 * selection `webdino curate` writes. Each non-blank line is one of
 *
 *   PATH                 the label is the name of PATH's parent folder (an ImageFolder-like pool)
 *   PATH<TAB>LABEL       the label is LABEL, a class name
 *   ROW<TAB>PATH         `webdino curate`'s selected.txt (ROW: the pool row, an integer; ignored),
 *                        the label from PATH's parent folder
 *
 * The two-field forms are told apart per file: when every line's first field is an integer and
 * every second field names a .jpg/.jpeg/.png file, the file is a selection (ROW<TAB>PATH);
 * otherwise the second field is a label. Relative paths are resolved against the list's folder.
 *
 * Classes are the sorted distinct label names, label = index (ImageFolder's rule, so a list of an
 * ImageFolder's images with parent-folder labels numbers its classes as the folder does); images
 * keep the list's order, and a path listed twice is two samples. Every listed file must exist:
 * a list with missing files is refused up front, naming them (a file that exists but cannot be
 * decoded is a SampleReadError at `get`, skipped and counted by the loader like an ImageFolder's).
 */
import { readFileSync, statSync } from 'node:fs';
import { basename, dirname, isAbsolute, resolve } from 'node:path';
import { ImageFolder, type ImageFolderListing } from './dataset.js';
import { compareStrings, isImageName } from './image-files-node.js';
import { createNodeImageReader, type NodeImageReaderOptions } from './loader-node.js';

/** The ways a line names its image and label (see the file header). */
export type FileListFormat = 'paths' | 'path-label' | 'selection';

/** A list that cannot be used: the message names the file and line. */
export class FileListError extends Error {
  override name = 'FileListError';
}

/** How many missing files a message names before it counts the rest. */
const NAMED_MISSING = 5;

/** Whether the (non-blank) lines, split at tabs, are `webdino curate`'s ROW<TAB>PATH. */
function isSelection(fields: readonly string[][]): boolean {
  return fields.length > 0 && fields.every((f) => f.length === 2 && /^\d+$/.test(f[0]) && isImageName(f[1]));
}

/**
 * Reads the list at `path` (see the file header) into an ImageFolder listing, checking that every
 * file exists. Throws FileListError with the file and line of the first problem.
 */
export function readFileList(path: string): ImageFolderListing & { format: FileListFormat } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new FileListError(`file list ${path}: cannot read it: ${(e as Error).message}`, { cause: e });
  }
  const base = dirname(resolve(path));
  const lines: { line: number; fields: string[] }[] = [];
  text.split(/\r?\n/).forEach((l, i) => {
    if (l.trim() !== '') lines.push({ line: i + 1, fields: l.split('\t') });
  });
  if (!lines.length) throw new FileListError(`file list ${path}: no image listed`);
  const bad = lines.find((l) => l.fields.length > 2 || l.fields.some((f) => f.trim() === ''));
  if (bad) throw new FileListError(`file list ${path} line ${bad.line}: expected PATH, PATH<TAB>LABEL or ROW<TAB>PATH, got '${bad.fields.join('\\t')}'`);
  if (lines.every((l) => l.fields.length === 1 && /^\d+$/.test(l.fields[0]))) {
    throw new FileListError(`file list ${path}: every line is a number: a selection written by webdino curate without --paths (rows, not images); run curate with --paths or on an embed manifest`);
  }
  const format: FileListFormat = isSelection(lines.map((l) => l.fields)) ? 'selection' : lines.some((l) => l.fields.length === 2) ? 'path-label' : 'paths';
  const entries = lines.map(({ line, fields }) => {
    const file = format === 'selection' ? fields[1] : fields[0];
    const abs = isAbsolute(file) ? file : resolve(base, file);
    const label = format === 'path-label' && fields.length === 2 ? fields[1].trim() : basename(dirname(abs));
    return { line, path: abs, label };
  });
  const missing = entries.filter((e) => {
    try {
      return !statSync(e.path).isFile();
    } catch {
      return true;
    }
  });
  if (missing.length) {
    const named = missing.slice(0, NAMED_MISSING).map((m) => `line ${m.line}: ${m.path}`);
    const more = missing.length > NAMED_MISSING ? `, and ${missing.length - NAMED_MISSING} more` : '';
    throw new FileListError(`file list ${path}: ${missing.length} listed file${missing.length === 1 ? ' is' : 's are'} missing or not a file (${named.join('; ')}${more})`);
  }
  const classNames = [...new Set(entries.map((e) => e.label))].sort(compareStrings);
  const index = new Map(classNames.map((n, i) => [n, i]));
  return { root: path, classNames, files: entries.map((e) => ({ path: e.path, label: index.get(e.label)! })), format };
}

/**
 * Opens the list at `path` as an ImageFolder that decodes in worker threads (see
 * image-folder-node.ts `openImageFolder`); call `close()` when done.
 */
export function openFileList(path: string, options: NodeImageReaderOptions = {}): ImageFolder {
  const listing = readFileList(path);
  const reader = createNodeImageReader(options);
  return new ImageFolder(listing, reader.read, { close: reader.close, decoder: reader.description });
}
