/**
 * DINOv2 training checkpoints as safetensors: everything `--resume` needs to continue bitwise.
 *
 *   student.<name>, teacher.<name>   parameters under the training-checkpoint names
 *                                    (backbone.*, dino_head.*, ibot_head.* when separate)
 *   dino_targets.center              the DINO center [1, K] (zeros under Sinkhorn-Knopp, which
 *   ibot_targets.center              keeps no state) and the iBOT center [1, K']
 *   optimizer.m, optimizer.v         AdamW moments, flat in the student's parameter order
 *   __metadata__.webdino             JSON: format, iteration, itersPerEpoch (= the config's epoch
 *                                    length), config, optimizer step counts, the states of the
 *                                    augmentation, mask and drop-path generators, and the caller's
 *                                    extra state (the data loader's position)
 *
 * The metadata is checked on read by train/checkpoint.ts readTrainingMeta, the same checks as a
 * DINO checkpoint's, then the config as DinoV2Trainer checks it and the architecture-defining
 * tensors against it, before anything is allocated. The optimizer's group multipliers and the
 * schedules are functions of the config and the iteration, so they need no storing.
 *
 * `exportTeacherBackbone` writes the teacher backbone alone under the official DINOv2 key names
 * (cls_token, pos_embed, [register_tokens], mask_token, patch_embed.proj.*, blocks.<i>.{norm1,
 * attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}, norm.*: a hub
 * DinoVisionTransformer's state_dict with block_chunks 0), with metadata `webdino_arch`
 * {family: 'dinov2', num_heads, interpolation, ...} so that models/backbone.ts builds it with its
 * heads and its position-embedding resize (`webdino embed`, `eval knn`, `eval segment`).
 */
import { Rng } from '../../engine/random.js';
import { writeSafetensors } from '../../models/io/safetensors.js';
import { checkIterationInRun, checkTensorShapes, DINOV2_CHECKPOINT_FORMAT, readTrainingMeta, type RngState } from '../checkpoint.js';
import { type DinoV2Config, type DinoV2Trainer, resolveDinoV2Config, validateDinoV2Config } from '../dinov2-trainer.js';

export { DINOV2_CHECKPOINT_FORMAT };

export interface DinoV2CheckpointMeta {
  format: typeof DINOV2_CHECKPOINT_FORMAT;
  iteration: number;
  /** The config's epoch length (what the run folder and the resume checks read). */
  itersPerEpoch: number;
  config: DinoV2Config;
  optimizerStep: number;
  paramSteps: number[];
  augRng: RngState;
  maskRng: RngState;
  dropRng: RngState;
  /** Caller state (e.g. the data loader position), stored as given. */
  extra: unknown;
}

const RNGS = ['augRng', 'maskRng', 'dropRng'] as const;

/** Serialises the trainer's full state. `extra` must be JSON-serialisable. */
export async function dinov2CheckpointBytes(trainer: DinoV2Trainer, extra: unknown = null): Promise<Uint8Array> {
  const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const [prefix, model] of [['student', trainer.student], ['teacher', trainer.teacher]] as const) {
    for (const [name, t] of model.stateEntries()) tensors[`${prefix}.${name}`] = { shape: [...t.shape], data: await t.toArray() };
  }
  for (const [name, targets] of [['dino_targets', trainer.dinoTargets], ['ibot_targets', trainer.ibotTargets]] as const) {
    tensors[`${name}.center`] = { shape: [...targets.center.shape], data: await targets.center.toArray() };
  }
  const st = trainer.optimizer.state();
  try {
    tensors['optimizer.m'] = { shape: [...st.m.shape], data: await st.m.toArray() };
    tensors['optimizer.v'] = { shape: [...st.v.shape], data: await st.v.toArray() };
  } finally {
    st.m.dispose();
    st.v.dispose();
  }
  const meta: DinoV2CheckpointMeta = {
    format: DINOV2_CHECKPOINT_FORMAT,
    iteration: trainer.iteration,
    itersPerEpoch: trainer.config.epochLength,
    config: trainer.config,
    optimizerStep: st.step,
    paramSteps: st.paramSteps,
    augRng: trainer.augRng.state(),
    maskRng: trainer.maskRng.state(),
    dropRng: trainer.student.backbone.dropRng.state(),
    extra,
  };
  return writeSafetensors(tensors, { webdino: JSON.stringify(meta, (_k, v) => (typeof v === 'number' && Number.isNaN(v) ? null : v)) });
}

/**
 * Reads and checks the metadata of a DINOv2 checkpoint (see the header): the shared checks, the
 * config (resolved and validated as DinoV2Trainer does), the iteration within the run, and the
 * architecture-defining tensors of both models and the centers against the config.
 */
