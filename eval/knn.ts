/**
 * Weighted k-NN evaluation of frozen features, as DINO's eval_knn.py (`extract_feature_pipeline`,
 * `knn_classifier`; dino.md §2.1), on the GPU: l2-normalised features, cosine similarity by matmul,
 * top-k by kernels/topk.ts, votes weighted by exp(sim / T).
 *
 * Math (per test feature x with label y; train features f_n with labels c_n; all l2-normalised
 * with torch's normalize: v / max(‖v‖₂, 1e-12))
 *   s_n = x · f_n                                       (cosine similarity, [M, N] in chunks)
 *   N_k = the k train indices with the largest s_n     (ties: lower train index)
 *   score_c = Σ_{n ∈ N_k, c_n = c} exp(s_n / T)         (T = 0.07)
 *   classes ranked by score descending (ties: lower class index); the rank of y decides:
 *   top-1 correct ⇔ rank(y) = 0;  top-5 correct ⇔ rank(y) < min(5, k)   (DINO's `min(5, k)`)
 *   reported in % of the test set, for each k in `ks`.
 *
 * Design
 * - The test set runs in chunks of `chunk` rows so the [chunk, N] similarity stays bounded
 *   (DINO: 100 chunks). Per chunk: one matmul (the train features are read through a transposed
 *   VIEW, no copy), one top-k of the LARGEST k in `ks`; smaller k use prefixes of that sorted list,
 *   exactly as separate topk calls would (the order is total).
 * - Voting runs on the CPU, from a readback of the [chunk, kmax] values and indices: that readback
 *   is smaller than a [chunk, numClasses] vote matrix whenever numClasses > kmax (ImageNet: 1000
 *   classes vs k ≤ 200), the labels never go to the GPU, every k is scored from one readback,
 *   weights are summed in float64, and the tie rules are exact. The next chunk's GPU work is
 *   recorded before the current chunk is voted, so the two overlap.
 * - Weights are computed as exp((s_n − s_max)/T) with s_max the row's best similarity: the same
 *   ranking as exp(s_n/T) (a positive factor per test row, as DINOv2's softmax note says), and it
 *   never overflows, even for a tiny T.
 * - Ties: torch's `sort` leaves the order of equal scores unspecified; here a lower class index
 *   wins, so a class with no votes can fill a top-5 slot (as in DINO, where zero-score classes fill
 *   the remaining slots in arbitrary order) and does so deterministically.
 * - numClasses < min(5, k): every class is within the first min(5, k) ranks, so top-5 is 100 %
 *   (torch would fail on narrow() past the class count; DINO never meets it with 1000 classes).
 * - k larger than the train set: an error (torch.topk fails too); silently clamping would report
 *   a "k = 200" accuracy computed with fewer neighbours. Callers with tiny sets pass smaller ks.
 * - Nothing is differentiated: everything runs under noGrad, temporaries in scopes.
 */
import type { Engine } from '../engine/engine.js';
import * as ops from '../engine/ops/index.js';
import { fmt, ShapeError } from '../engine/shape.js';
import type { Tensor } from '../engine/tensor.js';
import { topk } from '../kernels/topk.js';

/** DINO's defaults: `--nb_knn 10 20 100 200`, `--temperature 0.07`. */
export const KNN_DEFAULT_KS: readonly number[] = [10, 20, 100, 200];
export const KNN_DEFAULT_T = 0.07;
/** The largest [chunk, N] similarity matrix a default chunk may need, in bytes. */
const SIMILARITY_BUDGET = 64 * 1024 * 1024;
/** torch.nn.functional.normalize's eps. */
const NORMALIZE_EPS = 1e-12;

export type Labels = Int32Array | readonly number[];

export interface KnnOptions {
  /** Train features [N, D] (any scale: they are l2-normalised here). */
  trainFeatures: Tensor;
  /** N class indices in [0, numClasses). */
  trainLabels: Labels;
  /** Test features [M, D]. */
  testFeatures: Tensor;
  /** M class indices in [0, numClasses). */
  testLabels: Labels;
  /** Number of classes (default: the largest label + 1). */
  numClasses?: number;
  /** Neighbour counts to score (default [10, 20, 100, 200]); each must be ≤ N. */
  ks?: readonly number[];
  /** Temperature of the vote weights exp(sim / T) (default 0.07). */
  T?: number;
  /**
   * Test rows per chunk (default: as many as keep the [chunk, N] similarity under 64 MiB and the
   * device's binding limit, at most M).
   */
  chunk?: number;
}

