/**
 * End-to-end test of the demo page (web/) in headless Chromium, on a tiny configuration so that
 * SwiftShader (a CPU WebGPU) trains it in seconds. One page, one run, in order:
 *
 *   1. without navigator.gpu the page says so plainly and how to enable WebGPU;
 *   2. it trains 8 steps in its Web Worker and the loss falls (mean of the last 3 steps below the
 *      mean of the first 3 by a margin; with this config the student first learns to match the
 *      teacher, a fall of ~2 nats, which a broken optimizer or gradient does not give: with no
 *      update the centering makes the loss RISE towards ln K), and images/s is shown;
 *   3. the attention canvas is not blank: a screenshot of it (PNG, decoded) has many colours and
 *      its heat-map cells are not uniform;
 *   4. resume and pause;
 *   5. the checkpoint downloads (a webdino training checkpoint at the paused iteration);
 *   6. Node's `webdino embed` path (loadBackbone of models/backbone-node.ts + embedAll of eval/embed-node.ts) loads that
 *      file and gives the same features as the page for the page's fixed images (written as PNG,
 *      lossless), within 1e-4 relative (max |Δ| ≤ 1e-4 · max |f|): different WebGPU
 *      implementations (SwiftShader vs lavapipe) only reorder f32 sums;
 *   7. after more training, loading the file back restores it: iteration and features as saved;
 *   8. a lost device is reported and "Recover" continues from the in-memory snapshot;
 *   9. the user's own images (file picker, createImageBitmap) are used for training and attention.
 *
 * Skipped when no Chromium is installed (scripts/setup.sh --browser installs Debian's).
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decode as decodePng } from 'fast-png';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { init } from '../../index.js';
import { encodePng } from '../../models/io/image.js';
import { readCheckpointMeta } from '../../train/checkpoint.js';
import { loadBackbone } from '../../models/backbone-node.js';
import { embedAll, openEmbedInput } from '../../eval/embed-node.js';
import { startStaticServer, type StaticServer } from '../../scripts/static-server.mjs';
import { chromiumPath, launchChromium } from './chromium.js';
import { buildDemo } from './harness.js';
import type { PageState } from '../../web/main.js';

/** A ViT dim 32 / depth 2 / K 256 run on 160 synthetic images, batch 8, DINO's own head and centering (its loss falls clearly within 8 steps; the CPU default's BatchNorm head and Sinkhorn-Knopp targets move it by ~0.3 that early); pauses at iteration 8. */
const QUERY =
  '?dim=32&depth=2&heads=2&out=256&hidden=128&bottleneck=64&batch=8&locals=2&lr=0.03&momentum=0.98' +
  '&warmup=0&epochs=10&epochlength=0&centering=center&bnhead=0&n=160&attn=4&snap=4&pause=8&autostart=1';
const STEPS = 8;

interface PageFeatures {
  iteration: number;
  shape: [number, number];
  crop: number;
  features: number[];
  images: { width: number; height: number; data: number[] }[];
}

const getState = (page: Page) => page.evaluate(() => (globalThis as unknown as { webdino: { state: PageState } }).webdino.state);
const waitState = (page: Page, pred: string, timeout = 120_000) =>
  page.waitForFunction(`(() => { const s = globalThis.webdino && globalThis.webdino.state; return !!s && (${pred}); })()`, null, { timeout, polling: 100 });
const pageFeatures = (page: Page) =>
  page.evaluate(() => (globalThis as unknown as { webdino: { features(): Promise<PageFeatures> } }).webdino.features());

function relMaxErr(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let scale = 0;
  let err = 0;
  for (let i = 0; i < want.length; i++) {
    scale = Math.max(scale, Math.abs(want[i]));
    err = Math.max(err, Math.abs(got[i] - want[i]));
  }
  return err / scale;
}

