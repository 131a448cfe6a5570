/**
 * Training checkpoints as safetensors: everything `--resume` needs to continue exactly.
 *
 *   student.<name>, teacher.<name>   parameters (names of MultiCropWrapper: backbone.*, head.*)
 *   dino_loss.center                 the center [1, K]
 *   optimizer.m, optimizer.v         AdamW moments, flat in parameter order
 *   __metadata__.webdino             JSON: iteration, config, optimizer step counts, the states of
 *                                    the augmentation and drop-path generators, the dynamic loss
 *                                    scale of a mixed-precision run, and the caller's extra state
 *                                    (the data loader's position)
 *
 * Bytes only (no file system): the CLI writes them atomically (temporary file, then rename), so a
 * process killed while saving leaves the previous checkpoint intact. `teacherBackboneState` gives
 * the teacher backbone alone under the official key names (cls_token, blocks.0.attn.qkv.weight…),
 * the file `webdino embed` loads.
 */
import type { DynamicLossScaler } from '../engine/loss-scale.js';
import { Rng } from '../engine/random.js';
import { parseSafetensorsWithMetadata, writeSafetensors } from '../models/io/safetensors.js';
import { type DinoTrainer, resolveConfig, type TrainConfig } from './trainer.js';
import { validateTrainConfig } from './validate.js';

export const CHECKPOINT_FORMAT = 'webdino-dino-checkpoint-v1';
/** The format of DINOv2 training checkpoints (train/dinov2/checkpoint.ts). */
export const DINOV2_CHECKPOINT_FORMAT = 'webdino-dinov2-checkpoint-v1';
/** Every training-checkpoint format, one per recipe. */
export const CHECKPOINT_FORMATS = [CHECKPOINT_FORMAT, DINOV2_CHECKPOINT_FORMAT] as const;

export interface CheckpointMeta {
  format: typeof CHECKPOINT_FORMAT;
  iteration: number;
  itersPerEpoch: number;
  config: TrainConfig;
  optimizerStep: number;
  paramSteps: number[];
  augRng: number[];
  dropRng: number[];
  /** The loss scaler's state (precision 'f16' only; absent at f32). */
  lossScaler?: LossScalerState;
  /** Caller state (e.g. the data loader position), stored as given. */
  extra: unknown;
}

/** Serialises the trainer's full state. `extra` must be JSON-serialisable. */
export async function checkpointBytes(trainer: DinoTrainer, itersPerEpoch: number, extra: unknown = null): Promise<Uint8Array> {
  const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const [prefix, model] of [['student', trainer.student], ['teacher', trainer.teacher]] as const) {
    for (const [name, t] of model.stateEntries()) tensors[`${prefix}.${name}`] = { shape: [...t.shape], data: await t.toArray() };
  }
  tensors['dino_loss.center'] = { shape: [...trainer.loss.center.shape], data: await trainer.loss.center.toArray() };
  const st = trainer.optimizer.state();
  try {
    tensors['optimizer.m'] = { shape: [...st.m.shape], data: await st.m.toArray() };
    tensors['optimizer.v'] = { shape: [...st.v.shape], data: await st.v.toArray() };
  } finally {
    st.m.dispose();
    st.v.dispose();
  }
  const meta: CheckpointMeta = {
    format: CHECKPOINT_FORMAT,
    iteration: trainer.iteration,
    itersPerEpoch,
    config: trainer.config,
    optimizerStep: st.step,
    paramSteps: st.paramSteps,
    augRng: trainer.augRng.state(),
    dropRng: trainer.student.backbone.dropRng.state(),
    ...(trainer.lossScaler ? { lossScaler: trainer.lossScaler.state() } : {}),
    extra,
  };
  return writeSafetensors(tensors, { webdino: JSON.stringify(meta, (_k, v) => (typeof v === 'number' && Number.isNaN(v) ? null : v)) });
}

/** A generator state as checkpoints store it: 4 u32 words and the spare normal (null for NaN). */
export type RngState = (number | null)[];

/** The metadata fields every recipe's checkpoint has (DINO's here, DINOv2's in train/dinov2/checkpoint.ts). */
export interface TrainingMetaCommon {
  format: string;
  iteration: number;
  itersPerEpoch: number;
  optimizerStep: number;
  paramSteps: number[];
  /** The recipe's config as stored (the recipe resolves and validates it). */
  config: unknown;
  extra: unknown;
}

const isInt = (v: unknown, lo: number): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= lo;

/** What DynamicLossScaler.state() gives. */
export type LossScalerState = ReturnType<DynamicLossScaler['state']>;

