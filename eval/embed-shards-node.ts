/**
 * Node only: embedding a large pool of images for curation, as `webdino embed --shard-size`
 * does it: CLS features written in shards of a fixed number of images, resumable, and splittable
 * into independent jobs.
 *
 * Layout, for `--out DIR/pool.npy --shard-size S` over the N image files of the input (in their
 * listing order):
 *   shard s (0 ≤ s < ⌈N/S⌉) covers image files [s·S, min(N, (s+1)·S))
 *   DIR/pool-00000.npy   float32 [rows, D]: the CLS features of the shard's readable images
 *   DIR/pool-00000.txt   their paths, one per row, in row order (images that could not be read,
 *                        with --skip-bad, are in neither file)
 *   DIR/pool-manifest.json            (one job), or
 *   DIR/pool-manifest-i-of-n.json     (job i of n: --shard i/n takes the contiguous shards
 *                                      [round(T·i/n), round(T·(i+1)/n)) of the T shards)
 * The shard numbers are global, so the files of different jobs never collide and the jobs'
 * manifests, listed in job order, give the rows of the whole pool in listing order.
 *
 * Crash safety and resuming: a shard's two files are written atomically (temporary file +
 * rename), then the manifest, atomically, records it as done. A run that stops (a signal, a kill,
 * a crash) loses at most the shard it was on; the same command re-run reads the manifest, checks
 * that it describes the same work (input listing, weights, crop, normalisation, shard size, job)
 * and continues with the first shard not done. A manifest of other work is an error, never
 * silently mixed. `complete: true` once the job's last shard is done.
 *
 * Readers (eval/curate) take the manifests: `readEmbedManifest` gives the shard files and their
 * paths files in row order, and refuses an unfinished job.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import type { Engine } from '../engine/engine.js';
import { makeDir, removeStaleTempFiles, writeFileAtomic } from '../models/io/node-files.js';
import { writeNpy } from '../models/io/npy.js';
import type { VisionTransformer } from '../models/vit.js';
import { embedAll } from './embed-node.js';

/** The `format` field of every manifest this module writes. */
export const EMBED_MANIFEST_FORMAT = 'webdino-embed-shards/1';

/** One job of a fanned-out run: job i of n (0 ≤ i < n). */
export interface EmbedJob {
  i: number;
  n: number;
}

/** What a manifest's work is: two runs resume each other only when these are equal. */
export interface EmbedFingerprint {
  input: { files: number; first: string; last: string; sha256: string };
  weights: { path: string; bytes: number; mtimeMs: number };
  crop: number;
  normalize: boolean;
  shardSize: number;
  job: EmbedJob;
}

/** A finished shard, as the manifest records it (file names relative to the manifest's folder). */
export interface DoneShard {
  index: number;
  /** Image files [first, end) of the listing. */
  first: number;
  end: number;
  /** Rows written (end − first minus the skipped images); 0: no file was written. */
  rows: number;
  npy: string | null;
  paths: string | null;
  bytes: number;
  skipped: string[];
}

export interface EmbedManifest {
  format: typeof EMBED_MANIFEST_FORMAT;
  fingerprint: EmbedFingerprint;
  /** Shards of the whole pool, and this job's range [first, end) of them. */
  totalShards: number;
  shards: { first: number; end: number };
  dim: number | null;
  done: DoneShard[];
  complete: boolean;
}

/** One planned shard: its image range and the files it becomes. */
export interface PlannedShard {
  index: number;
  first: number;
  end: number;
  npy: string;
  paths: string;
}

/** Everything a sharded embedding run will write, known before any work (to check the outputs). */
export interface EmbedShardPlan {
  manifest: string;
  shards: PlannedShard[];
  totalShards: number;
  fingerprint: EmbedFingerprint;
  files: readonly string[];
}

/** A manifest or shard set that cannot be used: the message says what and where. */
export class EmbedManifestError extends Error {
  override name = 'EmbedManifestError';
}

/** Shard s's number as written in file names: at least 5 digits, enough for every shard. */
function shardTag(s: number, total: number): string {
  return String(s).padStart(Math.max(5, String(total - 1).length), '0');
}

/** Shards [first, end) of job i of n over `total` shards (contiguous, sizes differing by ≤ 1). */
export function jobShards(total: number, job: EmbedJob): { first: number; end: number } {
  return { first: Math.round((total * job.i) / job.n), end: Math.round((total * (job.i + 1)) / job.n) };
}

/** The stem of `out`: the path without its .npy extension. */
function stemOf(out: string): string {
  return out.replace(/\.npy$/i, '');
}

/** The manifest path of `out` for `job` (see the file header). */
export function manifestPath(out: string, job: EmbedJob): string {
  return job.n === 1 ? `${stemOf(out)}-manifest.json` : `${stemOf(out)}-manifest-${job.i}-of-${job.n}.json`;
}

