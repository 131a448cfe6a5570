/**
 * The data layer: the synthetic shapes dataset (determinism, balance, masks, colour carries no class
 * information), ImageFolder with corrupt files, CIFAR binary files, the DataLoader's order / resume /
 * skipping / prefetch, and worker-thread decoding against main-thread decoding.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { build } from 'esbuild';
import jpeg from 'jpeg-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { decodeImage, encodePng } from '../../models/io/image.js';
import { openCifar } from '../../train/data/cifar-node.js';
import { Cifar, type Dataset, isGreyscale, ReaderFailedError, type Sample, SampleReadError } from '../../train/data/dataset.js';
import { openImageFolder, scanImageFolder } from '../../train/data/image-folder-node.js';
import { type Batch, DataLoader } from '../../train/data/loader.js';
import { DecodePool } from '../../train/data/loader-node.js';
import { renderSampleGrid, SHAPE_CLASSES, SyntheticShapes } from '../../train/data/synthetic.js';
import { heldOutSpec, openDataset } from '../../train/data/open-node.js';

const tmpRoots: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'webdino-data-'));
  tmpRoots.push(d);
  return d;
}
afterAll(() => {
  for (const d of tmpRoots) rmSync(d, { recursive: true, force: true });
});

/** A deterministic RGB test pattern. */
function pattern(w: number, h: number, seed: number): Uint8Array {
  const px = new Uint8Array(w * h * 3);
  for (let i = 0; i < px.length; i++) px[i] = (i * 31 + seed * 97 + ((i * i) >> 3)) & 255;
  return px;
}

// ----------------------------------------------------------------------------------------------
// SyntheticShapes
// ----------------------------------------------------------------------------------------------

