/**
 * A headless DINO training run in Node: what `webdino train` does.
 *
 *   out/checkpoint.safetensors        full state, rewritten atomically every `checkpointEvery`
 *                                     iterations and at the end (resume continues exactly)
 *   out/teacher_backbone.safetensors  the teacher backbone under the official key names
 *   out/metrics.jsonl                 one JSON object per iteration (loss, lr, wd, momentum,
 *                                     teacher temperature, images/s) and per evaluation
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
 * checkpoint on disk stays as it was. An aborted `signal` (Ctrl-C, SIGTERM, SIGHUP in the CLI) stops
 * after the current step and writes a checkpoint, so no work is lost; the final evaluation and the
 * report are skipped then (a stop request wants the process to end soon), and the result says why
 * it stopped.
 *
 * Resuming continues the run the checkpoint records: its configuration, and its schedules, which
 * depend on the iterations per epoch. Data that gives another number of iterations per epoch (or,
 * when the checkpoint records it, another number of images) is refused rather than bending the
 * schedules mid-run. The folder itself (is there a run, who trains in it) is train/run-folder-node.ts's.
 */
import { appendFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { totalmem } from 'node:os';
import { join } from 'node:path';
import type { Engine } from '../engine/engine.js';
import { makeDir, removeStaleTempFiles, writeFileAtomic, writeFileAtomicSync } from '../models/io/node-files.js';
import { DataLoader, type LoaderPosition } from './data/loader.js';
import type { Dataset } from './data/dataset.js';
import { checkpointBytes, exportTeacherBackbone, readCheckpointMeta, restoreCheckpoint } from './checkpoint.js';
import { DinoTrainer, itersPerEpochOf, resolveConfig, type StepResult, type TrainConfig } from './trainer.js';
import { estimateTrainingBytes, formatBytes, validateTrainConfig } from './validate.js';
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
  /** Evaluation hook, called every `evalEvery` iterations and at the end (e.g. k-NN). */
  evalEvery?: number;
  evaluate?: (trainer: DinoTrainer) => Promise<Record<string, number>>;
  onStep?: (r: StepResult & { imagesPerSecond: number; total: number }) => void;
  onLog?: (line: string) => void;
  signal?: AbortSignal;
  /** Write out/report.html at the end (default true); a failure there is logged, not thrown. */
  report?: boolean;
  /**
   * Refuse a configuration whose estimated memory (train/validate.ts `estimateTrainingBytes`) is
   * above this many bytes. Default: the machine's RAM on a CPU adapter (lavapipe's GPU memory is
   * host memory), no limit on a GPU (WebGPU does not tell its memory size). Infinity disables.
   */
  memoryLimit?: number;
  /** How the data was named (a --data spec), recorded in the checkpoint for resume checks and messages. */
  dataSpec?: string;
}

/** What the checkpoint records about the data (in its `extra`, next to the loader position). */
interface DataRecord {
  spec?: string;
  length: number;
}

/** Resuming on data that would change the run's schedules. */
export class ResumeDataMismatchError extends Error {
  override name = 'ResumeDataMismatchError';
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
  /** The abort reason when `signal` stopped the run before its end (e.g. 'SIGTERM'), else null. */
  stoppedBy: unknown;
}

const CKPT = 'checkpoint.safetensors';

