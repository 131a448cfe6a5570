/**
 * The DINOv2 trainer: one explicit step in the order of dinov2/train/train.py do_train and
 * ssl_meta_arch.py forward_backward.
 *
 *   schedules at iteration i: lr, wd, momentum, τt, last-layer lr  → every optimizer group
 *   masks ← collate: half of the 2B global crops block-masked, ratios stratified over 0.1–0.5
 *   teacher (no gradient, no drop path): backbone(2 global crops, unmasked) → CLS, patch tokens;
 *     head(CLS ++ masked patch tokens) (one pass with a shared head, or dino_head + ibot_head);
 *     targets: centering (EMA 0.9) or Sinkhorn-Knopp, one per head output (CLS, masked patches)
 *   student: backbone(global crops with mask_token at the masked patches), backbone(local crops);
 *     head(local CLS ++ global CLS ++ masked patch tokens)
 *   loss = DINO local + DINO global (swapped targets) + KoLeo + iBOT  (train/dinov2/loss.ts)
 *   stop with NonFiniteLossError before anything changes if a logged term is not finite
 *   backward; clip the backbone, the DINO head and the iBOT head each by its own global norm (3.0)
 *   AdamW per parameter group (layer-wise lr decay, patch-embed ×0.2, wd multipliers)
 *   teacher ← m·teacher + (1 − m)·student
 *   centers ← EMA of this step's teacher outputs (the official applies it lazily at the next step:
 *     the same sequence)
 *
 * Schedules are per iteration with epoch = `epochLength` iterations (OFFICIAL_EPOCH_LENGTH 1250),
 * independent of the dataset size. The peak lr is baseLr·√(batch/1024).
 *
 * The backbone is train/dinov2/backbone.ts (models/vit.ts's ViT with mask_token, LayerScale,
 * registers and DINOv2's stochastic depth). The masked patch tokens are picked with the engine's
 * indexSelect (gather; scatter-add backward). Student and teacher are one parameter arena each
 * (train/dinov2/optimizer.ts): AdamW with per-parameter group multipliers and the EMA are one
 * dispatch per chunk. The only readback in a step is one vector: the loss terms and the teacher
 * entropies. Checkpoints and the teacher export: train/dinov2/checkpoint.ts.
 */
import type { Engine } from '../engine/engine.js';
import { Rng } from '../engine/random.js';
import type { Tensor } from '../engine/tensor.js';
import * as ops from '../engine/ops/index.js';
import { DINOHead, dinoHeadConfig } from '../models/dino-head.js';
import { Module, type ModuleContext } from '../models/nn.js';
import { vitConfig, type ViTArch } from '../models/vit.js';
import type { ImageLike } from '../kernels/augment.js';
import { MultiCropAugmenter, type MultiCropOptions } from './augment.js';
import { NonFiniteLossError } from './trainer.js';
import { bool, type Check, COMMON_CHECKS, int, num, problemsOf, range, throwProblems } from './validate.js';
import { DinoV2ViT, maskTensor } from './dinov2/backbone.js';
import { clipGradNorm } from './dinov2/clip.js';
import { dinov2Loss, loggedLosses, type DinoV2LossWeights } from './dinov2/loss.js';
import { collateMasks, type MaskBatch, MaskingGenerator, officialMaxMaskPatches } from './dinov2/masking.js';
import { GroupedAdamW } from './dinov2/optimizer.js';
import { dinov2ParamGroups } from './dinov2/param-groups.js';
import { dinov2Schedules, type DinoV2Schedules, sqrtScaledLr } from './dinov2/schedules.js';
import { type Centering, TeacherTargets } from './dinov2/teacher-targets.js';

