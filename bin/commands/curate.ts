/**
 * `webdino curate`: DINOv2's data curation of an embedded image pool (eval/curate/run-node.ts):
 * deduplication, hierarchical k-means with resampling, balanced sampling and retrieval, with
 * checkpoints (re-running the same command resumes); or, with --shard i/n --centroids C, one
 * fan-out job of a k-means assignment pass (eval/curate/shard-node.ts).
 *
 * The options are declared here; what they mean together is checked by the library
 * (`checkCurateOptions`, CurateUsageError → usage error, exit 2). Bad input data (a NaN row, a
 * truncated shard, an unfinished embedding job) fails with the library's message (exit 1).
 */
import { join } from 'node:path';
import { checkCurateOptions, curate, CURATE_DEFAULTS, type CurateOptions, CurateUsageError } from '../../eval/curate/run-node.js';
import { assignShard } from '../../eval/curate/shard-node.js';
import { defineCommand, UsageError } from '../command.js';
import { choice, int, ints, num, part, path, pathList, type Values } from '../options.js';
import { withEngine } from '../resources.js';

const MIB = 2 ** 20;

const options = {
  embeddings: pathList({ role: 'input', required: true, value: '<files>', help: 'Pool embeddings [N, D]: .npy shards (rows in order) or manifests of `webdino embed --shard-size`, comma-separated' }),
  paths: path({ role: 'input', value: '<file.txt>', help: "One path per pool row, listed in selected.txt (default: the manifests' paths files); image paths also give the report thumbnails" }),
  out: path({ role: 'output', required: true, value: '<dir>', help: 'Output folder; re-running into it resumes from its checkpoints' }),
  dedup: num({ min: -1, max: 1, value: '<T>', help: 'Remove near-duplicates: cosine ≥ T among each row’s nearest neighbours (e.g. 0.9)' }),
  'dedup-k': int({ min: 1, max: 1023, default: CURATE_DEFAULTS.dedupK, value: '<k>', help: 'Neighbours per row for --dedup' }),
  'dedup-against': pathList({ role: 'input', value: '<files>', help: 'Also remove pool rows with cosine ≥ T to any row of these .npy (e.g. eval sets); needs --dedup' }),
  queries: pathList({ role: 'input', value: '<files>', help: 'Query embeddings (.npy) for --retrieve / --cluster-retrieve' }),
  retrieve: int({ min: 1, max: 1023, value: '<N>', help: 'Take the N most similar pool rows of each query (DINOv2 "sample")' }),
  'cluster-retrieve': int({ min: 1, max: 1e9, value: '<M>', help: 'Take M random rows of each query’s level-1 cluster (DINOv2 "cluster")' }),
  levels: ints({ min: 1, max: 1e9, repeats: true, value: '<k1,k2,…>', derived: 'one level, k = √N', help: 'Clusters per k-means level' }),
  resample: ints({ min: 1, max: 1e6, repeats: true, value: '<T1,T2,…>', derived: '1 per level', help: 'Resampling steps per level; 1 = plain k-means' }),
  sample: ints({ min: 1, max: 1e9, repeats: true, value: '<r1,r2,…>', derived: 'half the mean cluster size', help: 'Points per cluster in resampling steps' }),
  iters: int({ min: 0, max: 100000, default: CURATE_DEFAULTS.iters, value: '<n>', help: 'Lloyd iterations per k-means' }),
  init: choice({ choices: ['kmeans++', 'random'], default: CURATE_DEFAULTS.init, value: '<init>', help: 'k-means initialisation: kmeans++, random' }),
  target: int({ min: 1, max: Number.MAX_SAFE_INTEGER, value: '<S>', help: 'Balanced hierarchical sampling of S rows' }),
  seed: int({ min: 0, max: 2 ** 32 - 1, default: CURATE_DEFAULTS.seed, value: '<n>', help: 'Random seed' }),
  'chunk-rows': int({ min: 1, max: 1e9, value: '<n>', derived: '64 MiB worth, a multiple of 256', help: 'Rows per GPU chunk' }),
  'gpu-memory': int({ min: 1, max: 1e6, default: CURATE_DEFAULTS.gpuBytes / MIB, value: '<MiB>', help: 'GPU memory for resident rows and k-means++' }),
  'checkpoint-seconds': num({ min: 0, max: 1e9, default: CURATE_DEFAULTS.checkpointSeconds, value: '<s>', help: 'Least seconds between Lloyd checkpoints' }),
  shard: part({ max: 1e6, value: '<i/n>', help: 'Fan-out job: only assign the pool rows of part i of n to --centroids, write OUT/shards/part-i-of-n.*' }),
  centroids: path({ role: 'input', value: '<c.npy>', help: 'Centroids [k, D] for --shard (e.g. OUT/levels/level-1-centroids.npy)' }),
};

