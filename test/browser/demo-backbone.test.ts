/**
 * The demo page's backbone panel (web/) in headless Chromium: the user picks a DINOv2 / DINOv3
 * weights file and images, the worker parses the file from its bytes and builds the backbone
 * (models/backbone.ts), and the page draws the PCA of the patch features and the attention heads
 * (eval/visualize.ts). On the golden fixtures of test/fixtures/models/dinov2_dinov3 (tiny random
 * weights written by the official code):
 *
 *   1. v2_reg/official.safetensors (DINOv2 with registers; width 32, so the heads must be given:
 *      without them the page says so and asks for them) and v3_mlp/official.pth (DINOv3: RoPE,
 *      storage tokens, masked key bias; a torch zip) load, and the drawn grid shows the images,
 *      the PCA and every head (a screenshot: the PCA cell is not uniform);
 *   2. the page's CLS features, patch tokens and CLS attention of the user's images equal Node's
 *      `embedAll` (eval/embed-node.ts, what `webdino embed` runs) on the same images, read back
 *      from the page and written as PNG (lossless), within 1e-4 relative (max |Δ| ≤ 1e-4·max |f|:
 *      SwiftShader vs lavapipe only reorder f32 sums); the page decoded the PNGs to the exact
 *      pixels written;
 *   3. the same .pth re-zipped with deflate-compressed entries (torch never compresses, other
 *      zip tools do) loads through DecompressionStream and gives the same features;
 *   4. a file that is not a backbone is refused with a message naming it, and training is untouched.
 *
 * Skipped when no Chromium is installed (scripts/setup.sh --browser installs Debian's).
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { decode as decodePng } from 'fast-png';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { init } from '../../index.js';
import { encodePng } from '../../models/io/image.js';
import { crc32, ZipArchive } from '../../models/io/zip.js';
import { loadBackbone } from '../../models/backbone-node.js';
import { embedAll, openEmbedInput } from '../../eval/embed-node.js';
import { startStaticServer, type StaticServer } from '../../scripts/static-server.mjs';
import { zipOf } from '../hostile/hostile-files.js';
import { chromiumPath, launchChromium } from './chromium.js';
import { buildDemo } from './harness.js';
import type { PageState } from '../../web/main.js';

/** A tiny training config (the trainer is built at start-up but never trained here). */
const QUERY = '?dim=32&depth=2&heads=2&out=256&hidden=128&bottleneck=64&batch=8&locals=2&n=160&attn=0&snap=0';
const FIXTURES = new URL('../fixtures/models/dinov2_dinov3/', import.meta.url).pathname;
/** The eval transform's centre crop of the features comparison. */
const CROP = 112;

interface PageBackboneFeatures {
  crop: number;
  features: number[];
  featuresShape: [number, number];
  patchTokens: number[];
  patchTokensShape: [number, number, number];
  attention: number[];
  attentionShape: [number, number, number];
  images: { width: number; height: number; data: number[] }[];
}

const getState = (page: Page) => page.evaluate(() => (globalThis as unknown as { webdino: { state: PageState } }).webdino.state);
const waitState = (page: Page, pred: string, timeout = 120_000) =>
  page.waitForFunction(`(() => { const s = globalThis.webdino && globalThis.webdino.state; return !!s && (${pred}); })()`, null, { timeout, polling: 100 });
const backboneFeatures = (page: Page, crop: number) =>
  page.evaluate((c) => (globalThis as unknown as { webdino: { backboneFeatures(c: number): Promise<PageBackboneFeatures> } }).webdino.backboneFeatures(c), crop);

function relMaxErr(got: ArrayLike<number>, want: ArrayLike<number>): number {
  expect(got.length).toBe(want.length);
  let scale = 0;
  let err = 0;
  for (let i = 0; i < want.length; i++) {
    scale = Math.max(scale, Math.abs(want[i]));
    err = Math.max(err, Math.abs(got[i] - want[i]));
  }
  return err / scale;
}

/** Three RGB images of different sizes (none a multiple of a patch), with a disc and a gradient. */
function userImages(): { w: number; h: number; rgb: Uint8Array }[] {
  return [
    [90, 70],
    [64, 100],
    [120, 120],
  ].map(([w, h], k) => {
    const rgb = new Uint8Array(w * h * 3);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const inside = (x - w / 2) ** 2 + (y - h / 2) ** 2 < (Math.min(w, h) / 3) ** 2;
        const c = inside ? [220, 40 + 60 * k, 30 + (x % 17) * 5] : [20 + ((x + y) % 50), 90, 160 - 40 * k];
        rgb.set(c, (y * w + x) * 3);
      }
    }
    return { w, h, rgb };
  });
}

