/**
 * The pool of the curation demonstration (bench/curate/demo.sh), and what the demo measures on it.
 *
 *   node demo-pool.mjs make --out POOL [--seed 1] [--dominant disc] [--per-class 100] [--share 0.8]
 *                           [--exact 750] [--near 750] [--size 64]
 *     An uncurated, imbalanced pool with duplicates, drawn from the embedded dataset
 *     (SyntheticShapes, 'confetti' style, train split, dataset seed --seed: other images than the
 *     seed-0 images the embedder and the k-NN memory use), written as an image folder
 *     POOL/<class>/<name>.png:
 *       - unique images: --per-class of each of the 9 minority classes, and as many of the
 *         --dominant class as make it --share of the unique images (0.8: 3600 vs 9 × 100);
 *       - --exact byte-identical copies (x…) and --near near-duplicates (n…: the source shifted
 *         by one pixel in x and/or y, edges replicated, plus Gaussian pixel noise σ = 6 levels) of
 *         unique images drawn uniformly, so the copies are as imbalanced as the pool.
 *     POOL/truth.json records, for every file: class, kind (unique, exact, near) and source.
 *   node demo-pool.mjs random --paths PATHS --n S --seed K --out LIST
 *     S distinct random lines of PATHS (the baseline arm: a uniform sample of the raw pool).
 *   node demo-pool.mjs cosines --pool POOL --embeddings E.npy[,…] --paths PATHS
 *     Cosine similarity of each near and exact copy to its source, and of each unique image to its
 *     most similar other unique image: where a deduplication threshold separates them.
 *   node demo-pool.mjs histogram --pool POOL LIST [LIST…]
 *     Per list (PATH lines, or curate's ROW<TAB>PATH): images per class, copies, and duplicates
 *     (images whose original, or another copy of it, is listed already), as a Markdown table.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Rng } from '../../engine/random.js';
import { encodePng, type RgbImage } from '../../models/io/image.js';
import { parseNpy } from '../../models/io/npy.js';
import { SHAPE_CLASSES, SyntheticShapes } from '../../train/data/synthetic.js';

interface Truth {
  [file: string]: { cls: string; kind: 'unique' | 'exact' | 'near'; source: string };
}

/** `img` shifted by (dx, dy) pixels (edges replicated) with N(0, σ²) noise per channel. */
function nearCopy(img: RgbImage, dx: number, dy: number, sigma: number, rng: Rng): Uint8Array {
  const { width: w, height: h, data } = img;
  const out = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    const sy = Math.min(h - 1, Math.max(0, y - dy));
    for (let x = 0; x < w; x++) {
      const sx = Math.min(w - 1, Math.max(0, x - dx));
      for (let c = 0; c < 3; c++) out[(y * w + x) * 3 + c] = Math.min(255, Math.max(0, Math.round(data[(sy * w + sx) * 3 + c] + sigma * rng.normal())));
    }
  }
  return out;
}

