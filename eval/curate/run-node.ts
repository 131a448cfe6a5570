/**
 * Node only: the whole data-curation pipeline of `webdino curate` as one function,
 * `curate(engine, opts, log)`, its typed options (`CurateOptions`, `CURATE_DEFAULTS`) and the
 * cross-option check `checkCurateOptions` (bin/commands/curate.ts parses the command line).
 *
 * Pipeline (each stage optional, in this order)
 *   0. open and check the inputs: --embeddings shards (same width, non-empty, numeric; a
 *      manifest of `webdino embed --shard-size` stands for its shards and paths files), --paths
 *      (one line per row), --dedup-against and --queries (same width), --target ≤ pool rows; one
 *      pass reads every row once so a NaN/∞ row fails at the start, naming file and row;
 *   1. deduplication (--dedup T): first "relative" against --dedup-against (pool rows whose
 *      nearest eval row has cosine ≥ T), then within the remaining pool (k-NN graph, cosine ≥ T,
 *      connected components, lowest row kept). Relative first: a near-duplicate group keeps a
 *      member that is not itself a copy of an eval image whenever it has one;
 *   2. hierarchical k-means with resampling on the deduplicated pool (--levels, --resample,
 *      --sample, --iters, --init), needed by --target and --cluster-retrieve;
 *   3. selection: balanced hierarchical sampling of --target rows, and/or retrieval (--retrieve N
 *      nearest per query, or --cluster-retrieve M from each query's level-1 cluster); the union
 *      of what was asked, or the whole deduplicated pool when neither was;
 *   4. outputs in --out: selected.txt ("row<TAB>path", or "row", increasing pool rows),
 *      levels/level-N.npy (int32 cluster of each item: pool rows for N = 1, −1 for rows removed
 *      by dedup; level-(N−1) clusters for N > 1) and levels/level-N-centroids.npy (float32
 *      [k, D]), summary.json, report.html. Every file is written atomically.
 *
 * Checkpoints and resuming (--out/checkpoint/): the dedup mask, each level's files, each
 * resampling step's centroids and the running Lloyd centroids (at most every
 * --checkpoint-seconds) are saved as they complete. Re-running the same command resumes from
 * them and, because every random draw comes from a generator seeded by (seed, level, step) and
 * the GPU sums do not depend on the chunking, produces byte-identical outputs to an
 * uninterrupted run. checkpoint/manifest.json records the inputs (path, size, mtime, shape) and
 * the options each stage depends on; a mismatch is an error rather than a silent mix of runs.
 * Selection options (--target, --retrieve, --cluster-retrieve, --queries) are not checkpointed:
 * changing them re-selects from the saved clustering.
 *
 * Memory: embeddings stream in chunks from the shards (chunks.ts); the host holds per-row
 * integers and floats (assignment, distance, masks: ~16 bytes a row), never the embeddings.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Engine } from '../../engine/engine.js';
import { decodeImage, encodePng, type RgbImage } from '../../models/io/image.js';
import { removeStaleTempFiles, writeFileAtomic } from '../../models/io/node-files.js';
import { parseNpy, writeNpy } from '../../models/io/npy.js';
import { ChunkedRows, DEFAULT_RESIDENT_BYTES } from './chunks.js';
import { dedupAgainst, dedupPool } from './dedup.js';
import { assignPass, type CentroidStore, hierarchicalKmeans, type KmeansInit, type LevelResult, type LevelSpec, streamRng } from './kmeans.js';
import { type ReportCluster, renderCurateReport, sizeStats } from './report.js';
import { retrieveFromClusters, retrieveNearest } from './retrieve.js';
import { flatSizes, hierarchicalSample } from './sample.js';
import { expandEmbeddings, NpyShards, readPaths, type ShardInfo } from './shards-node.js';
import { ArraySource, CurateInputError, type RowSource, SubsetSource } from './source.js';

// -------------------------------------------------------------------------------------------------
// Options

/** A combination of options that cannot run: the CLI reports it with the usage (exit 2). */
export class CurateUsageError extends Error {
  override name = 'CurateUsageError';
}

