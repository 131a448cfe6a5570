/**
 * `webdino train`: DINO self-supervised training, headless. With no arguments it trains the CPU
 * default configuration on the embedded synthetic dataset and finishes in about 15 minutes on two
 * cores without a GPU (lavapipe).
 *
 * The run folder (--out) is guarded (train/run-folder-node.ts): one process trains in it at a time
 * (OUT/.lock), and a folder that holds a run is not started over unless asked: --resume continues
 * it, --force overwrites it, anything else is refused with those two choices. `--resume` on a
 * finished run has nothing to do and says so (`npm start` runs `train --resume`, so running it
 * twice keeps the first run). The options of a resumed run are the checkpoint's: one that differs
 * is refused, except a longer --epochs (stated).
 *
 * Ctrl-C, SIGTERM and SIGHUP stop after the current step and save a checkpoint; the command then
 * exits with 128 + the signal's number (130, 143, 129) and says how to resume.
 */
import { join } from 'node:path';
import { CPU_DEFAULT_CONFIG, DINO_DEFAULTS, type DinoTrainer, NonFiniteLossError, resolveConfig, type TrainConfig } from '../../train/trainer.js';
import { runTraining } from '../../train/run-node.js';
import { inspectRunFolder, RUN_FILES, RunFolderLock, type RunFolderState } from '../../train/run-folder-node.js';
import { makeDir } from '../../models/io/node-files.js';
import { firstN, knnEvaluator } from '../../train/eval-hooks-node.js';
import { datasetSegmentationSource, segmentationEvaluator } from '../../eval/segment.js';
import { defineCommand, SIGNAL_NUMBERS, type StopSignal, UsageError } from '../command.js';
import { choice, flag, int, num, path, str, type Values } from '../options.js';
import { ProgressReporter } from '../progress.js';
import { openData, withEngine } from '../resources.js';
import { ARCHS } from './backbone-options.js';

const RESOLVED_CPU = resolveConfig(CPU_DEFAULT_CONFIG);

/** The default of a config option: the CPU recipe's, and DINO's where a named --arch differs. */
function recipe(key: keyof TrainConfig): string {
  const cpu = RESOLVED_CPU[key];
  const dino = DINO_DEFAULTS[key];
  return cpu === dino ? String(cpu) : `${cpu}; with a named --arch, DINO's ${dino}`;
}

/** Options that set a TrainConfig field; their default is the recipe's (see `trainConfig`). */
const CONFIG_OPTIONS = {
  arch: choice({ choices: ARCHS, value: '<arch>', derived: "the small CPU ViT (custom); a named ViT brings DINO's whole recipe", help: `Backbone: ${ARCHS.join(', ')}` }),
  'embed-dim': int({ min: 8, max: 4096, value: '<n>', derived: String(RESOLVED_CPU.embedDim), help: 'Width of a custom ViT' }),
  depth: int({ min: 1, max: 64, value: '<n>', derived: String(RESOLVED_CPU.depth), help: 'Blocks of a custom ViT' }),
  heads: int({ min: 1, max: 64, value: '<n>', derived: String(RESOLVED_CPU.numHeads), help: 'Attention heads of a custom ViT' }),
  'patch-size': int({ min: 1, max: 64, value: '<n>', derived: recipe('patchSize'), help: 'Patch size' }),
  'out-dim': int({ min: 2, max: 262144, value: '<K>', derived: recipe('outDim'), help: 'Prototypes of the DINO head' }),
  epochs: int({ min: 1, max: 100000, value: '<n>', derived: recipe('epochs'), help: 'Epochs' }),
  'batch-size': int({ min: 2, max: 4096, value: '<n>', derived: recipe('batchSize'), help: 'Images per step' }),
  lr: num({ min: 0, max: 10, value: '<x>', derived: recipe('lr'), help: 'Base learning rate (scaled by batch/256)' }),
  'warmup-epochs': num({ min: 0, max: 1000, value: '<n>', derived: recipe('warmupEpochs'), help: 'Linear lr warm-up epochs' }),
  'momentum-teacher': num({ min: 0, max: 1, value: '<m>', derived: recipe('momentumTeacher'), help: 'Base EMA momentum of the teacher' }),
  'clip-grad': num({ min: 0, max: 1e6, value: '<x>', derived: recipe('clipGrad'), help: 'Per-tensor gradient clipping (0: off)' }),
  'global-size': int({ min: 8, max: 1024, value: '<px>', derived: recipe('globalSize'), help: 'Side of the 2 global crops' }),
  'local-size': int({ min: 8, max: 1024, value: '<px>', derived: recipe('localSize'), help: 'Side of the local crops' }),
  'local-crops': int({ min: 0, max: 64, value: '<n>', derived: recipe('localCrops'), help: 'Number of local crops (0 disables multi-crop)' }),
  'teacher-temp': num({ min: 1e-4, max: 10, value: '<t>', derived: recipe('teacherTemp'), help: 'Final teacher temperature' }),
  'warmup-teacher-temp': num({ min: 1e-4, max: 10, value: '<t>', derived: recipe('warmupTeacherTemp'), help: 'Teacher temperature at the start of its warm-up epoch' }),
  centering: choice({ choices: ['center', 'sinkhorn_knopp'], value: '<kind>', derived: recipe('centering'), help: "Teacher targets: 'center' (DINO) or 'sinkhorn_knopp' (DINOv2)" }),
  seed: int({ min: 0, max: 2 ** 31, value: '<n>', derived: recipe('seed'), help: 'Seed of initialisation, shuffling and augmentation' }),
};