function make(a: Record<string, string | undefined>): void {
  const out = resolve(a.out!);
  const seed = Number(a.seed ?? 1);
  const dominant = a.dominant ?? 'disc';
  const perClass = Number(a['per-class'] ?? 100);
  const share = Number(a.share ?? 0.8);
  const size = Number(a.size ?? 64);
  const nearShift = Number(a['near-shift'] ?? 0);
  const nearNoise = Number(a['near-noise'] ?? 4);
  const dominantCount = Math.round((share * perClass * (SHAPE_CLASSES.length - 1)) / (1 - share));
  const want = new Map<string, number>(SHAPE_CLASSES.map((c) => [c, c === dominant ? dominantCount : perClass]));
  if (!want.has(dominant)) throw new Error(`--dominant must be one of ${SHAPE_CLASSES.join(', ')}`);
  const total = [...want.values()].reduce((s, n) => s + n, 0);
  const ds = new SyntheticShapes({ split: 'train', seed, size, length: SHAPE_CLASSES.length * (dominantCount + 1) });
  const truth: Truth = {};
  const images = new Map<string, RgbImage>();
  const got = new Map<string, number>(SHAPE_CLASSES.map((c) => [c, 0]));
  for (const c of SHAPE_CLASSES) mkdirSync(join(out, c), { recursive: true });
  for (let i = 0; images.size < total; i++) {
    const cls = SHAPE_CLASSES[ds.labelOf(i)];
    if (got.get(cls)! >= want.get(cls)!) continue;
    got.set(cls, got.get(cls)! + 1);
    const s = ds.getSync(i);
    const file = `${cls}/u${String(i).padStart(6, '0')}.png`;
    writeFileSync(join(out, file), encodePng(s.image.width, s.image.height, s.image.data, 3));
    images.set(file, s.image);
    truth[file] = { cls, kind: 'unique', source: file };
  }
  const uniques = [...images.keys()];
  const rng = new Rng(seed * 7919 + 13);
  const copies = (n: number, kind: 'exact' | 'near') => {
    for (let j = 0; j < n; j++) {
      const src = uniques[rng.int(uniques.length)];
      const cls = truth[src].cls;
      const file = `${cls}/${kind === 'exact' ? 'x' : 'n'}${String(j).padStart(6, '0')}-${basename(src, '.png')}.png`;
      const img = images.get(src)!;
      if (kind === 'exact') {
        writeFileSync(join(out, file), readFileSync(join(out, src)));
      } else {
        // A shift of up to --near-shift pixels in x and/or y (never none when it is > 0), then noise.
        const r = nearShift;
        const shifts = Array.from({ length: 2 * r + 1 }, (_, i) => i - r).flatMap((dx) => Array.from({ length: 2 * r + 1 }, (_, i) => [dx, i - r])).filter(([dx, dy]) => r === 0 || dx || dy);
        const [dx, dy] = shifts[rng.int(shifts.length)];
        writeFileSync(join(out, file), encodePng(img.width, img.height, nearCopy(img, dx, dy, nearNoise, rng), 3));
      }
      truth[file] = { cls, kind, source: src };
    }
  };
  copies(Number(a.exact ?? 750), 'exact');
  copies(Number(a.near ?? 750), 'near');
  writeFileSync(join(out, 'truth.json'), JSON.stringify(truth));
  const byClass = new Map<string, number>();
  for (const t of Object.values(truth)) byClass.set(t.cls, (byClass.get(t.cls) ?? 0) + 1);
  console.log(`pool ${out}: ${Object.keys(truth).length} images (${uniques.length} unique, ${a.exact ?? 750} exact and ${a.near ?? 750} near copies)`);
  console.log(SHAPE_CLASSES.map((c) => `${c} ${byClass.get(c)}`).join(', '));
}

/** The pool-relative name (`class/file.png`) of a listed path. */
function poolName(path: string): string {
  return `${basename(dirname(path))}/${basename(path)}`;
}

/** The paths of a list: PATH lines, or curate's ROW<TAB>PATH. */
function listPaths(file: string): string[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => (l.includes('\t') ? l.split('\t')[1] : l));
}

