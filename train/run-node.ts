/**
 * A headless DINO training run in Node: what `webdino train` does.
 *
 *   out/checkpoint.safetensors        full state, rewritten atomically every `checkpointEvery`
 *                                     iterations and at the end (resume continues exactly)
 *   out/teacher_backbone.safetensors  the teacher backbone under the official key names
 *   out/metrics.jsonl                 one JSON object per iteration (loss, lr, wd, momentum,
 *                                     teacher temperature, images/s) and per evaluation (the one at
 *                                     iteration 0 is the model at its initialisation)
 *   out/loss.png                      the loss curve (raw and smoothed)
 *   out/report.html                   a self-contained page: curves, evaluations, attention and
 *                                     PCA pictures of the teacher (train/report-node.ts)
 *
 * With an evaluation hook, a new run first evaluates the model as initialised (the same
 * architecture and seed, before any step): the baseline that the trained teacher's figures are read
 * against. It touches no generator and no parameter, so a run with it trains exactly as one without;
 * the checkpoint keeps it, so a resumed run still reports it.
 *
 * A non-finite loss stops the run with NonFiniteLossError before any update, and the last
 * checkpoint on disk stays as it was. Ctrl-C (an aborted signal) stops after the current step and
 * writes a checkpoint, so no work is lost.
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Engine } from '../engine/engine.js';
import { removeStaleTempFiles, writeFileAtomic } from '../models/io/node-files.js';
import { DataLoader, type LoaderPosition } from './data/loader.js';
import type { Dataset } from './data/dataset.js';
import { checkpointBytes, exportTeacherBackbone, readCheckpointMeta, restoreCheckpoint } from './checkpoint.js';
import { DinoTrainer, itersPerEpochOf, type StepResult, type TrainConfig } from './trainer.js';
import { ema, lineChartPng } from './plot.js';
import { writeTrainingReport } from './report-node.js';

export interface RunOptions {
  config: Partial<TrainConfig>;
  dataset: Dataset;
  outDir: string;
  /** Continue from outDir/checkpoint.safetensors when it exists (its config wins). */
  resume?: boolean;
  /** Write a checkpoint every this many iterations (0: only at the end). */
  checkpointEvery?: number;
  /** Stop after this many iterations of this process (for tests); the schedule is unchanged. */
  maxIterations?: number;
  /** Evaluation hook, called at the start of a new run, every `evalEvery` iterations and at the end (e.g. k-NN). */
  evalEvery?: number;
  evaluate?: (trainer: DinoTrainer) => Promise<Record<string, number>>;
  onStep?: (r: StepResult & { imagesPerSecond: number; total: number }) => void;
  onLog?: (line: string) => void;
  signal?: AbortSignal;
  /** Write out/report.html at the end (default true); a failure there is logged, not thrown. */
  report?: boolean;
}

export interface RunResult {
  trainer: DinoTrainer;
  iterations: number;
  lastLoss: number;
  checkpoint: string;
  teacherBackbone: string;
  evals: Record<string, number>[];
  /** The evaluation of the model at its initialisation (iteration 0), or null without a hook. */
  initEval: Record<string, number> | null;
  /** Path of report.html, or null when it was not written. */
  report: string | null;
}

const CKPT = 'checkpoint.safetensors';