/** Accuracy for one k, in percent of the test set. */
export interface KnnResult {
  k: number;
  top1: number;
  top5: number;
}

function checkLabels(labels: Labels, n: number, numClasses: number, what: string): void {
  if (labels.length !== n) throw new ShapeError(`knnClassify: ${labels.length} ${what} labels for ${n} ${what} features`);
  for (let i = 0; i < n; i++) {
    const c = labels[i];
    if (!Number.isInteger(c) || c < 0 || c >= numClasses) {
      throw new RangeError(`knnClassify: ${what} label ${i} is ${c}, not a class index in [0, ${numClasses})`);
    }
  }
}

function maxLabel(a: Labels, b: Labels): number {
  let m = -1;
  for (let i = 0; i < a.length; i++) m = Math.max(m, a[i]);
  for (let i = 0; i < b.length; i++) m = Math.max(m, b[i]);
  return m;
}

/** Validates the ks and the temperature; returns the largest k. */
function checkKs(ks: readonly number[], N: number, T: number): number {
  if (ks.length === 0) throw new RangeError('knnClassify: ks is empty');
  for (const k of ks) {
    if (!Number.isInteger(k) || k < 1) throw new RangeError(`knnClassify: k = ${k} is not a positive integer`);
    if (k > N) {
      throw new RangeError(`knnClassify: k = ${k} is larger than the train set (N = ${N}); pass ks ≤ N, e.g. ks.filter((k) => k <= ${N})`);
    }
  }
  if (!(T > 0) || !Number.isFinite(T)) throw new RangeError(`knnClassify: the temperature T must be positive and finite (got ${T})`);
  return Math.max(...ks);
}

/**
 * Accumulates the weighted votes of sorted neighbour lists and counts top-1 / top-5 hits for each
 * k. One instance per knnClassify call; `vote` is fed chunk by chunk.
 */
class VoteCounter {
  private readonly scores: Float64Array;
  /** Classes with a vote in the current row, in first-vote order, and a flag per class. */
  private readonly touched: number[] = [];
  private readonly isTouched: Uint8Array;
  /** ks sorted ascending with their position in the caller's list. */
  private readonly order: { k: number; at: number }[];
  readonly top1: number[];
  readonly top5: number[];

  constructor(
    readonly ks: readonly number[],
    readonly numClasses: number,
    readonly T: number,
  ) {
    this.scores = new Float64Array(numClasses);
    this.isTouched = new Uint8Array(numClasses);
    this.order = ks.map((k, at) => ({ k, at })).sort((a, b) => a.k - b.k);
    this.top1 = ks.map(() => 0);
    this.top5 = ks.map(() => 0);
  }

  /** The rank of class y among all classes by (score desc, class index asc). */
  private rank(y: number): number {
    const s = this.scores;
    const sy = s[y];
    let r = 0;
    let touchedBelow = 0;
    for (const c of this.touched) {
      if (c === y) continue;
      if (c < y) touchedBelow++;
      if (s[c] > sy || (s[c] === sy && c < y)) r++;
    }
    // Classes without votes score 0: they outrank y only when y also scores 0 and has a larger index.
    if (sy === 0) r += y - touchedBelow;
    return r;
  }

  /** Votes one test row: `vals`/`idx` hold its kmax neighbours sorted descending. */
  vote(vals: Float32Array, idx: Float32Array, off: number, kmax: number, y: number, trainLabels: Labels): void {
    const s = this.scores;
    const smax = vals[off];
    let next = 0;
    for (let q = 0; q < kmax && next < this.order.length; q++) {
      const c = trainLabels[idx[off + q]];
      if (!this.isTouched[c]) {
        this.isTouched[c] = 1;
        this.touched.push(c);
      }
      s[c] += Math.exp((vals[off + q] - smax) / this.T);
      while (next < this.order.length && this.order[next].k === q + 1) {
        const { k, at } = this.order[next++];
        const r = this.rank(y);
        if (r === 0) this.top1[at]++;
        if (r < Math.min(5, k)) this.top5[at]++;
      }
    }
    for (const c of this.touched) {
      s[c] = 0;
      this.isTouched[c] = 0;
    }
    this.touched.length = 0;
  }
}