describe('SyntheticShapes', () => {
  it('is deterministic in (seed, split, index), independent of the order samples are drawn in', async () => {
    const a = new SyntheticShapes({ seed: 3, length: 100 });
    const b = new SyntheticShapes({ seed: 3, length: 100 });
    // b draws other samples first: the reused canvas must not leak anything between samples.
    for (const i of [99, 0, 50]) b.getSync(i);
    for (const i of [7, 42, 13]) {
      const sa = a.getSync(i);
      const sb = await b.get(i);
      expect(sb.label).toBe(sa.label);
      expect(Buffer.from(sb.image.data).equals(Buffer.from(sa.image.data))).toBe(true);
      expect(Buffer.from(sb.mask!).equals(Buffer.from(sa.mask!))).toBe(true);
    }
  });

  it('gives different images for another split or seed', () => {
    const train = new SyntheticShapes({ split: 'train', length: 50 });
    const val = new SyntheticShapes({ split: 'val', length: 50 });
    const other = new SyntheticShapes({ seed: 1, length: 50 });
    const trainImages = new Set<string>();
    for (let i = 0; i < 50; i++) trainImages.add(Buffer.from(train.getSync(i).image.data).toString('base64'));
    for (let i = 0; i < 50; i++) {
      expect(trainImages.has(Buffer.from(val.getSync(i).image.data).toString('base64'))).toBe(false);
      expect(trainImages.has(Buffer.from(other.getSync(i).image.data).toString('base64'))).toBe(false);
    }
    expect(trainImages.size).toBe(50);
  });

  it('has the documented defaults and a configurable resolution', () => {
    const d = new SyntheticShapes();
    expect([d.numClasses, d.length, d.size]).toEqual([10, 5000, 64]);
    expect(new SyntheticShapes({ split: 'val' }).length).toBe(1000);
    expect(d.classNames).toEqual([...SHAPE_CLASSES]);
    for (const size of [32, 96]) {
      const s = new SyntheticShapes({ size, length: 20 }).getSync(3);
      expect([s.image.width, s.image.height, s.image.data.length, s.mask!.length]).toEqual([size, size, size * size * 3, size * size]);
    }
    expect(() => new SyntheticShapes({ size: 8 })).toThrow(RangeError);
  });

  it("clutter scales the 'scene' background variation and the distractors; 1 is the default scene", () => {
    const full = new SyntheticShapes({ style: 'scene', length: 40 });
    const same = new SyntheticShapes({ style: 'scene', length: 40, clutter: 1 });
    const calm = new SyntheticShapes({ style: 'scene', length: 40, clutter: 0 });
    // Mean per-channel standard deviation of the background pixels (outside the object mask).
    const bgSpread = (ds: SyntheticShapes) => {
      let total = 0;
      for (let i = 0; i < ds.length; i++) {
        const { image, mask } = ds.getSync(i);
        for (let ch = 0; ch < 3; ch++) {
          let n = 0, sum = 0, sq = 0;
          for (let p = 0; p < mask!.length; p++) {
            if (mask![p]) continue;
            const v = image.data[p * 3 + ch]!;
            n++; sum += v; sq += v * v;
          }
          total += Math.sqrt(sq / n - (sum / n) ** 2);
        }
      }
      return total / (3 * ds.length);
    };
    for (let i = 0; i < 5; i++) {
      expect(Buffer.compare(Buffer.from(same.getSync(i).image.data), Buffer.from(full.getSync(i).image.data)), 'clutter 1 = default').toBe(0);
      expect(calm.getSync(i).label).toBe(full.getSync(i).label);
    }
    const [spreadFull, spreadCalm] = [bgSpread(full), bgSpread(calm)];
    expect(spreadCalm).toBeLessThan(spreadFull / 3);
    // With clutter 0 only pixel noise (σ 2–9 levels) and the occluding line are left.
    expect(spreadCalm).toBeLessThan(12);
    expect(() => new SyntheticShapes({ style: 'scene', clutter: 1.5 })).toThrow(/clutter must be in \[0, 1\]/);
    expect(() => new SyntheticShapes({ clutter: 0.5 })).toThrow(/clutter applies to style 'scene' only/);
  });

  it("'confetti' (the default): a stationary colour-confetti background, a white upright object", () => {
    const d = new SyntheticShapes({ length: 60 });
    expect([d.style, d.scale, d.rotation]).toEqual(['confetti', [0.6, 0.9], 9]);
    const scene = new SyntheticShapes({ style: 'scene', length: 60 });
    // Per image: mean background colour (outside the mask) and how far object pixels are from grey.
    const stats = (ds: SyntheticShapes) => {
      const means: number[][] = [];
      let chroma = 0;
      let objectPixels = 0;
      for (let i = 0; i < ds.length; i++) {
        const { image, mask } = ds.getSync(i);
        const m = [0, 0, 0];
        let n = 0;
        for (let p = 0; p < mask!.length; p++) {
          const [r, g, b] = [image.data[3 * p]!, image.data[3 * p + 1]!, image.data[3 * p + 2]!];
          if (mask![p]) {
            chroma += Math.max(r, g, b) - Math.min(r, g, b);
            objectPixels++;
          } else {
            m[0] += r; m[1] += g; m[2] += b; n++;
          }
        }
        means.push(m.map((v) => v / n));
      }
      // Spread across images of the per-image background mean (mean over channels of the std).
      const spread = [0, 1, 2].reduce((acc, ch) => {
        const v = means.map((m) => m[ch]!);
        const mu = v.reduce((a, b) => a + b) / v.length;
        return acc + Math.sqrt(v.reduce((a, b) => a + (b - mu) ** 2, 0) / v.length) / 3;
      }, 0);
      return { spread, chroma: chroma / objectPixels };
    };
    const c = stats(d);
    const s = stats(scene);
    // Every confetti image has nearly the same mean colour (~1000 independent cells), unlike scenes.
    expect(c.spread).toBeLessThan(6);
    expect(s.spread).toBeGreaterThan(4 * c.spread);
    // Object pixels are white up to the pixel noise (and edge pixels blended with the confetti).
    expect(c.chroma).toBeLessThan(30);
    expect(s.chroma).toBeGreaterThan(2 * c.chroma);
    expect(() => new SyntheticShapes({ rotation: 200 })).toThrow(/rotation must be in \[0, 180\]/);
    expect(() => new SyntheticShapes({ style: 'photo' as never })).toThrow(/style must be 'confetti' or 'scene'/);
  });

  it("the command-line specs 'synthetic[:split]' and 'synthetic-scene[:split]'", () => {
    const a = openDataset('synthetic', { defaultSplit: 'train', syntheticLength: 10 }) as SyntheticShapes;
    const b = openDataset('synthetic-scene:val', { defaultSplit: 'train', syntheticSize: 32 }) as SyntheticShapes;
    expect([a.style, a.split, a.length, a.size]).toEqual(['confetti', 'train', 10, 64]);
    expect([b.style, b.split, b.length, b.size]).toEqual(['scene', 'val', 1000, 32]);
    expect(() => openDataset('synthetic-photo', { defaultSplit: 'val' })).toThrow(/'synthetic-scene:val'/);
  });

  it('rotation bounds how far objects turn from upright', () => {
    // An upright arrow points right: its mask's mass is spread along x, not y. With any rotation
    // log(var x / var y) averages to 0.
    const anisotropy = (rotation: number) => {
      const d = new SyntheticShapes({ length: 400, rotation });
      let sum = 0;
      let n = 0;
      for (let i = 0; i < d.length; i++) {
        if (SHAPE_CLASSES[d.labelOf(i)] !== 'arrow') continue;
        const { mask } = d.getSync(i);
        let [m, sx, sy, sxx, syy] = [0, 0, 0, 0, 0];
        for (let y = 0; y < 64; y++) for (let x = 0; x < 64; x++) if (mask![y * 64 + x]) { m++; sx += x; sy += y; sxx += x * x; syy += y * y; }
        sum += Math.log((sxx / m - (sx / m) ** 2) / (syy / m - (sy / m) ** 2));
        n++;
      }
      return sum / n;
    };
    expect(anisotropy(0)).toBeGreaterThan(Math.log(2));
    expect(anisotropy(9)).toBeGreaterThan(Math.log(2));
    expect(Math.abs(anisotropy(180))).toBeLessThan(0.6); // 40 arrows: 2.1 upright, 0.25 at any angle
  });

  it('balances labels exactly over whole blocks and within one otherwise', () => {
    for (const length of [1000, 1003]) {
      const d = new SyntheticShapes({ length, split: 'val' });
      const counts = new Array(10).fill(0);
      for (let i = 0; i < length; i++) counts[d.labelOf(i)]++;
      expect(Math.max(...counts) - Math.min(...counts)).toBeLessThanOrEqual(length % 10 === 0 ? 0 : 1);
      expect(counts.reduce((s, c) => s + c, 0)).toBe(length);
    }
    // labelOf agrees with the drawn sample.
    const d = new SyntheticShapes({ length: 30 });
    for (let i = 0; i < 30; i++) expect(d.getSync(i).label).toBe(d.labelOf(i));
  });

  it.each([
    ['scene', 0.45], // a disc of the largest scale covers π·0.35² ≈ 0.38
    ['confetti', 0.7], // π·0.45² ≈ 0.64
  ] as const)('masks are non-empty 0/1 maps of an object that lies inside the image (%s)', (style, maxArea) => {
    const size = 64;
    const d = new SyntheticShapes({ style, length: 300, size });
    const perClassArea = new Array(10).fill(0);
    for (let i = 0; i < d.length; i++) {
      const { mask, label, image } = d.getSync(i);
      let area = 0;
      let onBorder = 0;
      let notBinary = 0;
      for (let y = 0; y < size; y++) {
        for (let x = 0; x < size; x++) {
          const m = mask![y * size + x]!;
          if (m > 1) notBinary++;
          area += m;
          if (m && (x === 0 || y === 0 || x === size - 1 || y === size - 1)) onBorder++;
        }
      }
      expect(notBinary).toBe(0);
      expect(area, `sample ${i} (${SHAPE_CLASSES[label]})`).toBeGreaterThan(15);
      expect(area / (size * size)).toBeLessThan(maxArea);
      expect(onBorder, `sample ${i} touches the border`).toBe(0);
      perClassArea[label] += area;
      expect(image.data.length).toBe(size * size * 3);
    }
    // Filled shapes cover more than outlines and patterns of the same size.
    const mean = (c: string): number => perClassArea[SHAPE_CLASSES.indexOf(c as never)] / 30;
    expect(mean('disc')).toBeGreaterThan(1.5 * mean('ring'));
    expect(mean('disc')).toBeGreaterThan(1.5 * mean('square_outline'));
  });

  // 'confetti': the white object's area shows in the mean brightness (a disc is brighter than a
  // ring), so mean colour scores 30 % there; 'scene' (random object colours) scores near chance.
  it.each([
    ['confetti', 0.35],
    ['scene', 0.25],
  ] as const)('colour alone cannot solve it: nearest class mean of mean RGB stays low (%s)', (style, bar) => {
    const meanRgb = (s: Sample): number[] => {
      const d = s.image.data;
      const m = [0, 0, 0];
      for (let p = 0; p < d.length; p += 3) for (let c = 0; c < 3; c++) m[c]! += d[p + c]!;
      return m.map((v) => (v * 3) / d.length);
    };
    const train = new SyntheticShapes({ style, split: 'train', length: 1000 });
    const val = new SyntheticShapes({ style, split: 'val', length: 500 });
    const sums = Array.from({ length: 10 }, () => [0, 0, 0]);
    const counts = new Array(10).fill(0);
    for (let i = 0; i < train.length; i++) {
      const s = train.getSync(i);
      meanRgb(s).forEach((v, c) => (sums[s.label]![c]! += v));
      counts[s.label]++;
    }
    const centroids = sums.map((s, k) => s.map((v) => v / counts[k]));
    let correct = 0;
    for (let i = 0; i < val.length; i++) {
      const s = val.getSync(i);
      const m = meanRgb(s);
      let best = 0;
      let bestD = Infinity;
      centroids.forEach((c, k) => {
        const dist = (c[0]! - m[0]!) ** 2 + (c[1]! - m[1]!) ** 2 + (c[2]! - m[2]!) ** 2;
        if (dist < bestD) [best, bestD] = [k, dist];
      });
      if (best === s.label) correct++;
    }
    const accuracy = correct / val.length;
    expect(accuracy).toBeLessThan(bar); // chance is 0.10
  });

  it.each(['confetti', 'scene'] as const)('generates 1000 64×64 samples quickly (%s)', (style) => {
    const d = new SyntheticShapes({ style, length: 1000 });
    const t0 = performance.now();
    for (let i = 0; i < d.length; i++) d.getSync(i);
    const ms = performance.now() - t0;
    // ~0.2 ms per sample on one idle core; generous for a loaded shared machine.
    expect(ms).toBeLessThan(3000);
  });

  it('renders a sample grid as a PNG', () => {
    const d = new SyntheticShapes({ length: 200, size: 32 });
    const samples = d.examplesByClass(3);
    expect(samples.map((s) => s.label)).toEqual(SHAPE_CLASSES.flatMap((_, c) => [c, c, c]));
    const png = renderSampleGrid(samples, { cols: 3, zoom: 2, masks: true, gap: 2 });
    const img = decodeImage(png);
    expect([img.width, img.height]).toEqual([3 * (2 * 64 + 1) + 4 * 2, 10 * 64 + 11 * 2]);
  });
});

