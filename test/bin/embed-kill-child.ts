/**
 * Child process of embed-shards.test.ts (bundled by the test with esbuild, never imported): runs
 * the sharded embedding of `webdino embed --shard-size` (eval/embed-shards-node.ts) on the plan
 * the JSON argument describes; once <stallAt> images are done it prints "stalled" and blocks
 * (Atomics.wait) until it is killed, so the parent's SIGKILL lands in the middle of a shard
 * (after the shards recorded so far), however slow the machine is.
 *
 *   node embed-kill-child.mjs '{"input", "out", "weights", "shardSize", "batchSize", "crop", "normalize", "stallAt"}'
 */
import { Engine } from '../../engine/engine.js';
import { loadBackbone } from '../../models/backbone-node.js';
import { openEmbedInput } from '../../eval/embed-node.js';
import { embedShards, planEmbedShards } from '../../eval/embed-shards-node.js';

const a = JSON.parse(process.argv[2]) as { input: string; out: string; weights: string; shardSize: number; batchSize: number; crop: number; normalize: boolean; stallAt: number };
const input = await openEmbedInput(a.input, { recursive: true });
if (input.kind !== 'images') throw new Error('expected images');
const engine = await Engine.create();
const { model } = await loadBackbone(engine, a.weights);
const plan = planEmbedShards({ files: input.files, out: a.out, shardSize: a.shardSize, job: { i: 0, n: 1 }, weights: a.weights, crop: a.crop, normalize: a.normalize });
await embedShards(engine, model, plan, {
  batchSize: a.batchSize,
  crop: a.crop,
  normalize: a.normalize,
  skipBad: true,
  onShard: (s) => process.stdout.write(`shard ${s.index} done\n`),
  onProgress: (done) => {
    if (done < a.stallAt) return;
    process.stdout.write('stalled\n'); // synchronous on Linux pipes
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); // blocks this thread until killed
  },
});
process.stdout.write('done\n');
process.exit(0);