/** Everything that defines a DINOv2 run. Defaults: ssl_default_config.yaml (at ViT-S/14 size). */
export interface DinoV2Config {
  /** 'vit_tiny' | 'vit_small' | 'vit_base', or 'custom' with embedDim/depth/numHeads. */
  arch: ViTArch | 'custom';
  embedDim: number;
  depth: number;
  numHeads: number;
  patchSize: number;
  /** student.num_register_tokens (0; 4 in the _reg models). */
  numRegisterTokens: number;
  /** student.layerscale init (1e-5). */
  layerScale: number;
  /**
   * Stochastic depth of the student (drop_path_rate 0.3): DINOv2's Block form (models/vit.ts), batch
   * subsets above 0.1, classic DropPath at or below; every block at this rate with dropPathUniform.
   */
  dropPathRate: number;
  /** drop_path_uniform (true): every block at dropPathRate; false: linspace(0, rate, depth). */
  dropPathUniform: boolean;
  /** dino.head_n_prototypes (65536), head_hidden_dim (2048), head_bottleneck_dim (256), head_nlayers (3). */
  outDim: number;
  headHidden: number;
  headBottleneck: number;
  headLayers: number;
  /**
   * BatchNorm1d after each hidden Linear of the heads (DINO v1's --use_bn_in_head; not in DINOv2's
   * recipe, false). The heads then normalise over the rows of each head pass with batch statistics,
   * in the teacher too (its heads stay in training mode; the backbone is in eval mode).
   */
  useBnInHead: boolean;
  /** ibot.separate_head (false: the patch tokens use dino_head). */
  ibotSeparateHead: boolean;
  ibotOutDim: number;
  ibotHeadHidden: number;
  ibotHeadBottleneck: number;
  /** dino.loss_weight, dino.koleo_loss_weight, ibot.loss_weight (1, 0.1, 1). */
  lossWeights: DinoV2LossWeights;
  /** ibot.mask_sample_probability (0.5) and mask_ratio_min_max ([0.1, 0.5]). */
  maskProbability: number;
  maskRatioMinMax: [number, number];
  studentTemp: number;
  /** train.centering: 'center' (default) or 'sinkhorn_knopp' (vitl14/vitg14). */
  centering: Centering;
  centerMomentum: number;
  /** optim.epochs (100) of `epochLength` iterations (train.OFFICIAL_EPOCH_LENGTH 1250). */
  epochs: number;
  epochLength: number;
  /** Total batch (images per step). */
  batchSize: number;
  /** optim.base_lr for a batch of 1024 (0.004), scaled by √(batch/1024). */
  baseLr: number;
  minLr: number;
  warmupEpochs: number;
  weightDecay: number;
  weightDecayEnd: number;
  /** optim.clip_grad (3.0), per sub-model global norm; 0 disables. */
  clipGrad: number;
  freezeLastLayerEpochs: number;
  layerwiseDecay: number;
  patchEmbedLrMult: number;
  adamBeta1: number;
  adamBeta2: number;
  momentumTeacher: number;
  finalMomentumTeacher: number;
  teacherTemp: number;
  warmupTeacherTemp: number;
  warmupTeacherTempEpochs: number;
  globalSize: number;
  localSize: number;
  localCrops: number;
  globalScale: [number, number];
  localScale: [number, number];
  augment: Partial<Omit<MultiCropOptions, 'globalSize' | 'localSize' | 'localCrops' | 'globalScale' | 'localScale'>>;
  seed: number;
}

/** ssl_default_config.yaml, with a ViT-S/14 backbone instead of its vit_large/16. */
export const DINOV2_DEFAULTS: DinoV2Config = {
  arch: 'vit_small',
  embedDim: 384,
  depth: 12,
  numHeads: 6,
  patchSize: 14,
  numRegisterTokens: 0,
  layerScale: 1e-5,
  dropPathRate: 0.3,
  dropPathUniform: true,
  outDim: 65536,
  headHidden: 2048,
  headBottleneck: 256,
  headLayers: 3,
  useBnInHead: false,
  ibotSeparateHead: false,
  ibotOutDim: 65536,
  ibotHeadHidden: 2048,
  ibotHeadBottleneck: 256,
  lossWeights: { dino: 1, koleo: 0.1, ibot: 1 },
  maskProbability: 0.5,
  maskRatioMinMax: [0.1, 0.5],
  studentTemp: 0.1,
  centering: 'center',
  centerMomentum: 0.9,
  epochs: 100,
  epochLength: 1250,
  batchSize: 64,
  baseLr: 0.004,
  minLr: 1e-6,
  warmupEpochs: 10,
  weightDecay: 0.04,
  weightDecayEnd: 0.4,
  clipGrad: 3.0,
  freezeLastLayerEpochs: 1,
  layerwiseDecay: 0.9,
  patchEmbedLrMult: 0.2,
  adamBeta1: 0.9,
  adamBeta2: 0.999,
  momentumTeacher: 0.992,
  finalMomentumTeacher: 1,
  teacherTemp: 0.07,
  warmupTeacherTemp: 0.04,
  warmupTeacherTempEpochs: 30,
  globalSize: 224,
  localSize: 96,
  localCrops: 8,
  globalScale: [0.32, 1],
  localScale: [0.05, 0.32],
  augment: {},
  seed: 0,
};