// ----------------------------------------------------------------------------------------------
// DataLoader
// ----------------------------------------------------------------------------------------------

/** A tiny in-memory dataset; indices in `bad` reject with SampleReadError, in `broken` with a plain Error. */
class Toy implements Dataset {
  readonly numClasses = 3;
  readonly classNames = ['a', 'b', 'c'];
  readonly calls: number[] = [];
  constructor(
    readonly length: number,
    readonly bad = new Set<number>(),
    readonly broken = new Set<number>(),
  ) {}
  async get(i: number): Promise<Sample> {
    this.calls.push(i);
    if (this.bad.has(i)) throw new SampleReadError(`toy/${i}.png`, 'corrupt');
    if (this.broken.has(i)) throw new Error(`bug at ${i}`);
    return { image: { width: 1, height: 1, data: new Uint8Array([i & 255, 0, 0]) }, label: i % 3 };
  }
}

async function collect(loader: DataLoader, epochs: number): Promise<number[][]> {
  const out: number[][] = [];
  for (let e = 0; e < epochs; e++) for await (const b of loader.batches()) out.push(b.indices);
  return out;
}

describe('DataLoader', () => {
  it('visits a seeded permutation per epoch; same seed → same order', () => {
    const a = new DataLoader(new Toy(50), { batchSize: 4, seed: 5 });
    const b = new DataLoader(new Toy(50), { batchSize: 4, seed: 5 });
    const c = new DataLoader(new Toy(50), { batchSize: 4, seed: 6 });
    for (const e of [0, 1, 2]) {
      const o = a.order(e);
      expect([...o].sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i));
      expect([...b.order(e)]).toEqual([...o]);
    }
    expect([...a.order(0)]).not.toEqual([...a.order(1)]);
    // seed + epoch: seed 5 epoch 1 is seed 6 epoch 0, as DistributedSampler seeds it.
    expect([...a.order(1)]).toEqual([...c.order(0)]);
    expect([...new DataLoader(new Toy(7), { batchSize: 2, shuffle: false }).order(3)]).toEqual([0, 1, 2, 3, 4, 5, 6]);
  });

  it('batches the order, dropping or keeping the last incomplete batch', async () => {
    const drop = new DataLoader(new Toy(10), { batchSize: 3, seed: 1 });
    const batches = await collect(drop, 1);
    expect(batches.map((b) => b.length)).toEqual([3, 3, 3]);
    expect(batches.flat()).toEqual([...drop.order(0)].slice(0, 9));
    expect(drop.position).toEqual({ epoch: 1, index: 0 });
    expect(drop.batchesPerEpoch).toBe(3);
    const keep = new DataLoader(new Toy(10), { batchSize: 3, seed: 1, dropLast: false });
    const kb = await collect(keep, 1);
    expect(kb.map((b) => b.length)).toEqual([3, 3, 3, 1]);
    expect(kb.flat()).toEqual([...keep.order(0)]);
    expect(keep.batchesPerEpoch).toBe(4);
  });

  it('resumes exactly from a saved position, with and without prefetching', async () => {
    const full = await collect(new DataLoader(new Toy(23), { batchSize: 4, seed: 9 }), 3);
    for (const prefetch of [0, 1, 3]) {
      const first = new DataLoader(new Toy(23), { batchSize: 4, seed: 9, prefetch });
      const seen: number[][] = [];
      let saved = first.position;
      // Epoch 0 completely, then 2 batches of epoch 1, then "crash".
      for await (const b of first.batches()) seen.push(b.indices);
      for await (const b of first.batches()) {
        seen.push(b.indices);
        saved = b.next;
        if (seen.length === 7) break;
      }
      expect(first.position).toEqual(saved);
      expect(saved).toEqual({ epoch: 1, index: 8 });
      const resumed = new DataLoader(new Toy(23), { batchSize: 4, seed: 9, prefetch });
      resumed.seek(saved);
      for (let e = saved.epoch; e < 3; e++) for await (const b of resumed.batches()) seen.push(b.indices);
      expect(seen).toEqual(full);
    }
  });

  it('prefetches the next batch while the consumer holds the current one', async () => {
    const toy = new Toy(40);
    const loader = new DataLoader(toy, { batchSize: 5, shuffle: false, prefetch: 1 });
    const it = loader.batches();
    const first = await it.next();
    expect(first.value!.indices).toEqual([0, 1, 2, 3, 4]);
    await new Promise((r) => setTimeout(r, 20)); // the consumer "works"
    expect(toy.calls).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    await it.return(undefined);
    const none = new Toy(40);
    const lazy = new DataLoader(none, { batchSize: 5, shuffle: false, prefetch: 0 });
    const it0 = lazy.batches();
    await it0.next();
    await new Promise((r) => setTimeout(r, 20));
    expect(none.calls).toEqual([0, 1, 2, 3, 4]);
    await it0.return(undefined);
  });

  it('skips unreadable samples, refills the batch, counts them and warns once', async () => {
    const warnings: string[] = [];
    const toy = new Toy(20, new Set([3, 11, 12]));
    const loader = new DataLoader(toy, { batchSize: 4, shuffle: false, onWarning: (m) => warnings.push(m) });
    const e0 = await collect(loader, 1);
    expect(e0).toEqual([
      [0, 1, 2, 4],
      [5, 6, 7, 8],
      [9, 10, 13, 14],
      [15, 16, 17, 18],
    ]);
    expect(loader.skipped).toBe(3);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/skipped 3 unreadable samples \(first: toy\/3\.png: corrupt\)/);
    // Later epochs: known-bad samples are not read again, no new warning, same batches.
    const before = toy.calls.length;
    const e1 = await collect(loader, 1);
    expect(e1).toEqual(e0);
    expect(toy.calls.slice(before)).not.toContain(3);
    expect(warnings).toHaveLength(1);
    expect(loader.batchesPerEpoch).toBe(4);
    // Resuming mid-epoch with a fresh loader (bad set unknown) gives the same batches.
    const fresh = new DataLoader(new Toy(20, new Set([3, 11, 12])), { batchSize: 4, shuffle: false, onWarning: () => undefined });
    fresh.seek({ epoch: 0, index: 9 });
    expect(await collect(fresh, 1)).toEqual(e0.slice(2));
  });

  it('lets errors other than SampleReadError propagate', async () => {
    const loader = new DataLoader(new Toy(12, new Set(), new Set([6])), { batchSize: 4, shuffle: false });
    await expect(collect(loader, 1)).rejects.toThrow(/bug at 6/);
    const wrongLabels: Dataset = { numClasses: 2, classNames: ['x', 'y'], length: 4, get: (i) => new Toy(4).get(i) };
    await expect(collect(new DataLoader(wrongLabels, { batchSize: 4, shuffle: false }), 1)).rejects.toThrow(/has label 2, outside \[0, 2\)/);
  });
});