/** The TrainConfig field each config option sets. */
const CONFIG_KEYS = {
  arch: 'arch',
  'embed-dim': 'embedDim',
  depth: 'depth',
  heads: 'numHeads',
  'patch-size': 'patchSize',
  'out-dim': 'outDim',
  epochs: 'epochs',
  'batch-size': 'batchSize',
  lr: 'lr',
  'warmup-epochs': 'warmupEpochs',
  'momentum-teacher': 'momentumTeacher',
  'clip-grad': 'clipGrad',
  'global-size': 'globalSize',
  'local-size': 'localSize',
  'local-crops': 'localCrops',
  'teacher-temp': 'teacherTemp',
  'warmup-teacher-temp': 'warmupTeacherTemp',
  centering: 'centering',
  seed: 'seed',
} as const satisfies Record<keyof typeof CONFIG_OPTIONS, keyof TrainConfig>;

type ConfigValues = Values<typeof CONFIG_OPTIONS>;

/** The config fields given on the command line, and only those. */
export function givenConfig(v: ConfigValues): Partial<TrainConfig> {
  const c: Record<string, unknown> = {};
  for (const [option, key] of Object.entries(CONFIG_KEYS)) {
    const val = v[option as keyof ConfigValues];
    if (val !== undefined) c[key] = val;
  }
  return c as Partial<TrainConfig>;
}

/** The TrainConfig of the parsed `webdino train` options (exported for tests). */
export function trainConfig(v: ConfigValues): Partial<TrainConfig> {
  // A named ViT trains with DINO's own recipe (K 65536, τt 0.04, full colour jitter, 224/96 px
  // crops, ...); without --arch (or with custom) the small CPU default applies, whose departures
  // from DINO are for a tiny model in a 15-minute run (see CPU_DEFAULT_CONFIG).
  const base: Partial<TrainConfig> = v.arch !== undefined && v.arch !== 'custom' ? { ...DINO_DEFAULTS } : { ...CPU_DEFAULT_CONFIG };
  const c = { ...base, ...givenConfig(v) };
  if (c.arch !== 'custom' && (v['embed-dim'] !== undefined || v.depth !== undefined || v.heads !== undefined)) {
    throw new UsageError('--embed-dim, --depth and --heads need --arch custom');
  }
  if ((c.embedDim ?? 0) % (c.numHeads ?? 1) !== 0) throw new UsageError(`--embed-dim ${c.embedDim} must be divisible by --heads ${c.numHeads}`);
  return c;
}

/**
 * The options of a resumed run are the checkpoint's. Returns what to tell about the options that
 * apply (a longer --epochs); throws UsageError listing every given option that differs from the run.
 */
export function checkResumeOptions(v: ConfigValues, recorded: TrainConfig, itersPerEpoch: number): string[] {
  const given = givenConfig(v);
  const conflicts: string[] = [];
  const notes: string[] = [];
  for (const [option, key] of Object.entries(CONFIG_KEYS)) {
    const want = given[key];
    if (want === undefined || want === recorded[key]) continue;
    if (key === 'epochs' && (want as number) > recorded.epochs) {
      notes.push(`--epochs ${want}: the run is extended from ${recorded.epochs} to ${want} epochs; its cosine schedules now end at iteration ${(want as number) * itersPerEpoch} instead of ${recorded.epochs * itersPerEpoch}`);
      continue;
    }
    conflicts.push(`--${option} ${String(want)} (the run has ${String(recorded[key])})`);
  }
  if (conflicts.length) {
    throw new UsageError(
      `--resume continues the run with its own options, and these differ: ${conflicts.join(', ')}. ` +
        'Drop them to resume (--epochs may only grow), or start a new run with another --out (or --force to overwrite this one)',
    );
  }
  return notes;
}