/** Trains (or resumes) and returns the trainer, still alive: the caller disposes it. */
export async function runTraining(engine: Engine, opts: RunOptions): Promise<RunResult> {
  const out = opts.outDir;
  mkdirSync(out, { recursive: true });
  const ckptPath = join(out, CKPT);
  const metricsPath = join(out, 'metrics.jsonl');
  const log = opts.onLog ?? (() => {});
  // A run killed while writing a checkpoint leaves its temporary file; the checkpoint itself is intact.
  for (const f of removeStaleTempFiles(ckptPath)) log(`removed the unfinished checkpoint write ${f}`);
  let config = opts.config;
  let resumeBytes: Uint8Array | null = null;
  let initEval: Record<string, number> | null = null;
  if (opts.resume && existsSync(ckptPath)) {
    resumeBytes = new Uint8Array(readFileSync(ckptPath));
    const meta = readCheckpointMeta(resumeBytes);
    // The checkpoint's config defines the run; only the length may be extended.
    config = { ...meta.config, ...(opts.config.epochs !== undefined ? { epochs: opts.config.epochs } : {}) };
    log(`resuming from ${ckptPath} at iteration ${meta.iteration}`);
  } else if (opts.resume) {
    log(`no checkpoint at ${ckptPath}: starting a new run`);
  }
  const trainer = new DinoTrainer(engine, config);
  const c = trainer.config;
  const loader = new DataLoader(opts.dataset, { batchSize: c.batchSize, shuffle: true, seed: c.seed, dropLast: true, onWarning: (m) => log(`warning: ${m}`) });
  if (loader.batchesPerEpoch === 0) throw new Error(`the dataset has ${opts.dataset.length} images, fewer than one batch of ${c.batchSize}`);
  const itersPerEpoch = itersPerEpochOf(c, loader.batchesPerEpoch);
  trainer.setItersPerEpoch(itersPerEpoch);
  if (resumeBytes) {
    const meta = restoreCheckpoint(trainer, resumeBytes);
    trainer.setItersPerEpoch(itersPerEpoch);
    const extra = meta.extra as RunCheckpointExtra | null;
    if (extra?.loader) loader.seek(extra.loader);
    initEval = extra?.initEval ?? null;
    truncateMetrics(metricsPath, trainer.iteration);
  } else if (existsSync(metricsPath)) {
    writeFileSync(metricsPath, '');
  }

  const total = trainer.totalIterations;
  const stopAt = Math.min(total, opts.maxIterations !== undefined ? trainer.iteration + opts.maxIterations : total);
  let position: LoaderPosition = loader.position;
  const save = async () => {
    const extra: RunCheckpointExtra = { loader: position, ...(initEval ? { initEval } : {}) };
    const bytes = await checkpointBytes(trainer, itersPerEpoch, extra);
    await writeFileAtomic(ckptPath, bytes);
  };
  const evals: Record<string, number>[] = [];
  const runEval = async () => {
    if (!opts.evaluate) return null;
    const r = await opts.evaluate(trainer);
    const rec = { iteration: trainer.iteration, ...r };
    evals.push(rec);
    appendFileSync(metricsPath, JSON.stringify({ type: 'eval', ...rec }) + '\n');
    return r;
  };
  if (opts.evaluate && !resumeBytes) {
    initEval = await runEval();
    log(`at initialisation: ${JSON.stringify(initEval)}`);
  }

  let lastLoss = NaN;
  let t0 = performance.now();
  let imagesSince = 0;
  let rate = 0;
  outer: while (trainer.iteration < stopAt) {
    for await (const batch of loader.batches()) {
      const r = await trainer.stepImages(batch.samples.map((s) => s.image));
      position = batch.next;
      lastLoss = r.loss;
      imagesSince += r.images;
      const dt = (performance.now() - t0) / 1000;
      if (dt > 2 || rate === 0) {
        rate = imagesSince / dt;
        t0 = performance.now();
        imagesSince = 0;
      }
      appendFileSync(
        metricsPath,
        JSON.stringify({ type: 'step', iteration: r.iteration, epoch: r.epoch, loss: r.loss, lr: r.lr, wd: r.weightDecay, momentum: r.momentum, teacher_temp: r.teacherTemp, teacher_entropy: r.teacherEntropy, teacher_marginal_entropy: r.teacherMarginalEntropy, images_per_s: +rate.toFixed(2) }) + '\n',
      );
      opts.onStep?.({ ...r, imagesPerSecond: rate, total });
      const it = trainer.iteration;
      if (opts.checkpointEvery && it % opts.checkpointEvery === 0 && it < stopAt) await save();
      if (opts.evalEvery && it % opts.evalEvery === 0 && it < stopAt) await runEval();
      if (it >= stopAt || opts.signal?.aborted) break outer;
    }
  }
  await save();
  const teacherPath = join(out, 'teacher_backbone.safetensors');
  await writeFileAtomic(teacherPath, await exportTeacherBackbone(trainer));
  writeLossCurve(metricsPath, join(out, 'loss.png'));
  if (trainer.iteration >= total || opts.evalEvery) await runEval();
  let report: string | null = null;
  if (opts.report !== false) {
    // Everything is saved already: a report failure must not fail the run.
    try {
      report = await writeTrainingReport(engine, { outDir: out, backbone: trainer.teacherBackbone, size: 2 * c.globalSize, dataset: opts.dataset, config: { ...c } });
      log(`report: ${report}`);
    } catch (e) {
      log(`warning: the training report could not be written: ${(e as Error).message}`);
    }
  }
  return { trainer, iterations: trainer.iteration, lastLoss, checkpoint: ckptPath, teacherBackbone: teacherPath, evals, initEval, report };
}

/** What a run keeps in its checkpoint besides the trainer: where the data loader is, the baseline. */
interface RunCheckpointExtra {
  loader?: LoaderPosition;
  initEval?: Record<string, number>;
}

/** Keeps only the metric lines of iterations before `iteration` (a resumed run rewrites the rest). */
function truncateMetrics(path: string, iteration: number): void {
  if (!existsSync(path)) return;
  const keep = readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => {
      if (!l.trim()) return false;
      try {
        const o = JSON.parse(l) as { iteration?: number };
        return (o.iteration ?? 0) < iteration || (o.iteration === iteration && (o as { type?: string }).type === 'eval');
      } catch {
        return false;
      }
    });
  writeFileSync(path, keep.map((l) => l + '\n').join(''));
}

/** Draws loss.png from metrics.jsonl: raw loss (light) and its moving average (dark). */
export function writeLossCurve(metricsPath: string, pngPath: string): void {
  const losses: number[] = [];
  for (const l of readFileSync(metricsPath, 'utf8').split('\n')) {
    if (!l.trim()) continue;
    const o = JSON.parse(l) as { type: string; loss?: number };
    if (o.type === 'step' && typeof o.loss === 'number') losses.push(o.loss);
  }
  const png = lineChartPng([
    { y: losses, color: [170, 200, 235] },
    { y: ema(losses, 0.05), color: [30, 90, 180] },
  ]);
  writeFileSync(pngPath, png);
}
