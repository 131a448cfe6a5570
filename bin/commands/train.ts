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
import { CPU_DEFAULT_CONFIG, CPU_GREY_IMAGE_CONFIG, cpuDefaultConfig, DINO_DEFAULTS, NonFiniteLossError, resolveConfig, type TrainConfig } from '../../train/trainer.js';
import { isGreyscale } from '../../train/data/dataset.js';
import { type DinoV2Config, DINOV2_CPU_DEFAULT_CONFIG, DINOV2_DEFAULTS, resolveDinoV2Config } from '../../train/dinov2-trainer.js';
import { DINOV2_CHECKPOINT_FORMAT } from '../../train/checkpoint.js';
import { runTraining } from '../../train/run-node.js';
import { inspectRunFolder, RUN_FILES, RunFolderLock, type RunFolderState } from '../../train/run-folder-node.js';
import { makeDir } from '../../models/io/node-files.js';
import { type EvalTarget, firstN, knnEvaluator } from '../../train/eval-hooks-node.js';
import { heldOutSpec } from '../../train/data/open-node.js';
import { datasetSegmentationSource, segmentationEvaluator } from '../../eval/segment.js';
import { defineCommand, SIGNAL_NUMBERS, type StopSignal, UsageError } from '../command.js';
import { choice, flag, int, num, path, str, type Values } from '../options.js';
import { ProgressReporter } from '../progress.js';
import { openData, withEngine } from '../resources.js';
import { ARCHS } from './backbone-options.js';

const RESOLVED_CPU = resolveConfig(CPU_DEFAULT_CONFIG);
const RESOLVED_V2_CPU = resolveDinoV2Config({ ...DINOV2_CPU_DEFAULT_CONFIG, epochLength: 156 });

/**
 * The default of a shared config option: the CPU recipe's, and DINO's where a named --arch
 * differs; then DINOv2's (`--recipe dinov2`, its CPU default and its named-ViT default) where they
 * differ from DINO's.
 */
function recipe(key: keyof TrainConfig, v2key: keyof DinoV2Config = key as keyof DinoV2Config): string {
  const cpu = RESOLVED_CPU[key];
  const dino = DINO_DEFAULTS[key];
  const v1 = cpu === dino ? String(cpu) : `${cpu}; with a named --arch, DINO's ${dino}`;
  const v2cpu = RESOLVED_V2_CPU[v2key];
  const v2 = DINOV2_DEFAULTS[v2key];
  if (v2cpu === cpu && v2 === dino) return v1;
  return `${v1}; --recipe dinov2: ${v2cpu === v2 ? String(v2) : `${String(v2cpu)}, with a named --arch ${String(v2)}`}`;
}

/** The default of a DINOv2-only option: the CPU recipe's, and DINOv2's where a named --arch differs. */
function v2recipe(key: keyof DinoV2Config, show: (x: unknown) => string = String): string {
  const cpu = show(RESOLVED_V2_CPU[key]);
  const v2 = show(DINOV2_DEFAULTS[key]);
  return cpu === v2 ? cpu : `${cpu}; with a named --arch, DINOv2's ${v2}`;
}

