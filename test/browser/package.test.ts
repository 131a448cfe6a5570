/**
 * The package in both worlds: `npm run build` makes a browser bundle with nothing Node-only in it
 * (checked on esbuild's metafile, and the check itself is shown to catch a leak), package.json
 * `exports` sends `import ... from 'webdino'` to dist/index.js under Node and to
 * dist/browser/webdino.js for browser bundlers, both expose the same names, the minified bundle
 * runs `init()` in Chromium, and `npm run demo`'s server prints a 127.0.0.1 address that serves
 * the page. Figures (bundle sizes) are printed.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { browserOptions, nodeLeaks } from '../../scripts/browser-esbuild.mjs';
import { startStaticServer } from '../../scripts/static-server.mjs';
import { chromiumPath, launchChromium } from './chromium.js';
import { ROOT } from './harness.js';

describe('package build and exports', () => {
  let tmp: string;

  beforeAll(() => {
    tmp = mkdtempSync(join(tmpdir(), 'webdino-package-'));
    execFileSync(process.execPath, ['scripts/build.mjs'], { cwd: ROOT, stdio: 'pipe' });
  });

  afterAll(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('builds a browser bundle without Node built-ins or webgpu (minified and gzipped sizes)', async () => {
    const r = await build({ ...browserOptions, absWorkingDir: ROOT, entryPoints: ['index.ts'], write: false, outfile: join(tmp, 'x.js'), minify: true });
    expect(nodeLeaks(r.metafile)).toEqual([]);
    const min = readFileSync(join(ROOT, 'dist/browser/webdino.min.js'));
    const gz = gzipSync(min, { level: 9 });
    console.log(`browser bundle: ${(min.length / 1024).toFixed(1)} KiB minified, ${(gz.length / 1024).toFixed(1)} KiB gzipped`);
    expect(min.length).toBeGreaterThan(10_000);
    const text = readFileSync(join(ROOT, 'dist/browser/webdino.js'), 'utf8');
    expect(text).not.toMatch(/from\s*["'](node:|webgpu["'])/);
    expect(text).not.toMatch(/import\(\s*["'](node:|webgpu["'])/);
  });

  it('the leak check catches a bundle that would need Node', async () => {
    // Without the stubs, engine/node.ts (AsyncLocalStorage) comes in with node:async_hooks.
    const r = await build({
      ...browserOptions,
      plugins: [],
      absWorkingDir: ROOT,
      entryPoints: ['index.ts'],
      write: false,
      outfile: join(tmp, 'y.js'),
      external: ['node:*', 'webgpu'],
      logLevel: 'silent',
    });
    const leaks = nodeLeaks(r.metafile);
    expect(leaks.some((l) => l.includes('node:async_hooks'))).toBe(true);
    expect(leaks.some((l) => l.includes('engine/node.ts'))).toBe(true);
  });

  it("exports: a browser bundler resolving 'webdino' gets dist/browser/webdino.js", async () => {
    const app = join(tmp, 'app');
    mkdirSync(join(app, 'node_modules'), { recursive: true });
    symlinkSync(ROOT, join(app, 'node_modules', 'webdino'), 'dir');
    writeFileSync(join(app, 'main.js'), "import { init } from 'webdino';\nexport const go = () => init();\n");
    const r = await build({ bundle: true, format: 'esm', platform: 'browser', metafile: true, write: false, absWorkingDir: app, entryPoints: ['main.js'], outfile: 'out.js', preserveSymlinks: true, logLevel: 'silent' });
    const inputs = Object.keys(r.metafile.inputs);
    expect(inputs.some((p) => p.endsWith('dist/browser/webdino.js')), inputs.join(', ')).toBe(true);
    expect(nodeLeaks(r.metafile)).toEqual([]);
  });

  it("exports: Node resolving 'webdino' gets dist/index.js, with init()", () => {
    const out = execFileSync(
      process.execPath,
      ['--input-type=module', '-e', "const m = await import('webdino'); console.log(JSON.stringify({ init: typeof m.init, at: import.meta.resolve('webdino'), names: Object.keys(m).sort() }));"],
      { cwd: ROOT, encoding: 'utf8' },
    );
    const r = JSON.parse(out) as { init: string; at: string; names: string[] };
    expect(r.init).toBe('function');
    expect(r.at).toMatch(/\/dist\/index\.js$/);
  });

  it('Node and browser bundles expose the same names; the minified bundle runs init() in Chromium', async (ctx) => {
    if (!chromiumPath()) {
      ctx.skip(); // no Chromium: `bash scripts/setup.sh --browser` installs it
      return;
    }
    const nodeNames = JSON.parse(
      execFileSync(process.execPath, ['--input-type=module', '-e', "const m = await import('webdino'); console.log(JSON.stringify(Object.keys(m).sort()));"], { cwd: ROOT, encoding: 'utf8' }),
    ) as string[];
    writeFileSync(
      join(tmp, 'index.html'),
      `<!doctype html><script type="module">
import * as wd from './webdino.min.js';
try {
  const e = await wd.init();
  const y = await e.scope(async () => e.tensor([1, 2, 3], [3]).mul(e.tensor([4, 5, 6], [3])).sum().item());
  window.__result = { names: Object.keys(wd).sort(), y, adapter: e.device.adapterName() };
} catch (err) { window.__result = { error: String(err && err.stack || err) }; }
</script>`,
    );
    writeFileSync(join(tmp, 'webdino.min.js'), readFileSync(join(ROOT, 'dist/browser/webdino.min.js')));
    const server = await startStaticServer({ '/': tmp });
    const browser = await launchChromium();
    try {
      const page = await browser.newPage();
      await page.goto(server.url);
      await page.waitForFunction(() => (globalThis as { __result?: unknown }).__result !== undefined, null, { timeout: 60_000 });
      const r = (await page.evaluate(() => (globalThis as { __result?: unknown }).__result)) as { names?: string[]; y?: number; error?: string };
      expect(r.error).toBeUndefined();
      expect(r.y).toBe(32);
      expect(r.names).toEqual(nodeNames);
    } finally {
      await browser.close();
      await server.close();
    }
  }, 120_000);

  it('`npm run demo` serves the page on 127.0.0.1 and prints the address', async () => {
    const child = spawn(process.execPath, ['scripts/serve-demo.mjs'], { cwd: ROOT, env: { ...process.env, PORT: '0' }, stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let out = '';
        const timer = setTimeout(() => reject(new Error(`no address printed: ${out}`)), 15_000);
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          const m = /webdino demo: (http:\/\/127\.0\.0\.1:\d+\/)/.exec(out);
          if (m) {
            clearTimeout(timer);
            resolve(m[1]);
          }
        });
        child.on('exit', (code) => reject(new Error(`serve-demo exited (${code}): ${out}`)));
      });
      const html = await (await fetch(url)).text();
      expect(html).toMatch(/<title>webdino/);
      const js = await fetch(`${url}worker.js`);
      expect(js.status).toBe(200);
      expect(js.headers.get('content-type')).toMatch(/javascript/);
      expect((await fetch(`${url}../../package.json`)).status).not.toBe(200);
    } finally {
      child.kill('SIGTERM');
    }
  }, 30_000);
});