if (!chromiumPath()) {
  it.skip('demo end-to-end in Chromium: skipped, no Chromium (install it with `bash scripts/setup.sh --browser` or set WEBDINO_CHROMIUM)', () => {});
} else {
  describe('demo page end-to-end (headless Chromium, WebGPU in a Web Worker)', () => {
    let demo: { dir: string; dispose(): void };
    let server: StaticServer;
    let browser: Browser;
    let page: Page;
    let tmp: string;
    let ckptPath = '';
    let savedIteration = -1;
    let savedFeatures: PageFeatures | null = null;
    const pageErrors: string[] = [];

    beforeAll(async () => {
      tmp = mkdtempSync(join(tmpdir(), 'webdino-demo-test-'));
      demo = await buildDemo();
      server = await startStaticServer({ '/': demo.dir });
      browser = await launchChromium();
    });

    afterAll(async () => {
      await browser?.close();
      await server?.close();
      demo?.dispose();
      if (tmp) rmSync(tmp, { recursive: true, force: true });
    });

    it('without WebGPU, says so plainly and how to enable it', async () => {
      const p = await browser.newPage();
      try {
        await p.addInitScript(() => {
          Object.defineProperty(Navigator.prototype, 'gpu', { get: () => undefined, configurable: true });
        });
        await p.goto(server.url);
        const banner = p.locator('#banner');
        await banner.waitFor({ state: 'visible' });
        const text = await banner.innerText();
        expect(text).toMatch(/does not offer WebGPU/);
        expect(text).toMatch(/--enable-unsafe-webgpu/);
        expect(text).toMatch(/secure context/);
        expect(await p.locator('#start').isDisabled()).toBe(true);
      } finally {
        await p.close();
      }
    });

    it(`trains ${STEPS} steps in a Web Worker and the loss falls`, async () => {
      page = await browser.newPage();
      page.on('pageerror', (e) => pageErrors.push(e.message));
      page.on('download', () => {});
      await page.goto(server.url + QUERY);
      await waitState(page, `s.iteration >= ${STEPS} && !s.running || s.error`, 180_000);
      const s = await getState(page);
      expect(s.error, `page error: ${JSON.stringify(s.error)}`).toBeNull();
      expect(s.iteration).toBe(STEPS);
      const losses = s.losses.slice(0, STEPS);
      expect(losses.every((l) => Number.isFinite(l)), `losses ${losses}`).toBe(true);
      const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;
      const first = mean(losses.slice(0, 3));
      const last = mean(losses.slice(-3));
      console.log(`demo: losses ${losses.map((l) => l.toFixed(3)).join(' ')}; ${s.imagesPerSecond.toFixed(1)} images/s on ${s.run?.adapter}`);
      expect(last, `loss did not fall: first 3 steps ${first}, last 3 ${last}`).toBeLessThan(first - 0.5);
      expect(s.imagesPerSecond).toBeGreaterThan(0);
      expect(Number((await page.locator('#ips').innerText()).trim())).toBeGreaterThan(0);
      expect(pageErrors).toEqual([]);
    }, 240_000);

    it('draws attention maps that are not blank (screenshot)', async () => {
      const s = await getState(page);
      expect(s.attentionIteration).toBe(STEPS);
      const png = decodePng(await page.locator('#attention').screenshot());
      const { width, height, channels } = png;
      const data = png.data as Uint8Array;
      expect(width).toBeGreaterThan(200);
      const colours = new Set<number>();
      let nonWhite = 0;
      for (let i = 0; i < width * height; i++) {
        const [r, g, b] = [data[i * channels], data[i * channels + 1], data[i * channels + 2]];
        colours.add((r << 16) | (g << 8) | b);
        if (r < 240 || g < 240 || b < 240) nonWhite++;
      }
      expect(colours.size, 'distinct colours in the attention canvas').toBeGreaterThan(100);
      expect(nonWhite / (width * height), 'fraction of painted pixels').toBeGreaterThan(0.5);
      // The mean-of-heads cell of the first image (second column, below the 16 px header) is a
      // heat map with more than one colour.
      const dpr = width / (await page.locator('#attention').evaluate((c) => (c as HTMLCanvasElement).width));
      const cellColours = new Set<number>();
      for (let y = Math.round(20 * dpr); y < Math.round(108 * dpr); y++) {
        for (let x = Math.round(104 * dpr); x < Math.round(192 * dpr); x++) {
          const i = (y * width + x) * channels;
          cellColours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
        }
      }
      expect(cellColours.size, 'colours in one attention heat map').toBeGreaterThan(5);
    });

    it('resumes and pauses', async () => {
      await page.click('#start');
      await waitState(page, `s.iteration >= ${STEPS + 2}`);
      await page.click('#start');
      await waitState(page, '!s.running');
      const s = await getState(page);
      expect(s.error).toBeNull();
      expect(await page.locator('#start').innerText()).toBe('Resume');
      savedIteration = s.iteration;
      expect(savedIteration).toBeGreaterThanOrEqual(STEPS + 2);
    }, 120_000);

    it('downloads the checkpoint (safetensors)', async () => {
      const [download] = await Promise.all([page.waitForEvent('download'), page.click('#save')]);
      expect(download.suggestedFilename()).toBe(`webdino-dino-it${savedIteration}.safetensors`);
      ckptPath = join(tmp, download.suggestedFilename());
      await download.saveAs(ckptPath);
      const meta = readCheckpointMeta(new Uint8Array(readFileSync(ckptPath)));
      expect(meta.iteration).toBe(savedIteration);
      expect(meta.config.embedDim).toBe(32);
    }, 60_000);

    it('Node `webdino embed` on the downloaded checkpoint gives the page\'s features (1e-4 relative)', async () => {
      savedFeatures = await pageFeatures(page);
      const f = savedFeatures;
      expect(f.iteration).toBe(savedIteration);
      expect(f.shape).toEqual([4, 32]);
      const dir = join(tmp, 'fixed');
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { recursive: true });
      f.images.forEach((im, i) => writeFileSync(join(dir, `img${i}.png`), encodePng(im.width, im.height, Uint8Array.from(im.data), 3)));
      const wd = await init();
      const { model, spec } = await loadBackbone(wd, ckptPath);
      try {
        expect(spec.embedDim).toBe(32);
        const r = await embedAll(wd, model, await openEmbedInput(dir), { batchSize: 4, crop: f.crop, attention: false });
        expect(r.featuresShape).toEqual(f.shape);
        const err = relMaxErr(f.features, r.features);
        console.log(`demo: page vs Node features, max |Δ| / max |f| = ${err.toExponential(2)} (${f.shape[0]}×${f.shape[1]})`);
        expect(err).toBeLessThanOrEqual(1e-4);
        // Not trivially equal: the features differ between images.
        expect(relMaxErr(r.features.slice(0, 32), r.features.slice(32, 64))).toBeGreaterThan(1e-2);
      } finally {
        model.dispose();
        wd.device.destroy();
      }
    }, 120_000);

    it('loads the checkpoint back after more training: same iteration and features', async () => {
      await page.click('#start');
      await waitState(page, `s.iteration >= ${savedIteration + 1}`);
      await page.click('#start');
      await waitState(page, '!s.running');
      expect((await getState(page)).iteration).toBeGreaterThan(savedIteration);
      // A file that is not a checkpoint is refused with a clear message, and nothing changes.
      const bogus = join(tmp, 'not-a-checkpoint.safetensors');
      writeFileSync(bogus, encodePng(2, 2, new Uint8Array(12), 3));
      const before = (await getState(page)).iteration;
      await page.setInputFiles('#load-checkpoint', bogus);
      await waitState(page, 's.error !== null');
      expect((await getState(page)).error?.message).toMatch(/not-a-checkpoint\.safetensors: .*safetensors|not-a-checkpoint\.safetensors: .*checkpoint/);
      expect(await page.locator('#banner').innerText()).toMatch(/not-a-checkpoint/);
      expect((await getState(page)).iteration).toBe(before);
      await page.setInputFiles('#load-checkpoint', ckptPath);
      await waitState(page, `s.loaded !== null || (s.error && !s.error.message.includes('not-a-checkpoint'))`);
      const s = await getState(page);
      expect(s.error).toBeNull();
      expect(s.loaded?.iteration).toBe(savedIteration);
      expect(s.iteration).toBe(savedIteration);
      const f = await pageFeatures(page);
      expect(relMaxErr(f.features, savedFeatures!.features)).toBeLessThanOrEqual(1e-6);
    }, 120_000);

    it('reports a lost device and recovers from the in-memory snapshot', async () => {
      await page.evaluate(() => (globalThis as unknown as { webdino: { loseDevice(): void } }).webdino.loseDevice());
      await waitState(page, `s.error && s.error.kind === 'device-lost'`, 30_000);
      const banner = await page.locator('#banner').innerText();
      expect(banner).toMatch(/GPU device was lost/);
      expect(banner).toMatch(new RegExp(`snapshot is from iteration ${savedIteration}`));
      await page.click('#recover');
      await waitState(page, `s.ready && s.error === null && s.log.some((l) => l.startsWith('recovered'))`, 60_000);
      expect((await getState(page)).iteration).toBe(savedIteration);
      await page.click('#start');
      await waitState(page, `s.iteration >= ${savedIteration + 1} || s.error`);
      await page.click('#start');
      await waitState(page, '!s.running');
      const s = await getState(page);
      expect(s.error).toBeNull();
      expect(Number.isFinite(s.losses[savedIteration])).toBe(true);
    }, 120_000);

    it('trains on the user\'s own images and draws their attention', async () => {
      // Three images of different sizes: fewer than a batch, so they are cycled.
      const files = [
        [48, 40],
        [64, 64],
        [30, 52],
      ].map(([w, h], k) => {
        const rgb = new Uint8Array(w * h * 3);
        for (let y = 0; y < h; y++) {
          for (let x = 0; x < w; x++) {
            const inside = (x - w / 2) ** 2 + (y - h / 2) ** 2 < (Math.min(w, h) / 3) ** 2;
            rgb.set(inside ? [220, 40 + 60 * k, 30] : [20, 90, 160 - 40 * k], (y * w + x) * 3);
          }
        }
        const path = join(tmp, `mine${k}.png`);
        writeFileSync(path, encodePng(w, h, rgb, 3));
        return path;
      });
      const before = (await getState(page)).attentionIteration;
      const logLength = (await getState(page)).log.length;
      await page.setInputFiles('#load-images', files);
      await waitState(page, `s.run && s.run.dataset.includes('of yours')`);
      await waitState(page, `s.log.length > ${logLength}`);
      const it0 = (await getState(page)).iteration;
      await page.click('#start');
      await waitState(page, `s.iteration >= ${it0 + 1} || s.error`);
      await page.click('#start');
      await waitState(page, '!s.running');
      const s = await getState(page);
      expect(s.error).toBeNull();
      expect(s.log.some((l) => l.includes('using 3 image(s) of yours'))).toBe(true);
      expect(s.attentionIteration).toBeGreaterThanOrEqual(before);
      expect(Number.isFinite(s.losses[it0])).toBe(true);
      const f = await pageFeatures(page);
      expect(f.images.map((i) => [i.width, i.height])).toEqual([
        [48, 40],
        [64, 64],
        [30, 52],
      ]);
      expect(pageErrors).toEqual([]);
    }, 120_000);
  });
}