/** Trains (or resumes) and returns the trainer, still alive: the caller disposes it. */
export async function runTraining(engine: Engine, opts: RunOptions): Promise<RunResult> {
  const out = opts.outDir;
  makeDir(out);
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
    let meta;
    try {
      meta = readCheckpointMeta(resumeBytes);
    } catch (e) {
      throw new Error(`${ckptPath}: ${(e as Error).message}`, { cause: e });
    }
    // The checkpoint's config defines the run; only the length may be extended.
    config = { ...meta.config, ...(opts.config.epochs !== undefined ? { epochs: opts.config.epochs } : {}) };
    log(`resuming from ${ckptPath} at iteration ${meta.iteration}`);
  } else if (opts.resume) {
    log(`no checkpoint at ${ckptPath}: starting a new run`);
  }
  checkMemory(resolveConfig(config), opts.memoryLimit ?? (engine.device.adapter.isCpu ? totalmem() : Infinity));
  const trainer = new DinoTrainer(engine, config);
  // The trainer is the caller's once returned; on any error on the way it is freed here.
  try {
    const c = trainer.config;
    const loader = new DataLoader(opts.dataset, { batchSize: c.batchSize, shuffle: true, seed: c.seed, dropLast: true, onWarning: (m) => log(`warning: ${m}`) });
    if (loader.batchesPerEpoch === 0) throw new Error(`the dataset has ${opts.dataset.length} images, fewer than one batch of ${c.batchSize}`);
    const itersPerEpoch = itersPerEpochOf(c, loader.batchesPerEpoch);
    trainer.setItersPerEpoch(itersPerEpoch);
    if (resumeBytes) {
      const meta = restoreCheckpoint(trainer, resumeBytes);
      const recorded = (meta.extra as { data?: DataRecord } | null)?.data;
      if (meta.itersPerEpoch !== itersPerEpoch || (recorded && recorded.length !== opts.dataset.length)) {
        const was = recorded ? `${recorded.length} images${recorded.spec ? ` of ${recorded.spec}` : ''}, ` : '';
        throw new ResumeDataMismatchError(
          `the run in ${out} was trained on ${was}${meta.itersPerEpoch} iterations per epoch; this data has ${opts.dataset.length} images, ${itersPerEpoch} iterations per epoch. ` +
            'Resuming on it would change the schedules mid-run: resume with the same data, or start a new run',
        );
      }
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
    const data: DataRecord = { spec: opts.dataSpec, length: opts.dataset.length };
    const save = async () => {
      const extra: RunCheckpointExtra = { loader: position, data, ...(initEval ? { initEval } : {}) };
      const bytes = await checkpointBytes(trainer, itersPerEpoch, extra);
      await writeFileAtomic(ckptPath, bytes);
    };
    const evals: Record<string, number>[] = [];
    // An evaluation is a measurement of the run, not part of it: when it fails (an unreadable
    // --val folder, say) the failure is logged and recorded, and training goes on.
    const runEval = async (): Promise<Record<string, number> | null> => {
      if (!opts.evaluate) return null;
      let r: Record<string, number>;
      try {
        r = await opts.evaluate(trainer);
      } catch (e) {
        const message = (e as Error).message ?? String(e);
        log(`warning: the evaluation at iteration ${trainer.iteration} failed (training goes on): ${message}`);
        appendFileSync(metricsPath, JSON.stringify({ type: 'eval', iteration: trainer.iteration, error: message }) + '\n');
        return null;
      }
      const rec = { iteration: trainer.iteration, ...r };
      evals.push(rec);
      appendFileSync(metricsPath, JSON.stringify({ type: 'eval', ...rec }) + '\n');
      return r;
    };
    if (opts.evaluate && !resumeBytes) {
      initEval = await runEval();
      if (initEval) log(`at initialisation: ${JSON.stringify(initEval)}`);
    }

    let lastLoss = NaN;
    let t0 = performance.now();
    let imagesSince = 0;
    let rate = 0;
    outer: while (trainer.iteration < stopAt && !opts.signal?.aborted) {
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
    const stoppedBy = opts.signal?.aborted && trainer.iteration < stopAt ? (opts.signal.reason ?? 'aborted') : null;
    if (stoppedBy === null && (trainer.iteration >= total || opts.evalEvery)) await runEval();
    let report: string | null = null;
    if (opts.report !== false && stoppedBy === null) {
      // Everything is saved already: a report failure must not fail the run.
      try {
        report = await writeTrainingReport(engine, { outDir: out, backbone: trainer.teacherBackbone, size: 2 * c.globalSize, dataset: opts.dataset, config: { ...c } });
        log(`report: ${report}`);
      } catch (e) {
        log(`warning: the training report could not be written: ${(e as Error).message}`);
      }
    }
    return { trainer, iterations: trainer.iteration, lastLoss, checkpoint: ckptPath, teacherBackbone: teacherPath, evals, initEval, report, stoppedBy };
  } catch (e) {
    trainer.dispose();
    throw e;
  }
}

/** What a run keeps in its checkpoint besides the trainer: where the data loader is, the data, the baseline. */
interface RunCheckpointExtra {
  loader?: LoaderPosition;
  data?: DataRecord;
  initEval?: Record<string, number>;
}

/** Refuses, with the figures, a configuration that would not fit in `limit` bytes. */
function checkMemory(c: TrainConfig, limit: number): void {
  validateTrainConfig(c);
  const need = estimateTrainingBytes(c);
  if (need > limit) {
    throw new Error(
      `this configuration needs about ${formatBytes(need)} (student, teacher, gradients, AdamW moments and the activations of a batch of ${c.batchSize}), ` +
        `more than the ${formatBytes(limit)} available: use a smaller model (--arch, --embed-dim, --depth), --batch-size or --out-dim`,
    );
  }
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
  writeFileAtomicSync(pngPath, png);
}
