/**
 * Node-only: opening CIFAR-10 / CIFAR-100 from the binary files the user downloaded and unpacked
 * (cifar-10-binary.tar.gz → cifar-10-batches-bin/, cifar-100-binary.tar.gz → cifar-100-binary/).
 * The record format and its checks are in dataset.ts (`Cifar`); this file finds and reads the files.
 *
 * `dir` may be the folder holding the .bin files or its parent (the folder the archive was unpacked
 * into). The variant is detected from the file names unless given. Class names come from the
 * archive's batches.meta.txt / fine_label_names.txt / coarse_label_names.txt when present, else the
 * official lists built in.
 */

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { Cifar, cifarFileNames, type CifarVariant } from './dataset.js';

/** Options of {@link openCifar}. */
export interface OpenCifarOptions {
  /** 'train' (50 000 images) or 'test' (10 000). */
  split: 'train' | 'test';
  /** Default: detected from the files present. */
  variant?: CifarVariant;
  /** CIFAR-100: 'fine' (100 classes, default) or 'coarse' (20). */
  labels?: 'fine' | 'coarse';
}

const SUBDIRS: Record<CifarVariant, string> = { cifar10: 'cifar-10-batches-bin', cifar100: 'cifar-100-binary' };

/** Reads a CIFAR split from disk. Throws a clear Error naming the missing files and where it looked. */
export function openCifar(dir: string, options: OpenCifarOptions): Cifar {
  const { split } = options;
  if (split !== 'train' && split !== 'test') throw new Error(`openCifar: split must be 'train' or 'test', got ${String(split)}`);
  const variants: CifarVariant[] = options.variant ? [options.variant] : ['cifar10', 'cifar100'];
  const candidates = variants.flatMap((v) => [dir, join(dir, SUBDIRS[v])].map((d) => ({ variant: v, dir: d })));
  // The first candidate folder holding every file of the split wins.
  for (const c of candidates) {
    const names = cifarFileNames(c.variant, split);
    if (names.every((n) => existsSync(join(c.dir, n)))) {
      const files = names.map((name) => {
        const buf = readFileSync(join(c.dir, name));
        return { name: join(c.dir, name), bytes: new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength) };
      });
      const labels = c.variant === 'cifar100' ? (options.labels ?? 'fine') : 'fine';
      const classNames = readNames(c.dir, c.variant, labels);
      return new Cifar({ variant: c.variant, files, labels, ...(classNames ? { classNames } : {}) });
    }
  }
  const wanted = variants.map((v) => `${v}: ${cifarFileNames(v, split).join(', ')}`).join('; or ');
  const partial = candidates
    .map((c) => ({ ...c, missing: cifarFileNames(c.variant, split).filter((n) => !existsSync(join(c.dir, n))) }))
    .filter((c) => c.missing.length < cifarFileNames(c.variant, split).length);
  const hint = partial.length ? ` ${partial[0]!.dir} lacks ${partial[0]!.missing.join(', ')}.` : '';
  throw new Error(
    `openCifar: no CIFAR ${split} files in ${dir} or its ${variants.map((v) => SUBDIRS[v]).join('/')} sub-folder (need ${wanted}).${hint} ` +
      'Download the *binary* version from https://www.cs.toronto.edu/~kriz/cifar.html and unpack it.',
  );
}

/** Class names from the archive's text file, or undefined when absent or not the right count. */
function readNames(dir: string, variant: CifarVariant, labels: 'fine' | 'coarse'): string[] | undefined {
  const file = variant === 'cifar10' ? 'batches.meta.txt' : `${labels}_label_names.txt`;
  const path = join(dir, file);
  if (!existsSync(path)) return undefined;
  const names = readFileSync(path, 'utf8')
    .split(/\r?\n/)
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  const expected = variant === 'cifar10' ? 10 : labels === 'fine' ? 100 : 20;
  return names.length === expected ? names : undefined;
}