/** Rows per chunk: the caller's, or the most that keep [chunk, N] under the budget and limits. */
function chunkRows(e: Engine, requested: number | undefined, M: number, N: number): number {
  if (requested !== undefined) {
    if (!Number.isInteger(requested) || requested < 1) throw new RangeError(`knnClassify: chunk must be a positive integer (got ${requested})`);
    return Math.min(requested, M);
  }
  const lim = e.device.limits;
  const bytes = Math.min(SIMILARITY_BUDGET, lim.maxStorageBufferBindingSize, lim.maxBufferSize);
  return Math.max(1, Math.min(M, Math.floor(bytes / (4 * N))));
}

/**
 * DINO's weighted k-NN classifier (eval_knn.knn_classifier) on the GPU. Returns top-1 and top-5
 * accuracy in % for each k of `ks`, in the order given. Throws when a k exceeds the train set size,
 * when labels are out of range, or when the features give non-finite similarities.
 */
export async function knnClassify(opts: KnnOptions): Promise<KnnResult[]> {
  const { trainFeatures: trainF, testFeatures: testF, trainLabels, testLabels } = opts;
  if (trainF.rank !== 2 || testF.rank !== 2 || trainF.shape[1] !== testF.shape[1]) {
    throw new ShapeError(`knnClassify: features must be [N, D] and [M, D]; got train ${fmt(trainF.shape)}, test ${fmt(testF.shape)}`);
  }
  const [N] = trainF.shape;
  const [M] = testF.shape;
  if (M === 0) throw new RangeError('knnClassify: the test set is empty');
  const ks = opts.ks ?? KNN_DEFAULT_KS;
  const T = opts.T ?? KNN_DEFAULT_T;
  const kmax = checkKs(ks, N, T);
  const numClasses = opts.numClasses ?? maxLabel(trainLabels, testLabels) + 1;
  if (!Number.isInteger(numClasses) || numClasses < 1) throw new RangeError(`knnClassify: numClasses = ${numClasses}`);
  checkLabels(trainLabels, N, numClasses, 'train');
  checkLabels(testLabels, M, numClasses, 'test');
  const e = trainF.engine;
  const rows = chunkRows(e, opts.chunk, M, N);
  const counter = new VoteCounter(ks, numClasses, T);

  await e.noGrad(() =>
    e.scope(async () => {
      const train = ops.l2Normalize(trainF, NORMALIZE_EPS); // [N, D]
      const trainT = train.transpose(); // [D, N], a view: the matmul reads it in place
      const test = ops.l2Normalize(testF, NORMALIZE_EPS); // [M, D]

      // Records one chunk's matmul and top-k and the copies of its result; the temporaries go
      // back to the pool at once (later dispatches are ordered after the copies).
      const launch = (start: number) =>
        e.scope(() => {
          const q = test.slice(0, start, Math.min(start + rows, M)); // [c, D]
          const sim = ops.matmul(q, trainT); // [c, N]
          const { values, indices } = topk(sim, kmax); // [c, kmax] each
          return { start, read: Promise.all([values.toArray(), indices.toArray()]) };
        });

      let next: ReturnType<typeof launch> | null = launch(0);
      try {
        while (next) {
          const cur: ReturnType<typeof launch> = next;
          next = cur.start + rows < M ? launch(cur.start + rows) : null;
          const [vals, idx] = await cur.read;
          const c = Math.min(rows, M - cur.start);
          for (let r = 0; r < c; r++) {
            const off = r * kmax;
            for (let q = 0; q < kmax; q++) {
              if (!(idx[off + q] < N) || Number.isNaN(vals[off + q])) {
                throw new RangeError(`knnClassify: test row ${cur.start + r} has non-finite similarities (NaN features?)`);
              }
            }
            counter.vote(vals, idx, off, kmax, testLabels[cur.start + r], trainLabels);
          }
        }
      } finally {
        // A chunk recorded ahead must not reject unobserved when an earlier one failed.
        (next as ReturnType<typeof launch> | null)?.read.catch(() => undefined);
      }
    }),
  );
  return ks.map((k, i) => ({ k, top1: (100 * counter.top1[i]) / M, top5: (100 * counter.top5[i]) / M }));
}

