/**
 * The engine's kernel conformance suite in a browser: the SAME files as under Node
 * (every test/kernels/*.test.ts, not copies), bundled by esbuild for the page with 'vitest'
 * aliased to test/browser/vitest-shim.ts (Vitest's own `expect`, a small describe/it runner) and
 * the Node-only engine modules stubbed exactly as in the package's browser bundle. Each file runs
 * in a fresh page of headless Chromium, where `init()` finds `navigator.gpu` (SwiftShader here, a
 * CPU implementation of Vulkan; both kernel variants run, as under Node).
 *
 * One test here per kernel file; it fails with the names and messages of the failing browser
 * tests. Skipped when no Chromium is installed (scripts/setup.sh --browser installs Debian's).
 *
 * Browser-only skips (reported as skipped, with the reason):
 * - softmax 'many rows (70 000 × 3…)' in the gpu layout takes ~55 s on SwiftShader (one workgroup
 *   per row, 70 000 rows) — more than the rest of the suite together. The same >65 535-workgroup
 *   grid folding is checked in the browser by elementwise's 'a launch of more than 65535
 *   workgroups covers every element exactly once' and by the cpu layout of this test, and this
 *   test itself runs under Node.
 * Everything else runs: ~520 tests in ~75 s on two CPU cores.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser } from 'playwright-core';
import { startStaticServer, type StaticServer } from '../../scripts/static-server.mjs';
import { chromiumPath, launchChromium } from './chromium.js';
import { bundleTestFiles, ROOT, runTestPage, type TestBundles } from './harness.js';

/**
 * Kernel test files not run in the page, with the reason. Chromium here runs WebGPU on SwiftShader,
 * whose shader compiler takes from 16 s (the 'gpu' assign kernel) to minutes (the 'cpu' register
 * tiles of 8 rows or more: measured, a 1-point assign never returned) on the k-means kernels; in
 * CI, Chromium's GPU watchdog then dropped the device ("A valid external Instance reference no
 * longer exists"). k-means serves `webdino curate`, a Node command; its kernels are tested under
 * Node on lavapipe with both variants. The f16 kernels need shader-f16, which SwiftShader lacks.
 */
const NODE_ONLY: Record<string, string> = {
  'kmeans.test.ts': "SwiftShader's shader compiler takes minutes on the k-means tiles (Node-only curation kernels)",
  // Every test of this file needs shader-f16, which SwiftShader does not offer (lavapipe does).
  'f16.test.ts': 'SwiftShader offers no shader-f16; the f16 kernels are tested under Node on lavapipe',
};

const KERNEL_FILES = readdirSync(join(ROOT, 'test/kernels'))
  .filter((f) => f.endsWith('.test.ts') && !(f in NODE_ONLY))
  .sort()
  .map((f) => `test/kernels/${f}`);

/** Tests skipped in the browser only: bundle name → full test name → reason (see the file header). */
const BROWSER_SKIPS: Record<string, Record<string, string>> = {
  // None at present: the 70 000-row softmax case that once took ~55 s on SwiftShader runs in
  // seconds in every row layout since the row kernels were rewritten.
};

const PAGE_TIMEOUT_MS = 240_000;

if (!chromiumPath()) {
  it.skip('kernel conformance in Chromium: skipped, no Chromium (install it with `bash scripts/setup.sh --browser` or set WEBDINO_CHROMIUM)', () => {});
} else {
  describe('kernel conformance suite in headless Chromium (navigator.gpu)', () => {
    let bundles: TestBundles;
    let server: StaticServer;
    let browser: Browser;

    beforeAll(async () => {
      bundles = await bundleTestFiles(KERNEL_FILES);
      server = await startStaticServer({ '/': bundles.dir });
      browser = await launchChromium();
    });

    afterAll(async () => {
      await browser?.close();
      await server?.close();
      bundles?.dispose();
    });

    it('finds every kernel test file', () => {
      expect(KERNEL_FILES.length).toBeGreaterThanOrEqual(9);
      expect(bundles.names.length).toBe(KERNEL_FILES.length);
    });

    it.each(KERNEL_FILES)('%s passes in the browser', async (file) => {
      const name = file.replace(/^test\/kernels\//, '').replace(/\.test\.ts$/, '');
      const skips = BROWSER_SKIPS[name] ?? {};
      const { results, console: lines, seconds } = await runTestPage(browser, server.url, name, PAGE_TIMEOUT_MS, skips);
      const failed = results.filter((r) => r.status === 'fail');
      const passed = results.filter((r) => r.status === 'pass').length;
      const skipped = results.filter((r) => r.status === 'skip');
      console.log(`browser ${file}: ${passed} passed, ${failed.length} failed, ${skipped.length} skipped in ${seconds.toFixed(1)} s`);
      for (const s of skipped) console.log(`  skipped: ${s.name}${s.skipReason ? ` (${s.skipReason})` : ''}`);
      if (failed.length) {
        throw new Error(
          `${failed.length} of ${results.length} tests of ${file} failed in Chromium:\n` +
            failed.map((f) => `  ✗ ${f.name}\n    ${(f.error ?? '').replace(/\n/g, '\n    ')}`).join('\n') +
            (lines.length ? `\nconsole:\n  ${lines.join('\n  ')}` : ''),
        );
      }
      expect(passed, `${file}: no test ran in the page`).toBeGreaterThan(0);
      // Every browser-only skip must name a real test (a renamed test would silently run again otherwise).
      for (const skipName of Object.keys(skips)) {
        expect(skipped.map((s) => s.name), `${file}: BROWSER_SKIPS entry not found`).toContain(skipName);
      }
    }, PAGE_TIMEOUT_MS + 30_000);
  });
}
