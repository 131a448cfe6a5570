/**
 * `webdino eval segment` and eval/segment.ts: the Jaccard index of DINO's 60 %-mass CLS-attention
 * masks against ground-truth masks.
 * - hand-computed cases: th_attn on a 2x2 grid, nearest upsampling to the image (also to a size that
 *   is not a multiple of the grid), Jaccard per head;
 * - the command on a tiny random ViT, on the embedded synthetic:val masks and on a folder of
 *   image/mask pairs, equals a reference built from another code path (computeAttentionMaps of
 *   `webdino attention`, a sort-based mask, pixel-by-pixel IoU);
 * - mask files: 0/1, 0/255 and coloured masks, size mismatches, folders without pairs.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../index.js';
import { encodePng, type RgbImage } from '../../models/io/image.js';
import type { VisionTransformer } from '../../models/vit.js';
import { computeAttentionMaps } from '../../eval/embed.js';
import { SyntheticShapes } from '../../train/data/synthetic.js';
import { attentionJaccard, maskToImage } from '../../eval/segment.js';
import { binaryMask, openMaskFolder } from '../../eval/segment-node.js';
import { getEngine } from '../helpers.js';
import { tinyBackbone, webdino } from './cli.js';

let dir: string;
let model: VisionTransformer;
let weights: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'webdino-segment-'));
  ({ model, path: weights } = await tinyBackbone(dir));
});

afterAll(() => {
  model?.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Reference mask of one head: the largest patches, in order, until the mass before them reaches t. */
function refMask(a: ArrayLike<number>, t: number): Uint8Array {
  const n = a.length;
  let total = 0;
  for (let i = 0; i < n; i++) total += a[i];
  const order = [...Array(n).keys()].sort((x, y) => a[y] - a[x]);
  const keep = new Uint8Array(n);
  let before = 0;
  for (const i of order) {
    if (before / total >= t) break;
    keep[i] = 1;
    before += a[i];
  }
  return keep;
}

/** Reference Jaccard: upsample ×p to side×side, nearest-resize to W×H, count pixel by pixel. */
function refJaccard(a: ArrayLike<number>, h: number, p: number, gt: ArrayLike<number>, W: number, H: number, t: number): number {
  const keep = refMask(a, t);
  const side = h * p;
  let inter = 0;
  let union = 0;
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const sy = Math.floor((y * side) / H);
      const sx = Math.floor((x * side) / W);
      const pred = keep[Math.floor(sy / p) * h + Math.floor(sx / p)] === 1;
      const g = gt[y * W + x] !== 0;
      if (pred && g) inter++;
      if (pred || g) union++;
    }
  }
  return union ? inter / union : 1;
}

/** Per-image, per-head reference Jaccard of the tiny model (input side 32) on these samples. */
async function reference(samples: { image: RgbImage; mask: Uint8Array }[], t = 0.6): Promise<number[][]> {
  const wd = await getEngine();
  const out: number[][] = [];
  for (const s of samples) {
    const m = await computeAttentionMaps(wd, model, s.image, 32);
    const n = m.h * m.w;
    out.push([0, 1].map((k) => refJaccard(m.attention.subarray(k * n, (k + 1) * n), m.h, 8, s.mask, s.image.width, s.image.height, t)));
  }
  return out;
}

interface SegmentJson {
  images: number;
  jaccard_per_head: number[];
  best_head: number;
  best_head_jaccard: number;
  oracle_jaccard: number;
  per_image: number[][];
}

function checkSummary(j: SegmentJson, ref: number[][]): void {
  expect(j.images).toBe(ref.length);
  for (let i = 0; i < ref.length; i++) for (let k = 0; k < 2; k++) expect(j.per_image[i][k]).toBeCloseTo(ref[i][k], 12);
  const mean = [0, 1].map((k) => ref.reduce((s, r) => s + r[k], 0) / ref.length);
  expect(j.jaccard_per_head[0]).toBeCloseTo(mean[0], 12);
  expect(j.jaccard_per_head[1]).toBeCloseTo(mean[1], 12);
  expect(j.best_head).toBe(mean[1] > mean[0] ? 1 : 0);
  expect(j.best_head_jaccard).toBeCloseTo(Math.max(...mean), 12);
  expect(j.oracle_jaccard).toBeCloseTo(ref.reduce((s, r) => s + Math.max(...r), 0) / ref.length, 12);
}