export interface CurateOptions {
  /**
   * Pool embeddings: .npy shards [rows, D], rows in the order given, or manifests of `webdino
   * embed --shard-size` (.json: their shards, and their paths files when --paths is not given).
   */
  embeddings: string[];
  /** One path per pool row (a text file). */
  paths?: string;
  out: string;
  /** Deduplication threshold: cosine similarity in [−1, 1]. */
  dedup?: number;
  dedupK: number;
  dedupAgainst: string[];
  queries: string[];
  retrieve?: number;
  clusterRetrieve?: number;
  levels?: number[];
  resample?: number[];
  sample?: number[];
  iters: number;
  init: KmeansInit;
  target?: number;
  seed: number;
  chunkRows?: number;
  gpuBytes: number;
  checkpointSeconds: number;
  /** A fan-out assignment job (shard-node.ts): part i of n of the pool, assigned to `centroids`. */
  shard?: { i: number; n: number };
  centroids?: string;
}

/** The defaults of the options that have one (the CLI declares these as its defaults). */
export const CURATE_DEFAULTS = {
  dedupK: 64,
  iters: 50,
  init: 'kmeans++',
  seed: 0,
  gpuBytes: DEFAULT_RESIDENT_BYTES,
  checkpointSeconds: 60,
  dedupAgainst: [],
  queries: [],
} as const satisfies Partial<CurateOptions>;

/**
 * Throws CurateUsageError for a combination of options that cannot run: both retrieval modes, a
 * retrieval mode without queries or queries without one, per-level lists whose length is not the
 * number of levels, --dedup-against without --dedup, --shard without --centroids (or the other way
 * round) or with pipeline stages. Values themselves (ranges) are the caller's to check.
 */
export function checkCurateOptions(o: CurateOptions): void {
  if (!o.embeddings.length) throw new CurateUsageError('--embeddings: no file given');
  if (o.dedup !== undefined && !(o.dedup >= -1 && o.dedup <= 1)) throw new CurateUsageError(`--dedup must be a cosine similarity in [-1, 1], got ${o.dedup}`);
  if (o.dedupAgainst.length && o.dedup === undefined) throw new CurateUsageError('--dedup-against needs --dedup T (the cosine threshold)');
  if (o.retrieve !== undefined && o.clusterRetrieve !== undefined) throw new CurateUsageError('--retrieve and --cluster-retrieve are exclusive: pick one retrieval mode');
  if ((o.retrieve !== undefined || o.clusterRetrieve !== undefined) && !o.queries.length) throw new CurateUsageError('--retrieve / --cluster-retrieve need --queries');
  if (o.queries.length && o.retrieve === undefined && o.clusterRetrieve === undefined) throw new CurateUsageError('--queries needs --retrieve N or --cluster-retrieve M');
  for (const [name, list] of [
    ['resample', o.resample],
    ['sample', o.sample],
  ] as const) {
    if (list && !o.levels) throw new CurateUsageError(`--${name} needs --levels`);
    if (list && o.levels && list.length !== o.levels.length) throw new CurateUsageError(`--${name} has ${list.length} values for ${o.levels.length} levels`);
  }
  if ((o.shard === undefined) !== (o.centroids === undefined)) throw new CurateUsageError('--shard and --centroids go together');
  if (o.shard) {
    const stages = [
      ['--dedup', o.dedup],
      ['--target', o.target],
      ['--retrieve', o.retrieve],
      ['--cluster-retrieve', o.clusterRetrieve],
      ['--levels', o.levels],
    ].filter(([, x]) => x !== undefined);
    if (stages.length) throw new CurateUsageError(`--shard i/n --centroids C runs only an assignment job: ${stages.map(([n]) => n).join(', ')} do not apply`);
  }
}