/**
 * The default of `webdino train --recipe dinov2` without --arch: the size of DINO's CPU default
 * (train/trainer.ts CPU_DEFAULT_CONFIG: ViT dim 64, depth 4, 2 heads, patch 8 on 32 px global and
 * 16 px local crops, 6 local crops, batch 32, head hidden 512, bottleneck 128, no brightness /
 * contrast jitter, 5 epochs of the embedded 5000 images) with DINOv2's recipe on top.
 * An epoch is a pass over the data (no epochLength: the run takes the data's iterations per
 * epoch, 156 here). Departures from ssl_default_config, measured in bench/lab/dinov2-learning.md
 * (which also records how far this size is from DINO v1): see the values' comments.
 */
export const DINOV2_CPU_DEFAULT_CONFIG: Partial<DinoV2Config> = {
  arch: 'custom',
  embedDim: 64,
  depth: 4,
  numHeads: 2,
  patchSize: 8,
  // DINO v1's CPU-default answer to flat teacher targets, which needs the iBOT head apart: with
  // LayerScale 1e-5 every image's CLS token is nearly the same vector, so the head maps them to one
  // point and the targets are uniform (entropy ln K) whatever the centering. BatchNorm in the head
  // brings the differences between images to unit scale, Sinkhorn-Knopp with K = 64 (one prototype
  // per teacher row of a batch of 2 × 32) keeps the sharpened targets balanced. In a shared head the
  // BatchNorm batch holds the masked patch tokens too, whose difference from the CLS tokens is
  // what it normalises: the CLS targets stayed uniform, hence a separate iBOT head (its own
  // BatchNorm and 64 prototypes). Measured on the embedded data: bench/lab/dinov2-learning.md.
  outDim: 64,
  useBnInHead: true,
  centering: 'sinkhorn_knopp',
  ibotSeparateHead: true,
  headHidden: 512,
  headBottleneck: 128,
  ibotOutDim: 64,
  ibotHeadHidden: 512,
  ibotHeadBottleneck: 128,
  epochs: 5,
  batchSize: 32,
  warmupEpochs: 1,
  warmupTeacherTempEpochs: 1,
  momentumTeacher: 0.99,
  globalSize: 32,
  localSize: 16,
  localCrops: 6,
  // As DINO's CPU default: this small model cannot bootstrap from 0.04 (targets drift to uniform).
  teacherTemp: 0.02,
  warmupTeacherTemp: 0.02,
  augment: { brightness: 0, contrast: 0 },
};

/** Fills the architecture fields from a preset name. */
export function resolveDinoV2Config(partial: Partial<DinoV2Config> = {}): DinoV2Config {
  const c: DinoV2Config = { ...DINOV2_DEFAULTS, ...partial, lossWeights: { ...DINOV2_DEFAULTS.lossWeights, ...partial.lossWeights } };
  if (c.arch !== 'custom') {
    const v = vitConfig(c.arch);
    c.embedDim = v.embedDim;
    c.depth = v.depth;
    c.numHeads = v.numHeads;
  }
  if (c.globalSize % c.patchSize !== 0) throw new Error(`DINOv2: the global crop ${c.globalSize} is not a multiple of the patch ${c.patchSize}`);
  if (!(c.batchSize >= 1 && Number.isInteger(c.epochLength) && c.epochLength >= 1)) throw new Error('DINOv2: batchSize and epochLength must be positive integers');
  if (c.warmupEpochs > c.epochs) throw new Error(`DINOv2: warmupEpochs ${c.warmupEpochs} exceeds epochs ${c.epochs} (the official CosineScheduler asserts the same)`);
  return c;
}