const options = {
  data: str({ value: '<data>', default: 'synthetic', help: "Training images: 'synthetic' (embedded), 'synthetic-scene' (the harder style), an ImageFolder directory, a CIFAR folder, or a file listing images (one path per line, optionally <TAB>label; curate's selected.txt)" }),
  out: path({ role: 'output', value: '<dir>', default: 'runs/dino', help: 'Output folder' }),
  resume: flag({ help: 'Continue the run in OUT from its checkpoint (a new run when there is none)' }),
  force: flag({ help: 'Start a new run in OUT even if it holds one (its checkpoint and metrics are overwritten)' }),
  ...CONFIG_OPTIONS,
  'checkpoint-every': int({ min: 0, max: 1e9, value: '<n>', default: 100, help: 'Iterations between checkpoints (0: only at the end)' }),
  'eval-every': int({ min: 1, max: 1e9, value: '<n>', help: 'Run k-NN (and, on the embedded data, attention-map segmentation) on the held-out split every n iterations' }),
  val: str({ value: '<data>', derived: "with synthetic data, its ':val' split", help: 'Held-out data for --eval-every' }),
  'max-iterations': int({ min: 1, max: 1e9, value: '<n>', help: 'Stop after n iterations of this process (the schedule is unchanged)' }),
  'allow-empty-classes': flag({ help: 'ImageFolder: keep class folders that hold no image' }),
};

/**
 * What the run folder's contents mean for this command line: 'train', or 'finished' (a finished run
 * resumed without a longer --epochs: nothing to do). Throws when the folder holds a run and the
 * options do not say what to do with it.
 */
function runFolderPlan(state: RunFolderState, out: string, v: { resume: boolean; force: boolean; epochs?: number }): 'train' | 'finished' {
  const elsewhere = 'or give another --out';
  switch (state.kind) {
    case 'empty':
      return 'train';
    case 'unsaved':
      if (v.force) return 'train';
      throw new Error(`${out} holds a run that stopped before saving a checkpoint (it has ${RUN_FILES.metrics} but no ${RUN_FILES.checkpoint}): there is nothing to resume. --force starts over in it, ${elsewhere}`);
    case 'interrupted':
      if (v.resume || v.force) return 'train';
      throw new Error(`${out} holds an interrupted run (iteration ${state.iteration} of ${state.total}). --resume continues it, --force starts over and overwrites it, ${elsewhere}`);
    case 'finished':
      if (v.force) return 'train';
      if (v.resume) return v.epochs !== undefined && v.epochs > state.meta.config.epochs ? 'train' : 'finished';
      throw new Error(`${out} holds a finished run (${state.total} iterations). --resume --epochs N trains it longer, --force starts over and overwrites it, ${elsewhere}`);
  }
}