/** The listing's identity: count, ends and a hash of every path (order included). */
function listingFingerprint(files: readonly string[]): EmbedFingerprint['input'] {
  const h = createHash('sha256');
  for (const f of files) h.update(`${f}\n`);
  return { files: files.length, first: files[0] ?? '', last: files[files.length - 1] ?? '', sha256: h.digest('hex') };
}

/** Plans job `job` of embedding `files` into shards of `shardSize` images next to `out`. */
export function planEmbedShards(o: { files: readonly string[]; out: string; shardSize: number; job: EmbedJob; weights: string; crop: number; normalize: boolean }): EmbedShardPlan {
  if (!Number.isInteger(o.shardSize) || o.shardSize < 1) throw new RangeError(`shard size must be a positive integer, got ${o.shardSize}`);
  const totalShards = Math.ceil(o.files.length / o.shardSize);
  const { first, end } = jobShards(totalShards, o.job);
  const stem = stemOf(resolve(o.out));
  const shards: PlannedShard[] = [];
  for (let s = first; s < end; s++) {
    const tag = shardTag(s, totalShards);
    shards.push({ index: s, first: s * o.shardSize, end: Math.min(o.files.length, (s + 1) * o.shardSize), npy: `${stem}-${tag}.npy`, paths: `${stem}-${tag}.txt` });
  }
  const st = statSync(o.weights);
  const fingerprint: EmbedFingerprint = {
    input: listingFingerprint(o.files),
    weights: { path: resolve(o.weights), bytes: st.size, mtimeMs: st.mtimeMs },
    crop: o.crop,
    normalize: o.normalize,
    shardSize: o.shardSize,
    job: o.job,
  };
  return { manifest: manifestPath(resolve(o.out), o.job), shards, totalShards, fingerprint, files: o.files };
}

/** The differences between two fingerprints, as "field: recorded → now" (empty when equal). */
function fingerprintChanges(recorded: EmbedFingerprint, now: EmbedFingerprint): string[] {
  const changes: string[] = [];
  const a = recorded as unknown as Record<string, unknown>;
  const b = now as unknown as Record<string, unknown>;
  for (const k of Object.keys(b)) if (JSON.stringify(a[k]) !== JSON.stringify(b[k])) changes.push(`${k}: ${JSON.stringify(a[k])} → ${JSON.stringify(b[k])}`);
  return changes;
}

/** A shard recorded as done whose files are still there as written. */
function shardIntact(dir: string, d: DoneShard): boolean {
  if (d.rows === 0) return true;
  try {
    return statSync(join(dir, d.npy!)).size === d.bytes && existsSync(join(dir, d.paths!));
  } catch {
    return false;
  }
}

/** Reads `path` as a manifest (any job); throws EmbedManifestError when it is not one. */
function parseManifest(path: string): EmbedManifest {
  let m: EmbedManifest;
  try {
    m = JSON.parse(readFileSync(path, 'utf8')) as EmbedManifest;
  } catch (e) {
    throw new EmbedManifestError(`${path}: not a readable embedding manifest (${(e as Error).message})`);
  }
  if (m?.format !== EMBED_MANIFEST_FORMAT) throw new EmbedManifestError(`${path}: not an embedding manifest of webdino embed --shard-size (format ${JSON.stringify(m?.format)})`);
  return m;
}

export interface EmbedShardsOptions {
  batchSize: number;
  crop: number;
  normalize: boolean;
  skipBad: boolean;
  signal?: AbortSignal;
  onWarning?: (message: string) => void;
  /** Images of this job done (done shards included) and the job's total, after each batch. */
  onProgress?: (done: number, total: number) => void;
  /** After each shard is written and recorded. */
  onShard?: (shard: DoneShard) => void;
}

export interface EmbedShardsResult {
  manifest: EmbedManifest;
  /** Shards found done in the manifest at the start (resumed past). */
  resumed: number;
  /** Shards written by this call. */
  written: number;
  rows: number;
  skipped: number;
  seconds: number;
}

/**
 * Runs job `plan` (see the file header): resumes from its manifest, embeds each remaining shard,
 * writes its files and records it. Throws EmbedManifestError when the manifest at the plan's path
 * describes other work, EmbedStoppedError (embed-node.ts) when `signal` stops it (the shards done
 * so far stay done).
 */