/** The rules of a DINOv2 config beyond the shared ones (train/validate.ts COMMON_CHECKS). */
const V2_CHECKS: readonly Check<DinoV2Config>[] = [
  int('numRegisterTokens', 0, 64),
  num('layerScale', 0, 1e3),
  bool('dropPathUniform'),
  int('headLayers', 1, 8),
  bool('useBnInHead'),
  bool('ibotSeparateHead'),
  int('ibotOutDim', 1, 1 << 20),
  int('ibotHeadHidden', 1, 65536),
  int('ibotHeadBottleneck', 1, 65536),
  (c) => {
    const w = c.lossWeights as unknown as Record<string, unknown>;
    const ok = w !== null && typeof w === 'object' && ['dino', 'koleo', 'ibot'].every((k) => typeof w[k] === 'number' && Number.isFinite(w[k]) && (w[k] as number) >= 0);
    return ok ? null : `lossWeights = ${JSON.stringify(c.lossWeights)} is not { dino, koleo, ibot } of numbers >= 0`;
  },
  num('maskProbability', 0, 1),
  range('maskRatioMinMax'),
  int('epochLength', 1, 1e9),
  num('baseLr', 0, 1e3),
  num('freezeLastLayerEpochs', 0, 1e7),
  num('layerwiseDecay', 0, 1),
  num('patchEmbedLrMult', 0, 1e3),
  num('adamBeta1', 0, 1),
  num('adamBeta2', 0, 1),
  num('finalMomentumTeacher', 0, 1),
];

/** Every problem of a DINOv2 config (empty when it is valid). */
export function dinov2ConfigProblems(c: DinoV2Config): string[] {
  return [...problemsOf(COMMON_CHECKS, c), ...problemsOf(V2_CHECKS, c)];
}

/** Throws ConfigError listing every problem of `c`; `source` says where it came from. */
export function validateDinoV2Config(c: DinoV2Config, source = 'DINOv2 training configuration'): void {
  throwProblems(dinov2ConfigProblems(c), source);
}

/** The official student/teacher ModuleDict: backbone, dino_head, ibot_head (when separate). */
export class DinoV2Model extends Module {
  readonly backbone: DinoV2ViT;
  readonly dinoHead: DINOHead;
  readonly ibotHead: DINOHead | null;

  constructor(ctx: ModuleContext, c: DinoV2Config, dropPathRate: number) {
    super(ctx);
    this.backbone = this.addModule(
      'backbone',
      new DinoV2ViT(
        ctx,
        vitConfig(
          { embedDim: c.embedDim, depth: c.depth, numHeads: c.numHeads },
          {
            imgSize: c.globalSize,
            patchSize: c.patchSize,
            dropPathRate,
            dropPathUniform: c.dropPathUniform,
            stochasticDepth: 'dinov2',
            numRegisterTokens: c.numRegisterTokens,
            layerScale: c.layerScale,
          },
        ),
      ),
    );
    // DINOv2's head: weight_g filled with 1 and trainable (no norm_last_layer).
    const head = (outDim: number, hiddenDim: number, bottleneckDim: number) =>
      new DINOHead(ctx, dinoHeadConfig({ inDim: c.embedDim, outDim, hiddenDim, bottleneckDim, nlayers: c.headLayers, normLastLayer: false, useBn: c.useBnInHead }));
    this.dinoHead = this.addModule('dino_head', head(c.outDim, c.headHidden, c.headBottleneck));
    this.ibotHead = c.ibotSeparateHead ? this.addModule('ibot_head', head(c.ibotOutDim, c.ibotHeadHidden, c.ibotHeadBottleneck)) : null;
  }