// ----------------------------------------------------------------------------------------------
// ImageFolder and worker decoding
// ----------------------------------------------------------------------------------------------

/** root/cat/{0,1,2}.png, root/dog/{0,1,2}.png, a corrupt root/dog/broken.png, plus ignorable files. */
function makeImageFolder(): { root: string; pixels: Map<string, Uint8Array> } {
  const root = tempDir();
  const pixels = new Map<string, Uint8Array>();
  ['dog', 'cat'].forEach((cls, c) => {
    mkdirSync(join(root, cls, 'sub'), { recursive: true });
    for (let k = 0; k < 3; k++) {
      const w = 3 + k;
      const h = 2 + c;
      const px = pattern(w, h, 10 * c + k);
      const path = k === 2 ? join(root, cls, 'sub', `${k}.png`) : join(root, cls, `${k}.png`);
      writeFileSync(path, encodePng(w, h, px, 3));
      pixels.set(path, px);
    }
  });
  const good = encodePng(4, 4, pattern(4, 4, 1), 3);
  writeFileSync(join(root, 'dog', 'broken.png'), good.subarray(0, good.length - 20)); // truncated
  writeFileSync(join(root, 'dog', 'notes.txt'), 'not an image');
  writeFileSync(join(root, 'dog', '.DS_Store'), 'junk');
  writeFileSync(join(root, 'cat', 'photo.webp'), 'RIFF....WEBP');
  mkdirSync(join(root, '.ipynb_checkpoints'));
  return { root, pixels };
}