describe('Jaccard of attention masks (hand-computed)', () => {
  it('th_attn on a 2x2 grid, upsampled to 4x4, against a top-half mask', () => {
    // Head 0: [0.1, 0.5, 0.3, 0.1]: ascending 0.1, 0.1, 0.3, 0.5, cumsum 0.1, 0.2, 0.5, 1.0;
    // cumsum > 0.4 keeps cells 2 and 1 (top-right and bottom-left 2x2 blocks, 8 pixels).
    // Ground truth: rows 0-1 (8 pixels). Intersection: the top-right block (4), union 12: J = 1/3.
    // Head 1: [0.7, 0.1, 0.1, 0.1]: cumsum 0.1, 0.2, 0.3, 1.0 keeps cell 0 only (top-left block):
    // intersection 4, union 8: J = 1/2.
    const attn = [0.1, 0.5, 0.3, 0.1, 0.7, 0.1, 0.1, 0.1];
    const gt = [1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0];
    const j = attentionJaccard(attn, 2, 2, 2, gt, 4, 4, 0.6);
    expect(j[0]).toBeCloseTo(1 / 3, 15);
    expect(j[1]).toBeCloseTo(1 / 2, 15);
    // An empty ground truth against a non-empty mask: 0. Threshold 1 keeps every cell: J = 8/16.
    expect(Array.from(attentionJaccard(attn, 2, 2, 2, new Array(16).fill(0), 4, 4))).toEqual([0, 0]);
    expect(Array.from(attentionJaccard(attn, 2, 2, 2, gt, 4, 4, 1))).toEqual([0.5, 0.5]);
    expect(() => attentionJaccard(attn, 2, 2, 2, gt, 4, 5)).toThrow(RangeError);
  });

  it('nearest upsampling to a size that is not a multiple of the grid', () => {
    // 2x2 grid [a b; c d] to 5x3 (W x H): columns ⌊x·2/5⌋ = 0 0 0 1 1, rows ⌊y·2/3⌋ = 0 0 1.
    const up = maskToImage([1, 0, 0, 1], 2, 2, 3, 5);
    expect(Array.from(up)).toEqual([1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1]);
    // An integer factor is interpolate(scale_factor=p, nearest): every cell a p×p block.
    expect(Array.from(maskToImage([0, 1], 1, 2, 2, 4))).toEqual([0, 0, 1, 1, 0, 0, 1, 1]);
  });
});

describe('mask files', () => {
  const img = (w: number, h: number, f: (i: number) => [number, number, number]): RgbImage => {
    const data = new Uint8Array(w * h * 3);
    for (let i = 0; i < w * h; i++) data.set(f(i), 3 * i);
    return { width: w, height: h, data };
  };
  it('0/1, 0/255, coloured and all-black masks', () => {
    expect(Array.from(binaryMask(img(4, 1, (i) => (i % 2 ? [1, 1, 1] : [0, 0, 0]))))).toEqual([0, 1, 0, 1]);
    expect(Array.from(binaryMask(img(4, 1, (i) => [[0, 0, 0], [255, 255, 255], [3, 2, 0], [200, 200, 200]][i] as [number, number, number])))).toEqual([0, 1, 0, 1]);
    // VOC-like palette colours: dark red and dark blue are objects.
    expect(Array.from(binaryMask(img(3, 1, (i) => [[128, 0, 0], [0, 0, 0], [0, 0, 128]][i] as [number, number, number])))).toEqual([1, 0, 1]);
    expect(Array.from(binaryMask(img(2, 1, () => [0, 0, 0])))).toEqual([0, 0]);
  });

  it('layouts: images/ + masks/, flat NAME_mask.png; no pairs is an error', () => {
    const a = join(dir, 'layout-a');
    mkdirSync(join(a, 'images'), { recursive: true });
    mkdirSync(join(a, 'masks'));
    const png = encodePng(2, 2, new Uint8Array(12), 3);
    for (const n of ['x', 'y', 'z']) writeFileSync(join(a, 'images', `${n}.png`), png);
    for (const n of ['y', 'x', 'w']) writeFileSync(join(a, 'masks', `${n}.png`), png);
    const fa = openMaskFolder(a);
    expect(fa.pairs.map((p) => p.image)).toEqual([join(a, 'images', 'x.png'), join(a, 'images', 'y.png')]);
    expect(fa.unmatchedImages).toEqual([join(a, 'images', 'z.png')]);
    expect(fa.unmatchedMasks).toEqual([join(a, 'masks', 'w.png')]);
    const b = join(dir, 'layout-b');
    mkdirSync(b);
    for (const n of ['p.png', 'p_mask.png', 'q.png', 'q.mask.png', 'r.png']) writeFileSync(join(b, n), png);
    expect(openMaskFolder(b).pairs).toEqual([
      { image: join(b, 'p.png'), mask: join(b, 'p_mask.png') },
      { image: join(b, 'q.png'), mask: join(b, 'q.mask.png') },
    ]);
    const c = join(dir, 'layout-c');
    mkdirSync(c);
    writeFileSync(join(c, 'only.png'), png);
    expect(() => openMaskFolder(c)).toThrow(/no image\/mask pairs/);
  });
});

