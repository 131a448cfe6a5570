/**
 * webdino's side of bench/curate: one k-means (eval/curate/kmeans.ts) on a .npy of embeddings,
 * timed, with its initial and final centroids saved for evaluate.py and faiss_kmeans.py.
 *
 *   npx esbuild bench/curate/kmeans.ts --bundle --platform=node --format=esm --external:webgpu \
 *     --outfile=./.bench-curate.mjs && node ./.bench-curate.mjs --data data.npy --k 1000 \
 *     --iters 10 --init random --seed 1 --out /tmp/wd-random
 * (--rows N uses only the first N rows: a throughput probe on part of a large file.)
 *
 * Writes OUT-init.npy, OUT-centroids.npy and OUT.json: seconds (initialisation, Lloyd, total),
 * the objective of each assignment pass (pass p: assignment to the centroids after p updates;
 * iters + 1 passes, the last one only assigns), adapter and options.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Engine } from '../../engine/engine.js';
import { Rng } from '../../engine/random.js';
import { writeNpy } from '../../models/io/npy.js';
import { ChunkedRows } from '../../eval/curate/chunks.js';
import { kmeansPlusPlus, lloyd, randomInit } from '../../eval/curate/kmeans.js';
import { NpyShards } from '../../eval/curate/shards-node.js';
import { RangeSource } from '../../eval/curate/source.js';

const { values: a } = parseArgs({
  options: {
    data: { type: 'string' },
    k: { type: 'string' },
    iters: { type: 'string', default: '10' },
    init: { type: 'string', default: 'random' },
    seed: { type: 'string', default: '1' },
    out: { type: 'string' },
    'gpu-memory': { type: 'string', default: '2048' },
    rows: { type: 'string' },
  },
});
if (!a.data || !a.k || !a.out) throw new Error('usage: --data X.npy --k K --out PREFIX [--iters N] [--init random|kmeans++] [--seed S]');
const k = Number(a.k);
const iters = Number(a.iters);
const bytes = Number(a['gpu-memory']) * 2 ** 20;
const engine = await Engine.create();
const file = new NpyShards(a.data.split(','), '--data');
// --rows N: only the first N rows (a throughput probe on part of a large file).
const src = a.rows ? new RangeSource(file, 0, Math.min(Number(a.rows), file.rows)) : file;
const log = (l: string) => console.log(`${new Date().toISOString().slice(11, 19)} ${l}`);
log(`adapter ${engine.device.adapterName()} (${engine.device.variants}); ${src.rows} x ${src.dim}, k = ${k}, ${iters} iterations, init ${a.init}`);
const t0 = performance.now();
const rng = new Rng(Number(a.seed));
const init = a.init === 'kmeans++' ? (await kmeansPlusPlus(engine, src, k, rng, { seedBytes: bytes, log })).centroids : randomInit(src, k, rng).centroids;
const tInit = (performance.now() - t0) / 1000;
log(`init ${a.init}: ${tInit.toFixed(1)} s`);
writeFileSync(`${a.out}-init.npy`, writeNpy({ shape: [k, src.dim], data: init }));
const chunks = new ChunkedRows(engine, src, { residentBytes: bytes });
log(`chunks: ${chunks.count} of ${chunks.chunkRows} rows, ${chunks.resident ? 'resident' : 'streamed'}`);
const t1 = performance.now();
const r = await lloyd(chunks, init, k, iters, { log });
const tLloyd = (performance.now() - t1) / 1000;
writeFileSync(`${a.out}-centroids.npy`, writeNpy({ shape: [k, src.dim], data: r.centroids }));
const meta = {
  tool: 'webdino',
  adapter: engine.device.adapterName(),
  init: a.init === 'kmeans++' ? 'k-means++' : 'webdino random',
  k,
  iters,
  seconds: tInit + tLloyd,
  initSeconds: tInit,
  lloydSeconds: tLloyd,
  passSeconds: tLloyd / (iters + 1),
  objectives: r.objectives,
};
writeFileSync(`${a.out}.json`, JSON.stringify(meta));
log(`done: init ${tInit.toFixed(1)} s, Lloyd ${tLloyd.toFixed(1)} s (${meta.passSeconds.toFixed(1)} s per pass), objective ${r.objective.toPrecision(8)}`);
chunks.dispose();
file.close();
engine.destroy();
process.exit(0);
