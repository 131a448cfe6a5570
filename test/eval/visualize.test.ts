/**
 * PCA (eval/pca.ts), `webdino visualize` and the report's building blocks (train/report.ts):
 * - Jacobi eigen-decomposition of matrices with known spectra; PCA recovers planted directions and
 *   variances, with the documented sign rule; the RGB map is min-max over all rows;
 * - visualize on a tiny random ViT: files, sizes, attention overlays equal to the `webdino
 *   attention` path (computeAttentionMaps + heat map + blend), PCA pictures made of patch blocks
 *   and scaled jointly over the folder;
 * - report pieces: metrics parsing, base64, ticks, empty charts.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../index.js';
import { decodeImage, encodePng } from '../../models/io/image.js';
import type { VisionTransformer } from '../../models/vit.js';
import { heatmapRgb, overlayRgb, upsampleNearest } from '../../eval/attention-maps.js';
import { computeAttentionMaps } from '../../eval/embed.js';
import { fitPca, pcaProject, pcaRgb, symmetricEigen } from '../../eval/pca.js';
import { ema } from '../../train/plot.js';
import { base64, lineChartSvg, niceTicks, parseMetrics, renderReport } from '../../train/report.js';
import { getEngine } from '../helpers.js';
import { tinyBackbone, webdino } from './cli.js';

/** A random orthonormal [D, D] matrix (Gram-Schmidt of Gaussian columns), columns are the basis. */
function orthonormal(D: number, seed: number): Float64Array {
  const r = new Rng(seed);
  const q = new Float64Array(D * D);
  for (let j = 0; j < D; j++) {
    const v = Array.from({ length: D }, () => r.normal());
    for (let k = 0; k < j; k++) {
      let d = 0;
      for (let i = 0; i < D; i++) d += v[i] * q[i * D + k];
      for (let i = 0; i < D; i++) v[i] -= d * q[i * D + k];
    }
    const n = Math.hypot(...v);
    for (let i = 0; i < D; i++) q[i * D + j] = v[i] / n;
  }
  return q;
}

describe('PCA', () => {
  it('Jacobi: eigenvalues and eigenvectors of Q diag(λ) Qᵀ', () => {
    for (const D of [1, 7, 40]) {
      const q = orthonormal(D, D);
      const lambda = Array.from({ length: D }, (_, i) => ((i * 7919) % 97) - 30 + i * 0.01);
      const a = new Float64Array(D * D);
      for (let i = 0; i < D; i++) for (let j = 0; j < D; j++) for (let k = 0; k < D; k++) a[i * D + j] += q[i * D + k] * lambda[k] * q[j * D + k];
      const { values, vectors } = symmetricEigen(a, D);
      const sorted = [...lambda].sort((x, y) => y - x);
      for (let i = 0; i < D; i++) expect(values[i]).toBeCloseTo(sorted[i], 9);
      for (let j = 0; j < D; j++) {
        for (let i = 0; i < D; i++) {
          let av = 0;
          for (let k = 0; k < D; k++) av += a[i * D + k] * vectors[k * D + j];
          expect(Math.abs(av - values[j] * vectors[i * D + j])).toBeLessThan(1e-9 * Math.max(1, Math.abs(sorted[0])));
        }
      }
    }
    expect(() => symmetricEigen([1, 2, 3], 2)).toThrow(RangeError);
  });

  it('recovers planted directions and variances; signs follow the largest entry; RGB spans 0..255', () => {
    const D = 12;
    const n = 4000;
    const q = orthonormal(D, 3);
    const scales = [5, 3, 2];
    const r = new Rng(9);
    const x = new Float64Array(n * D);
    for (let i = 0; i < n; i++) {
      const z = scales.map((s) => s * r.normal());
      for (let d = 0; d < D; d++) x[i * D + d] = 10 + z[0] * q[d * D] + z[1] * q[d * D + 1] + z[2] * q[d * D + 2] + 0.05 * r.normal();
    }
    const pca = fitPca(x, D, 3);
    for (let j = 0; j < 3; j++) {
      let dot = 0;
      let big = 0;
      for (let d = 0; d < D; d++) {
        dot += pca.components[j * D + d] * q[d * D + j];
        if (Math.abs(pca.components[j * D + d]) > Math.abs(big)) big = pca.components[j * D + d];
      }
      expect(Math.abs(dot)).toBeGreaterThan(0.999);
      expect(big).toBeGreaterThan(0);
      expect(pca.variances[j] / scales[j] ** 2).toBeGreaterThan(0.9);
      expect(pca.variances[j] / scales[j] ** 2).toBeLessThan(1.1);
    }
    const rgb = pcaRgb(x, D);
    const proj = pcaProject(pca, x);
    for (let c = 0; c < 3; c++) {
      const ch = Array.from({ length: n }, (_, i) => rgb[i * 3 + c]);
      expect(Math.min(...ch)).toBe(0);
      expect(Math.max(...ch)).toBe(255);
      // The channel is an increasing function of the component: the row with the largest projection is 255.
      let arg = 0;
      for (let i = 1; i < n; i++) if (proj[i * 3 + c] > proj[arg * 3 + c]) arg = i;
      expect(rgb[arg * 3 + c]).toBe(255);
    }
    expect(() => fitPca([1, 2, 3], 3)).toThrow(RangeError);
    expect(() => fitPca([1, 2, 3, NaN, 5, 6], 3)).toThrow(/non-finite/);
  });
});

