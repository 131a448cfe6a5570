/**
 * `webdino visualize`, `eval knn`, `eval segment` and `eval linear` on DINOv2 / DINOv3 weights:
 * the golden fixtures made by the official code (test/fixtures/models/dinov2_dinov3/), a DINOv2
 * with 4 registers (safetensors; --heads 2, its width is not 64 per head) and a DINOv3 with 4
 * storage tokens and RoPE (.pth, no flags). Each command's figures equal the library's on the same
 * loaded model, whose pieces are checked against the official outputs in
 * test/models/dinov2-dinov3.test.ts (CLS attention without the register / storage columns,
 * forward_features); the probe features here are checked against the official outputs directly.
 * What would fail: a prefix token (register, storage) counted as a patch (grids of 4×4 + 4, PCA
 * pictures and masks off), the wrong family's transform, a command that refuses the weights.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../index.js';
import { loadBackbone } from '../../models/backbone-node.js';
import { decodeImage, encodePng, type RgbImage } from '../../models/io/image.js';
import { loadStateDict } from '../../models/io/state-dict.js';
import type { VisionTransformer } from '../../models/vit.js';
import { computeAttentionMaps } from '../../eval/embed.js';
import { datasetFeatures } from '../../eval/features.js';
import { knnClassify } from '../../eval/knn.js';
import { probeFeatures } from '../../eval/linear-probe.js';
import { heatmapRgb, overlayRgb, upsampleNearest } from '../../eval/attention-maps.js';
import { SyntheticShapes } from '../../train/data/synthetic.js';
import { firstN } from '../../train/eval-hooks-node.js';
import { getEngine } from '../helpers.js';
import { webdino } from './harness.js';

const fixtures = new URL('../fixtures/models/dinov2_dinov3/', import.meta.url);
type Host = { shape: number[]; data: Float32Array };

/** Reference mask of one head: the largest patches, in order, until the mass before them reaches t (DINO's th_attn). */
function refMask(a: ArrayLike<number>, t: number): Uint8Array {
  let total = 0;
  for (let i = 0; i < a.length; i++) total += a[i];
  const order = [...Array(a.length).keys()].sort((x, y) => a[y] - a[x]);
  const keep = new Uint8Array(a.length);
  let before = 0;
  for (const i of order) {
    if (before / total >= t) break;
    keep[i] = 1;
    before += a[i];
  }
  return keep;
}

/** Reference Jaccard: the h×h mask upsampled ×p, nearest-resized to W×H, counted pixel by pixel. */
function refJaccard(a: ArrayLike<number>, h: number, p: number, gt: ArrayLike<number>, W: number, H: number, t: number): number {
  const keep = refMask(a, t);
  const side = h * p;
  let inter = 0;
  let union = 0;
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const pred = keep[Math.floor(Math.floor((y * side) / H) / p) * h + Math.floor(Math.floor((x * side) / W) / p)] === 1;
      const g = gt[y * W + x] !== 0;
      if (pred && g) inter++;
      if (pred || g) union++;
    }
  }
  return union ? inter / union : 1;
}

/** max |got − want| / max |want|. */
function relErr(got: Float32Array, want: Float32Array): number {
  let e = 0;
  let m = 0;
  for (let i = 0; i < want.length; i++) {
    e = Math.max(e, Math.abs(got[i] - want[i]));
    m = Math.max(m, Math.abs(want[i]));
  }
  return e / m;
}