/** Options that set a field of either recipe's config; their default is the recipe's (see `trainConfig`). */
const CONFIG_OPTIONS = {
  arch: choice({ choices: ARCHS, value: '<arch>', derived: "the small CPU ViT (custom); a named ViT brings the recipe's own defaults", help: `Backbone: ${ARCHS.join(', ')}` }),
  'embed-dim': int({ min: 8, max: 4096, value: '<n>', derived: String(RESOLVED_CPU.embedDim), help: 'Width of a custom ViT' }),
  depth: int({ min: 1, max: 64, value: '<n>', derived: String(RESOLVED_CPU.depth), help: 'Blocks of a custom ViT' }),
  heads: int({ min: 1, max: 64, value: '<n>', derived: String(RESOLVED_CPU.numHeads), help: 'Attention heads of a custom ViT' }),
  'patch-size': int({ min: 1, max: 64, value: '<n>', derived: recipe('patchSize'), help: 'Patch size' }),
  'out-dim': int({ min: 2, max: 262144, value: '<K>', derived: recipe('outDim'), help: 'Prototypes of the DINO head' }),
  epochs: int({ min: 1, max: 100000, value: '<n>', derived: recipe('epochs'), help: 'Epochs' }),
  'epoch-length': int({
    min: 0,
    max: 1e9,
    value: '<n>',
    // DINOv2's CPU default has no epochLength of its own (RESOLVED_V2_CPU's 156 is the embedded data's pass).
    derived: `${recipe('epochLength').split('; --recipe dinov2')[0]}; --recipe dinov2: one pass over the data, with a named --arch ${DINOV2_DEFAULTS.epochLength}`,
    help: 'Iterations per epoch (0: one pass over the data; the CPU default fixes it, so the run length does not grow with the data)',
  }),
  'batch-size': int({ min: 2, max: 4096, value: '<n>', derived: recipe('batchSize'), help: 'Images per step' }),
  lr: num({ min: 0, max: 10, value: '<x>', derived: recipe('lr', 'baseLr'), help: 'Base learning rate (DINO: scaled by batch/256; DINOv2: by √(batch/1024))' }),
  'warmup-epochs': num({ min: 0, max: 1000, value: '<n>', derived: recipe('warmupEpochs'), help: 'Linear lr warm-up epochs' }),
  'weight-decay': num({ min: 0, max: 10, value: '<x>', derived: recipe('weightDecay'), help: 'Weight decay at the start (cosine schedule)' }),
  'weight-decay-end': num({ min: 0, max: 10, value: '<x>', derived: recipe('weightDecayEnd'), help: 'Weight decay at the end' }),
  'momentum-teacher': num({ min: 0, max: 1, value: '<m>', derived: recipe('momentumTeacher'), help: 'Base EMA momentum of the teacher' }),
  'clip-grad': num({ min: 0, max: 1e6, value: '<x>', derived: recipe('clipGrad'), help: 'Gradient clipping (0: off): DINO per tensor, DINOv2 by the global norm of each sub-model' }),
  'drop-path': num({ min: 0, max: 1, value: '<p>', derived: recipe('dropPathRate'), help: "Stochastic depth rate of the student (DINO: last block's, linear rule; DINOv2: see --drop-path-rule)" }),
  'global-size': int({ min: 8, max: 1024, value: '<px>', derived: recipe('globalSize'), help: 'Side of the 2 global crops' }),
  'local-size': int({ min: 8, max: 1024, value: '<px>', derived: recipe('localSize'), help: 'Side of the local crops' }),
  'local-crops': int({ min: 0, max: 64, value: '<n>', derived: recipe('localCrops'), help: 'Number of local crops (0 disables multi-crop)' }),
  'teacher-temp': num({ min: 1e-4, max: 10, value: '<t>', derived: recipe('teacherTemp'), help: 'Final teacher temperature' }),
  'warmup-teacher-temp': num({ min: 1e-4, max: 10, value: '<t>', derived: recipe('warmupTeacherTemp'), help: 'Teacher temperature at the start of its warm-up' }),
  'warmup-teacher-temp-epochs': num({ min: 0, max: 1000, value: '<n>', derived: recipe('warmupTeacherTempEpochs'), help: 'Epochs of the teacher-temperature warm-up' }),
  centering: choice({ choices: ['center', 'sinkhorn_knopp'], value: '<kind>', derived: recipe('centering'), help: "Teacher targets: 'center' (DINO) or 'sinkhorn_knopp' (DINOv2 ViT-L/g)" }),
  seed: int({ min: 0, max: 2 ** 31, value: '<n>', derived: recipe('seed'), help: 'Seed of initialisation, shuffling and augmentation' }),
};