  /** Parameters of one sub-model (the arena views once the optimizer owns them). */
  subModelParams(sub: 'backbone' | 'dino_head' | 'ibot_head'): Tensor[] {
    const m = sub === 'backbone' ? this.backbone : sub === 'dino_head' ? this.dinoHead : this.ibotHead;
    return m ? m.namedParameters().map(([, t]) => t) : [];
  }
}

/** What one step reports. */
export interface DinoV2StepResult {
  iteration: number;
  epoch: number;
  /** The back-propagated total. */
  loss: number;
  /** The official loss_dict: dino_local_crops_loss, dino_global_crops_loss, koleo_loss (/2), ibot_loss (/2). */
  losses: Record<string, number>;
  lr: number;
  lastLayerLr: number;
  weightDecay: number;
  momentum: number;
  teacherTemp: number;
  images: number;
  maskedPatches: number;
  /** Collapse signals of the teacher targets (nats): per-row entropy and marginal entropy, per head output. */
  teacherEntropy: { cls: number; patch: number };
  teacherMarginalEntropy: { cls: number; patch: number };
}

export class DinoV2Trainer {
  readonly config: DinoV2Config;
  readonly student: DinoV2Model;
  readonly teacher: DinoV2Model;
  readonly optimizer: GroupedAdamW;
  readonly schedules: DinoV2Schedules;
  /** Teacher targets of the CLS tokens (DINO center) and of the masked patches (iBOT center). */
  readonly dinoTargets: TeacherTargets;
  readonly ibotTargets: TeacherTargets;
  readonly augmenter: MultiCropAugmenter;
  readonly maskGenerator: MaskingGenerator;
  /** Generators of the augmentation parameters and of the masks (checkpointed). */
  augRng: Rng;
  maskRng: Rng;
  /** Iterations done so far. */
  iteration = 0;
  /** The peak lr after the √-batch rule. */
  readonly peakLr: number;
  private readonly clipSets: Tensor[][];

  constructor(
    readonly engine: Engine,
    config: Partial<DinoV2Config> = {},
  ) {
    const c = (this.config = resolveDinoV2Config(config));
    validateDinoV2Config(c);
    this.student = new DinoV2Model({ engine, rng: new Rng(c.seed) }, c, c.dropPathRate);
    // The teacher is built without drop path and starts as a copy of the student (the optimizer copies it).
    this.teacher = new DinoV2Model({ engine, rng: new Rng(c.seed) }, c, 0);
    this.teacher.eval();
    // A BatchNorm head normalises with the batch statistics in the teacher too (as DINO v1's teacher,
    // which is never put in eval mode); the heads have nothing else that depends on the mode.
    if (c.useBnInHead) for (const h of [this.teacher.dinoHead, this.teacher.ibotHead]) h?.train();
    const groups = dinov2ParamGroups(
      this.student.namedParameters().map(([n]) => n),
      { numLayers: c.depth, layerwiseDecay: c.layerwiseDecay, patchEmbedLrMult: c.patchEmbedLrMult },
    );
    this.optimizer = new GroupedAdamW(engine, this.student, this.teacher, groups, { beta1: c.adamBeta1, beta2: c.adamBeta2 });
    this.clipSets = (['backbone', 'dino_head', 'ibot_head'] as const).map((s) => this.student.subModelParams(s)).filter((p) => p.length > 0);
    this.peakLr = sqrtScaledLr(c.baseLr, c.batchSize);
    this.schedules = dinov2Schedules({ ...c, lr: this.peakLr });
    const patchOut = c.ibotSeparateHead ? c.ibotOutDim : c.outDim;
    this.dinoTargets = new TeacherTargets(engine, { outDim: c.outDim, centering: c.centering, centerMomentum: c.centerMomentum });
    this.ibotTargets = new TeacherTargets(engine, { outDim: patchOut, centering: c.centering, centerMomentum: c.centerMomentum });
    this.augmenter = new MultiCropAugmenter(engine, {
      ...c.augment,
      globalSize: c.globalSize,
      localSize: c.localSize,
      localCrops: c.localCrops,
      globalScale: c.globalScale,
      localScale: c.localScale,
    });
    const grid = c.globalSize / c.patchSize;
    this.maskGenerator = new MaskingGenerator(grid, grid, { maxNumPatches: officialMaxMaskPatches(c.globalSize, c.patchSize) });
    this.augRng = new Rng(c.seed + 1);
    this.maskRng = new Rng(c.seed + 2);
  }

