/**
 * Recognises a file's format from its first bytes, so that a loader handed the wrong kind of file
 * says what the file is ("this is a PNG image, not a weights file") instead of failing inside the
 * wrong parser (a legacy torch file once reached the safetensors parser and was refused for its
 * "header length").
 *
 * Recognised: safetensors (an 8-byte little-endian header length that fits the file, then '{'), zip
 * archives (PyTorch >= 1.6 checkpoints are zips), pickles of protocol 2-5 (a legacy PyTorch
 * checkpoint when its first value is torch's magic number, after an optional protocol-4 FRAME),
 * NumPy .npy, PNG, JPEG, gzip, HDF5 (Keras), GGUF, HTML pages and Git LFS pointer files (what a
 * failed download or an un-fetched LFS file leaves behind). Safetensors is tested first: its header
 * length may begin with any byte, including a pickle's 0x80.
 *
 * Pure TypeScript, no Node built-ins; reads at most the first few dozen bytes.
 */

import { firstBytes } from './error-text.js';

/** What {@link sniffFormat} can tell apart. */
export type SniffedFormat =
  | 'safetensors'
  | 'zip'
  | 'torch-legacy'
  | 'pickle'
  | 'npy'
  | 'png'
  | 'jpeg'
  | 'gzip'
  | 'hdf5'
  | 'gguf'
  | 'html'
  | 'git-lfs-pointer'
  | 'empty'
  | 'unknown';

/** How each format is named in messages ("this is <name>"). */
export const FORMAT_NAMES: Readonly<Record<SniffedFormat, string>> = {
  safetensors: 'a safetensors file',
  zip: 'a zip archive',
  'torch-legacy': 'a PyTorch checkpoint (legacy, non-zip format)',
  pickle: 'a Python pickle that is not a PyTorch checkpoint',
  npy: 'a NumPy .npy array',
  png: 'a PNG image',
  jpeg: 'a JPEG image',
  gzip: 'a gzip-compressed file (decompress it first)',
  hdf5: 'an HDF5 file (Keras / TensorFlow weights?)',
  gguf: 'a GGUF file (llama.cpp weights)',
  html: 'an HTML page (a failed download?)',
  'git-lfs-pointer': 'a Git LFS pointer file, not the weights themselves (run `git lfs pull`)',
  empty: 'an empty file',
  unknown: 'not a format this reader knows',
};

/** torch's legacy magic number 0x1950a86a20f9469cfc6c as the 10 little-endian bytes of a LONG1. */
const TORCH_MAGIC = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

function startsWith(bytes: Uint8Array, prefix: readonly number[], at = 0): boolean {
  if (bytes.length < at + prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (bytes[at + i] !== prefix[i]) return false;
  return true;
}

function startsWithText(bytes: Uint8Array, text: string, at = 0): boolean {
  return startsWith(bytes, Array.from(text, (c) => c.charCodeAt(0)), at);
}

/**
 * True when the bytes look like a safetensors file: an 8-byte little-endian header length of at
 * least 2 that fits the file, followed by a JSON object ('{').
 */
export function looksLikeSafetensorsHeader(bytes: Uint8Array): boolean {
  if (bytes.length < 10) return false;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = view.getBigUint64(0, true);
  return n >= 2n && n <= BigInt(bytes.length - 8) && bytes[8] === 0x7b;
}

/** 'torch-legacy', 'pickle' or undefined: a PROTO 2-5 pickle, torch's when its magic comes first. */
function sniffPickle(bytes: Uint8Array): 'torch-legacy' | 'pickle' | undefined {
  if (bytes.length < 3 || bytes[0] !== 0x80 || bytes[1]! < 2 || bytes[1]! > 5) return undefined;
  // Protocol 4 and 5 wrap opcodes in frames: FRAME (0x95) + an 8-byte length.
  const first = bytes[2] === 0x95 ? 11 : 2;
  return startsWith(bytes, [0x8a, 0x0a, ...TORCH_MAGIC], first) ? 'torch-legacy' : 'pickle';
}

/** The format of a file from its first bytes (see the module doc for what is recognised). */
export function sniffFormat(bytes: Uint8Array): SniffedFormat {
  if (bytes.length === 0) return 'empty';
  if (looksLikeSafetensorsHeader(bytes)) return 'safetensors';
  if (startsWith(bytes, [0x50, 0x4b, 0x03, 0x04]) || startsWith(bytes, [0x50, 0x4b, 0x05, 0x06])) return 'zip';
  const pickle = sniffPickle(bytes);
  if (pickle) return pickle;
  if (startsWith(bytes, [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59])) return 'npy';
  if (startsWith(bytes, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return 'png';
  if (startsWith(bytes, [0xff, 0xd8, 0xff])) return 'jpeg';
  if (startsWith(bytes, [0x1f, 0x8b])) return 'gzip';
  if (startsWith(bytes, [0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a])) return 'hdf5';
  if (startsWithText(bytes, 'GGUF')) return 'gguf';
  if (startsWithText(bytes, 'version https://git-lfs.github.com/spec/')) return 'git-lfs-pointer';
  let i = 0;
  while (i < bytes.length && i < 64 && (bytes[i] === 0x20 || bytes[i] === 0x09 || bytes[i] === 0x0a || bytes[i] === 0x0d)) i++;
  const head = String.fromCharCode(...bytes.subarray(i, i + 15)).toLowerCase();
  if (head.startsWith('<!doctype html') || head.startsWith('<html')) return 'html';
  return 'unknown';
}

/**
 * The one-line reason a file of format `found` is refused by a reader of `expected` (e.g. "a
 * weights file (safetensors or a PyTorch checkpoint)"): "this is a PNG image, not a weights file
 * (...)", or for an unknown format what was expected and the first bytes.
 */
export function wrongFormatMessage(bytes: Uint8Array, found: SniffedFormat, expected: string): string {
  if (found === 'unknown') return `not ${expected}: the format is not recognised (first bytes: ${firstBytes(bytes)})`;
  return `this is ${FORMAT_NAMES[found]}, not ${expected}`;
}