// -------------------------------------------------------------------------------------------------
// Checkpoint files

/** Centroid checkpoints as .npy files in one folder: KEY.json points at the current KEY.iter-I.npy. */
export class FileCentroidStore implements CentroidStore {
  constructor(readonly dir: string) {}
  load(key: string): { centroids: Float32Array; iter: number } | null {
    const meta = join(this.dir, `${key}.json`);
    if (!existsSync(meta)) return null;
    const m = JSON.parse(readFileSync(meta, 'utf8')) as { file: string; iter: number };
    const a = parseNpy(new Uint8Array(readFileSync(join(this.dir, m.file))));
    return { centroids: a.data, iter: m.iter };
  }
  async save(key: string, centroids: Float32Array, dim: number, iter: number): Promise<void> {
    const meta = join(this.dir, `${key}.json`);
    const old = existsSync(meta) ? (JSON.parse(readFileSync(meta, 'utf8')) as { file: string }).file : null;
    const file = `${key}.iter-${iter}.npy`;
    await writeFileAtomic(join(this.dir, file), writeNpy({ shape: [centroids.length / dim, dim], data: centroids }));
    await writeFileAtomic(meta, JSON.stringify({ file, iter }));
    if (old && old !== file) unlinkSync(join(this.dir, old));
  }
}

/** The inputs a stage depends on, for the manifest. */
function inputsOf(info: readonly ShardInfo[]) {
  return info.map((i) => ({ path: i.path, bytes: i.bytes, mtimeMs: i.mtimeMs, rows: i.rows, dim: i.dim, dtype: i.dtype }));
}

/** Checks `stage`'s fingerprint against the manifest (error on a mismatch) and records it. */
async function checkManifest(dir: string, stage: string, fingerprint: unknown): Promise<void> {
  const path = join(dir, 'manifest.json');
  const m = existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>) : {};
  const want = JSON.stringify(fingerprint);
  if (stage in m && JSON.stringify(m[stage]) !== want) {
    throw new CurateInputError(
      `${dir} holds ${stage} checkpoints of a run with other inputs or options (recorded ${JSON.stringify(m[stage])}, now ${want}); ` +
        `use another --out, or delete ${dir} to start over`,
    );
  }
  if (!(stage in m)) {
    m[stage] = fingerprint;
    await writeFileAtomic(path, JSON.stringify(m, null, 1));
  }
}

// -------------------------------------------------------------------------------------------------
// The pipeline

export interface CurateSummary {
  pool: { rows: number; dim: number; files: string[] };
  dedup: null | { threshold: number; k: number; removedAgainst: number; removedWithin: number; groups: number; largestGroup: number; kept: number };
  levels: { level: number; k: number; points: number; steps: number; sample: number; objective: number; sizes: ReturnType<typeof sizeStats>; flatSizes: ReturnType<typeof sizeStats> }[];
  balanced: null | { target: number; chosen: number; chosenPerCluster: ReturnType<typeof sizeStats> };
  retrieval: null | { mode: 'sample' | 'cluster'; perQuery: number; queries: number; chosen: number; clustersHit?: number };
  selected: number;
  seed: number;
  seconds: Record<string, number>;
}

/** The level specs: the options', or one level with k = round(√N); r defaults to half the mean cluster size. */
function resolveLevels(o: CurateOptions, n: number): LevelSpec[] {
  const ks = o.levels ?? [Math.max(1, Math.round(Math.sqrt(n)))];
  let points = n;
  return ks.map((k, l) => {
    if (k > points) {
      throw new CurateInputError(
        `--levels: level ${l + 1} asks for ${k} clusters but has only ${points} ${l === 0 ? 'pool rows (after deduplication)' : `clusters of level ${l} to group`}`,
      );
    }
    const spec = { k, steps: o.resample?.[l] ?? 1, sample: o.sample?.[l] ?? Math.max(1, Math.floor(points / k / 2)) };
    points = k;
    return spec;
  });
}