/** The TrainConfig and DinoV2Config field each shared option sets. */
const CONFIG_KEYS = {
  arch: ['arch', 'arch'],
  'embed-dim': ['embedDim', 'embedDim'],
  depth: ['depth', 'depth'],
  heads: ['numHeads', 'numHeads'],
  'patch-size': ['patchSize', 'patchSize'],
  'out-dim': ['outDim', 'outDim'],
  epochs: ['epochs', 'epochs'],
  'epoch-length': ['epochLength', 'epochLength'],
  'batch-size': ['batchSize', 'batchSize'],
  lr: ['lr', 'baseLr'],
  'warmup-epochs': ['warmupEpochs', 'warmupEpochs'],
  'weight-decay': ['weightDecay', 'weightDecay'],
  'weight-decay-end': ['weightDecayEnd', 'weightDecayEnd'],
  'momentum-teacher': ['momentumTeacher', 'momentumTeacher'],
  'clip-grad': ['clipGrad', 'clipGrad'],
  'drop-path': ['dropPathRate', 'dropPathRate'],
  'global-size': ['globalSize', 'globalSize'],
  'local-size': ['localSize', 'localSize'],
  'local-crops': ['localCrops', 'localCrops'],
  'teacher-temp': ['teacherTemp', 'teacherTemp'],
  'warmup-teacher-temp': ['warmupTeacherTemp', 'warmupTeacherTemp'],
  'warmup-teacher-temp-epochs': ['warmupTeacherTempEpochs', 'warmupTeacherTempEpochs'],
  centering: ['centering', 'centering'],
  seed: ['seed', 'seed'],
} as const satisfies Record<keyof typeof CONFIG_OPTIONS, readonly [keyof TrainConfig, keyof DinoV2Config]>;

/** Options of the DINOv2 recipe only (`--recipe dinov2`). */
const DINOV2_OPTIONS = {
  'ibot-weight': num({ min: 0, max: 100, value: '<w>', derived: v2recipe('lossWeights', (w) => String((w as { ibot: number }).ibot)), help: 'DINOv2: weight of the iBOT masked-patch loss (0: off)' }),
  'koleo-weight': num({
    min: 0,
    max: 100,
    value: '<w>',
    derived: `${RESOLVED_CPU.koleoWeight === DINO_DEFAULTS.koleoWeight ? RESOLVED_CPU.koleoWeight : `${RESOLVED_CPU.koleoWeight}; with a named --arch, DINO's ${DINO_DEFAULTS.koleoWeight}`} (grey images: ${CPU_GREY_IMAGE_CONFIG.koleoWeight}); --recipe dinov2: ${v2recipe('lossWeights', (w) => String((w as { koleo: number }).koleo))}`,
    help: "Weight of the KoLeo regulariser on the student's global-crop CLS outputs (0: off; both recipes)",
  }),
  'ibot-mask-probability': num({ min: 0, max: 1, value: '<p>', derived: v2recipe('maskProbability'), help: 'DINOv2: fraction of the global crops that are masked' }),
  'ibot-mask-ratio-min': num({ min: 0.001, max: 1, value: '<r>', derived: v2recipe('maskRatioMinMax', (r) => String((r as number[])[0])), help: 'DINOv2: lowest masked fraction of a masked crop' }),
  'ibot-mask-ratio-max': num({ min: 0.001, max: 1, value: '<r>', derived: v2recipe('maskRatioMinMax', (r) => String((r as number[])[1])), help: 'DINOv2: highest masked fraction of a masked crop' }),
  'ibot-head': choice({ choices: ['shared', 'separate'], value: '<kind>', derived: v2recipe('ibotSeparateHead', (x) => (x ? 'separate' : 'shared')), help: "DINOv2: the patch tokens use the DINO head ('shared', ssl_default) or an ibot_head of their own ('separate', ViT-L/g)" }),
  'ibot-out-dim': int({ min: 2, max: 262144, value: '<K>', derived: v2recipe('ibotOutDim'), help: 'DINOv2: prototypes of a separate iBOT head' }),
  'layer-decay': num({ min: 0, max: 1, value: '<x>', derived: v2recipe('layerwiseDecay'), help: 'DINOv2: layer-wise lr decay (block i gets x^(depth − i))' }),
  'patch-embed-lr-mult': num({ min: 0, max: 10, value: '<x>', derived: v2recipe('patchEmbedLrMult'), help: 'DINOv2: extra lr factor of the patch embedding' }),
  'freeze-last-layer-epochs': num({ min: 0, max: 1000, value: '<n>', derived: v2recipe('freezeLastLayerEpochs'), help: "DINOv2: epochs at which the heads' last layer has lr 0" }),
  registers: int({ min: 0, max: 64, value: '<n>', derived: v2recipe('numRegisterTokens'), help: 'DINOv2: register tokens of the ViT' }),
  layerscale: num({ min: 0, max: 10, value: '<x>', derived: v2recipe('layerScale'), help: 'DINOv2: LayerScale init (0: no LayerScale)' }),
  'drop-path-rule': choice({ choices: ['uniform', 'linear'], value: '<rule>', derived: 'uniform', help: "DINOv2: every block at --drop-path ('uniform', drop_path_uniform) or linspace(0, rate, depth)" }),
};