export const train = defineCommand({
  name: 'train',
  summary: 'Train a DINO model (default: a small ViT on the embedded dataset, ~15 min on 2 CPU cores)',
  description:
    'Self-supervised DINO training: multi-crop augmentation on the GPU, student/teacher with an EMA\n' +
    "teacher, centering and sharpening, AdamW with DINO's schedules. Writes OUT/checkpoint.safetensors\n" +
    '(every --checkpoint-every iterations and at the end), OUT/teacher_backbone.safetensors (official\n' +
    'key names; for `webdino embed`), OUT/metrics.jsonl, OUT/loss.png and OUT/report.html.\n' +
    'Ctrl-C, SIGTERM and SIGHUP stop after the current step and save a checkpoint (exit 130, 143, 129);\n' +
    '--resume continues exactly where a run stopped, with the options it was started with. A folder\n' +
    'that holds a run is not started over without --force, and one process trains in it at a time.\n' +
    'With no options: the CPU default config (ViT custom dim 64, depth 4, 2 heads, patch 8, 32 px global\n' +
    'crops, 6 local crops of 16 px, K = 1024, teacher temperature 0.02, no brightness/contrast jitter,\n' +
    '5 epochs of 156 steps of 32: about 10 minutes on two CPU cores) on the embedded dataset.',
  options,
  async run(v, ctx) {
    const { io } = ctx;
    if (v.resume && v.force) throw new UsageError('--resume and --force exclude each other: continue the run, or start over');
    const config = trainConfig(v);
    const out = v.out;
    const dataset = openData(ctx, v.data, { defaultSplit: 'train', allowEmptyClasses: v['allow-empty-classes'] });
    const valSpec = v.val ?? (v.data.startsWith('synthetic') ? `${v.data.replace(/:(train|val)$/, '')}:val` : undefined);

    makeDir(out);
    const lock = RunFolderLock.acquire(out, { onStale: (m) => io.err(`webdino train: ${m}`) });
    ctx.resources.defer(() => lock.release());
    // Every file the run writes must be a regular file (or absent): no FIFO, device or folder in the way.
    for (const f of [RUN_FILES.checkpoint, RUN_FILES.teacher, RUN_FILES.metrics, 'loss.png', 'report.html']) ctx.outputs.check(join(out, f));
    let state: RunFolderState;
    try {
      state = inspectRunFolder(out);
    } catch (e) {
      // An unreadable checkpoint: --force may start over on it; otherwise say that it can.
      if (!v.force) throw new Error(`${(e as Error).message} (--force starts over in ${out})`, { cause: e });
      state = { kind: 'unsaved' };
    }
    const plan = runFolderPlan(state, out, v);
    if (v.resume && (state.kind === 'interrupted' || state.kind === 'finished')) {
      for (const note of checkResumeOptions(v, state.meta.config, state.meta.itersPerEpoch)) io.out(note);
    }
    if (plan === 'finished' && state.kind === 'finished') {
      io.out(`${out}: the run is finished (${state.total} iterations): nothing to train.`);
      io.out(`teacher backbone: ${out}/${RUN_FILES.teacher}, report: ${out}/report.html`);
      io.out(`To train it longer: webdino train --out ${out} --resume --epochs ${state.meta.config.epochs * 2}; to start over: webdino train --out ${out} --force`);
      return 0;
    }

    const abort = new AbortController();
    const unsubscribe = io.onStop?.((signal) => {
      if (abort.signal.aborted) return;
      io.err(`\nwebdino train: ${signal}: stopping after this step and saving a checkpoint${signal === 'SIGINT' ? ' (Ctrl-C again to quit now)' : ''}`);
      abort.abort(signal);
    });
    const progress = new ProgressReporter(io);
    try {
      return await withEngine(async (wd, own) => {
        io.out(`adapter: ${wd.device.adapterName()} (${wd.device.variants} kernels)`);
        io.out(`data: ${v.data} (${dataset.length} images, ${dataset.numClasses} classes); output: ${out}`);
        let evaluate: ((t: DinoTrainer) => Promise<Record<string, number>>) | undefined;
        if (valSpec && v['eval-every']) {
          const val = openData(ctx, valSpec, { defaultSplit: 'val', allowEmptyClasses: v['allow-empty-classes'] });
          const knn = knnEvaluator(wd, { train: dataset, val });
          // The embedded dataset has object masks: also score the attention maps (first 200 images).
          const seg = valSpec.startsWith('synthetic') ? segmentationEvaluator(wd, datasetSegmentationSource(firstN(val, 200), 'val')) : null;
          evaluate = async (t) => ({ ...(await knn(t)), ...(seg ? await seg(t) : {}) });
        }
        const result = await runTraining(wd, {
          config,
          dataset,
          dataSpec: v.data,
          outDir: out,
          resume: v.resume,
          checkpointEvery: v['checkpoint-every'],
          evalEvery: v['eval-every'],
          evaluate,
          maxIterations: v['max-iterations'],
          signal: abort.signal,
          onLog: (l) => progress.log(l),
          onStep: (r) => progress.step(r),
        });
        own(result.trainer);
        progress.done();
        const c = result.trainer.config;
        if (result.stoppedBy !== null) {
          const signal = result.stoppedBy as StopSignal;
          io.out(`stopped by ${signal} at iteration ${result.iterations} of ${result.trainer.totalIterations}; checkpoint: ${result.checkpoint}`);
          io.out(`resume with: webdino train --out ${out} --resume${v.data !== 'synthetic' ? ` --data ${v.data}` : ''}`);
          return 128 + (SIGNAL_NUMBERS[signal] ?? 0);
        }
        io.out(`done: ${result.iterations} iterations (${c.arch === 'custom' ? `ViT dim ${c.embedDim} depth ${c.depth}` : c.arch}/${c.patchSize}), last loss ${result.lastLoss.toFixed(4)}`);
        for (const e of result.evals.slice(-1)) io.out(`evaluation: ${JSON.stringify(e)}`);
        io.out(`checkpoint: ${result.checkpoint}\nteacher backbone: ${result.teacherBackbone}\nmetrics: ${out}/metrics.jsonl, loss curve: ${out}/loss.png`);
        return 0;
      });
    } catch (e) {
      progress.done();
      if (e instanceof NonFiniteLossError) {
        io.err(e.message);
        return 1;
      }
      throw e;
    } finally {
      unsubscribe?.();
    }
  },
});