function isScalerState(v: unknown): v is LossScalerState {
  if (v === null || typeof v !== 'object') return false;
  const s = v as Record<string, unknown>;
  return typeof s.scale === 'number' && Number.isFinite(s.scale) && s.scale > 0 && isInt(s.goodSteps, 0) && isInt(s.skippedSteps, 0);
}

/**
 * Reads and checks what every training checkpoint's metadata holds, before the recipe checks its
 * config: present and JSON, the expected `format`, the iteration, epoch length, optimizer step
 * counts and the generator states named in `rngs` (each 4 u32 words and a spare). Throws one
 * error listing every problem. Shared by every recipe, so a checkpoint is refused for the same
 * reasons whichever trainer wrote it.
 */
export function readTrainingMeta(bytes: Uint8Array, format: string, rngs: readonly string[]): { meta: TrainingMetaCommon & Record<string, unknown>; tensors: ReturnType<typeof parseSafetensorsWithMetadata>['tensors'] } {
  const { metadata, tensors } = parseSafetensorsWithMetadata(bytes);
  const raw = metadata?.webdino;
  if (!raw) throw new Error('checkpoint: not a webdino training checkpoint (no webdino metadata); to evaluate weights use `webdino embed --weights`');
  let meta: TrainingMetaCommon & Record<string, unknown>;
  try {
    meta = JSON.parse(raw) as typeof meta;
  } catch (e) {
    throw new Error(`checkpoint: the webdino metadata is not valid JSON (${(e as Error).message})`);
  }
  if (meta === null || typeof meta !== 'object') throw new Error('checkpoint: the webdino metadata is not a JSON object');
  if (meta.format !== format) {
    const known = CHECKPOINT_FORMATS.includes(meta.format as (typeof CHECKPOINT_FORMATS)[number]);
    throw new Error(
      `checkpoint: ${known ? `a checkpoint of another recipe (${JSON.stringify(meta.format)})` : `unknown format ${JSON.stringify(meta.format)}`} (expected '${format}')`,
    );
  }
  const problems: string[] = [];
  if (!isInt(meta.iteration, 0)) problems.push(`iteration ${JSON.stringify(meta.iteration)} is not an integer >= 0`);
  if (!isInt(meta.itersPerEpoch, 1)) problems.push(`itersPerEpoch ${JSON.stringify(meta.itersPerEpoch)} is not an integer >= 1`);
  if (!isInt(meta.optimizerStep, 0)) problems.push(`optimizerStep ${JSON.stringify(meta.optimizerStep)} is not an integer >= 0`);
  if (!Array.isArray(meta.paramSteps) || !meta.paramSteps.every((s) => isInt(s, 0))) problems.push('paramSteps is not a list of step counts');
  for (const name of rngs) {
    const st = meta[name] as unknown;
    const ok = Array.isArray(st) && st.length === 5 && st.slice(0, 4).every((x) => isInt(x, 0) && x < 2 ** 32) && (st[4] === null || typeof st[4] === 'number');
    if (!ok) problems.push(`${name} is not a generator state (4 u32 words and a spare)`);
  }
  if (meta.config === null || typeof meta.config !== 'object') problems.push('config is missing');
  if (problems.length) throw new Error(`checkpoint: bad metadata: ${problems.join('; ')}`);
  return { meta, tensors };
}

/** Throws unless `iteration` lies within a run of `epochs` epochs of `itersPerEpoch`. */
export function checkIterationInRun(iteration: number, epochs: number, itersPerEpoch: number): void {
  if (iteration > epochs * itersPerEpoch) {
    throw new Error(`checkpoint: bad metadata: iteration ${iteration} is past the end of the run (${epochs} epochs of ${itersPerEpoch})`);
  }
}

/**
 * Compares tensors' shapes with what a config needs (`want`), and lists `extra` problems found by
 * the caller, in one error (the first 6 named).
 */
export function checkTensorShapes(tensors: ReadonlyMap<string, { shape: readonly number[] }>, want: readonly [string, readonly number[]][], extra: readonly string[] = []): void {
  const bad: string[] = [];
  for (const [name, shape] of want) {
    const t = tensors.get(name);
    if (!t) bad.push(`${name} is missing`);
    else if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) bad.push(`${name} is [${t.shape.join(', ')}], the config needs [${shape.join(', ')}]`);
  }
  bad.push(...extra);
  if (bad.length) throw new Error(`checkpoint: the tensors do not match the config in the metadata: ${bad.slice(0, 6).join('; ')}${bad.length > 6 ? `; and ${bad.length - 6} more` : ''}`);
}

/**
 * Reads and checks the metadata of a checkpoint (to rebuild a trainer with its config before
 * restoring). A checkpoint is a file, and its metadata is data: every field is checked (types,
 * ranges, the config as DinoTrainer would check it) and the architecture-defining tensors are
 * compared with the config, all before anything is allocated or any file of the run is touched.
 */
