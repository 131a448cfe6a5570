/**
 * A headless training run in Node, DINO's recipe or DINOv2's (`recipe`): what `webdino train` does.
 * One loop drives both; what differs (the trainer, its checkpoint, its export, its metrics line)
 * is a small adapter per recipe (`RecipeOps` below).
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
 *
 * DINOv2's schedules count "epochs" of `epochLength` iterations (OFFICIAL_EPOCH_LENGTH 1250),
 * independent of the data; a DINOv2 config without `epochLength` takes the data's iterations per
 * epoch (so an epoch is a pass over the data, as for DINO), recorded in the config from then on.
 */
import { appendFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { totalmem } from 'node:os';
import { join } from 'node:path';
import type { Engine } from '../engine/engine.js';
import { makeDir, removeStaleTempFiles, writeFileAtomic, writeFileAtomicSync } from '../models/io/node-files.js';
import { DataLoader, type LoaderPosition } from './data/loader.js';
import type { ImageLike } from '../kernels/augment.js';
import type { Dataset } from './data/dataset.js';
import { checkpointBytes, exportTeacherBackbone, readCheckpointMeta, restoreCheckpoint } from './checkpoint.js';
import { DinoTrainer, itersPerEpochOf, resolveConfig, type StepResult, type TrainConfig } from './trainer.js';
import { type DinoV2Config, type DinoV2StepResult, DinoV2Trainer, resolveDinoV2Config, validateDinoV2Config } from './dinov2-trainer.js';
import { dinov2CheckpointBytes, exportTeacherBackbone as exportDinoV2TeacherBackbone, readDinoV2CheckpointMeta, restoreDinoV2Checkpoint } from './dinov2/checkpoint.js';
import { estimateTrainingBytes, formatBytes, type ModelShape, validateTrainConfig } from './validate.js';
import { ema, lineChartPng } from './plot.js';
import { writeTrainingReport } from './report-node.js';

/** A trainer of either recipe. */
export type AnyTrainer = DinoTrainer | DinoV2Trainer;
/** What a step of either recipe reports. */
export type AnyStepResult = StepResult | DinoV2StepResult;

/** The recipe and its config: DINO's (the default) or DINOv2's. */
export type RecipeConfig = { recipe?: 'dino'; config: Partial<TrainConfig> } | { recipe: 'dinov2'; config: Partial<DinoV2Config> };

export type RunOptions = RecipeConfig & RunCommonOptions;

/** The options of a run besides the recipe and its config; `T`: the trainer the hooks receive. */
export interface RunCommonOptions<T extends AnyTrainer = AnyTrainer> {
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
  evaluate?: (trainer: T) => Promise<Record<string, number>>;
  onStep?: (r: AnyStepResult & { imagesPerSecond: number; total: number }) => void;
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

export interface RunResult<T extends AnyTrainer = AnyTrainer> {
  trainer: T;
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

/**
 * What the loop needs of a recipe. `create` builds the trainer for data of `itersPerEpoch`
 * iterations per epoch; `restore` loads a checkpoint into it and returns the recorded schedule
 * length (itersPerEpoch) and extra state; `line` is the step's metrics.jsonl record (without
 * images_per_s, which the loop adds last).
 */
interface RecipeOps {
  readMeta(bytes: Uint8Array): { iteration: number; config: object };
  /** Throws when the config is invalid or would not fit in `limit` bytes. */
  checkMemory(config: object, limit: number): void;
  batchSizeAndSeed(config: object): { batchSize: number; seed: number };
  /** Iterations per schedule epoch: the config's epoch length when it sets one, else one pass over the data. */
  itersPerEpoch(config: object, batchesPerPass: number): number;
  create(engine: Engine, config: object, itersPerEpoch: number): AnyTrainer;
  restore(trainer: AnyTrainer, bytes: Uint8Array): { itersPerEpoch: number; extra: unknown };
  checkpoint(trainer: AnyTrainer, itersPerEpoch: number, extra: unknown): Promise<Uint8Array>;
  exportTeacher(trainer: AnyTrainer): Promise<Uint8Array>;
  step(trainer: AnyTrainer, images: ImageLike[]): Promise<{ result: AnyStepResult; line: Record<string, unknown> }>;
}

const DINO_OPS: RecipeOps = {
  readMeta: (bytes) => readCheckpointMeta(bytes),
  checkMemory: (config, limit) => {
    const c = resolveConfig(config as Partial<TrainConfig>);
    validateTrainConfig(c);
    checkMemory(c, limit);
  },
  batchSizeAndSeed: (config) => resolveConfig(config as Partial<TrainConfig>),
  itersPerEpoch: (config, batches) => itersPerEpochOf(resolveConfig(config as Partial<TrainConfig>), batches),
  create: (engine, config, itersPerEpoch) => {
    const t = new DinoTrainer(engine, config as Partial<TrainConfig>);
    t.setItersPerEpoch(itersPerEpoch);
    return t;
  },
  restore: (trainer, bytes) => {
    const meta = restoreCheckpoint(trainer as DinoTrainer, bytes);
    return { itersPerEpoch: meta.itersPerEpoch, extra: meta.extra };
  },
  checkpoint: (trainer, itersPerEpoch, extra) => checkpointBytes(trainer as DinoTrainer, itersPerEpoch, extra),
  exportTeacher: (trainer) => exportTeacherBackbone(trainer as DinoTrainer),
  step: async (trainer, images) => {
    const r = await (trainer as DinoTrainer).stepImages(images);
    return {
      result: r,
      line: {
        type: 'step',
        iteration: r.iteration,
        epoch: r.epoch,
        loss: r.loss,
        lr: r.lr,
        wd: r.weightDecay,
        momentum: r.momentum,
        teacher_temp: r.teacherTemp,
        teacher_entropy: r.teacherEntropy,
        teacher_marginal_entropy: r.teacherMarginalEntropy,
        // Mixed precision: the scale the step's gradients were computed with, and whether they overflowed.
        ...(r.lossScale !== undefined ? { loss_scale: r.lossScale, skipped: r.skipped } : {}),
      },
    };
  },
};

const DINOV2_OPS: RecipeOps = {
  readMeta: (bytes) => readDinoV2CheckpointMeta(bytes),
  checkMemory: (config, limit) => {
    // epochLength is filled from the data later; any valid value checks the rest.
    const c = resolveDinoV2Config({ epochLength: 1, ...(config as Partial<DinoV2Config>) });
    validateDinoV2Config(c);
    checkMemory(c, limit);
  },
  batchSizeAndSeed: (config) => resolveDinoV2Config({ epochLength: 1, ...(config as Partial<DinoV2Config>) }),
  itersPerEpoch: (config, batches) => (config as Partial<DinoV2Config>).epochLength || batches,
  create: (engine, config, itersPerEpoch) => new DinoV2Trainer(engine, { ...(config as Partial<DinoV2Config>), epochLength: itersPerEpoch }),
  restore: (trainer, bytes) => {
    const meta = restoreDinoV2Checkpoint(trainer as DinoV2Trainer, bytes);
    return { itersPerEpoch: meta.itersPerEpoch, extra: meta.extra };
  },
  checkpoint: (trainer, _itersPerEpoch, extra) => dinov2CheckpointBytes(trainer as DinoV2Trainer, extra),
  exportTeacher: (trainer) => exportDinoV2TeacherBackbone(trainer as DinoV2Trainer),
  step: async (trainer, images) => {
    const r = await (trainer as DinoV2Trainer).stepImages(images);
    return {
      result: r,
      line: {
        type: 'step',
        iteration: r.iteration,
        epoch: r.epoch,
        loss: r.loss,
        ...r.losses,
        lr: r.lr,
        last_layer_lr: r.lastLayerLr,
        wd: r.weightDecay,
        momentum: r.momentum,
        teacher_temp: r.teacherTemp,
        masked_patches: r.maskedPatches,
        teacher_entropy: r.teacherEntropy.cls,
        teacher_marginal_entropy: r.teacherMarginalEntropy.cls,
        teacher_entropy_patch: r.teacherEntropy.patch,
        teacher_marginal_entropy_patch: r.teacherMarginalEntropy.patch,
      },
    };
  },
};

/** Trains (or resumes) and returns the trainer, still alive: the caller disposes it. */
export async function runTraining(engine: Engine, opts: RunCommonOptions<DinoV2Trainer> & { recipe: 'dinov2'; config: Partial<DinoV2Config> }): Promise<RunResult<DinoV2Trainer>>;
export async function runTraining(engine: Engine, opts: RunCommonOptions<DinoTrainer> & { recipe?: 'dino'; config: Partial<TrainConfig> }): Promise<RunResult<DinoTrainer>>;
export async function runTraining(engine: Engine, opts: RunOptions): Promise<RunResult>;
export async function runTraining(engine: Engine, opts: RecipeConfig & RunCommonOptions<never>): Promise<RunResult> {
  const out = opts.outDir;
  makeDir(out);
  const ckptPath = join(out, CKPT);
  const metricsPath = join(out, 'metrics.jsonl');
  const log = opts.onLog ?? (() => {});
  const ops = opts.recipe === 'dinov2' ? DINOV2_OPS : DINO_OPS;
  // A run killed while writing a checkpoint leaves its temporary file; the checkpoint itself is intact.
  for (const f of removeStaleTempFiles(ckptPath)) log(`removed the unfinished checkpoint write ${f}`);
  let config: object = opts.config;
  let resumeBytes: Uint8Array | null = null;
  let initEval: Record<string, number> | null = null;
  if (opts.resume && existsSync(ckptPath)) {
    resumeBytes = new Uint8Array(readFileSync(ckptPath));
    let meta;
    try {
      meta = ops.readMeta(resumeBytes);
    } catch (e) {
      throw new Error(`${ckptPath}: ${(e as Error).message}`, { cause: e });
    }
    // The checkpoint's config defines the run; only the length may be extended.
    config = { ...meta.config, ...(opts.config.epochs !== undefined ? { epochs: opts.config.epochs } : {}) };
    log(`resuming from ${ckptPath} at iteration ${meta.iteration}`);
  } else if (opts.resume) {
    log(`no checkpoint at ${ckptPath}: starting a new run`);
  }
  ops.checkMemory(config, opts.memoryLimit ?? (engine.device.adapter.isCpu ? totalmem() : Infinity));
  const { batchSize, seed } = ops.batchSizeAndSeed(config);
  const loader = new DataLoader(opts.dataset, { batchSize, shuffle: true, seed, dropLast: true, onWarning: (m) => log(`warning: ${m}`) });
  if (loader.batchesPerEpoch === 0) throw new Error(`the dataset has ${opts.dataset.length} images, fewer than one batch of ${batchSize}`);
  const itersPerEpoch = ops.itersPerEpoch(config, loader.batchesPerEpoch);
  const trainer = ops.create(engine, config, itersPerEpoch);
  // The trainer is the caller's once returned; on any error on the way it is freed here.
  try {
    const c = trainer.config;
    if (resumeBytes) {
      const meta = ops.restore(trainer, resumeBytes);
      const recorded = (meta.extra as { data?: DataRecord } | null)?.data;
      // DINO's schedules follow the data's iterations per epoch; DINOv2's its own epoch length.
      const schedulesDiffer = opts.recipe !== 'dinov2' && meta.itersPerEpoch !== itersPerEpoch;
      if (schedulesDiffer || (recorded && recorded.length !== opts.dataset.length)) {
        const was = recorded ? `${recorded.length} images${recorded.spec ? ` of ${recorded.spec}` : ''}, ` : '';
        throw new ResumeDataMismatchError(
          `the run in ${out} was trained on ${was}${meta.itersPerEpoch} iterations per epoch; this data has ${opts.dataset.length} images, ${itersPerEpoch} iterations per epoch. ` +
            'Resuming on it would change the schedules mid-run: resume with the same data, or start a new run',
        );
      }
      if (trainer instanceof DinoTrainer) trainer.setItersPerEpoch(itersPerEpoch);
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
      const bytes = await ops.checkpoint(trainer, itersPerEpoch, extra);
      await writeFileAtomic(ckptPath, bytes);
    };
    const evals: Record<string, number>[] = [];
    // An evaluation is a measurement of the run, not part of it: when it fails (an unreadable
    // --val folder, say) the failure is logged and recorded, and training goes on.
    const runEval = async (): Promise<Record<string, number> | null> => {
      if (!opts.evaluate) return null;
      let r: Record<string, number>;
      try {
        r = await opts.evaluate(trainer as never);
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
        const { result: r, line } = await ops.step(
          trainer,
          batch.samples.map((s) => s.image),
        );
        position = batch.next;
        lastLoss = r.loss;
        imagesSince += r.images;
        const dt = (performance.now() - t0) / 1000;
        if (dt > 2 || rate === 0) {
          rate = imagesSince / dt;
          t0 = performance.now();
          imagesSince = 0;
        }
        appendFileSync(metricsPath, JSON.stringify({ ...line, images_per_s: +rate.toFixed(2) }) + '\n');
        opts.onStep?.({ ...r, imagesPerSecond: rate, total });
        const it = trainer.iteration;
        if (opts.checkpointEvery && it % opts.checkpointEvery === 0 && it < stopAt) await save();
        if (opts.evalEvery && it % opts.evalEvery === 0 && it < stopAt) await runEval();
        if (it >= stopAt || opts.signal?.aborted) break outer;
      }
    }
    await save();
    const teacherPath = join(out, 'teacher_backbone.safetensors');
    await writeFileAtomic(teacherPath, await ops.exportTeacher(trainer));
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
function checkMemory(c: ModelShape, limit: number): void {
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
