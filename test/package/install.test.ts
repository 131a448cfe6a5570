/**
 * The package as a new user gets it. `npm run test:package` (about 75 s on two cores, so not part of
 * `npm test`): `npm pack` (which builds, through `prepare`), then `npm install <tarball>` into an
 * empty project, dependencies from the npm cache or the registry (`--prefer-offline`), and there:
 *
 * - the tarball holds what a consumer runs and nothing else: bin/webdino.js, dist/ (bundles,
 *   browser bundles, type declarations), README.md; no TypeScript sources, bench/, web/, demo;
 * - the README's engine example (the first ```ts block under "Using the engine", types stripped by
 *   esbuild) runs with `node` and prints its loss;
 * - `npx webdino train --max-iterations 2` trains two iterations of the default run and writes the
 *   run folder, and `npx webdino bench --quick --only add` runs (bench/ is bundled in dist/cli.js);
 * - installed with `--omit=optional` (no Dawn), the example fails with NoAdapterError saying which
 *   package to install.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { transform } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '../..');
const run = promisify(execFile);

/** Runs a command; resolves to its exit code and output, whatever the code. */
async function sh(cmd: string, args: string[], cwd: string, env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(cmd, args, { cwd, env: { ...process.env, ...env }, maxBuffer: 64 << 20, timeout: 280_000 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof err.code === 'number' ? err.code : -1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

/** The README's first TypeScript block under "## Using the engine", as JavaScript. */
async function readmeEngineExample(): Promise<string> {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Using the engine'));
  const m = /```ts\n([\s\S]*?)```/.exec(section);
  if (!m) throw new Error('README.md: no ```ts block under "## Using the engine"');
  return (await transform(m[1], { loader: 'ts', format: 'esm' })).code;
}

/** An empty project with the tarball installed (extra npm flags, e.g. --omit=optional). */
async function project(dir: string, tarball: string, ...flags: string[]): Promise<void> {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true, type: 'module' }));
  const r = await sh('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', ...flags, tarball], dir);
  expect(r.code, `npm install ${flags.join(' ')} ${tarball}:\n${r.stderr}`).toBe(0);
}

describe('the packed package, installed into an empty project', () => {
  let tmp: string;
  let tarball: string;
  let app: string;

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'webdino-pack-'));
    const p = await sh('npm', ['pack', '--pack-destination', tmp], ROOT);
    expect(p.code, p.stderr).toBe(0);
    const name = readdirSync(tmp).find((f) => f.endsWith('.tgz'));
    expect(name, readdirSync(tmp).join(', ')).toBeDefined();
    tarball = join(tmp, name!);
    app = join(tmp, 'app');
    await project(app, tarball);
    writeFileSync(join(app, 'engine-example.mjs'), await readmeEngineExample());
  });

  afterAll(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('ships bin, dist (with types) and the README, and no sources', async () => {
    const list = await sh('tar', ['tzf', tarball], tmp);
    const files = list.stdout.trim().split('\n').map((f) => f.replace(/^package\//, ''));
    for (const f of ['bin/webdino.js', 'dist/index.js', 'dist/cli.js', 'dist/decode-worker.js', 'dist/browser/webdino.js', 'dist/types/index.d.ts', 'README.md', 'package.json']) {
      expect(files, f).toContain(f);
    }
    const unwanted = files.filter((f) => (/\.ts$/.test(f) && !/\.d\.ts$/.test(f)) || /^(bench|web|engine|kernels|models|train|eval|scripts|test)\//.test(f) || f.startsWith('dist/demo/'));
    expect(unwanted).toEqual([]);
    const pkg = JSON.parse(readFileSync(join(app, 'node_modules/webdino/package.json'), 'utf8')) as { optionalDependencies?: Record<string, string> };
    expect(Object.keys(pkg.optionalDependencies ?? {})).toContain('webgpu');
    expect(existsSync(join(app, 'node_modules/webgpu/package.json'))).toBe(true);
  });

  it("runs the README's engine example", async () => {
    const r = await sh(process.execPath, ['engine-example.mjs'], app);
    expect(r.code, r.stderr).toBe(0);
    // The example prints the loss, then the gradient array, then the memory figures.
    expect(r.stdout).toMatch(/^\d+\.\d+ Float32Array\(640\)/m);
    expect(r.stdout).toContain('liveBytes');
  });

  it('npx webdino train --max-iterations 2, and npx webdino bench (bundled)', async () => {
    const t = await sh('npx', ['webdino', 'train', '--max-iterations', '2'], app);
    expect(t.code, t.stderr).toBe(0);
    expect(t.stdout).toMatch(/done: 2 iterations/);
    for (const f of ['checkpoint.safetensors', 'teacher_backbone.safetensors', 'metrics.jsonl', 'loss.png']) expect(existsSync(join(app, 'runs/dino', f)), f).toBe(true);
    const b = await sh('npx', ['webdino', 'bench', '--quick', '--only', 'add', '--reps', '1'], app);
    expect(b.code, b.stderr).toBe(0);
    expect(b.stdout).toMatch(/^add\s+fwd/m);
  });

  it('without its optional dependency (no Dawn), init() says which package to install', async () => {
    const bare = join(tmp, 'bare');
    await project(bare, tarball, '--omit=optional');
    expect(existsSync(join(bare, 'node_modules/webgpu'))).toBe(false);
    writeFileSync(join(bare, 'engine-example.mjs'), await readmeEngineExample());
    const r = await sh(process.execPath, ['engine-example.mjs'], bare);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('NoAdapterError');
    expect(r.stderr).toContain('npm install webgpu');
  });
});
