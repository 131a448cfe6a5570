/**
 * Child process of kill-save.test.ts (bundled by the test with esbuild, never imported): streams
 * the bytes of <source> into <target> through the project's writeFileAtomic, one <chunk>-byte piece
 * at a time with <delayMs> between pieces, reporting progress on stdout ("wrote <bytes>"). With
 * <stallAt> > 0 it stops in the middle of the write once that many bytes are written, prints
 * "stalled <bytes>" and waits (the temporary file open, partly written) until it is killed, so the
 * parent's SIGKILL lands mid-write however slow the machine is. Prints "done" after the rename.
 *
 *   node kill-save-child.mjs <target> <source> <chunk> <delayMs> [<stallAt>]
 */
import { readFileSync } from 'node:fs';

import { writeFileAtomic } from '../../models/io/node-files.js';

const [target, source, chunkArg, delayArg, stallArg] = process.argv.slice(2);
const bytes = new Uint8Array(readFileSync(source));
const chunk = Number(chunkArg);
const delay = Number(delayArg);
const stallAt = Number(stallArg ?? 0);

await writeFileAtomic(target, async (write) => {
  for (let off = 0; off < bytes.length; off += chunk) {
    const end = Math.min(off + chunk, bytes.length);
    await write(bytes.subarray(off, end));
    process.stdout.write(`wrote ${end}\n`);
    if (stallAt > 0 && end >= stallAt) {
      process.stdout.write(`stalled ${end}\n`);
      await new Promise<never>(() => setInterval(() => undefined, 1000)); // until killed
    }
    if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay));
  }
});
process.stdout.write('done\n');