/** DINO's recipe only: mixed-precision training (TrainConfig.precision). */
const PRECISION_OPTIONS = {
  precision: choice({
    choices: ['f32', 'f16'],
    value: '<p>',
    derived: "f32; a resumed run's own",
    help: 'f16: mixed-precision training (f16 matmul inputs with f32 accumulation, f32 master weights, dynamic loss scaling; overflowing steps are skipped and logged). Needs shader-f16; DINO recipe only',
  }),
};

type ConfigValues = Values<typeof CONFIG_OPTIONS> & Partial<Values<typeof PRECISION_OPTIONS>>;
type V2Values = Values<typeof DINOV2_OPTIONS>;

/** How each DINOv2-only option sets and reads its config field. */
const DINOV2_FIELDS: { [K in keyof typeof DINOV2_OPTIONS]: { set: (c: Partial<DinoV2Config>, v: NonNullable<V2Values[K]>) => void; get: (c: DinoV2Config) => unknown } } = {
  'ibot-weight': { set: (c, v) => (c.lossWeights = { ...c.lossWeights!, ibot: v }), get: (c) => c.lossWeights.ibot },
  'koleo-weight': { set: (c, v) => (c.lossWeights = { ...c.lossWeights!, koleo: v }), get: (c) => c.lossWeights.koleo },
  'ibot-mask-probability': { set: (c, v) => (c.maskProbability = v), get: (c) => c.maskProbability },
  'ibot-mask-ratio-min': { set: (c, v) => (c.maskRatioMinMax = [v, c.maskRatioMinMax![1]]), get: (c) => c.maskRatioMinMax[0] },
  'ibot-mask-ratio-max': { set: (c, v) => (c.maskRatioMinMax = [c.maskRatioMinMax![0], v]), get: (c) => c.maskRatioMinMax[1] },
  'ibot-head': { set: (c, v) => (c.ibotSeparateHead = v === 'separate'), get: (c) => (c.ibotSeparateHead ? 'separate' : 'shared') },
  'ibot-out-dim': { set: (c, v) => (c.ibotOutDim = v), get: (c) => c.ibotOutDim },
  'layer-decay': { set: (c, v) => (c.layerwiseDecay = v), get: (c) => c.layerwiseDecay },
  'patch-embed-lr-mult': { set: (c, v) => (c.patchEmbedLrMult = v), get: (c) => c.patchEmbedLrMult },
  'freeze-last-layer-epochs': { set: (c, v) => (c.freezeLastLayerEpochs = v), get: (c) => c.freezeLastLayerEpochs },
  registers: { set: (c, v) => (c.numRegisterTokens = v), get: (c) => c.numRegisterTokens },
  layerscale: { set: (c, v) => (c.layerScale = v), get: (c) => c.layerScale },
  'drop-path-rule': { set: (c, v) => (c.dropPathUniform = v === 'uniform'), get: (c) => (c.dropPathUniform ? 'uniform' : 'linear') },
};

/** The config fields given on the command line, and only those (DINO's recipe). */
export function givenConfig(v: ConfigValues): Partial<TrainConfig> {
  const c: Record<string, unknown> = {};
  for (const [option, [key]] of Object.entries(CONFIG_KEYS)) {
    const val = v[option as keyof ConfigValues];
    if (val !== undefined) c[key] = val;
  }
  return c as Partial<TrainConfig>;
}