  get totalIterations(): number {
    return this.config.epochs * this.config.epochLength;
  }

  get epoch(): number {
    return Math.floor(this.iteration / this.config.epochLength);
  }

  /** The masks of a batch of B images (2B global crops), from the trainer's mask generator. */
  drawMasks(images: number): MaskBatch {
    const c = this.config;
    return collateMasks(this.maskGenerator, 2 * images, this.maskRng, { maskProbability: c.maskProbability, ratioMinMax: c.maskRatioMinMax });
  }

  /** Augments a batch of decoded images on the GPU, draws its masks and runs one step. */
  async stepImages(images: readonly ImageLike[]): Promise<DinoV2StepResult> {
    return this.engine.scope(async () => {
      const { globals, locals } = this.augmenter.augment(images, this.augRng);
      return this.step(globals, locals, this.drawMasks(images.length));
    });
  }

  /**
   * One step on given crops: `globals` (2B, 3, G, G), `locals` (n_l·B, 3, L, L) or null, rows
   * crop-major; `masks` over the 2B global crops. Intermediate tensors are freed before it returns.
   */
  async step(globals: Tensor, locals: Tensor | null, masks: MaskBatch): Promise<DinoV2StepResult> {
    const c = this.config;
    const it = this.iteration;
    if (it >= this.totalIterations) throw new Error(`DinoV2Trainer: iteration ${it} is past the end of the schedule (${this.totalIterations})`);
    const s = this.schedules;
    const lr = s.lr.at(it);
    const weightDecay = s.wd.at(it);
    const momentum = s.momentum.at(it);
    const teacherTemp = s.teacherTemp.at(it);
    const lastLayerLr = s.lastLayerLr.at(it);
    this.optimizer.setSchedule(lr, weightDecay, lastLayerLr);
    const twoB = globals.shape[0];
    const B = twoB / 2;
    const grid = c.globalSize / c.patchSize;
    const hw = grid * grid;
    if (globals.shape[2] !== c.globalSize || masks.images !== twoB || masks.numPatches !== hw) {
      throw new Error(`DinoV2Trainer: ${twoB} global crops of ${globals.shape[2]} px with masks for ${masks.images} crops of ${masks.numPatches} patches (config: ${c.globalSize} px, ${hw} patches)`);
    }
    const nl = locals ? locals.shape[0] / B : 0;
    const M = masks.maskIndices.length;
    const D = c.embedDim;
    const e = this.engine;
    let values: Float32Array = new Float32Array(9);

    await e.scope(async () => {
      // Teacher: unmasked global crops; the head sees the CLS tokens and the masked patch tokens.
      const teacher = e.noGrad(() => {
        const f = this.teacher.backbone.features(globals);
        const patches = M > 0 ? ops.indexSelect(f.patches.reshape(twoB * hw, D), 0, masks.maskIndices) : null;
        const { cls, masked } = this.heads(this.teacher, null, f.cls, patches);
        const clsT = this.dinoTargets.targets(cls, teacherTemp);
        const patchT = masked ? this.ibotTargets.targets(masked, teacherTemp) : null;
        return { cls, masked, clsT, patchT };
      });

      // Student: masked global crops and local crops.
      const maskT = maskTensor(globals, masks.masks, twoB, hw);
      const sg = this.student.backbone.features(globals, maskT);
      const sl = locals ? this.student.backbone.features(locals) : null;
      const patches = M > 0 ? ops.indexSelect(sg.patches.reshape(twoB * hw, D), 0, masks.maskIndices) : null;
      const out = this.heads(this.student, sl?.cls ?? null, sg.cls, patches);
      const terms = dinov2Loss(
        { globalCls: out.cls, localCls: out.local, maskedPatches: out.masked, globalClsFeatures: sg.cls },
        { cls: teacher.clsT.probs, maskedPatches: teacher.patchT?.probs ?? null },
        { weights: M > 0 ? e.tensor(masks.maskWeights, [M], { label: 'ibot-weights' }) : null, images: twoB },
        { localCrops: nl, studentTemp: c.studentTemp, weights: c.lossWeights },
      );
      const nan = e.full([1], NaN);
      const scalars = [
        terms.total,
        terms.dinoLocal,
        terms.dinoGlobal,
        terms.koleo,
        terms.ibot,
        teacher.clsT.entropy,
        teacher.clsT.marginalEntropy,
        teacher.patchT?.entropy ?? nan,
        teacher.patchT?.marginalEntropy ?? nan,
      ];
      values = await e.noGrad(() => ops.concat(scalars.map((x) => x.reshape(1)), 0)).toArray();
      if (!values.slice(0, 5).every(Number.isFinite)) throw new NonFiniteLossError(values[0], it);

      terms.total.backward();
      if (c.clipGrad > 0) for (const params of this.clipSets) clipGradNorm(params, c.clipGrad);
      this.optimizer.step();
      this.optimizer.zeroGrad();
      this.optimizer.emaUpdate(momentum);
      this.dinoTargets.updateCenter(teacher.cls);
      this.ibotTargets.updateCenter(teacher.masked);
    });
    // Submit the update now: the GPU runs it while the caller prepares the next batch.
    e.device.flush();
    this.iteration++;
    const [total, dinoLocal, dinoGlobal, koleo, ibot, entCls, margCls, entPatch, margPatch] = values;
    return {
      iteration: it,
      epoch: Math.floor(it / c.epochLength),
      loss: total,
      losses: loggedLosses({ dinoLocal, dinoGlobal, koleo, ibot }),
      lr,
      lastLayerLr,
      weightDecay,
      momentum,
      teacherTemp,
      images: B,
      maskedPatches: M,
      teacherEntropy: { cls: entCls, patch: entPatch },
      teacherMarginalEntropy: { cls: margCls, patch: margPatch },
    };
  }