/** Reads every row once (finite-value check) in chunks of `rows`. */
function scan(src: RowSource, rows = 65536): void {
  for (let s = 0; s < src.rows; s += rows) src.read(s, Math.min(src.rows, s + rows));
}

const secondsSince = (t: number) => Math.round((performance.now() - t) / 100) / 10;

/**
 * Runs the pipeline (see the file header) on `engine`, writing into `opts.out`; `log` gets
 * progress lines. Throws CurateInputError for bad inputs (message names the file and row).
 */
export async function curate(engine: Engine, o: CurateOptions, log: (line: string) => void): Promise<CurateSummary> {
  const tStart = performance.now();
  const seconds: Record<string, number> = {};
  const ckDir = join(o.out, 'checkpoint');
  const levelDir = join(o.out, 'levels');
  for (const d of [o.out, ckDir, levelDir]) {
    mkdirSync(d, { recursive: true });
    removeKilledTemporaries(d);
  }
  const opened: NpyShards[] = [];
  const open = (paths: string[], what: string) => {
    const s = new NpyShards(paths, what);
    opened.push(s);
    return s;
  };
  try {
    // 0. Inputs.
    const inputs = expandEmbeddings(o.embeddings);
    const pool = open(inputs.npy, '--embeddings');
    const N = pool.rows;
    const dim = pool.dim;
    log(`pool: ${N} rows of width ${dim} from ${inputs.npy.length} file${inputs.npy.length > 1 ? 's' : ''}`);
    const pathFiles = o.paths ? [o.paths] : inputs.paths;
    const paths = pathFiles ? readPaths(pathFiles, N, o.paths ? '--paths' : 'the manifests’ paths files') : null;
    if (o.target !== undefined && o.target > N) throw new CurateInputError(`--target ${o.target} is larger than the pool (${N} rows)`);
    const against = o.dedupAgainst.length ? open(o.dedupAgainst, '--dedup-against') : null;
    const queries = o.queries.length ? open(o.queries, '--queries') : null;
    for (const [src, what] of [
      [against, '--dedup-against'],
      [queries, '--queries'],
    ] as const) {
      if (src && src.dim !== dim) throw new CurateInputError(`${what} rows have width ${src.dim} but the pool's have ${dim}`);
    }
    const t0 = performance.now();
    for (const src of [pool, against, queries]) if (src) scan(src);
    seconds.check = secondsSince(t0);
    const common = { chunkRows: o.chunkRows, residentBytes: o.gpuBytes };

    // 1. Deduplication → the kept pool rows.
    let kept: Int32Array = Int32Array.from({ length: N }, (_, i) => i);
    let dedupSummary: CurateSummary['dedup'] = null;
    if (o.dedup !== undefined) {
      const t1 = performance.now();
      const T = o.dedup;
      await checkManifest(ckDir, 'dedup', { pool: inputsOf(pool.info), against: against ? inputsOf(against.info) : [], threshold: T, k: o.dedupK });
      const maskPath = join(ckDir, 'dedup-keep.npy');
      const statsPath = join(ckDir, 'dedup.json');
      let keepMask: Uint8Array;
      if (existsSync(maskPath) && existsSync(statsPath)) {
        keepMask = new Uint8Array(parseNpy(new Uint8Array(readFileSync(maskPath))).data);
        dedupSummary = JSON.parse(readFileSync(statsPath, 'utf8')) as CurateSummary['dedup'];
        log('dedup: done (checkpoint)');
      } else {
        let survivors: Int32Array = kept;
        let removedAgainst = 0;
        if (against) {
          const r = await dedupAgainst(engine, pool, against, T, common);
          removedAgainst = r.removed;
          survivors = kept.filter((i) => !r.remove[i]);
          log(`dedup: ${removedAgainst} pool rows have cosine ≥ ${T} to a row of --dedup-against`);
        }
        const within = await dedupPool(engine, survivors.length === N ? pool : new SubsetSource(pool, survivors), T, o.dedupK, { ...common, log });
        keepMask = new Uint8Array(N);
        survivors.forEach((row, i) => {
          keepMask[row] = within.keep[i];
        });
        dedupSummary = { threshold: T, k: o.dedupK, removedAgainst, removedWithin: within.removed, groups: within.groups, largestGroup: within.largestGroup, kept: survivors.length - within.removed };
        log(`dedup: ${within.removed} near-duplicates removed within the pool (${within.groups} groups, largest ${within.largestGroup})`);
        await writeFileAtomic(maskPath, writeNpy({ shape: [N], data: keepMask }));
        await writeFileAtomic(statsPath, JSON.stringify(dedupSummary));
      }
      kept = kept.filter((i) => keepMask[i]);
      seconds.dedup = secondsSince(t1);
    }
    const clean: RowSource = kept.length === N ? pool : new SubsetSource(pool, kept);
    const NC = clean.rows;
    if (NC === 0) throw new CurateInputError('deduplication removed every row of the pool');
    if (o.target !== undefined && o.target > NC) throw new CurateInputError(`--target ${o.target} is larger than the ${NC} rows left after deduplication`);

    // 2. Hierarchical k-means.
    const needClusters = o.target !== undefined || o.clusterRetrieve !== undefined || o.levels !== undefined;
    let levels: LevelResult[] = [];
    let specs: LevelSpec[] = [];
    if (needClusters) {
      const t2 = performance.now();
      specs = resolveLevels(o, NC);
      await checkManifest(ckDir, 'clustering', {
        pool: inputsOf(pool.info),
        dedup: dedupSummary ? { threshold: dedupSummary.threshold, k: dedupSummary.k, against: against ? inputsOf(against.info) : [] } : null,
        levels: specs,
        iters: o.iters,
        init: o.init,
        seed: o.seed,
      });
      const store = new FileCentroidStore(ckDir);
      const levelFile = (l: number) => join(levelDir, `level-${l}.npy`);
      const centroidFile = (l: number) => join(levelDir, `level-${l}-centroids.npy`);
      const metaFile = (l: number) => join(ckDir, `level-${l}.json`);
      levels = await hierarchicalKmeans(engine, clean, specs, {
        ...common,
        iters: o.iters,
        init: o.init,
        seed: o.seed,
        seedBytes: o.gpuBytes,
        store,
        log,
        checkpointSeconds: o.checkpointSeconds,
        centroidSource: (l, prev) => new ArraySource(prev.centroids, dim, `level ${l - 1} centroids`),
        levelDone: (l) => {
          if (![levelFile(l), centroidFile(l), metaFile(l)].every(existsSync)) return null;
          const a = parseNpy(new Uint8Array(readFileSync(levelFile(l))));
          const c = parseNpy(new Uint8Array(readFileSync(centroidFile(l))));
          const meta = JSON.parse(readFileSync(metaFile(l), 'utf8')) as { objective: number };
          const assign = l === 1 ? Int32Array.from(kept, (row) => a.data[row]) : Int32Array.from(a.data);
          return { k: c.shape[0], dim, centroids: c.data, assign, dist: new Float32Array(0), objective: meta.objective, objectives: [] };
        },
        onLevel: async (l, r) => {
          let full = r.assign;
          if (l === 1 && NC !== N) {
            full = new Int32Array(N).fill(-1);
            kept.forEach((row, i) => {
              full[row] = r.assign[i];
            });
          }
          await writeFileAtomic(centroidFile(l), writeNpy({ shape: [r.k, dim], data: r.centroids }));
          await writeFileAtomic(levelFile(l), writeNpy({ shape: [full.length], data: full }));
          await writeFileAtomic(metaFile(l), JSON.stringify({ objective: r.objective }));
        },
      });
      seconds.kmeans = secondsSince(t2);
    }
    const assignments = levels.map((l) => ({ k: l.k, assign: l.assign }));
    const flat = levels.length ? flatSizes(assignments) : [];

    // 3. Selection (indices into the deduplicated pool).
    const t3 = performance.now();
    const chosen = new Uint8Array(NC);
    let anySelection = false;
    let balanced: CurateSummary['balanced'] = null;
    let leafChosen: Int32Array | null = null;
    if (o.target !== undefined) {
      const r = hierarchicalSample(assignments, o.target, streamRng(o.seed, 0xba1a));
      for (const p of r.points) chosen[p] = 1;
      leafChosen = r.perLeaf;
      balanced = { target: o.target, chosen: r.points.length, chosenPerCluster: sizeStats(r.perLeaf) };
      anySelection = true;
      log(`balanced sampling: ${r.points.length} rows from ${levels[0].k} level-1 clusters`);
    }
    let retrieval: CurateSummary['retrieval'] = null;
    if (queries && o.retrieve !== undefined) {
      const got = await retrieveNearest(engine, clean, queries, o.retrieve, common);
      for (const p of got) chosen[p] = 1;
      retrieval = { mode: 'sample', perQuery: o.retrieve, queries: queries.rows, chosen: got.length };
      anySelection = true;
      log(`retrieval: ${got.length} rows among the ${o.retrieve} nearest of ${queries.rows} queries`);
    } else if (queries && o.clusterRetrieve !== undefined) {
      const chunks = new ChunkedRows(engine, queries, common);
      let qc: Int32Array;
      try {
        qc = (await assignPass(chunks, levels[0].centroids, levels[0].k)).assign;
      } finally {
        chunks.dispose();
      }
      const got = retrieveFromClusters(qc, levels[0].assign, levels[0].k, o.clusterRetrieve, streamRng(o.seed, 0xc1a5));
      for (const p of got) chosen[p] = 1;
      retrieval = { mode: 'cluster', perQuery: o.clusterRetrieve, queries: queries.rows, chosen: got.length, clustersHit: new Set(qc).size };
      anySelection = true;
      log(`retrieval: ${got.length} rows from the level-1 clusters of ${queries.rows} queries`);
    }
    if (!anySelection) chosen.fill(1);
    const selectedRows: number[] = [];
    chosen.forEach((c, i) => {
      if (c) selectedRows.push(kept[i]);
    });
    seconds.select = secondsSince(t3);

    // 4. Outputs.
    const summary: CurateSummary = {
      pool: { rows: N, dim, files: inputs.npy },
      dedup: dedupSummary,
      levels: levels.map((l, i) => ({
        level: i + 1,
        k: l.k,
        points: l.assign.length,
        steps: specs[i].steps,
        sample: specs[i].sample,
        objective: l.objective,
        sizes: sizeStats(countsOf(l.assign, l.k)),
        flatSizes: sizeStats(flat[i]),
      })),
      balanced,
      retrieval,
      selected: selectedRows.length,
      seed: o.seed,
      seconds,
    };
    const lines = selectedRows.map((r) => (paths ? `${r}\t${paths[r]}` : String(r)));
    await writeFileAtomic(join(o.out, 'selected.txt'), lines.length ? `${lines.join('\n')}\n` : '');
    summary.seconds.total = secondsSince(tStart);
    await writeFileAtomic(join(o.out, 'summary.json'), `${JSON.stringify(summary, null, 2)}\n`);
    const clusters = paths && levels.length ? reportClusters(paths, kept, levels[0], chosen) : [];
    const html = renderCurateReport({ summary: summary as unknown as Record<string, unknown>, leafSizes: flat[0] ?? [], leafChosen, clusters });
    await writeFileAtomic(join(o.out, 'report.html'), html);
    log(`selected ${selectedRows.length} of ${N} rows → ${join(o.out, 'selected.txt')}`);
    return summary;
  } finally {
    for (const s of opened) s.close();
  }
}