/** The DINOv2 options given on the command line. */
function givenV2Options(v: V2Values): (keyof V2Values)[] {
  return (Object.keys(DINOV2_FIELDS) as (keyof V2Values)[]).filter((o) => v[o] !== undefined);
}

/** The DINOv2 options that DINO's recipe takes too (TrainConfig field each sets). */
const V1_FROM_V2 = { 'koleo-weight': 'koleoWeight' } as const satisfies { [K in keyof V2Values]?: keyof TrainConfig };

/** The DinoV2Config fields given on the command line (shared and DINOv2 options), on top of `base`. */
function applyV2Options(base: Partial<DinoV2Config>, v: ConfigValues & V2Values): Partial<DinoV2Config> {
  const full = resolveDinoV2Config({ epochLength: 1, ...base });
  const c: Partial<DinoV2Config> = { ...base, lossWeights: { ...full.lossWeights }, maskRatioMinMax: [...full.maskRatioMinMax] };
  for (const [option, [, key]] of Object.entries(CONFIG_KEYS)) {
    const val = v[option as keyof ConfigValues];
    if (val !== undefined) (c as Record<string, unknown>)[key] = val;
  }
  for (const o of givenV2Options(v)) (DINOV2_FIELDS[o].set as (c: Partial<DinoV2Config>, x: unknown) => void)(c, v[o]);
  // --epoch-length 0 is one pass over the data: a DinoV2Config without epochLength (the run fills
  // it in from the data and records the number).
  if (c.epochLength === 0) delete c.epochLength;
  return c;
}

/** Which recipe and config the parsed `webdino train` options ask for (exported for tests). */
export type RecipeRequest = { recipe: 'dino'; config: Partial<TrainConfig> } | { recipe: 'dinov2'; config: Partial<DinoV2Config> };

/** The TrainConfig of the parsed `webdino train` options for DINO's recipe (exported for tests). */
export function trainConfig(v: ConfigValues & Partial<Pick<V2Values, keyof typeof V1_FROM_V2>>, data: { grey?: boolean } = {}): Partial<TrainConfig> {
  // A named ViT trains with DINO's own recipe (K 65536, τt 0.04, full colour jitter, 224/96 px
  // crops, ...); without --arch (or with custom) the small CPU default applies, whose departures
  // from DINO are for a tiny model in a 15-minute run (see CPU_DEFAULT_CONFIG), with the grey-image
  // changes when the training images are grey (CPU_GREY_IMAGE_CONFIG).
  const base: Partial<TrainConfig> = usesCpuDefault(v) ? { ...cpuDefaultConfig(data.grey ?? false) } : { ...DINO_DEFAULTS };
  const c = { ...base, ...givenConfig(v) };
  for (const [option, key] of Object.entries(V1_FROM_V2)) {
    const val = v[option as keyof typeof V1_FROM_V2];
    if (val !== undefined) c[key] = val;
  }
  if (v.precision !== undefined) c.precision = v.precision;
  checkArch(v, c);
  return c;
}

/** Whether the run starts from the CPU default (no named --arch), which adapts to grey images. */
export function usesCpuDefault(v: Pick<ConfigValues, 'arch'>): boolean {
  return v.arch === undefined || v.arch === 'custom';
}

/** The DinoV2Config of the parsed options for `--recipe dinov2` (exported for tests). */
export function dinov2TrainConfig(v: ConfigValues & V2Values): Partial<DinoV2Config> {
  // A named ViT trains with ssl_default_config (K 65536, 224/96 px crops, τt 0.04 → 0.07, epochs of
  // 1250 iterations, ...); otherwise DINO's CPU default size with DINOv2's recipe on top.
  const named = v.arch !== undefined && v.arch !== 'custom';
  const base: Partial<DinoV2Config> = named ? { ...DINOV2_DEFAULTS } : { ...DINOV2_CPU_DEFAULT_CONFIG };
  const c = applyV2Options(base, v);
  checkArch(v, c);
  return c;
}

