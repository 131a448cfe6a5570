#!/usr/bin/env node
// Bundles the package with esbuild:
//   index.ts   -> dist/index.js  (platform neutral: runs in Node and in browsers; `webgpu` and
//                                 node:* stay external, so browser bundles never pull in Dawn)
//   bin/entry.ts -> dist/cli.js  (Node; `webgpu` stays external): the process entry of the CLI
//                                 (bin/cli.ts's main + bench/), started by bin/webdino.js
//   train/data/decode-worker-node.ts -> dist/decode-worker.js (Node worker thread: image decoding)
//   index.ts   -> dist/browser/webdino.js, dist/browser/webdino.min.js (platform browser: the
//                 package's `browser` export; Node-only engine modules replaced by stubs, and the
//                 build fails if any node:* / webgpu import or Node-only source survives)
//   web/main.ts, web/worker.ts -> dist/demo/ (the demo page, with web/index.html and
//                 web/styles.css copied next to them); `npm run demo` serves it
// A missing entry point is skipped with a note. dist/.stamp is touched after a successful build;
// scripts/setup.sh compares sources against it to decide whether to rebuild.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { browserOptions, nodeLeaks } from './browser-esbuild.mjs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
// Runtime dependencies are installed next to the package, so the Node bundles import them rather
// than inline them (cli-progress is CommonJS and requires Node built-ins at run time).
const deps = Object.keys(JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).dependencies ?? {});

const common = {
  absWorkingDir: root,
  bundle: true,
  format: 'esm',
  sourcemap: true,
  logLevel: 'warning',
};

const targets = [
  {
    entry: 'index.ts',
    outfile: 'dist/index.js',
    options: {
      platform: 'neutral',
      target: 'es2022',
      // 'neutral' resolves no package.json main fields by default; allow the usual ones in case a
      // dependency ever gets bundled.
      mainFields: ['module', 'main'],
      external: ['webgpu', 'node:*', ...deps],
    },
  },
  {
    entry: 'bin/entry.ts',
    outfile: 'dist/cli.js',
    options: {
      platform: 'node',
      target: 'node20',
      external: ['webgpu', ...deps],
    },
  },
  // The image-decoding worker thread of train/data/loader-node.ts (Node cannot start a worker from
  // TypeScript); it looks for this file next to dist/cli.js.
  {
    entry: 'train/data/decode-worker-node.ts',
    outfile: 'dist/decode-worker.js',
    options: {
      platform: 'node',
      target: 'node20',
    },
  },
];

// Browser bundles: same entry (same API) as dist/index.js, built for browsers. The metafile check
// guarantees that nothing Node-only is inside.
const browserTargets = [
  { entry: 'index.ts', outfile: 'dist/browser/webdino.js', options: {} },
  { entry: 'index.ts', outfile: 'dist/browser/webdino.min.js', options: { minify: true }, report: true },
  { entry: 'web/main.ts', outfile: 'dist/demo/main.js', options: {} },
  { entry: 'web/worker.ts', outfile: 'dist/demo/worker.js', options: {} },
];
// Static files of the demo, copied to dist/demo/.
const demoStatic = ['web/index.html', 'web/styles.css'];

mkdirSync(dist, { recursive: true });
let failed = false;
for (const t of targets) {
  if (!existsSync(join(root, t.entry))) {
    console.log(`build: ${t.entry} does not exist yet; skipping ${t.outfile}`);
    continue;
  }
  try {
    await build({ ...common, ...t.options, entryPoints: [t.entry], outfile: t.outfile });
    console.log(`build: ${t.entry} -> ${t.outfile}`);
  } catch {
    // esbuild has already printed the errors.
    console.error(`build: ${t.entry} failed`);
    failed = true;
  }
}

for (const t of browserTargets) {
  if (!existsSync(join(root, t.entry))) {
    console.log(`build: ${t.entry} does not exist yet; skipping ${t.outfile}`);
    continue;
  }
  try {
    const r = await build({ ...browserOptions, sourcemap: true, absWorkingDir: root, ...t.options, entryPoints: [t.entry], outfile: t.outfile });
    const leaks = nodeLeaks(r.metafile);
    if (leaks.length) {
      console.error(`build: ${t.outfile} is not browser-safe:\n  ${leaks.join('\n  ')}`);
      failed = true;
      continue;
    }
    let note = '';
    if (t.report) {
      const bytes = readFileSync(join(root, t.outfile));
      note = ` (${(bytes.length / 1024).toFixed(1)} KiB minified, ${(gzipSync(bytes, { level: 9 }).length / 1024).toFixed(1)} KiB gzipped)`;
    }
    console.log(`build: ${t.entry} -> ${t.outfile} [browser]${note}`);
  } catch {
    console.error(`build: ${t.entry} failed`);
    failed = true;
  }
}
for (const f of demoStatic) {
  if (!existsSync(join(root, f))) continue;
  mkdirSync(join(dist, 'demo'), { recursive: true });
  copyFileSync(join(root, f), join(dist, 'demo', f.slice('web/'.length)));
}

// Type declarations of the package entry (package.json "types": dist/types/index.d.ts), so that
// TypeScript apps get the documented API. tsc follows index.ts's imports only (about 4 s).
if (!failed) {
  try {
    execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.types.json')], { stdio: 'inherit' });
    console.log('build: index.ts -> dist/types/index.d.ts [declarations]');
  } catch {
    console.error('build: type declarations failed');
    failed = true;
  }
}

if (failed) {
  process.exitCode = 1;
} else {
  writeFileSync(join(dist, '.stamp'), `${new Date().toISOString()}\n`);
}