/** The library's options from the parsed command line. */
function curateOptions(v: Values<typeof options>): CurateOptions {
  return {
    embeddings: v.embeddings,
    paths: v.paths,
    out: v.out,
    dedup: v.dedup,
    dedupK: v['dedup-k'],
    dedupAgainst: v['dedup-against'] ?? [],
    queries: v.queries ?? [],
    retrieve: v.retrieve,
    clusterRetrieve: v['cluster-retrieve'],
    levels: v.levels,
    resample: v.resample,
    sample: v.sample,
    iters: v.iters,
    init: v.init,
    target: v.target,
    seed: v.seed,
    chunkRows: v['chunk-rows'],
    gpuBytes: v['gpu-memory'] * MIB,
    checkpointSeconds: v['checkpoint-seconds'],
    shard: v.shard,
    centroids: v.centroids,
  };
}

/** `webdino curate`: DINOv2-style curation of an embedded pool. */
export const curateCommand = defineCommand({
  name: 'curate',
  summary: "Curate an embedded image pool (DINOv2's dedup, hierarchical k-means, balanced sampling, retrieval)",
  description:
    'Reads pool embeddings (`webdino embed --normalize --shard-size N` writes them with a manifest\n' +
    'and the image paths) and writes OUT/selected.txt ("row<TAB>path", increasing rows; `webdino\n' +
    'train --data OUT/selected.txt` trains on it), OUT/levels/level-N[-centroids].npy, OUT/summary.json\n' +
    'and OUT/report.html. Stages, each optional, in this order: --dedup T (cosine near-duplicates,\n' +
    'within the pool and against --dedup-against), hierarchical k-means (--levels, --resample,\n' +
    '--sample), selection (--target S balanced over the clusters, and/or --retrieve /\n' +
    '--cluster-retrieve around --queries; neither: the whole deduplicated pool). Checkpoints are\n' +
    'kept in OUT/checkpoint: the same command re-run resumes and gives byte-identical outputs.\n' +
    'Fan-out: --shard i/n --centroids C assigns part i of n of the pool to C (OUT/shards/).',
  options,
  async run(v, { io, outputs }) {
    const o = curateOptions(v);
    try {
      checkCurateOptions(o);
    } catch (e) {
      if (e instanceof CurateUsageError) throw new UsageError(e.message);
      throw e;
    }
    for (const f of ['selected.txt', 'summary.json', 'report.html']) outputs.check(join(o.out, f));
    return withEngine(async (wd) => {
      io.out(`adapter: ${wd.device.adapterName()} (${wd.device.variants} kernels)`);
      if (o.shard && o.centroids) {
        const r = await assignShard(wd, { embeddings: o.embeddings, centroids: o.centroids, shard: o.shard, out: o.out, chunkRows: o.chunkRows, gpuBytes: o.gpuBytes });
        io.out(`shard ${o.shard.i}/${o.shard.n}: rows [${r.start}, ${r.end}) assigned, objective ${r.objective.toPrecision(8)}`);
        return 0;
      }
      const s = await curate(wd, o, (line) => io.out(line));
      io.out(`done in ${s.seconds.total} s: ${s.selected} rows selected → ${join(o.out, 'selected.txt')}`);
      return 0;
    });
  },
});