export interface ExtractOptions {
  /** Dispose each batch after its forward (for iterables that make a fresh tensor per batch). */
  disposeBatches?: boolean;
  /** Called after each batch with the number of feature rows so far. */
  onBatch?: (rows: number) => void;
}

/**
 * Runs `model.forward` over the batches under noGrad (each batch in its own scope) and returns the
 * features of all batches concatenated along dim 0, as one contiguous kept tensor [N, D] that the
 * caller owns (dispose it). The batches stay the caller's unless `disposeBatches`.
 */
export async function extractFeatures(
  model: { forward(x: Tensor): Tensor },
  batches: AsyncIterable<Tensor> | Iterable<Tensor>,
  opts: ExtractOptions = {},
): Promise<Tensor> {
  const parts: Tensor[] = [];
  let engine: Engine | null = null;
  let rows = 0;
  try {
    for await (const x of batches) {
      const e: Engine = (engine ??= x.engine);
      const f = e.noGrad(() =>
        e.scope(() => {
          const y = model.forward(x);
          if (y.rank !== 2 || y.shape[0] !== x.shape[0]) {
            throw new ShapeError(`extractFeatures: the model returned ${fmt(y.shape)} for a batch ${fmt(x.shape)}; expected [${x.shape[0]}, D]`);
          }
          return y.contiguous();
        }),
      );
      parts.push(e.keep(f));
      if (opts.disposeBatches) x.dispose();
      rows += f.shape[0];
      opts.onBatch?.(rows);
    }
    if (!engine) throw new RangeError('extractFeatures: no batches');
    const e: Engine = engine;
    if (parts.length === 1) return parts.pop()!;
    return e.keep(e.noGrad(() => e.scope(() => ops.concat(parts, 0))));
  } finally {
    for (const p of parts) p.dispose();
  }
}

// -------------------------------------------------------------------------------------------------
// Float64 reference

/**
 * Float64 reference of knnClassify on CPU arrays, written as DINO's code reads: normalise, full
 * similarity, sort each row (value desc, index asc), weights exp(sim/T), class scores, classes
 * sorted (score desc, class asc), hits within the first 1 and min(5, k).
 * `train` is [N, D] and `test` [M, D], row-major.
 */
export function knnRef(
  train: ArrayLike<number>,
  trainLabels: Labels,
  test: ArrayLike<number>,
  testLabels: Labels,
  D: number,
  numClasses: number,
  ks: readonly number[] = KNN_DEFAULT_KS,
  T = KNN_DEFAULT_T,
): KnnResult[] {
  const N = train.length / D;
  const M = test.length / D;
  const normalize = (a: ArrayLike<number>, n: number) => {
    const out = new Float64Array(n * D);
    for (let i = 0; i < n; i++) {
      let ss = 0;
      for (let d = 0; d < D; d++) ss += a[i * D + d] ** 2;
      const inv = 1 / Math.max(Math.sqrt(ss), NORMALIZE_EPS);
      for (let d = 0; d < D; d++) out[i * D + d] = a[i * D + d] * inv;
    }
    return out;
  };
  const tr = normalize(train, N);
  const te = normalize(test, M);
  const top1 = ks.map(() => 0);
  const top5 = ks.map(() => 0);
  for (let m = 0; m < M; m++) {
    const sim = new Float64Array(N);
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += te[m * D + d] * tr[n * D + d];
      sim[n] = s;
    }
    const order = [...Array(N).keys()].sort((a, b) => (sim[a] > sim[b] ? -1 : sim[a] < sim[b] ? 1 : a - b));
    ks.forEach((k, i) => {
      if (k > N) throw new RangeError(`knnRef: k = ${k} > N = ${N}`);
      const score = new Float64Array(numClasses);
      for (let q = 0; q < k; q++) score[trainLabels[order[q]]] += Math.exp(sim[order[q]] / T);
      const classes = [...Array(numClasses).keys()].sort((a, b) => (score[a] > score[b] ? -1 : score[a] < score[b] ? 1 : a - b));
      const rank = classes.indexOf(testLabels[m]);
      if (rank === 0) top1[i]++;
      if (rank < Math.min(5, k)) top5[i]++;
    });
  }
  return ks.map((k, i) => ({ k, top1: (100 * top1[i]) / M, top5: (100 * top5[i]) / M }));
}