export function readCheckpointMeta(bytes: Uint8Array): CheckpointMeta {
  const { meta, tensors } = readTrainingMeta(bytes, CHECKPOINT_FORMAT, ['augRng', 'dropRng']);
  const config = resolveConfig(meta.config as Partial<TrainConfig>);
  try {
    validateTrainConfig(config, 'config');
  } catch (e) {
    throw new Error(`checkpoint: bad metadata: ${(e as Error).message}`, { cause: e });
  }
  checkIterationInRun(meta.iteration, config.epochs, meta.itersPerEpoch);
  const scaler = meta.lossScaler as unknown;
  if (scaler !== undefined && !isScalerState(scaler)) throw new Error('checkpoint: bad metadata: lossScaler is not a loss-scaler state (scale > 0, goodSteps and skippedSteps integers >= 0)');
  if (config.precision === 'f16' && scaler === undefined) throw new Error('checkpoint: bad metadata: a precision f16 run without its lossScaler state');
  checkTensorsAgainstConfig(tensors, config);
  return { ...(meta as unknown as CheckpointMeta), config };
}

/** The architecture-defining tensors of both models against the config (before building them). */
function checkTensorsAgainstConfig(tensors: ReadonlyMap<string, { shape: readonly number[] }>, c: TrainConfig): void {
  const want: [string, number[]][] = [];
  for (const m of ['student', 'teacher']) {
    want.push([`${m}.backbone.cls_token`, [1, 1, c.embedDim]]);
    want.push([`${m}.backbone.patch_embed.proj.weight`, [c.embedDim, 3, c.patchSize, c.patchSize]]);
    want.push([`${m}.backbone.blocks.${c.depth - 1}.attn.qkv.weight`, [3 * c.embedDim, c.embedDim]]);
    want.push([`${m}.head.last_layer.weight_v`, [c.outDim, c.headBottleneck]]);
  }
  want.push(['dino_loss.center', [1, c.outDim]]);
  const extra = tensors.has(`student.backbone.blocks.${c.depth}.norm1.weight`) ? [`the file has more than the config's ${c.depth} blocks`] : [];
  checkTensorShapes(tensors, want, extra);
}

/** Restores a trainer (built with the checkpoint's config) from `checkpointBytes` output. Returns the metadata. */
export function restoreCheckpoint(trainer: DinoTrainer, bytes: Uint8Array): CheckpointMeta {
  const { tensors } = parseSafetensorsWithMetadata(bytes);
  const meta = readCheckpointMeta(bytes);
  const pick = (prefix: string) => new Map([...tensors].filter(([k]) => k.startsWith(prefix)).map(([k, v]) => [k.slice(prefix.length), v]));
  trainer.student.loadStateDict(pick('student.'));
  trainer.teacher.loadStateDict(pick('teacher.'));
  const center = tensors.get('dino_loss.center');
  const m = tensors.get('optimizer.m');
  const v = tensors.get('optimizer.v');
  if (!center || !m || !v) throw new Error('checkpoint: missing dino_loss.center or optimizer state');
  const e = trainer.engine;
  e.device.write(trainer.loss.center.buffer, 0, center.data);
  e.scope(() => {
    trainer.optimizer.loadState({ step: meta.optimizerStep, m: e.tensor(m.data, m.shape), v: e.tensor(v.data, v.shape), paramSteps: meta.paramSteps });
  });
  trainer.iteration = meta.iteration;
  trainer.augRng = Rng.fromState(meta.augRng.map((x) => (x === null ? NaN : x)));
  trainer.student.backbone.dropRng.setState(meta.dropRng.map((x) => (x === null ? NaN : x)));
  if (trainer.lossScaler && meta.lossScaler) trainer.lossScaler.loadState(meta.lossScaler);
  trainer.setItersPerEpoch(meta.itersPerEpoch);
  return meta;
}

/** The teacher backbone's state dict under the official DINO key names (no prefix). */
export async function teacherBackboneState(trainer: DinoTrainer): Promise<Map<string, { shape: number[]; data: Float32Array }>> {
  return trainer.teacherBackbone.stateDict();
}

/** The teacher backbone as a safetensors file (official keys), with its architecture in the metadata. */
export async function exportTeacherBackbone(trainer: DinoTrainer): Promise<Uint8Array> {
  const sd = await teacherBackboneState(trainer);
  const c = trainer.config;
  const arch = { arch: c.arch, embed_dim: c.embedDim, depth: c.depth, num_heads: c.numHeads, patch_size: c.patchSize, img_size: c.globalSize };
  return writeSafetensors(Object.fromEntries(sd), { webdino_arch: JSON.stringify(arch) });
}