/** A torch zip re-written with every entry deflate-compressed (what a re-zipping tool makes). */
function deflatedCopy(zip: Uint8Array): Uint8Array {
  const a = new ZipArchive(zip);
  return zipOf(
    a.names().map((name) => {
      const data = a.read(name);
      return { name, data: deflateRawSync(data), method: 8 as const, size: data.length, crc: crc32(data) };
    }),
  );
}

if (!chromiumPath()) {
  it.skip('demo backbone panel in Chromium: skipped, no Chromium (install it with `bash scripts/setup.sh --browser` or set WEBDINO_CHROMIUM)', () => {});
} else {
  describe('demo page: a DINOv2 / DINOv3 backbone from a file (headless Chromium)', () => {
    let demo: { dir: string; dispose(): void };
    let server: StaticServer;
    let browser: Browser;
    let page: Page;
    let tmp: string;
    let imageFiles: string[] = [];
    const pageErrors: string[] = [];

    beforeAll(async () => {
      tmp = mkdtempSync(join(tmpdir(), 'webdino-demo-backbone-'));
      demo = await buildDemo();
      server = await startStaticServer({ '/': demo.dir });
      browser = await launchChromium();
      page = await browser.newPage();
      page.on('pageerror', (e) => pageErrors.push(e.message));
      await page.goto(server.url + QUERY);
      await waitState(page, 's.ready || s.error', 180_000);
      expect((await getState(page)).error).toBeNull();
      imageFiles = userImages().map(({ w, h, rgb }, k) => {
        const path = join(tmp, `mine${k}.png`);
        writeFileSync(path, encodePng(w, h, rgb, 3));
        return path;
      });
      await page.setInputFiles('#backbone-images', imageFiles);
    }, 240_000);

    afterAll(async () => {
      await browser?.close();
      await server?.close();
      demo?.dispose();
      if (tmp) rmSync(tmp, { recursive: true, force: true });
    });

    /** Loads `path` with `heads` ('' = auto) and waits for the drawing (or an error). */
    async function loadInPage(path: string, heads: number | '', name: string): Promise<PageState> {
      const before = await getState(page);
      await page.fill('#backbone-heads', String(heads));
      await page.setInputFiles('#load-backbone', path);
      await waitState(
        page,
        `(s.backbone && s.backbone.name === ${JSON.stringify(name)} && s.backboneDrawn > ${before.backboneDrawn}) || s.backboneErrors > ${before.backboneErrors}`,
      );
      return getState(page);
    }

    /** The page's features of the user's images vs Node's embedAll on the same pixels and weights. */
    async function compareWithNode(path: string, numHeads: number | undefined, what: string): Promise<PageBackboneFeatures> {
      const f = await backboneFeatures(page, CROP);
      expect(f.featuresShape[0]).toBe(3);
      // The page decoded the PNGs to exactly the pixels written.
      const originals = userImages();
      f.images.forEach((im, i) => {
        expect([im.width, im.height]).toEqual([originals[i].w, originals[i].h]);
        expect(im.data.every((v, j) => v === originals[i].rgb[j]), `image ${i} decoded exactly`).toBe(true);
      });
      const dir = join(tmp, 'as-seen');
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { recursive: true });
      f.images.forEach((im, i) => writeFileSync(join(dir, `img${i}.png`), encodePng(im.width, im.height, Uint8Array.from(im.data), 3)));
      const wd = await init();
      const { model } = await loadBackbone(wd, path, numHeads ? { numHeads } : {});
      try {
        const r = await embedAll(wd, model, await openEmbedInput(dir), { batchSize: 8, crop: CROP, attention: true, patchTokens: true });
        expect(r.featuresShape).toEqual(f.featuresShape);
        expect(r.patchTokensShape).toEqual(f.patchTokensShape);
        expect(r.attentionShape).toEqual(f.attentionShape);
        const errs = [relMaxErr(f.features, r.features), relMaxErr(f.patchTokens, r.patchTokens!), relMaxErr(f.attention, r.attention!)];
        console.log(
          `demo backbone ${what}: page vs Node, max |Δ| / max |f|: CLS ${errs[0].toExponential(2)}, patch tokens ${errs[1].toExponential(2)}, ` +
            `attention ${errs[2].toExponential(2)} (${f.featuresShape.join('×')}, ${f.patchTokensShape.join('×')}, ${f.attentionShape.join('×')})`,
        );
        for (const e of errs) expect(e).toBeLessThanOrEqual(1e-4);
        // Not trivially equal: the images' features differ.
        const D = f.featuresShape[1];
        expect(relMaxErr(r.features.slice(0, D), r.features.slice(D, 2 * D))).toBeGreaterThan(1e-2);
      } finally {
        model.dispose();
        wd.device.destroy();
      }
      return f;
    }

    /** The drawn grid: many colours, and a PCA cell (second column, first row) that is not uniform. */
    async function checkDrawing(heads: number): Promise<void> {
      const s = await getState(page);
      expect(s.backboneView?.heads).toBe(heads);
      expect(s.backboneView?.images).toEqual(['mine0.png', 'mine1.png', 'mine2.png']);
      const canvas = page.locator('#backbone-canvas');
      const cssWidth = await canvas.evaluate((c) => (c as HTMLCanvasElement).width);
      expect(cssWidth).toBe((2 + heads) * (112 + 4));
      const png = decodePng(await canvas.screenshot());
      const data = png.data as Uint8Array;
      const { width, channels } = png;
      const scale = width / cssWidth;
      const cell = new Set<number>();
      for (let y = Math.round(20 * scale); y < Math.round(124 * scale); y++) {
        for (let x = Math.round(120 * scale); x < Math.round(228 * scale); x++) {
          const i = (y * width + x) * channels;
          cell.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
        }
      }
      expect(cell.size, 'colours in the PCA picture of the first image').toBeGreaterThan(8);
    }

    it('DINOv2 with registers (official safetensors): asks for the heads, then draws PCA and heads; features equal Node embed', async () => {
      const path = join(FIXTURES, 'v2_reg/official.safetensors');
      const arch = JSON.parse(readFileSync(join(FIXTURES, 'v2_reg/arch.json'), 'utf8')) as { num_heads: number };
      // Width 32 matches no preset and is not a multiple of 64: the heads cannot be inferred.
      let s = await loadInPage(path, '', 'official.safetensors');
      expect(s.backbone).toBeNull();
      expect(s.backboneError).toMatch(/official\.safetensors.*heads.*enter the number of heads on the page/);
      s = await loadInPage(path, arch.num_heads, 'official.safetensors');
      expect(s.backboneError).toBeNull();
      expect(s.backbone?.description).toMatch(/dinov2/i);
      expect(s.backbone?.numHeads).toBe(arch.num_heads);
      await checkDrawing(arch.num_heads);
      await compareWithNode(path, arch.num_heads, 'v2_reg official.safetensors');
      expect(pageErrors).toEqual([]);
    }, 240_000);

    let v3Features: PageBackboneFeatures | null = null;
    it('DINOv3 (official .pth, RoPE and storage tokens): heads from the file, PCA and heads drawn; features equal Node embed', async () => {
      const path = join(FIXTURES, 'v3_mlp/official.pth');
      const arch = JSON.parse(readFileSync(join(FIXTURES, 'v3_mlp/arch.json'), 'utf8')) as { num_heads: number; num_storage_tokens: number };
      const s = await loadInPage(path, '', 'official.pth');
      expect(s.backboneError).toBeNull();
      expect(s.backbone?.description).toMatch(/dinov3/i);
      expect(s.backbone?.numHeads).toBe(arch.num_heads);
      expect(s.backbone?.prefixTokens).toBe(arch.num_storage_tokens);
      await checkDrawing(arch.num_heads);
      v3Features = await compareWithNode(path, undefined, 'v3_mlp official.pth');
      expect(pageErrors).toEqual([]);
    }, 240_000);

    it('a .pth with deflate-compressed entries loads through DecompressionStream, same features', async () => {
      const path = join(tmp, 'compressed.pth');
      const stored = new Uint8Array(readFileSync(join(FIXTURES, 'v3_mlp/official.pth')));
      const compressed = deflatedCopy(stored);
      expect(new ZipArchive(compressed).entries.values().next().value!.method).toBe(8);
      writeFileSync(path, compressed);
      const s = await loadInPage(path, '', 'compressed.pth');
      expect(s.backboneError).toBeNull();
      const f = await backboneFeatures(page, CROP);
      expect(relMaxErr(f.features, v3Features!.features)).toBe(0);
      expect(relMaxErr(f.patchTokens, v3Features!.patchTokens)).toBe(0);
    }, 120_000);

    it('refuses a file that is not a backbone, naming it; training is untouched', async () => {
      const bogus = join(tmp, 'holiday.pth');
      writeFileSync(bogus, encodePng(2, 2, new Uint8Array(12), 3));
      const before = await getState(page);
      const s = await loadInPage(bogus, '', 'holiday.pth');
      expect(s.backboneError).toMatch(/holiday\.pth/);
      expect(await page.locator('#banner').innerText()).toMatch(/holiday\.pth/);
      // The previous backbone stays loaded; the trainer is as it was.
      expect(s.backbone?.name).toBe('compressed.pth');
      expect(s.error).toBeNull();
      expect(s.iteration).toBe(before.iteration);
      expect(pageErrors).toEqual([]);
    }, 60_000);
  });
}