describe.each([
  // name, weights file, extra flags, patch, native side (4×4 patches), family
  ['v2_reg', 'official.safetensors', ['--heads', '2'], 14, 56, /dinov2/],
  ['v3_mlp', 'official.pth', [], 16, 64, /dinov3/],
] as const)('evaluation commands on %s/%s', (name, file, extra, p, side, family) => {
  const weights = new URL(`${name}/${file}`, fixtures).pathname;
  const size = ['--image-size', String(side)];
  let dir: string;
  let model: VisionTransformer;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), `webdino-eval-${name}-`));
    ({ model } = await loadBackbone(await getEngine(), weights, { numHeads: extra.length ? 2 : undefined }));
    expect(model.numPrefixTokens).toBe(5); // CLS + 4 registers / storage tokens
  });
  afterAll(() => {
    model?.dispose();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('visualize: per-head overlays of the CLS attention over the 4×4 patches, joint PCA of the 16 patch features', async () => {
    const imgs = join(dir, 'imgs');
    mkdirSync(imgs);
    const rng = new Rng(3);
    const images: RgbImage[] = [
      [61, 47],
      [side, side],
    ].map(([w, h]) => ({ width: w, height: h, data: new Uint8Array(w * h * 3).map((_, i) => ((i / 3) % w) * 3 + Math.floor(rng.uniform() * 80)) }));
    images.forEach((im, i) => writeFileSync(join(imgs, `q${i}.png`), encodePng(im.width, im.height, im.data, 3)));
    const out = join(dir, 'vis');
    const r = await webdino('visualize', '--weights', weights, '--input', imgs, '--out', out, ...size, ...extra);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(family);
    expect(r.out).toContain(`2 images at ${side}x${side} (4x4 patches, 2 heads)`);
    expect(readdirSync(out).sort()).toEqual([0, 1].flatMap((i) => [`q${i}-attn-head0.png`, `q${i}-attn-head1.png`, `q${i}-input.png`, `q${i}-pca.png`]).sort());
    const read = (f: string) => decodeImage(new Uint8Array(readFileSync(join(out, f))));
    const wd = await getEngine();
    const pcas: Uint8Array[] = [];
    for (let i = 0; i < 2; i++) {
      const maps = await computeAttentionMaps(wd, model, images[i], side);
      expect([maps.h, maps.w]).toEqual([4, 4]);
      expect(Array.from(read(`q${i}-input.png`).data)).toEqual(Array.from(maps.image.data));
      for (let k = 0; k < 2; k++) {
        const want = overlayRgb(maps.image.data, upsampleNearest(heatmapRgb(maps.attention.subarray(k * 16, (k + 1) * 16), 4, 4), 4, 4, 3, p), 0.6);
        const got = read(`q${i}-attn-head${k}.png`).data;
        let worst = 0;
        for (let j = 0; j < want.length; j++) worst = Math.max(worst, Math.abs(got[j] - want[j]));
        expect(worst).toBeLessThanOrEqual(2); // batch of 2 vs one image: last float bits, ±2 levels
      }
      const pca = read(`q${i}-pca.png`);
      expect([pca.width, pca.height]).toEqual([side, side]);
      // One colour per p×p patch: a 4×4 grid, the prefix tokens left out.
      for (let y = 0; y < side; y++) for (let x = 0; x < side; x++) {
        const a = (y * side + x) * 3;
        const b = ((y - (y % p)) * side + (x - (x % p))) * 3;
        expect(pca.data.subarray(a, a + 3)).toEqual(pca.data.subarray(b, b + 3));
      }
      pcas.push(pca.data);
    }
    for (let c = 0; c < 3; c++) {
      const all = pcas.flatMap((d) => Array.from(d.filter((_, i) => i % 3 === c)));
      expect(Math.min(...all)).toBe(0);
      expect(Math.max(...all)).toBe(255);
    }
  }, 120_000);

  it('eval segment: per-head Jaccard of the CLS attention without the register / storage columns', async () => {
    const json = join(dir, 'seg.json');
    const r = await webdino('eval', 'segment', '--weights', weights, '--limit', '5', '--batch-size', '2', '--json', json, ...size, ...extra);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(family);
    expect(r.out).toContain(`5 images of synthetic:val, input ${side}x${side} (4x4 patches)`);
    const ds = new SyntheticShapes({ split: 'val', size: 64, length: 5 });
    const wd = await getEngine();
    const j = JSON.parse(readFileSync(json, 'utf8')) as { per_image: number[][]; jaccard_per_head: number[] };
    const ref: number[][] = [];
    for (let i = 0; i < 5; i++) {
      const s = ds.getSync(i) as { image: RgbImage; mask: Uint8Array };
      const m = await computeAttentionMaps(wd, model, s.image, side);
      ref.push([0, 1].map((k) => refJaccard(m.attention.subarray(k * 16, (k + 1) * 16), 4, p, s.mask, s.image.width, s.image.height, 0.6)));
    }
    for (let i = 0; i < 5; i++) for (let k = 0; k < 2; k++) expect(j.per_image[i][k]).toBeCloseTo(ref[i][k], 12);
    for (let k = 0; k < 2; k++) expect(j.jaccard_per_head[k]).toBeCloseTo(ref.reduce((a, v) => a + v[k], 0) / 5, 12);
    expect(new Set(j.per_image.map((v) => v[0])).size).toBeGreaterThan(1);
  }, 120_000);

  it('eval knn: top-1 / top-5 equal knnClassify on the CLS features of the same model', async () => {
    const r = await webdino('eval', 'knn', '--weights', weights, '--train-limit', '24', '--val-limit', '12', '--k', '1,5', '--batch-size', '8', ...size, ...extra);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(family);
    const wd = await getEngine();
    const tr = await datasetFeatures(wd, model, firstN(new SyntheticShapes({ split: 'train' }), 24), { crop: side });
    const va = await datasetFeatures(wd, model, firstN(new SyntheticShapes({ split: 'val' }), 12), { crop: side });
    const want = await knnClassify({ trainFeatures: tr.features, trainLabels: tr.labels, testFeatures: va.features, testLabels: va.labels, numClasses: 10, ks: [1, 5] });
    tr.features.dispose();
    va.features.dispose();
    for (const w of want) expect(r.out).toContain(`k=${w.k}: top-1 ${w.top1.toFixed(2)} %, top-5 ${w.top5.toFixed(2)} %`);
  }, 120_000);

  it('eval linear: probe features = [CLS, mean patch token] of the official outputs; the command trains and reports', async () => {
    const io = loadStateDict(new Uint8Array(readFileSync(new URL(`${name}/io.safetensors`, fixtures)))).tensors as Map<string, Host>;
    const wd = await getEngine();
    const x = io.get('in1.x')!; // batch 2 on a 3×5 grid: not the native one
    const cls = io.get('in1.x_norm_clstoken')!;
    const patch = io.get('in1.x_norm_patchtokens')!;
    const [B, n, D] = patch.shape;
    // DINO's avgpool layout at n_last_blocks 1: (B, D, 2) flattened, CLS and the patch mean interleaved.
    const want = new Float32Array(B * 2 * D);
    for (let b = 0; b < B; b++) {
      for (let d = 0; d < D; d++) {
        let s = 0;
        for (let t = 0; t < n; t++) s += patch.data[(b * n + t) * D + d];
        want[b * 2 * D + 2 * d] = cls.data[b * D + d];
        want[b * 2 * D + 2 * d + 1] = s / n;
      }
    }
    const got = await wd.noGrad(() => wd.scope(() => probeFeatures(model, wd.tensor(x.data, x.shape), 1, true).toArray()));
    expect(relErr(got, want)).toBeLessThan(1e-4);

    const r = await webdino('eval', 'linear', '--weights', weights, '--train-limit', '16', '--val-limit', '8', '--epochs', '2', '--batch-size', '8', '--avgpool', ...size, ...extra);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(family);
    expect(r.out).toMatch(/features: 2 last CLS tokens \+ mean patch token \(96 dims\)/);
    expect(r.out).toMatch(/linear top-1 \d+\.\d\d %, top-5 \d+\.\d\d % \(best epoch [12]\)/);
  }, 120_000);
});