describe('ImageFolder', () => {
  it('lists classes and files in torchvision order', () => {
    const { root } = makeImageFolder();
    const scan = scanImageFolder(root);
    expect(scan.classNames).toEqual(['cat', 'dog']);
    expect(scan.files.map((f) => [f.path.slice(root.length + 1), f.label])).toEqual([
      ['cat/0.png', 0],
      ['cat/1.png', 0],
      ['cat/sub/2.png', 0],
      ['dog/0.png', 1],
      ['dog/1.png', 1],
      ['dog/broken.png', 1],
      ['dog/sub/2.png', 1],
    ]);
    expect(scan.unsupported.map((p) => p.slice(root.length + 1))).toEqual(['cat/photo.webp']);
  });

  it('gives clear errors for a missing, empty or class-less folder', () => {
    expect(() => scanImageFolder(join(tempDir(), 'nope'))).toThrow(/cannot open/);
    const flat = tempDir();
    writeFileSync(join(flat, 'a.png'), encodePng(1, 1, new Uint8Array(3), 3));
    expect(() => scanImageFolder(flat)).toThrow(/no class sub-folders/);
    const oneEmpty = tempDir();
    mkdirSync(join(oneEmpty, 'a'));
    mkdirSync(join(oneEmpty, 'b'));
    writeFileSync(join(oneEmpty, 'a', 'x.png'), encodePng(1, 1, new Uint8Array(3), 3));
    expect(() => scanImageFolder(oneEmpty)).toThrow(/class folder b/);
    expect(scanImageFolder(oneEmpty, { allowEmptyClasses: true }).classNames).toEqual(['a', 'b']);
  });

  it('main thread: decodes every good image, skips the corrupt one with one warning', async () => {
    const { root, pixels } = makeImageFolder();
    const warnings: string[] = [];
    const folder = openImageFolder(root, { workers: 0, onWarning: (m) => warnings.push(m) });
    expect(folder.decoder).toMatch(/main thread/);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/ignored 1 image file .*\.webp/);
    await expect(folder.get(5)).rejects.toBeInstanceOf(SampleReadError);

    const loader = new DataLoader(folder, { batchSize: 4, seed: 2, dropLast: false, onWarning: (m) => warnings.push(m) });
    const got = new Map<number, Sample>();
    for (let e = 0; e < 2; e++) for await (const b of loader.batches()) b.indices.forEach((i, k) => got.set(i, b.samples[k]!));
    expect(loader.skipped).toBe(1);
    expect(warnings).toHaveLength(2);
    expect(warnings[1]).toMatch(/skipped 1 unreadable sample \(first: .*dog\/broken\.png: corrupt or truncated PNG/);
    expect([...got.keys()].sort()).toEqual([0, 1, 2, 3, 4, 6]);
    for (const [i, s] of got) {
      expect(Buffer.from(s.image.data).equals(Buffer.from(pixels.get(folder.describe(i))!))).toBe(true);
      expect(s.label).toBe(folder.labelOf(i));
    }
    await folder.close();
  });
});

