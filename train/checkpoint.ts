/**
 * Training checkpoints as safetensors: everything `--resume` needs to continue exactly.
 *
 *   student.<name>, teacher.<name>   parameters (names of MultiCropWrapper: backbone.*, head.*)
 *   dino_loss.center                 the center [1, K]
 *   optimizer.m, optimizer.v         AdamW moments, flat in parameter order
 *   __metadata__.webdino             JSON: iteration, config, optimizer step counts, the states of
 *                                    the augmentation and drop-path generators, and the caller's
 *                                    extra state (the data loader's position)
 *
 * Bytes only (no file system): the CLI writes them atomically (temporary file, then rename), so a
 * process killed while saving leaves the previous checkpoint intact. `teacherBackboneState` gives
 * the teacher backbone alone under the official key names (cls_token, blocks.0.attn.qkv.weight…),
 * the file `webdino embed` loads.
 */
import { Rng } from '../engine/random.js';
import { parseSafetensorsWithMetadata, writeSafetensors } from '../models/io/safetensors.js';
import type { DinoTrainer, TrainConfig } from './trainer.js';

export const CHECKPOINT_FORMAT = 'webdino-dino-checkpoint-v1';

export interface CheckpointMeta {
  format: typeof CHECKPOINT_FORMAT;
  iteration: number;
  itersPerEpoch: number;
  config: TrainConfig;
  optimizerStep: number;
  paramSteps: number[];
  augRng: number[];
  dropRng: number[];
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
    extra,
  };
  return writeSafetensors(tensors, { webdino: JSON.stringify(meta, (_k, v) => (typeof v === 'number' && Number.isNaN(v) ? null : v)) });
}

/** Reads the metadata of a checkpoint (to rebuild a trainer with its config before restoring). */
export function readCheckpointMeta(bytes: Uint8Array): CheckpointMeta {
  const { metadata } = parseSafetensorsWithMetadata(bytes);
  const raw = metadata?.webdino;
  if (!raw) throw new Error('checkpoint: not a webdino training checkpoint (no webdino metadata); to evaluate weights use `webdino embed --weights`');
  const meta = JSON.parse(raw) as CheckpointMeta;
  if (meta.format !== CHECKPOINT_FORMAT) throw new Error(`checkpoint: unknown format '${meta.format}'`);
  return meta;
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
