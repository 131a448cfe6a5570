/**
 * What a training configuration may be, checked before anything is allocated, wherever the
 * configuration comes from: the command line, a library caller, or a checkpoint being resumed
 * (whose metadata is data from a file, not something to trust). And what it will cost in memory,
 * so that a configuration too large for the machine is refused with a sentence instead of ending
 * in a native allocation failure.
 *
 * Bounds are generous (a ViT-g sized run passes); they exist to turn nonsense (depth 1e6, K = 1e8,
 * a negative iteration) into one clear error.
 */
import type { TrainConfig } from './trainer.js';

/** A bad configuration value: names the field and the accepted range. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** One rule of a config of type C: the problem as a sentence, or null. */
export type Check<C = TrainConfig> = (c: C) => string | null;

/** `field` is an integer in [lo, hi]. */
export const int = <C>(field: keyof C & string, lo: number, hi: number): Check<C> => (c) => {
  const v = c[field];
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= lo && v <= hi ? null : `${field} = ${JSON.stringify(v)} is not an integer in [${lo}, ${hi}]`;
};
/** `field` is a finite number in [lo, hi]. */
export const num = <C>(field: keyof C & string, lo: number, hi: number): Check<C> => (c) => {
  const v = c[field];
  return typeof v === 'number' && Number.isFinite(v) && v >= lo && v <= hi ? null : `${field} = ${JSON.stringify(v)} is not a number in [${lo}, ${hi}]`;
};
/** `field` is a boolean. */
export const bool = <C>(field: keyof C & string): Check<C> => (c) => (typeof c[field] === 'boolean' ? null : `${field} = ${JSON.stringify(c[field])} is not a boolean`);
/** `field` is a crop-scale range [lo, hi] with 0 < lo ≤ hi ≤ 1. */
export const range = <C>(field: keyof C & string): Check<C> => (c) => {
  const v = c[field] as unknown;
  const ok = Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === 'number' && x > 0 && x <= 1) && v[0] <= v[1];
  return ok ? null : `${field} = ${JSON.stringify(v)} is not a range [lo, hi] with 0 < lo <= hi <= 1`;
};

/** The fields every recipe's config shares (the backbone, the crops, the batch, the seed). */
type CommonFields = Pick<TrainConfig, 'embedDim' | 'depth' | 'numHeads' | 'patchSize' | 'dropPathRate' | 'outDim' | 'headHidden' | 'headBottleneck' | 'epochs' | 'batchSize' | 'minLr' | 'warmupEpochs' | 'weightDecay' | 'weightDecayEnd' | 'momentumTeacher' | 'clipGrad' | 'studentTemp' | 'teacherTemp' | 'warmupTeacherTemp' | 'warmupTeacherTempEpochs' | 'centerMomentum' | 'centering' | 'globalSize' | 'localSize' | 'localCrops' | 'globalScale' | 'localScale' | 'augment' | 'seed'>;

/** The rules of the shared fields (DINO's and DINOv2's configs both run them). */
export const COMMON_CHECKS: readonly Check<CommonFields>[] = [
  int('embedDim', 1, 16384),
  int('depth', 1, 256),
  int('numHeads', 1, 512),
  (c) => (Number.isSafeInteger(c.embedDim) && Number.isSafeInteger(c.numHeads) && c.numHeads > 0 && c.embedDim % c.numHeads !== 0 ? `embedDim ${c.embedDim} is not divisible by numHeads ${c.numHeads}` : null),
  int('patchSize', 1, 256),
  num('dropPathRate', 0, 1),
  int('outDim', 1, 1 << 20),
  int('headHidden', 1, 65536),
  int('headBottleneck', 1, 65536),
  int('epochs', 1, 1e7),
  int('batchSize', 1, 1 << 20),
  num('minLr', 0, 1e3),
  num('warmupEpochs', 0, 1e7),
  num('weightDecay', 0, 1e3),
  num('weightDecayEnd', 0, 1e3),
  num('momentumTeacher', 0, 1),
  num('clipGrad', 0, 1e12),
  num('studentTemp', 1e-6, 1e6),
  num('teacherTemp', 1e-6, 1e6),
  num('warmupTeacherTemp', 1e-6, 1e6),
  num('warmupTeacherTempEpochs', 0, 1e7),
  num('centerMomentum', 0, 1),
  (c) => (c.centering === 'center' || c.centering === 'sinkhorn_knopp' ? null : `centering = ${JSON.stringify(c.centering)} is not 'center' or 'sinkhorn_knopp'`),
  int('globalSize', 1, 8192),
  int('localSize', 1, 8192),
  int('localCrops', 0, 256),
  range('globalScale'),
  range('localScale'),
  (c) => (c.augment !== null && typeof c.augment === 'object' && !Array.isArray(c.augment) ? null : `augment = ${JSON.stringify(c.augment)} is not an object`),
  int('seed', 0, 2 ** 53 - 1),
  (c) => (Number.isSafeInteger(c.globalSize) && Number.isSafeInteger(c.patchSize) && c.globalSize < c.patchSize ? `globalSize ${c.globalSize} is smaller than patchSize ${c.patchSize}` : null),
  (c) => (c.localCrops > 0 && Number.isSafeInteger(c.localSize) && c.localSize < c.patchSize ? `localSize ${c.localSize} is smaller than patchSize ${c.patchSize}` : null),
];