function random(a: Record<string, string | undefined>): void {
  const paths = listPaths(a.paths!);
  const n = Number(a.n);
  const rng = new Rng(Number(a.seed ?? 0));
  // Partial Fisher–Yates: the first n of a uniform random permutation, then in pool order.
  const idx = paths.map((_, i) => i);
  for (let i = 0; i < n; i++) {
    const j = i + rng.int(idx.length - i);
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  const chosen = idx.slice(0, n).sort((x, y) => x - y);
  writeFileSync(a.out!, `${chosen.map((i) => paths[i]).join('\n')}\n`);
  console.log(`random: ${n} of ${paths.length} lines → ${a.out}`);
}

/** Quantiles of 1 − cos (what separates near-identical rows is in the 5th decimal of cos). */
function quantiles(cosines: number[]): string {
  const s = cosines.map((c) => 1 - c).sort((p, q) => p - q);
  const at = (f: number) => s[Math.min(s.length - 1, Math.floor(f * (s.length - 1)))].toExponential(1);
  return `1 − cos: min ${at(0)}, 1 % ${at(0.01)}, median ${at(0.5)}, 99 % ${at(0.99)}, max ${at(1)}`;
}

function cosines(a: Record<string, string | undefined>): void {
  const truth = JSON.parse(readFileSync(join(a.pool!, 'truth.json'), 'utf8')) as Truth;
  const parts = a.embeddings!.split(',').map((f) => parseNpy(new Uint8Array(readFileSync(f))));
  const dim = parts[0].shape[1];
  const x = new Float32Array(parts.reduce((n, p) => n + p.data.length, 0));
  let o = 0;
  for (const p of parts) {
    x.set(p.data, o);
    o += p.data.length;
  }
  const names = listPaths(a.paths!).map(poolName);
  const row = new Map(names.map((n, i) => [n, i]));
  const unit = (i: number) => {
    const v = x.subarray(i * dim, (i + 1) * dim);
    const n = Math.hypot(...v);
    return Float32Array.from(v, (t) => t / n);
  };
  const rows = names.map((_, i) => unit(i));
  const cos = (i: number, j: number) => rows[i].reduce((s, t, q) => s + t * rows[j][q], 0);
  const copyCos: Record<string, number[]> = { exact: [], near: [] };
  for (const [name, t] of Object.entries(truth)) if (t.kind !== 'unique') copyCos[t.kind].push(cos(row.get(name)!, row.get(t.source)!));
  const uniq = Object.entries(truth)
    .filter(([, t]) => t.kind === 'unique')
    .map(([n]) => row.get(n)!);
  const nearestOther = uniq.map((i) => Math.max(...uniq.filter((j) => j !== i).map((j) => cos(i, j))));
  console.log(`exact copy vs its source:           ${quantiles(copyCos.exact)}`);
  console.log(`near copy vs its source:            ${quantiles(copyCos.near)}`);
  console.log(`unique vs its most similar unique:  ${quantiles(nearestOther)}`);
  for (const t of [0.999, 0.9999, 0.99995, 0.99997, 0.99999]) {
    const caught = copyCos.near.filter((c) => c >= t).length;
    const merged = nearestOther.filter((c) => c >= t).length;
    console.log(`threshold ${t}: ${caught}/${copyCos.near.length} near copies caught; ${merged}/${uniq.length} unique images have a distinct image above it`);
  }
}

function histogram(a: Record<string, string | undefined>, lists: string[]): void {
  const truth = JSON.parse(readFileSync(join(a.pool!, 'truth.json'), 'utf8')) as Truth;
  const rows = lists.map((l) => {
    const names = listPaths(l).map(poolName);
    const byClass = new Map<string, number>(SHAPE_CLASSES.map((c) => [c, 0]));
    const kinds = { unique: 0, exact: 0, near: 0 };
    const sources = new Set<string>();
    for (const n of names) {
      const t = truth[n];
      if (!t) throw new Error(`${l}: ${n} is not in the pool's truth.json`);
      byClass.set(t.cls, byClass.get(t.cls)! + 1);
      kinds[t.kind]++;
      sources.add(t.source);
    }
    const counts = SHAPE_CLASSES.map((c) => byClass.get(c)!);
    return { l, n: names.length, counts, kinds, distinct: sources.size };
  });
  console.log(`| list | images | ${SHAPE_CLASSES.join(' | ')} | largest class | copies (exact / near) | duplicates |`);
  console.log(`| --- | ---: | ${SHAPE_CLASSES.map(() => '---:').join(' | ')} | ---: | ---: | ---: |`);
  for (const r of rows) {
    const top = Math.max(...r.counts);
    // Duplicates: listed images whose original (or a copy of it) is listed already.
    console.log(`| ${basename(r.l)} | ${r.n} | ${r.counts.join(' | ')} | ${((100 * top) / r.n).toFixed(1)} % | ${r.kinds.exact} / ${r.kinds.near} | ${r.n - r.distinct} |`);
  }
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: Object.fromEntries(['out', 'seed', 'dominant', 'per-class', 'share', 'exact', 'near', 'size', 'near-shift', 'near-noise', 'paths', 'n', 'pool', 'embeddings'].map((k) => [k, { type: 'string' as const }])),
});
const [mode, ...rest] = positionals;
if (mode === 'make') make(values);
else if (mode === 'random') random(values);
else if (mode === 'cosines') cosines(values);
else if (mode === 'histogram') histogram(values, rest);
else throw new Error('usage: demo-pool.mjs make|random|cosines|histogram … (see the header)');