export async function embedShards(engine: Engine, model: VisionTransformer, plan: EmbedShardPlan, opts: EmbedShardsOptions): Promise<EmbedShardsResult> {
  const dir = dirname(plan.manifest);
  makeDir(dir);
  const range = jobShards(plan.totalShards, plan.fingerprint.job);
  let manifest: EmbedManifest = { format: EMBED_MANIFEST_FORMAT, fingerprint: plan.fingerprint, totalShards: plan.totalShards, shards: range, dim: null, done: [], complete: false };
  if (existsSync(plan.manifest)) {
    const old = parseManifest(plan.manifest);
    const changes = fingerprintChanges(old.fingerprint, plan.fingerprint);
    if (changes.length) {
      throw new EmbedManifestError(`${plan.manifest} records another embedding run (${changes.join('; ')}): use another --out, or delete the manifest to start over`);
    }
    manifest = { ...old, done: old.done.filter((d) => shardIntact(dir, d)) };
  }
  const done = new Map(manifest.done.map((d) => [d.index, d]));
  const resumed = done.size;
  const jobImages = plan.shards.reduce((n, s) => n + s.end - s.first, 0);
  let imagesDone = plan.shards.filter((s) => done.has(s.index)).reduce((n, s) => n + s.end - s.first, 0);
  const started = performance.now();
  let written = 0;
  opts.onProgress?.(imagesDone, jobImages);
  for (const s of plan.shards) {
    if (done.has(s.index)) continue;
    for (const f of [s.npy, s.paths]) removeStaleTempFiles(f);
    const files = plan.files.slice(s.first, s.end);
    const r = await embedAll(engine, model, { kind: 'images', files }, {
      batchSize: opts.batchSize,
      crop: opts.crop,
      attention: false,
      normalize: opts.normalize,
      skipBad: opts.skipBad,
      allowNone: true,
      signal: opts.signal,
      onWarning: opts.onWarning,
      onProgress: (d) => opts.onProgress?.(imagesDone + d, jobImages),
    });
    const [rows, dim] = r.featuresShape;
    const bad = new Set(r.skipped);
    const record: DoneShard = { index: s.index, first: s.first, end: s.end, rows, npy: null, paths: null, bytes: 0, skipped: r.skipped };
    if (rows > 0) {
      const bytes = writeNpy({ shape: [rows, dim], data: r.features });
      await writeFileAtomic(s.npy, bytes);
      await writeFileAtomic(s.paths, `${files.filter((f) => !bad.has(f)).join('\n')}\n`);
      Object.assign(record, { npy: basename(s.npy), paths: basename(s.paths), bytes: bytes.length });
      manifest.dim = dim;
    }
    done.set(s.index, record);
    imagesDone += s.end - s.first;
    written++;
    manifest = { ...manifest, done: [...done.values()].sort((a, b) => a.index - b.index) };
    manifest.complete = plan.shards.every((p) => done.has(p.index));
    await writeFileAtomic(plan.manifest, `${JSON.stringify(manifest, null, 1)}\n`);
    opts.onShard?.(record);
  }
  if (!manifest.complete) {
    // Every shard was done already (a finished job re-run), or the job has no shard at all.
    manifest.complete = true;
    await writeFileAtomic(plan.manifest, `${JSON.stringify(manifest, null, 1)}\n`);
  }
  const rows = manifest.done.reduce((n, d) => n + d.rows, 0);
  const skipped = manifest.done.reduce((n, d) => n + d.skipped.length, 0);
  return { manifest, resumed, written, rows, skipped, seconds: (performance.now() - started) / 1000 };
}

/** The shards of a finished job, in row order: absolute .npy and paths-file paths, rows each. */
export interface ManifestShards {
  npy: string[];
  paths: string[];
  rows: number[];
}

/**
 * The shard files of the manifest at `path` (empty shards left out). Throws EmbedManifestError
 * when it is not a manifest, its job is not finished, or a shard file is missing or changed.
 */
export function readEmbedManifest(path: string): ManifestShards {
  const m = parseManifest(path);
  const { first, end } = m.shards;
  if (!m.complete) {
    throw new EmbedManifestError(`${path}: the embedding job is not finished (${m.done.length} of ${end - first} shards done); re-run the same webdino embed command to complete it`);
  }
  const dir = dirname(resolve(path));
  const out: ManifestShards = { npy: [], paths: [], rows: [] };
  for (const d of m.done) {
    if (d.rows === 0) continue;
    if (!shardIntact(dir, d)) throw new EmbedManifestError(`${path}: shard ${d.npy} is missing or has changed since it was written`);
    out.npy.push(join(dir, d.npy!));
    out.paths.push(join(dir, d.paths!));
    out.rows.push(d.rows);
  }
  return out;
}

/**
 * The job's rows' paths, in row order: the concatenation of its shards' paths files (for
 * `--paths-out` once the job is complete).
 */
export function manifestPaths(path: string): string {
  return readEmbedManifest(path)
    .paths.map((p) => readFileSync(p, 'utf8'))
    .join('');
}