describe('webdino eval segment', () => {
  it('synthetic:val: per-head, best-head and oracle Jaccard equal the reference', async () => {
    const json = join(dir, 'synthetic.json');
    const r = await webdino('eval', 'segment', '--weights', weights, '--limit', '7', '--batch-size', '3', '--json', json);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/7 images of synthetic:val, input 32x32 \(4x4 patches\)/);
    expect(r.out).toMatch(/head 0: Jaccard \d+\.\d\d %\nhead 1: Jaccard \d+\.\d\d %\nbest head: [01], Jaccard/);
    const ds = new SyntheticShapes({ split: 'val', size: 64, length: 7 });
    const samples = Array.from({ length: 7 }, (_, i) => ds.getSync(i) as { image: RgbImage; mask: Uint8Array });
    const j = JSON.parse(readFileSync(json, 'utf8')) as SegmentJson;
    const ref = await reference(samples);
    checkSummary(j, ref);
    // The random model is not a constant: the values differ across images.
    expect(new Set(j.per_image.map((v) => v[0])).size).toBeGreaterThan(1);
  });

  it('a folder of image/mask pairs (non-square, not multiples of the patch); size mismatch fails', async () => {
    const f = join(dir, 'pairs');
    mkdirSync(f);
    const rng = new Rng(5);
    const samples: { image: RgbImage; mask: Uint8Array }[] = [];
    for (const [i, [w, h]] of [[40, 30], [37, 52], [33, 33]].entries()) {
      const data = new Uint8Array(w * h * 3).map(() => Math.floor(rng.uniform() * 256));
      const mask = new Uint8Array(w * h);
      const rgb = new Uint8Array(w * h * 3);
      // An ellipse of object pixels, written as a 0/255 RGB mask.
      for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
        if (((x - w / 2) / (w / 3)) ** 2 + ((y - h / 3) / (h / 4)) ** 2 <= 1) {
          mask[y * w + x] = 1;
          rgb.fill(255, 3 * (y * w + x), 3 * (y * w + x) + 3);
        }
      }
      writeFileSync(join(f, `im${i}.png`), encodePng(w, h, data, 3));
      writeFileSync(join(f, `im${i}_mask.png`), encodePng(w, h, rgb, 3));
      samples.push({ image: { width: w, height: h, data }, mask });
    }
    writeFileSync(join(f, 'lonely.png'), encodePng(4, 4, new Uint8Array(48), 3));
    const json = join(dir, 'pairs.json');
    const r = await webdino('eval', 'segment', '--weights', weights, '--data', f, '--json', json);
    expect(r.code).toBe(0);
    expect(r.err).toMatch(/left out 1 images without a mask and 0 masks without an image/);
    checkSummary(JSON.parse(readFileSync(json, 'utf8')) as SegmentJson, await reference(samples));

    writeFileSync(join(f, 'im1_mask.png'), encodePng(5, 5, new Uint8Array(75), 3));
    const bad = await webdino('eval', 'segment', '--weights', weights, '--data', f);
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/im1_mask\.png: the mask is 5x5, its image .*im1\.png is 37x52/);
  });

  it('usage errors and data without masks', async () => {
    expect((await webdino('eval', 'segment')).code).toBe(2);
    expect((await webdino('eval', 'segment', '--weights', weights, '--threshold', '2')).code).toBe(2);
    const r = await webdino('eval', 'segment', '--weights', weights, '--data', join(dir, 'nowhere'));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/nowhere: not a folder/);
  });
});