/** Removes the temporary files of atomic writes whose process was killed (a resumed run). */
function removeKilledTemporaries(dir: string): void {
  for (const name of readdirSync(dir)) {
    const m = /^\.(.+)\.\d+\.[0-9a-f]+\.tmp$/.exec(name);
    if (m) removeStaleTempFiles(join(dir, m[1]));
  }
}

function countsOf(assign: Int32Array, k: number): Int32Array {
  const c = new Int32Array(k);
  for (const a of assign) c[a]++;
  return c;
}

const IMAGE_EXT = /\.(jpe?g|png)$/i;
/** Clusters shown in the report, and images per cluster. */
const REPORT_CLUSTERS = 6;
const REPORT_IMAGES = 10;
const THUMB = 64;

/** Box-filter downscale so the longer side is at most `side` pixels. */
function thumbnail(img: RgbImage, side: number): RgbImage {
  const scale = Math.max(img.width, img.height) / side;
  if (scale <= 1) return img;
  const w = Math.max(1, Math.round(img.width / scale));
  const h = Math.max(1, Math.round(img.height / scale));
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    const y0 = Math.floor((y * img.height) / h);
    const y1 = Math.max(y0 + 1, Math.floor(((y + 1) * img.height) / h));
    for (let x = 0; x < w; x++) {
      const x0 = Math.floor((x * img.width) / w);
      const x1 = Math.max(x0 + 1, Math.floor(((x + 1) * img.width) / w));
      for (let ch = 0; ch < 3; ch++) {
        let s = 0;
        for (let yy = y0; yy < y1; yy++) for (let xx = x0; xx < x1; xx++) s += img.data[(yy * img.width + xx) * 3 + ch];
        data[(y * w + x) * 3 + ch] = Math.round(s / ((y1 - y0) * (x1 - x0)));
      }
    }
  }
  return { width: w, height: h, data };
}

