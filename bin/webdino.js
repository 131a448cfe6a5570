#!/usr/bin/env node
// The `webdino` command. The CLI itself is bin/cli.ts, bundled to dist/cli.js by scripts/build.mjs;
// importing it runs it.
import { existsSync } from 'node:fs';

const cli = new URL('../dist/cli.js', import.meta.url);
if (!existsSync(cli)) {
  console.error('webdino: not built yet — run `npm run build` (or `npm run setup`)');
  process.exit(1);
}
await import(cli.href);