/** The recipe and config of the parsed options. */
export function recipeConfig(v: ConfigValues & V2Values & { recipe?: 'dino' | 'dinov2' }): RecipeRequest {
  if (v.recipe === 'dinov2') {
    if (v.precision === 'f16') throw new UsageError("--precision f16: mixed-precision training is DINO's recipe only for now (the DINOv2 trainer's iBOT head and losses have no f16 path yet); drop --recipe dinov2 or use --precision f32");
    return { recipe: 'dinov2', config: dinov2TrainConfig(v) };
  }
  const v2 = givenV2Options(v).filter((o) => !(o in V1_FROM_V2));
  if (v2.length) throw new UsageError(`${v2.map((o) => `--${o}`).join(', ')} ${v2.length > 1 ? 'belong' : 'belongs'} to DINOv2's recipe: add --recipe dinov2`);
  return { recipe: 'dino', config: trainConfig(v) };
}

function checkArch(v: ConfigValues, c: { arch?: string; embedDim?: number; numHeads?: number }): void {
  if (c.arch !== 'custom' && (v['embed-dim'] !== undefined || v.depth !== undefined || v.heads !== undefined)) {
    throw new UsageError('--embed-dim, --depth and --heads need --arch custom');
  }
  if ((c.embedDim ?? 0) % (c.numHeads ?? 1) !== 0) throw new UsageError(`--embed-dim ${c.embedDim} must be divisible by --heads ${c.numHeads}`);
}

/**
 * The options of a resumed run are the checkpoint's. Returns what to tell about the options that
 * apply (a longer --epochs); throws UsageError listing every given option that differs from the run.
 * `recorded` is the run's config (DINO's or DINOv2's, by `recipe`).
 */
export function checkResumeOptions(v: ConfigValues & Partial<V2Values>, recorded: TrainConfig | DinoV2Config, itersPerEpoch: number, recipe: 'dino' | 'dinov2' = 'dino'): string[] {
  const conflicts: string[] = [];
  const notes: string[] = [];
  const pairs: [string, unknown, unknown][] = [];
  for (const [option, [k1, k2]] of Object.entries(CONFIG_KEYS)) {
    const want = v[option as keyof ConfigValues];
    if (want !== undefined) pairs.push([option, want, (recorded as unknown as Record<string, unknown>)[recipe === 'dinov2' ? k2 : k1]]);
  }
  if (recipe === 'dinov2') for (const o of givenV2Options(v as V2Values)) pairs.push([o, v[o], DINOV2_FIELDS[o].get(recorded as DinoV2Config)]);
  else for (const [o, key] of Object.entries(V1_FROM_V2)) if (v[o as keyof typeof V1_FROM_V2] !== undefined) pairs.push([o, v[o as keyof typeof V1_FROM_V2], (recorded as TrainConfig)[key]]);
  // A run from before --precision existed recorded none: it is f32.
  if (v.precision !== undefined) pairs.push(['precision', v.precision, recipe === 'dinov2' ? 'f32' : ((recorded as TrainConfig).precision ?? 'f32')]);
  for (const [option, want, had] of pairs) {
    if (want === had) continue;
    // A DINOv2 run records the epoch length it took from the data, not the 0 that asked for it.
    if (recipe === 'dinov2' && option === 'epoch-length' && want === 0) continue;
    if (option === 'epochs' && (want as number) > (had as number)) {
      notes.push(`--epochs ${want}: the run is extended from ${had} to ${want} epochs; its cosine schedules now end at iteration ${(want as number) * itersPerEpoch} instead of ${(had as number) * itersPerEpoch}`);
      continue;
    }
    conflicts.push(`--${option} ${String(want)} (the run has ${String(had)})`);
  }
  if (conflicts.length) {
    throw new UsageError(
      `--resume continues the run with its own options, and these differ: ${conflicts.join(', ')}. ` +
        'Drop them to resume (--epochs may only grow), or start a new run with another --out (or --force to overwrite this one)',
    );
  }
  return notes;
}

