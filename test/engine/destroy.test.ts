/**
 * Engine.destroy() returns native memory (reliability F12): a child process creates and destroys
 * engines in a loop, each compiling a few pipelines and running them, and its resident set must
 * level off. Before the fix every engine stayed reachable through the device's error listener and
 * RSS grew by ~2.6 MB per engine (≈ 50 MB over the 20 measured cycles); now the growth after the
 * warm-up is a few MB (Dawn's own caches settling), under the 20 MB bound.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { afterAll, describe, expect, it } from 'vitest';

const dir = mkdtempSync(join(tmpdir(), 'webdino-destroy-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('Engine.destroy', () => {
  it('releases each engine: RSS is bounded over 20 init / run / destroy cycles', async () => {
    const script = join(dir, 'engine-cycles-child.mjs');
    await build({
      entryPoints: [fileURLToPath(new URL('./engine-cycles-child.ts', import.meta.url))],
      outfile: script,
      bundle: true,
      format: 'esm',
      platform: 'node',
      target: 'node20',
      external: ['webgpu'],
      logLevel: 'warning',
    });
    // The bundle lives in a temporary folder: `webgpu` (native) resolves through a link to ours.
    symlinkSync(fileURLToPath(new URL('../../node_modules', import.meta.url)), join(dir, 'node_modules'), 'dir');
    const r = spawnSync(process.execPath, ['--expose-gc', script, '12', '20', '20'], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/rss grew/);
    console.log(r.stdout.trim());
  }, 90_000);
});