describe('worker-thread decoding', () => {
  let workerUrl: string;
  beforeAll(async () => {
    // Bundle the worker entry exactly as scripts/build.mjs does, from the current sources.
    const out = join(tempDir(), 'decode-worker.mjs');
    await build({
      entryPoints: [fileURLToPath(new URL('../../train/data/decode-worker-node.ts', import.meta.url))],
      outfile: out,
      bundle: true,
      format: 'esm',
      platform: 'node',
      target: 'node20',
      logLevel: 'warning',
    });
    workerUrl = out;
  });

  it('gives the same bytes as main-thread decoding (PNG and JPEG), errors included', async () => {
    const pool = new DecodePool({ workers: 2, workerUrl });
    try {
      const inputs: Uint8Array[] = [];
      for (let k = 0; k < 6; k++) inputs.push(encodePng(5 + k, 3 + k, pattern(5 + k, 3 + k, k), 3));
      for (let k = 0; k < 4; k++) {
        const w = 9 + 3 * k;
        const h = 7 + k;
        const rgba = new Uint8Array(w * h * 4);
        for (let i = 0; i < rgba.length; i++) rgba[i] = (i * 53 + k * 11) & 255;
        inputs.push(new Uint8Array(jpeg.encode({ width: w, height: h, data: rgba }, 85).data));
      }
      const decoded = await Promise.all(inputs.map((b) => pool.decodeBytes(b)));
      decoded.forEach((img, k) => {
        const ref = decodeImage(inputs[k]!);
        expect([img.width, img.height]).toEqual([ref.width, ref.height]);
        expect(Buffer.from(img.data).equals(Buffer.from(ref.data))).toBe(true);
      });
      await expect(pool.decodeBytes(new Uint8Array([1, 2, 3]))).rejects.toThrow(/not a JPEG or PNG/);
      await expect(pool.decodeFile(join(tempDir(), 'missing.png'))).rejects.toThrow(/ENOENT/);
    } finally {
      await pool.close();
    }
  });

  it('ImageFolder through the pool: same samples as the main thread, corrupt file skipped', async () => {
    const { root } = makeImageFolder();
    const quiet = (): void => undefined;
    const workers = openImageFolder(root, { workers: 2, workerUrl, onWarning: quiet });
    const main = openImageFolder(root, { workers: 0, onWarning: quiet });
    expect(workers.decoder).toBe('2 worker threads');
    try {
      const warnings: string[] = [];
      const a = new DataLoader(workers, { batchSize: 3, seed: 4, onWarning: (m) => warnings.push(m) });
      const b = new DataLoader(main, { batchSize: 3, seed: 4, onWarning: quiet });
      const ba: Batch[] = [];
      const bb: Batch[] = [];
      for await (const x of a.batches()) ba.push(x);
      for await (const x of b.batches()) bb.push(x);
      expect(ba.map((x) => x.indices)).toEqual(bb.map((x) => x.indices));
      expect(ba.length).toBe(2);
      ba.forEach((x, k) => x.samples.forEach((s, j) => expect(Buffer.from(s.image.data).equals(Buffer.from(bb[k]!.samples[j]!.image.data))).toBe(true)));
      expect(a.skipped).toBe(1);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/broken\.png/);
    } finally {
      await workers.close();
      await main.close();
    }
  });

  it('a worker script that cannot load is an error, not a skipped sample', async () => {
    const script = join(tempDir(), 'broken-worker.mjs');
    writeFileSync(script, 'throw new Error("cannot load");');
    const { root } = makeImageFolder();
    const folder = openImageFolder(root, { workers: 1, workerUrl: script, onWarning: () => undefined });
    try {
      const loader = new DataLoader(folder, { batchSize: 2, onWarning: () => undefined });
      await expect(collect(loader, 1)).rejects.toBeInstanceOf(ReaderFailedError);
      expect(loader.skipped).toBe(0);
    } finally {
      await folder.close();
    }
    expect(() => new DecodePool({ workerUrl: join(tempDir(), 'absent.mjs') })).toThrow(ReaderFailedError);
  });
});