export function readDinoV2CheckpointMeta(bytes: Uint8Array): DinoV2CheckpointMeta {
  const { meta, tensors } = readTrainingMeta(bytes, DINOV2_CHECKPOINT_FORMAT, RNGS);
  let config: DinoV2Config;
  try {
    config = resolveDinoV2Config(meta.config as Partial<DinoV2Config>);
    validateDinoV2Config(config, 'config');
  } catch (e) {
    throw new Error(`checkpoint: bad metadata: ${(e as Error).message}`, { cause: e });
  }
  if (meta.itersPerEpoch !== config.epochLength) {
    throw new Error(`checkpoint: bad metadata: itersPerEpoch ${meta.itersPerEpoch} differs from the config's epochLength ${config.epochLength}`);
  }
  checkIterationInRun(meta.iteration, config.epochs, config.epochLength);
  const c = config;
  const D = c.embedDim;
  const want: [string, number[]][] = [];
  for (const m of ['student', 'teacher']) {
    want.push([`${m}.backbone.cls_token`, [1, 1, D]]);
    want.push([`${m}.backbone.mask_token`, [1, D]]);
    want.push([`${m}.backbone.patch_embed.proj.weight`, [D, 3, c.patchSize, c.patchSize]]);
    want.push([`${m}.backbone.blocks.${c.depth - 1}.attn.qkv.weight`, [3 * D, D]]);
    if (c.numRegisterTokens > 0) want.push([`${m}.backbone.register_tokens`, [1, c.numRegisterTokens, D]]);
    if (c.layerScale > 0) want.push([`${m}.backbone.blocks.0.ls1.gamma`, [D]]);
    want.push([`${m}.dino_head.last_layer.weight_v`, [c.outDim, c.headBottleneck]]);
    if (c.ibotSeparateHead) want.push([`${m}.ibot_head.last_layer.weight_v`, [c.ibotOutDim, c.ibotHeadBottleneck]]);
  }
  want.push(['dino_targets.center', [1, c.outDim]]);
  want.push(['ibot_targets.center', [1, c.ibotSeparateHead ? c.ibotOutDim : c.outDim]]);
  const extra: string[] = [];
  if (tensors.has(`student.backbone.blocks.${c.depth}.norm1.weight`)) extra.push(`the file has more than the config's ${c.depth} blocks`);
  if (!c.ibotSeparateHead && tensors.has('student.ibot_head.last_layer.weight_v')) extra.push('the file has an ibot_head, the config shares the DINO head');
  checkTensorShapes(tensors, want, extra);
  return { ...(meta as unknown as DinoV2CheckpointMeta), config };
}

/** Restores a trainer (built with the checkpoint's config) from `dinov2CheckpointBytes` output. Returns the metadata. */
export function restoreDinoV2Checkpoint(trainer: DinoV2Trainer, bytes: Uint8Array): DinoV2CheckpointMeta {
  const meta = readDinoV2CheckpointMeta(bytes);
  const { tensors } = readTrainingMeta(bytes, DINOV2_CHECKPOINT_FORMAT, RNGS);
  const pick = (prefix: string) => new Map([...tensors].filter(([k]) => k.startsWith(prefix)).map(([k, v]) => [k.slice(prefix.length), v]));
  trainer.student.loadStateDict(pick('student.'));
  trainer.teacher.loadStateDict(pick('teacher.'));
  const e = trainer.engine;
  for (const [name, targets] of [['dino_targets', trainer.dinoTargets], ['ibot_targets', trainer.ibotTargets]] as const) {
    const center = tensors.get(`${name}.center`)!;
    e.device.write(targets.center.buffer, targets.center.offset * 4, center.data);
  }
  const m = tensors.get('optimizer.m');
  const v = tensors.get('optimizer.v');
  if (!m || !v) throw new Error('checkpoint: missing the optimizer state (optimizer.m, optimizer.v)');
  e.scope(() => {
    trainer.optimizer.loadState({ step: meta.optimizerStep, m: e.tensor(m.data, m.shape), v: e.tensor(v.data, v.shape), paramSteps: meta.paramSteps });
  });
  const rng = (s: RngState) => s.map((x) => (x === null ? NaN : x));
  trainer.iteration = meta.iteration;
  trainer.augRng = Rng.fromState(rng(meta.augRng));
  trainer.maskRng = Rng.fromState(rng(meta.maskRng));
  trainer.student.backbone.dropRng.setState(rng(meta.dropRng));
  return meta;
}

/** The `webdino_arch` metadata of a DINOv2 teacher export (models/backbone.ts reads it). */
export function dinov2ExportArch(trainer: DinoV2Trainer): Record<string, unknown> {
  const c = trainer.config;
  return {
    family: 'dinov2',
    arch: c.arch,
    embed_dim: c.embedDim,
    depth: c.depth,
    num_heads: c.numHeads,
    patch_size: c.patchSize,
    img_size: c.globalSize,
    num_register_tokens: c.numRegisterTokens,
    // What training used to resize pos_embed for the local crops (vitConfig's default: the
    // official training's interpolate_offset 0.1 without antialias, registers or not).
    interpolation: { ...trainer.teacherBackbone.cfg.posEmbedInterpolation },
  };
}

/** The teacher backbone as a safetensors file under the official DINOv2 names (see the header). */
export async function exportTeacherBackbone(trainer: DinoV2Trainer): Promise<Uint8Array> {
  const sd = await trainer.teacherBackbone.stateDict();
  return writeSafetensors(Object.fromEntries(sd), { webdino_arch: JSON.stringify(dinov2ExportArch(trainer)) });
}