  /**
   * The heads of `model` on [local CLS; global CLS; masked patches]: one dino_head pass when the
   * iBOT head is shared (the official concatenates them too), else dino_head on the CLS rows and
   * ibot_head on the patches. Returns the rows split back.
   */
  private heads(model: DinoV2Model, local: Tensor | null, global: Tensor, masked: Tensor | null): { local: Tensor | null; cls: Tensor; masked: Tensor | null } {
    const nLocal = local ? local.shape[0] : 0;
    const nGlobal = global.shape[0];
    const clsRows = local ? [local, global] : [global];
    if (!model.ibotHead) {
      const all = [...clsRows, ...(masked ? [masked] : [])];
      const out = model.dinoHead.forward(all.length === 1 ? all[0] : ops.concat(all, 0));
      return {
        local: local ? out.slice(0, 0, nLocal) : null,
        cls: out.slice(0, nLocal, nLocal + nGlobal),
        masked: masked ? out.slice(0, nLocal + nGlobal, out.shape[0]) : null,
      };
    }
    const out = model.dinoHead.forward(clsRows.length === 1 ? global : ops.concat(clsRows, 0));
    return {
      local: local ? out.slice(0, 0, nLocal) : null,
      cls: out.slice(0, nLocal, nLocal + nGlobal),
      masked: masked ? model.ibotHead.forward(masked) : null,
    };
  }

  /** The teacher backbone (what evaluation uses). */
  get teacherBackbone(): DinoV2ViT {
    return this.teacher.backbone;
  }

  /** Frees every GPU buffer the trainer owns. */
  dispose(): void {
    this.optimizer.dispose();
    this.dinoTargets.dispose();
    this.ibotTargets.dispose();
    for (const m of [this.student, this.teacher]) {
      for (const [, b] of m.namedBuffers()) b.dispose();
      m.backbone.dispose();
    }
  }
}