// ----------------------------------------------------------------------------------------------
// CIFAR
// ----------------------------------------------------------------------------------------------

/** `count` CIFAR records; record r has labels `labels(r)` and pixel byte p of channel ch = f(r, ch, p). */
function cifarRecords(count: number, labelBytes: (r: number) => number[]): Uint8Array {
  const n = labelBytes(0).length;
  const rec = n + 3072;
  const out = new Uint8Array(count * rec);
  for (let r = 0; r < count; r++) {
    out.set(labelBytes(r), r * rec);
    for (let ch = 0; ch < 3; ch++) for (let p = 0; p < 1024; p++) out[r * rec + n + ch * 1024 + p] = (r * 7 + ch * 50 + p) & 255;
  }
  return out;
}

describe('CIFAR', () => {
  it('reads CIFAR-10 train (5 batches) and test, planar → RGB', () => {
    const dir = join(tempDir(), 'cifar-10-batches-bin');
    mkdirSync(dir);
    for (let b = 1; b <= 5; b++) writeFileSync(join(dir, `data_batch_${b}.bin`), cifarRecords(3, (r) => [(b + r) % 10]));
    writeFileSync(join(dir, 'test_batch.bin'), cifarRecords(4, (r) => [9 - r]));
    // The parent folder works too (the sub-folder is found).
    const train = openCifar(join(dir, '..'), { split: 'train' });
    expect([train.variant, train.length, train.numClasses]).toEqual(['cifar10', 15, 10]);
    expect(train.classNames[0]).toBe('airplane');
    const s = train.getSync(7); // batch 3, record 1
    expect(s.label).toBe((3 + 1) % 10);
    expect([s.image.width, s.image.height]).toEqual([32, 32]);
    // pixel (x=5, y=2) = index 69: R, G, B from the three planes.
    expect([...s.image.data.subarray(3 * 69, 3 * 69 + 3)]).toEqual([(7 + 69) & 255, (7 + 50 + 69) & 255, (7 + 100 + 69) & 255]);
    expect(train.describe(7)).toMatch(/data_batch_3\.bin\[1\]$/);
    const test = openCifar(dir, { split: 'test' });
    expect(test.length).toBe(4);
    expect([0, 1, 2, 3].map((i) => test.getSync(i).label)).toEqual([9, 8, 7, 6]);
    // The held-out split of a CIFAR training spec is its test batch (webdino train evaluates on it).
    const parent = join(dir, '..');
    expect(heldOutSpec(parent)).toBe(`cifar10:${parent}:test`);
    expect(heldOutSpec(`cifar10:${dir}`)).toBe(`cifar10:${dir}:test`);
    expect(heldOutSpec(`cifar10:${dir}:test`)).toBeNull();
    expect(openDataset(heldOutSpec(parent)!, { defaultSplit: 'train' }).length).toBe(4);
    rmSync(join(dir, 'test_batch.bin'));
    expect(heldOutSpec(parent)).toBeNull();
  });

  it('reads CIFAR-100 fine and coarse labels, class names from the archive when present', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'train.bin'), cifarRecords(5, (r) => [r, 90 + r]));
    writeFileSync(join(dir, 'coarse_label_names.txt'), Array.from({ length: 20 }, (_, i) => `coarse${i}`).join('\n') + '\n');
    const fine = openCifar(dir, { split: 'train' });
    expect([fine.variant, fine.numClasses, fine.length]).toEqual(['cifar100', 100, 5]);
    expect(fine.getSync(2).label).toBe(92);
    expect(fine.classNames[92]).toBe('tulip');
    expect(fine.classNames[87]).toBe('television');
    const coarse = openCifar(dir, { split: 'train', labels: 'coarse' });
    expect(coarse.numClasses).toBe(20);
    expect(coarse.getSync(2).label).toBe(2);
    expect(coarse.classNames[2]).toBe('coarse2');
    expect(coarse.getSync(4).image.data[0]).toBe((4 * 7) & 255);
  });

  it('says which files are missing and when sizes are wrong', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'data_batch_1.bin'), cifarRecords(2, () => [1]));
    expect(() => openCifar(dir, { split: 'train' })).toThrow(/lacks data_batch_2\.bin, data_batch_3\.bin, data_batch_4\.bin, data_batch_5\.bin/);
    expect(() => openCifar(dir, { split: 'test' })).toThrow(/test_batch\.bin/);
    const truncated = cifarRecords(2, () => [1]).subarray(0, 5000);
    expect(() => new Cifar({ variant: 'cifar10', files: [{ name: 'x.bin', bytes: truncated }] })).toThrow(/5000 bytes, not a whole number of cifar10 records of 3073 bytes/);
    const asTen = cifarRecords(3, () => [1, 2]);
    expect(() => new Cifar({ variant: 'cifar10', files: [{ name: 'z.bin', bytes: asTen }] })).toThrow(/fits cifar100 records: wrong variant/);
    const badLabel = cifarRecords(2, () => [10]);
    expect(() => new Cifar({ variant: 'cifar10', files: [{ name: 'w.bin', bytes: badLabel }] })).toThrow(/label 10, expected < 10/);
  });
});