const V1_CHECKS: readonly Check[] = [
  bool('normLastLayer'),
  num('lr', 0, 1e3),
  num('freezeLastLayer', 0, 1e7),
  num('koleoWeight', 0, 1e6),
  (c) => (c.precision === 'f32' || c.precision === 'f16' ? null : `precision = ${JSON.stringify(c.precision)} is not 'f32' or 'f16'`),
];


/** Every problem `checks` find in `c` (empty when it is valid); a rule that throws is a problem too. */
export function problemsOf<C>(checks: readonly Check<C>[], c: C): string[] {
  const out: string[] = [];
  for (const check of checks) {
    let why: string | null;
    try {
      why = check(c);
    } catch (e) {
      why = (e as Error).message;
    }
    if (why) out.push(why);
  }
  return out;
}

/** Every problem of a DINO config (empty when it is valid). */
export function configProblems(c: TrainConfig): string[] {
  return [...problemsOf(COMMON_CHECKS, c), ...problemsOf(V1_CHECKS, c)];
}

/** Throws ConfigError listing `problems` (at most 8) after `source`. */
export function throwProblems(problems: readonly string[], source: string): void {
  if (problems.length) throw new ConfigError(`${source}: ${problems.slice(0, 8).join('; ')}${problems.length > 8 ? `; and ${problems.length - 8} more` : ''}`);
}

/** Throws ConfigError listing every problem of `c`; `source` says where it came from. */
export function validateTrainConfig(c: TrainConfig, source = 'training configuration'): void {
  throwProblems(configProblems(c), source);
}

/** What the memory estimate reads of a config (DINO's and DINOv2's both have it). */
export type ModelShape = Pick<TrainConfig, 'embedDim' | 'depth' | 'patchSize' | 'globalSize' | 'localSize' | 'localCrops' | 'batchSize' | 'headHidden' | 'headBottleneck' | 'outDim'>;

/** Parameters of the ViT backbone and the DINO head of `c` (what DinoTrainer builds, counted). */
export function parameterCount(c: ModelShape): { backbone: number; head: number } {
  const D = c.embedDim;
  const grid = Math.floor(c.globalSize / c.patchSize);
  const hidden = 4 * D;
  // patch embed (conv weight + bias), cls token, position embedding, final norm
  let backbone = D * 3 * c.patchSize * c.patchSize + D + D + (grid * grid + 1) * D + 2 * D;
  // per block: 2 layer norms, qkv, proj, MLP
  backbone += c.depth * (4 * D + (3 * D * D + 3 * D) + (D * D + D) + (D * hidden + hidden) + (hidden * D + D));
  const H = c.headHidden;
  const Bn = c.headBottleneck;
  const head = D * H + H + H * H + H + H * Bn + Bn + Bn * c.outDim + c.outDim;
  return { backbone, head };
}

/**
 * Bytes a DINO step of `c` needs, roughly and from above: parameters of student and teacher, the
 * student's gradients and the two AdamW moments (5 copies, f32), plus the activations kept for
 * backward: per crop and block about 20·N·D floats (norm inputs, qkv, attention output, the MLP's
 * 4D hidden before and after GELU, residuals; attention itself is fused and keeps no N×N matrix),
 * and per crop the head's hidden layers and 4 rows of K (logits, softmax, targets, gradient).
 */
export function estimateTrainingBytes(c: ModelShape): number {
  const { backbone, head } = parameterCount(c);
  const persistent = 5 * 4 * (backbone + head);
  const tokens = (size: number) => Math.floor(size / c.patchSize) ** 2 + 1;
  const crops = [
    { n: 2 * c.batchSize, N: tokens(c.globalSize) },
    { n: c.localCrops * c.batchSize, N: tokens(c.localSize) },
  ];
  let activations = 0;
  for (const { n, N } of crops) activations += 4 * n * (c.depth * 20 * N * c.embedDim + 3 * c.headHidden + 4 * c.outDim);
  return persistent + activations;
}

/** "1.3 GB" / "640 MB". */
export function formatBytes(bytes: number): string {
  return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(1)} GB` : `${Math.max(1, Math.round(bytes / 1e6))} MB`;
}
