#!/usr/bin/env node
// `npm run demo`: serves the demo page (dist/demo, built by scripts/build.mjs from web/) and the
// browser bundle (dist/browser) on http://127.0.0.1 and prints the address. WebGPU needs a secure
// context: http://127.0.0.1 and http://localhost are, other plain-http addresses are not.
//   PORT=8080 npm run demo      a fixed port (default: 8123, or a free one if it is taken)
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startStaticServer } from './static-server.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const demo = join(root, 'dist/demo');
if (!existsSync(join(demo, 'main.js')) || !existsSync(join(demo, 'worker.js'))) {
  console.error('serve-demo: dist/demo is not built; run `npm run build` (npm run demo does it for you)');
  process.exit(1);
}
const mounts = { '/': demo, '/browser/': join(root, 'dist/browser') };
const wanted = Number(process.env.PORT ?? 8123);
let server;
try {
  server = await startStaticServer(mounts, { port: wanted });
} catch (e) {
  if (e?.code !== 'EADDRINUSE' || process.env.PORT) throw e;
  server = await startStaticServer(mounts, { port: 0 });
}
console.log(`webdino demo: ${server.url}`);
console.log('  (Chrome/Edge 113+; on Linux start Chrome with --enable-unsafe-webgpu. Ctrl-C stops the server.)');
const stop = () => server.close().then(() => process.exit(0));
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