describe('webdino visualize', () => {
  let dir: string;
  let model: VisionTransformer;
  let weights: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'webdino-visualize-'));
    ({ model, path: weights } = await tinyBackbone(dir));
  });
  afterAll(() => {
    model?.dispose();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('writes input, per-head overlays and joint-PCA pictures for a folder', async () => {
    const imgs = join(dir, 'imgs');
    mkdirSync(imgs);
    const rng = new Rng(2);
    const sizes = [[40, 30], [37, 52], [32, 32]];
    const images = sizes.map(([w, h]) => ({ width: w, height: h, data: new Uint8Array(w * h * 3).map((_, i) => (i % 3 === 0 ? (i / 3) % w : 0) * 5 + Math.floor(rng.uniform() * 60)) }));
    images.forEach((im, i) => writeFileSync(join(imgs, `p${i}.png`), encodePng(im.width, im.height, im.data, 3)));
    const out = join(dir, 'vis');
    const r = await webdino('visualize', '--weights', weights, '--input', imgs, '--out', out);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(readdirSync(out).sort()).toEqual(
      [0, 1, 2].flatMap((i) => [`p${i}-attn-head0.png`, `p${i}-attn-head1.png`, `p${i}-input.png`, `p${i}-pca.png`]).sort(),
    );
    const read = (f: string) => decodeImage(new Uint8Array(readFileSync(join(out, f))));
    const wd = await getEngine();
    const pcas = [];
    for (let i = 0; i < 3; i++) {
      const maps = await computeAttentionMaps(wd, model, images[i], 32);
      const input = read(`p${i}-input.png`);
      expect([input.width, input.height]).toEqual([32, 32]);
      expect(Array.from(input.data)).toEqual(Array.from(maps.image.data));
      for (let k = 0; k < 2; k++) {
        const heat = upsampleNearest(heatmapRgb(maps.attention.subarray(k * 16, (k + 1) * 16), 4, 4), 4, 4, 3, 8);
        const want = overlayRgb(maps.image.data, heat, 0.6);
        const got = read(`p${i}-attn-head${k}.png`).data;
        // The attention of a batch of 3 and of one image may differ in the last float bits: ±2 levels.
        let worst = 0;
        for (let p = 0; p < want.length; p++) worst = Math.max(worst, Math.abs(got[p] - want[p]));
        expect(worst).toBeLessThanOrEqual(2);
      }
      const pca = read(`p${i}-pca.png`);
      expect([pca.width, pca.height]).toEqual([32, 32]);
      // 8×8 blocks of one colour (one per patch).
      for (let y = 0; y < 32; y++) for (let x = 0; x < 32; x++) {
        const p = (y * 32 + x) * 3;
        const b = ((y - (y % 8)) * 32 + (x - (x % 8))) * 3;
        expect(pca.data.subarray(p, p + 3)).toEqual(pca.data.subarray(b, b + 3));
      }
      pcas.push(pca.data);
    }
    // Scaled jointly: over the folder every channel reaches 0 and 255.
    for (let c = 0; c < 3; c++) {
      const all = pcas.flatMap((d) => Array.from(d.filter((_, i) => i % 3 === c)));
      expect(Math.min(...all)).toBe(0);
      expect(Math.max(...all)).toBe(255);
    }
    expect((await webdino('visualize', '--weights', weights, '--input', join(dir, 'none'), '--out', out)).code).toBe(1);
    expect((await webdino('visualize', '--weights', weights, '--input', imgs)).code).toBe(2);
  });
});

describe('report building blocks', () => {
  it('ema: the one loss smoother (loss.png, report, demo) carries over non-finite values', () => {
    const y = [NaN, 2, 4, Infinity, 8];
    const out = ema(y, 0.5);
    expect(out[0]).toBeNaN();
    expect(out.slice(1)).toEqual([2, 3, 3, 5.5]);
    expect(ema([1, 1, 1]).every((v) => v === 1)).toBe(true);
  });

  it('parses metrics.jsonl, counting unreadable lines', () => {
    const m = parseMetrics(
      [
        '{"type":"step","iteration":1,"loss":2.5,"lr":0.1}',
        'not json',
        '{"type":"eval","iteration":1,"knn_top1":12.5,"note":"x"}',
        '{"type":"other","iteration":2}',
        '',
      ].join('\n'),
    );
    expect(m.steps).toEqual([{ type: 'step', iteration: 1, loss: 2.5, lr: 0.1 }]);
    expect(m.evals).toEqual([{ iteration: 1, knn_top1: 12.5 }]);
    expect(m.badLines).toBe(2);
    const html = renderReport({ title: 'a <b> & c', metrics: m });
    expect(html).toContain('a &lt;b&gt; &amp; c');
    expect(html).toContain('2 lines of metrics.jsonl could not be read');
  });

  it('base64 equals Node\'s for every padding case; ticks are round; empty charts are left out', () => {
    for (let n = 0; n < 8; n++) {
      const b = new Uint8Array(n).map((_, i) => (i * 97 + 200) & 255);
      expect(base64(b)).toBe(Buffer.from(b).toString('base64'));
    }
    expect(niceTicks(0, 1)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(niceTicks(3, 312)).toEqual([100, 200, 300]);
    expect(niceTicks(-0.013, 0.021)).toEqual([-0.01, 0, 0.01, 0.02]);
    expect(lineChartSvg([{ name: 'x', x: [0, 1], y: [NaN, Infinity], color: '#000' }], { title: 't' })).toBe('');
    expect(lineChartSvg([{ name: 'x', x: [0, 1], y: [1, 1], color: '#000' }], { title: 't' })).toContain('<path d="M');
  });
});
