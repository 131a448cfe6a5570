/**
 * The training report in a real browser: a tiny DINO run (ViT dim 32, depth 2, patch 8, 32 px
 * crops; 3 steps, k-NN every 2) writes OUT/report.html through runTraining; the page is opened
 * from disk (file://) in headless Chromium with every non-file, non-data request blocked and
 * recorded. Checks: no console errors or page errors, no external request, every chart (inline
 * SVG) and every picture (PNG data URI) decodes and renders with pixels that vary, the k-NN and
 * segmentation evaluations logged to metrics.jsonl appear in the page. The Chromium part is
 * skipped (with a note) when no Chromium is installed.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser } from 'playwright-core';
import { decodeImage } from '../../models/io/image.js';
import { SyntheticShapes } from '../../train/data/synthetic.js';
import { firstN, knnEvaluator } from '../../train/eval-hooks-node.js';
import { runTraining } from '../../train/run-node.js';
import { datasetSegmentationSource, segmentationEvaluator } from '../../eval/segment.js';
import { getEngine } from '../helpers.js';
import { chromiumPath, launchChromium } from './chromium.js';

/** A tiny DINO run: 3 steps take a few seconds on lavapipe. */
const TINY_RUN = {
  arch: 'custom' as const,
  embedDim: 32,
  depth: 2,
  numHeads: 2,
  patchSize: 8,
  outDim: 64,
  headHidden: 64,
  headBottleneck: 32,
  epochs: 1,
  batchSize: 8,
  lr: 4e-3,
  warmupEpochs: 0,
  globalSize: 32,
  localSize: 16,
  localCrops: 2,
  seed: 3,
};

let dir: string;
let report: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'webdino-report-'));
  const wd = await getEngine();
  const train = new SyntheticShapes({ split: 'train', size: 48, length: 32 });
  const val = new SyntheticShapes({ split: 'val', size: 48, length: 10 });
  const knn = knnEvaluator(wd, { train: firstN(train, 20), val, k: 5 });
  const seg = segmentationEvaluator(wd, datasetSegmentationSource(val));
  const r = await runTraining(wd, {
    config: TINY_RUN,
    dataset: train,
    outDir: dir,
    maxIterations: 3,
    evalEvery: 2,
    evaluate: async (t) => ({ ...(await knn(t)), ...(await seg(t)) }),
  });
  r.trainer.dispose();
  expect(r.report).toBe(join(dir, 'report.html'));
  report = r.report!;
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('training report (file)', () => {
  it('is self-contained and shows the evaluations of metrics.jsonl', () => {
    const html = readFileSync(report, 'utf8');
    const evals = readFileSync(join(dir, 'metrics.jsonl'), 'utf8')
      .split('\n')
      .filter((l) => l.includes('"type":"eval"'))
      .map((l) => JSON.parse(l) as { iteration: number; knn_top1: number; seg_jaccard_best_head: number });
    // The evaluation at initialisation (iteration 0, the baseline of the final k-NN line), then every 2 and at the end.
    expect(evals.map((e) => e.iteration)).toEqual([0, 2, 3]);
    for (const e of evals) {
      expect(e.seg_jaccard_best_head).toBeGreaterThan(0);
      expect(e.seg_jaccard_best_head).toBeLessThanOrEqual(100);
    }
    expect(html).toContain('seg_jaccard_best_head');
    expect(html).toContain('Evaluation during training');
    expect(html).toContain(`<td>${evals[0].iteration}</td>`);
    expect(html).toContain('knn_top1');
    // Nothing is fetched: every src is a data URI, no script, no stylesheet link.
    const srcs = [...html.matchAll(/\ssrc="([^"]*)"/g)].map((m) => m[1]);
    expect(srcs.length).toBe(4 * (1 + 2 + 1)); // 4 images × (input, 2 heads, PCA)
    for (const s of srcs) expect(s.startsWith('data:image/png;base64,')).toBe(true);
    expect(html).not.toMatch(/<script|<link|@import|url\(/i);
  });
});

if (!chromiumPath()) {
  it.skip('training report in Chromium: skipped, no Chromium (install it with `bash scripts/setup.sh --browser` or set WEBDINO_CHROMIUM)', () => {});
} else {
  describe('training report in headless Chromium', () => {
    let browser: Browser;
    beforeAll(async () => {
      browser = await launchChromium();
    });
    afterAll(async () => {
      await browser?.close();
    });

    it('opens from disk with no console errors, no external requests, and pictures that are not blank', async () => {
      const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
      const errors: string[] = [];
      const external: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error') errors.push(m.text());
      });
      page.on('pageerror', (e) => errors.push(String(e)));
      await page.route('**/*', (route) => {
        const url = route.request().url();
        if (url.startsWith('file:') || url.startsWith('data:')) return route.continue();
        external.push(url);
        return route.abort();
      });
      await page.goto(pathToFileURL(report).href, { waitUntil: 'load' });
      expect(await page.title()).toBe('webdino training report');

      // Every <img> decoded (a broken data URI has naturalWidth 0).
      const natural = await page.$$eval('img', (imgs) => imgs.map((i) => [(i as HTMLImageElement).complete, (i as HTMLImageElement).naturalWidth]));
      expect(natural.length).toBe(16);
      for (const [complete, w] of natural) {
        expect(complete).toBe(true);
        expect(w).toBeGreaterThan(0);
      }

      // Render each chart and picture and check its pixels vary.
      const charts = page.locator('svg');
      const nCharts = await charts.count();
      expect(nCharts).toBeGreaterThanOrEqual(6); // loss, evaluation, lr, momentum, teacher temperature, weight decay (+ entropy)
      const elements = [...Array.from({ length: nCharts }, (_, i) => charts.nth(i)), ...Array.from({ length: 16 }, (_, i) => page.locator('img').nth(i))];
      for (const [i, el] of elements.entries()) {
        const shot = decodeImage(new Uint8Array(await el.screenshot()));
        const n = shot.width * shot.height;
        let sum = 0;
        let sq = 0;
        const colours = new Set<number>();
        for (let p = 0; p < n; p++) {
          const [r, g, b] = [shot.data[3 * p], shot.data[3 * p + 1], shot.data[3 * p + 2]];
          const y = (r + g + b) / 3;
          sum += y;
          sq += y * y;
          colours.add((r << 16) | (g << 8) | b);
        }
        const std = Math.sqrt(Math.max(0, sq / n - (sum / n) ** 2));
        expect(std, `element ${i} (${i < nCharts ? 'chart' : 'picture'}) is blank`).toBeGreaterThan(3);
        expect(colours.size, `element ${i} has ${colours.size} colours`).toBeGreaterThan(3);
      }
      expect(errors).toEqual([]);
      expect(external).toEqual([]);
      await page.close();
    });
  });
}
