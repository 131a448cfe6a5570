/**
 * Node-side helpers of the browser tests: bundle test files for a page (with 'vitest' aliased to
 * test/browser/vitest-shim.ts and the Node-only engine modules stubbed, exactly as the package's
 * browser bundle), serve them on 127.0.0.1, and run one file's tests in a fresh page of a shared
 * headless Chromium.
 */
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import type { Browser } from 'playwright-core';
import { browserOptions, nodeLeaks } from '../../scripts/browser-esbuild.mjs';
import type { TestResult } from './vitest-shim.js';

/** The repository root. */
export const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));

const RUNNER_HTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>webdino browser tests</title></head>
<body><pre id="log"></pre>
<script type="module">
const params = new URLSearchParams(location.search);
const file = params.get('file');
const skip = JSON.parse(params.get('skip') || '{}');
const log = document.getElementById('log');
window.__progress = [];
try {
  const m = await import('./' + file + '.js');
  window.__results = await m.runRegistered((r) => {
    window.__progress.push(r);
    log.textContent += r.status + ' ' + r.name + '\\n';
  }, skip);
} catch (e) {
  window.__results = [{ name: file + ' (loading)', status: 'fail', error: String(e && e.stack || e), ms: 0 }];
}
</script></body></html>
`;

/** A folder of bundled test files and the page that runs them (`runner.html?file=<name>`). */
export interface TestBundles {
  dir: string;
  /** Bundle names (one per test file: its base name without `.test.ts`). */
  names: string[];
  /** Deletes the folder. */
  dispose(): void;
}

/**
 * Bundles each test file (paths relative to the repository root) into `<name>.js`, a module that
 * registers the file's tests and exports `runRegistered`. Throws if a bundle would need Node.
 */
export async function bundleTestFiles(files: readonly string[]): Promise<TestBundles> {
  const dir = mkdtempSync(join(tmpdir(), 'webdino-browser-tests-'));
  const shim = join(ROOT, 'test/browser/vitest-shim.ts');
  const names = files.map((f) => basename(f).replace(/\.test\.ts$/, ''));
  const entries = new Map(files.map((f, i) => [names[i], join(ROOT, f)]));
  const result = await build({
    ...browserOptions,
    absWorkingDir: ROOT,
    entryPoints: names.map((n) => ({ in: `webdino-test:${n}`, out: n })),
    outdir: dir,
    sourcemap: 'inline',
    alias: { vitest: shim },
    logLevel: 'error',
    plugins: [
      ...(browserOptions.plugins ?? []),
      {
        name: 'webdino-test-entries',
        setup(b) {
          b.onResolve({ filter: /^webdino-test:/ }, (args) => ({ path: args.path.slice('webdino-test:'.length), namespace: 'webdino-test' }));
          b.onLoad({ filter: /.*/, namespace: 'webdino-test' }, (args) => ({
            contents:
              `import { runRegistered } from ${JSON.stringify(shim)};\n` +
              `import ${JSON.stringify(entries.get(args.path)!)};\n` +
              'export { runRegistered };\n',
            loader: 'js',
            resolveDir: ROOT,
          }));
        },
      },
    ],
  });
  const leaks = nodeLeaks(result.metafile);
  if (leaks.length) throw new Error(`browser test bundles need Node:\n  ${leaks.join('\n  ')}`);
  writeFileSync(join(dir, 'runner.html'), RUNNER_HTML);
  return { dir, names, dispose: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Opens `url` + `runner.html?file=<name>` in a new page, waits (up to `timeoutMs`) for the file's
 * tests to finish and returns their results. `skip` maps full test names to the reason they are
 * skipped (reported as skips). Page errors and console errors are collected in `console`.
 */
export async function runTestPage(
  browser: Browser,
  url: string,
  name: string,
  timeoutMs: number,
  skip: Record<string, string> = {},
): Promise<{ results: TestResult[]; console: string[]; seconds: number }> {
  const page = await browser.newPage();
  const consoleLines: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') consoleLines.push(`${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
  const t0 = performance.now();
  try {
    await page.goto(`${url}runner.html?file=${encodeURIComponent(name)}&skip=${encodeURIComponent(JSON.stringify(skip))}`);
    try {
      await page.waitForFunction(() => (globalThis as { __results?: unknown }).__results !== undefined, null, { timeout: timeoutMs, polling: 250 });
    } catch (e) {
      const done = (await page.evaluate(() => (globalThis as { __progress?: TestResult[] }).__progress ?? []).catch(() => [])) as TestResult[];
      throw new Error(
        `${name}: the page did not finish within ${timeoutMs / 1000} s (${done.length} tests done; last: ${done.at(-1)?.name ?? 'none'})\n${consoleLines.join('\n')}`,
        { cause: e },
      );
    }
    const results = (await page.evaluate(() => (globalThis as { __results?: TestResult[] }).__results)) as TestResult[];
    return { results, console: consoleLines, seconds: (performance.now() - t0) / 1000 };
  } finally {
    await page.close();
  }
}

/**
 * Builds the demo page from web/ into a new temporary folder (the same bundles and static files
 * as `npm run build` puts in dist/demo, without touching dist/). Throws if a bundle needs Node.
 */
export async function buildDemo(): Promise<{ dir: string; dispose(): void }> {
  const dir = mkdtempSync(join(tmpdir(), 'webdino-demo-'));
  for (const entry of ['web/main.ts', 'web/worker.ts']) {
    const r = await build({ ...browserOptions, absWorkingDir: ROOT, entryPoints: [entry], outfile: join(dir, basename(entry).replace(/\.ts$/, '.js')), sourcemap: 'inline', logLevel: 'error' });
    const leaks = nodeLeaks(r.metafile);
    if (leaks.length) throw new Error(`demo bundle ${entry} needs Node:\n  ${leaks.join('\n  ')}`);
  }
  for (const f of ['index.html', 'styles.css']) copyFileSync(join(ROOT, 'web', f), join(dir, f));
  return { dir, dispose: () => rmSync(dir, { recursive: true, force: true }) };
}