/**
 * Training images in the k-NN memory of the evaluations (evenly spaced over the training set): the
 * whole of a large set (Fashion-MNIST's 60 000) would take minutes per evaluation on two cores.
 */
const KNN_MEMORY = 10000;

/** "k-NN top-1 …: trained … vs … at initialisation", or null without both evaluations. */
export function learnedLine(init: Record<string, number> | null, last: Record<string, number> | undefined): string | null {
  if (!init || !last || !last.iteration || init.knn_top1 === undefined || last.knn_top1 === undefined) return null;
  const d = last.knn_top1 - init.knn_top1;
  return (
    `k-NN top-1 (k = 20) on the held-out split: ${last.knn_top1.toFixed(1)} % trained teacher vs ${init.knn_top1.toFixed(1)} % at initialisation ` +
    `(${d >= 0 ? '+' : ''}${d.toFixed(1)} points)`
  );
}

const options = {
  data: str({
    value: '<data>',
    default: 'synthetic',
    help: "Training images: 'synthetic' (embedded), 'synthetic-scene' (the harder style), an ImageFolder directory, a CIFAR folder, a folder of MNIST-style IDX files, or a file listing images (one path per line, optionally <TAB>label; curate's selected.txt)",
  }),
  out: path({ role: 'output', value: '<dir>', default: 'runs/dino', help: 'Output folder' }),
  resume: flag({ help: 'Continue the run in OUT from its checkpoint (a new run when there is none)' }),
  force: flag({ help: 'Start a new run in OUT even if it holds one (its checkpoint and metrics are overwritten)' }),
  recipe: choice({ choices: ['dino', 'dinov2'], value: '<recipe>', derived: "dino; a resumed run's own", help: "Training recipe: 'dino' (DINO) or 'dinov2' (DINOv2: iBOT, KoLeo, LayerScale, layer-wise lr decay, ...)" }),
  ...CONFIG_OPTIONS,
  ...PRECISION_OPTIONS,
  ...DINOV2_OPTIONS,
  'checkpoint-every': int({ min: 0, max: 1e9, value: '<n>', default: 100, help: 'Iterations between checkpoints (0: only at the end)' }),
  'eval-every': int({ min: 1, max: 1e9, value: '<n>', help: 'Also run k-NN (and, on the embedded data, attention-map segmentation) on the held-out split every n iterations' }),
  val: str({
    value: '<data>',
    derived: "synthetic's ':val' split, an IDX folder's t10k files",
    help: 'Held-out data: with it the run ends with a k-NN evaluation next to the same model at its initialisation',
  }),
  'max-iterations': int({ min: 1, max: 1e9, value: '<n>', help: 'Stop after n iterations of this process (the schedule is unchanged)' }),
  'allow-empty-classes': flag({ help: 'ImageFolder: keep class folders that hold no image' }),
};