/**
 * A few level-1 clusters (evenly spread over the size ranking, largest first) with up to
 * REPORT_IMAGES thumbnails each, chosen images first; only when the paths are image files.
 */
function reportClusters(paths: string[], kept: Int32Array, level1: LevelResult, chosen: Uint8Array): ReportCluster[] {
  if (!kept.length || !IMAGE_EXT.test(paths[kept[0]])) return [];
  const sizes = countsOf(level1.assign, level1.k);
  const order = [...Array(level1.k).keys()].filter((c) => sizes[c] > 0).sort((a, b) => sizes[b] - sizes[a] || a - b);
  const picks = new Set<number>();
  for (let q = 0; q < Math.min(REPORT_CLUSTERS, order.length); q++) picks.add(order[Math.floor((q * order.length) / Math.min(REPORT_CLUSTERS, order.length))]);
  const members = new Map<number, number[]>([...picks].map((c) => [c, []]));
  level1.assign.forEach((c, i) => members.get(c)?.push(i));
  return [...picks].map((c) => {
    const m = members.get(c)!;
    const shown = [...m.filter((i) => chosen[i]), ...m.filter((i) => !chosen[i])].slice(0, REPORT_IMAGES);
    return {
      level1: c,
      size: m.length,
      chosen: m.filter((i) => chosen[i]).length,
      images: shown.map((i) => {
        const path = paths[kept[i]];
        let uri: string | null = null;
        try {
          const t = thumbnail(decodeImage(new Uint8Array(readFileSync(path))), THUMB);
          uri = `data:image/png;base64,${Buffer.from(encodePng(t.width, t.height, t.data, 3)).toString('base64')}`;
        } catch {
          uri = null; // unreadable or not an image: shown as such
        }
        return { uri, path, chosen: chosen[i] === 1 };
      }),
    };
  });
}
