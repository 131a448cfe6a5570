/**
 * Child process of curate-run.test.ts (bundled by the test with esbuild, never imported): runs
 * `curate` with the options in the JSON argument, printing its log lines; when a line matches
 * <stallPattern> it prints "stalled" and blocks (Atomics.wait) until it is killed, so the parent's SIGKILL lands
 * in the middle of the run (after the checkpoints written so far), however slow the machine is.
 *
 *   node curate-kill-child.mjs '<CurateOptions JSON>' <stallPattern>
 */
import { Engine } from '../../engine/engine.js';
import { curate, type CurateOptions } from '../../eval/curate/run-node.js';

const [optsJson, pattern] = process.argv.slice(2);
const opts = JSON.parse(optsJson) as CurateOptions;
const stall = new RegExp(pattern);
const engine = await Engine.create();
await curate(engine, opts, (line) => {
  process.stdout.write(`${line}\n`);
  if (stall.test(line)) {
    process.stdout.write('stalled\n'); // synchronous on Linux pipes
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); // blocks this thread until killed
  }
});
process.stdout.write('done\n');
process.exit(0);
