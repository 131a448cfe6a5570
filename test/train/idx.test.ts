/**
 * MNIST-style IDX files: parsing (plain and gzipped) against hand-written bytes, the clear errors
 * for bad files, a folder's train / t10k splits (MNIST's names, the dotted variant, gzipped or not)
 * as grey RGB samples, and the command-line spec of such a folder with its held-out split.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

import { afterAll, describe, expect, it } from 'vitest';

import { findIdxFiles, idxBytes, IdxDataset, openIdx, parseIdx } from '../../train/data/idx-node.js';
import { heldOutSpec, openDataset } from '../../train/data/open-node.js';
import { isGreyscale } from '../../train/data/dataset.js';

const roots: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'webdino-idx-'));
  roots.push(d);
  return d;
}
afterAll(() => {
  for (const d of roots) rmSync(d, { recursive: true, force: true });
});

/** n images of 3 rows × 5 columns (not square, so rows and columns cannot be swapped unnoticed). */
function images(n: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: n * 15 }, (_, i) => (i * 37 + seed * 11) & 255);
}

describe('IDX', () => {
  it('parses the header by hand: magic, type 0x08, big-endian sizes, data row-major', () => {
    // 2 × 3 array [[1, 2, 3], [4, 5, 6]].
    const bytes = Uint8Array.from([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6]);
    const a = parseIdx(bytes);
    expect(a.dims).toEqual([2, 3]);
    expect([...a.data]).toEqual([1, 2, 3, 4, 5, 6]);
    expect([...idxBytes([2, 3], a.data)]).toEqual([...bytes]);
    // Sizes above 255 use the higher bytes.
    const big = idxBytes([300], new Uint8Array(300));
    expect([...big.subarray(0, 8)]).toEqual([0, 0, 8, 1, 0, 0, 1, 44]);
    expect(parseIdx(gzipSync(big)).dims).toEqual([300]);
  });

  it('says what is wrong with a bad file', () => {
    expect(() => parseIdx(Uint8Array.from([1, 0, 8, 1, 0, 0, 0, 0]), 'f')).toThrow(/f: not an IDX file/);
    expect(() => parseIdx(Uint8Array.from([0, 0, 0x0d, 1, 0, 0, 0, 0]), 'f')).toThrow(/type 0x0d is not unsigned byte/);
    expect(() => parseIdx(Uint8Array.from([0, 0, 8, 2, 0, 0, 0]), 'f')).toThrow(/truncated/);
    expect(() => parseIdx(Uint8Array.from([0, 0, 8, 1, 0, 0, 0, 3, 1, 2]), 'f')).toThrow(/3 = 3 bytes of data, the file has 2/);
    const lab = parseIdx(idxBytes([2], Uint8Array.from([0, 1])));
    expect(() => new IdxDataset(parseIdx(idxBytes([3, 3, 5], images(3, 0))), lab)).toThrow(/3 images but 2 labels/);
    expect(() => new IdxDataset(lab, lab)).toThrow(/3 dimensions/);
    expect(() => new IdxDataset(parseIdx(idxBytes([2, 3, 5], images(2, 0))), lab, { numClasses: 1 })).toThrow(/label 1 is not below the 1 classes/);
  });

  it('opens the train and t10k splits of a folder, gzipped or not, as grey RGB samples', async () => {
    const dir = tempDir();
    const trainPx = images(4, 1);
    const testPx = images(2, 2);
    writeFileSync(join(dir, 'train-images-idx3-ubyte.gz'), gzipSync(idxBytes([4, 3, 5], trainPx)));
    writeFileSync(join(dir, 'train-labels-idx1-ubyte.gz'), gzipSync(idxBytes([4], Uint8Array.from([3, 0, 6, 1]))));
    writeFileSync(join(dir, 't10k-images-idx3-ubyte'), idxBytes([2, 3, 5], testPx));
    writeFileSync(join(dir, 't10k-labels-idx1-ubyte'), idxBytes([2], Uint8Array.from([2, 0])));
    const train = openIdx(dir, 'train');
    expect([train.length, train.width, train.height, train.numClasses]).toEqual([4, 5, 3, 7]);
    const s = await train.get(2);
    expect(s.label).toBe(6);
    expect([s.image.width, s.image.height]).toEqual([5, 3]);
    for (let p = 0; p < 15; p++) {
      const v = trainPx[2 * 15 + p];
      expect([s.image.data[3 * p], s.image.data[3 * p + 1], s.image.data[3 * p + 2]]).toEqual([v, v, v]);
    }
    expect(train.describe(2)).toMatch(/train-images-idx3-ubyte\.gz\[2\]$/);
    // The held-out split takes the training split's class count (its own largest label is 2).
    const test = openIdx(dir, 'test');
    expect([test.length, test.numClasses]).toEqual([2, 7]);
    expect(test.getSync(1).image.data[3 * 14]).toBe(testPx[15 + 14]);

    // The command-line spec: the folder trains on 'train' and is held out on 't10k'.
    expect(openDataset(dir, { defaultSplit: 'train' }).length).toBe(4);
    expect(openDataset(dir, { defaultSplit: 'val' }).length).toBe(2);
    expect(heldOutSpec(dir)).toBe(dir);
    // IDX images are grey (webdino train's CPU default adapts its augmentation to that).
    expect(await isGreyscale(test)).toBe(true);
  });

  it("accepts 'test-' and the dotted names; a folder without t10k files has no held-out split", () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'train-images.idx3-ubyte'), idxBytes([1, 3, 5], images(1, 0)));
    writeFileSync(join(dir, 'train-labels.idx1-ubyte'), idxBytes([1], Uint8Array.from([0])));
    expect(findIdxFiles(dir, 'train')).not.toBeNull();
    expect(findIdxFiles(dir, 'test')).toBeNull();
    expect(heldOutSpec(dir)).toBeNull();
    expect(() => openIdx(dir, 'test')).toThrow(/no test split in .* \(need t10k-images-idx3-ubyte/);
    writeFileSync(join(dir, 'test-images-idx3-ubyte'), idxBytes([1, 3, 5], images(1, 0)));
    writeFileSync(join(dir, 'test-labels-idx1-ubyte'), idxBytes([1], Uint8Array.from([0])));
    expect(openIdx(dir, 'test').length).toBe(1);
    expect(heldOutSpec('synthetic')).toBe('synthetic:val');
    expect(heldOutSpec('synthetic-scene:train')).toBe('synthetic-scene:val');
  });
});