/** Whether this command continues the run saved in the folder. */
function resuming(state: RunFolderState, resume: boolean): boolean {
  return resume && (state.kind === 'interrupted' || state.kind === 'finished');
}

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
  summary: 'Train a DINO or DINOv2 model (default: DINO, a small ViT on the embedded dataset, ~15 min on 2 CPU cores)',
  description:
    'Self-supervised DINO training: multi-crop augmentation on the GPU, student/teacher with an EMA\n' +
    "teacher, centering and sharpening, AdamW with DINO's schedules. Writes OUT/checkpoint.safetensors\n" +
    '(every --checkpoint-every iterations and at the end), OUT/teacher_backbone.safetensors (official\n' +
    'key names; for `webdino embed`), OUT/metrics.jsonl, OUT/loss.png and OUT/report.html.\n' +
    'Ctrl-C, SIGTERM and SIGHUP stop after the current step and save a checkpoint (exit 130, 143, 129);\n' +
    '--resume continues exactly where a run stopped, with the options it was started with. A folder\n' +
    'that holds a run is not started over without --force, and one process trains in it at a time.\n' +
    'With no options: the CPU default config (ViT custom dim 64, depth 4, 2 heads, patch 8, 32 px global\n' +
    'crops, 6 local crops of 16 px, a head with BatchNorm, K = 64 Sinkhorn-Knopp targets, teacher\n' +
    'temperature 0.02, no brightness/contrast jitter (on grey images: jitter 0.4, blur 0.1-0.5 px, KoLeo 0.5),\n' +
    '5 epochs of 156 steps of 32 whatever the data size: about 10 minutes on two CPU cores) on the\n' +
    "embedded dataset. With a held-out split (the embedded data's, an IDX folder's t10k files, a CIFAR\n" +
    "folder's test batch, --val) the run ends with k-NN next to the same model at its initialisation.",
  options,
  async run(v, ctx) {
    const { io } = ctx;
    if (v.resume && v.force) throw new UsageError('--resume and --force exclude each other: continue the run, or start over');
    // Checked before the folder is touched (a resumed run's recipe is its checkpoint's: below).
    if (!v.resume) recipeConfig(v);
    const out = v.out;
    const dataset = openData(ctx, v.data, { defaultSplit: 'train', allowEmptyClasses: v['allow-empty-classes'] });
    const valSpec = v.val ?? heldOutSpec(v.data) ?? undefined;

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
    // A resumed run keeps its recipe (the checkpoint's format says which).
    let recipe: 'dino' | 'dinov2' = v.recipe ?? 'dino';
    if (resuming(state, v.resume) && (state.kind === 'interrupted' || state.kind === 'finished')) {
      const was = state.meta.format === DINOV2_CHECKPOINT_FORMAT ? 'dinov2' : 'dino';
      if (v.recipe !== undefined && v.recipe !== was) throw new UsageError(`--recipe ${v.recipe}: the run in ${out} was trained with --recipe ${was}; resume it with its own recipe, or start over with --force`);
      recipe = was;
      for (const note of checkResumeOptions(v, state.meta.config, state.meta.itersPerEpoch, recipe)) io.out(note);
    }
    let built = recipeConfig({ ...v, recipe });
    // DINO's CPU default adapts its augmentation to grey images (CPU_GREY_IMAGE_CONFIG). A resumed
    // run keeps its checkpoint's config, so this is decided once, when the run starts.
    if (built.recipe === 'dino' && usesCpuDefault(v) && !resuming(state, v.resume) && (await isGreyscale(dataset))) {
      built = { recipe: 'dino', config: trainConfig(v, { grey: true }) };
      const g = CPU_GREY_IMAGE_CONFIG.augment!;
      const koleo = v['koleo-weight'] ?? CPU_GREY_IMAGE_CONFIG.koleoWeight;
      io.out(`data: grey images: the CPU default adds brightness/contrast jitter ${g.brightness}/${g.contrast}, blurs σ ${g.blurSigma!.join('–')} px and weighs KoLeo ${koleo} (see CPU_GREY_IMAGE_CONFIG)`);
    }
    // A resumed run's config is its checkpoint's; only a given --epochs applies (runTraining reads
    // just that). Passing the recipe's whole default here would silently reset a run started with
    // another --epochs to the default's.
    const request: RecipeRequest = resuming(state, v.resume) ? ({ recipe, config: v.epochs !== undefined ? { epochs: v.epochs } : {} } as RecipeRequest) : built;
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
        let evaluate: ((t: EvalTarget) => Promise<Record<string, number>>) | undefined;
        if (valSpec) {
          const val = openData(ctx, valSpec, { defaultSplit: 'val', allowEmptyClasses: v['allow-empty-classes'] });
          const knn = knnEvaluator(wd, { train: dataset, val, trainLimit: KNN_MEMORY });
          // The embedded dataset has object masks: also score the attention maps (first 200 images).
          const seg = valSpec.startsWith('synthetic') ? segmentationEvaluator(wd, datasetSegmentationSource(firstN(val, 200), 'val')) : null;
          evaluate = async (t) => ({ ...(await knn(t)), ...(seg ? await seg(t) : {}) });
        }
        const result = await runTraining(wd, {
          ...request,
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
        const line = learnedLine(result.initEval, result.evals.at(-1));
        if (line) io.out(line);
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