describe('isGreyscale', () => {
  /** A dataset of 1×2 images whose pixel bytes are given; `bad` indices cannot be read. */
  function pixels(images: number[][], bad: number[] = []): Dataset {
    return {
      numClasses: 1,
      classNames: ['a'],
      length: images.length,
      get: async (i) => {
        if (bad.includes(i)) throw new SampleReadError(`img${i}`, 'corrupt');
        return { image: { width: 2, height: 1, data: Uint8Array.from(images[i]) }, label: 0 };
      },
    };
  }
  it('is true when every sampled pixel has R ≈ G ≈ B (3 levels by default), false at the first coloured pixel', async () => {
    expect(await isGreyscale(pixels([[0, 0, 0, 9, 9, 9], [200, 200, 200, 255, 255, 255]]))).toBe(true);
    expect(await isGreyscale(pixels([[0, 0, 0, 9, 9, 9], [200, 200, 200, 255, 255, 254]]))).toBe(true); // JPEG rounding
    expect(await isGreyscale(pixels([[0, 0, 0, 9, 9, 9], [200, 200, 200, 255, 255, 254]]), 32, 0)).toBe(false);
    expect(await isGreyscale(pixels([[0, 0, 0, 9, 9, 9], [200, 200, 200, 255, 251, 255]]))).toBe(false);
    expect(await isGreyscale(pixels([[0, 4, 0, 9, 9, 9]]))).toBe(false);
    expect(await isGreyscale(pixels([[0, 0, 0, 9, 9, 13]]))).toBe(false);
    // Unreadable samples are passed over; none readable is not grey.
    expect(await isGreyscale(pixels([[1, 1, 1, 2, 2, 2], [0, 90, 0, 0, 0, 0]], [1]))).toBe(true);
    expect(await isGreyscale(pixels([[1, 1, 1, 2, 2, 2]], [0]))).toBe(false);
  });
  it('calls the embedded shapes coloured', async () => {
    expect(await isGreyscale(new SyntheticShapes({ length: 50 }))).toBe(false);
  });
});
