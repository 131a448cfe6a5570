/**
 * The DINO trainer: one explicit step in the order of main_dino.train_one_epoch.
 *
 *   crops ← multi-crop augmentation (GPU) of a batch of decoded images
 *   teacher_out ← teacher(2 global crops)                       (no gradient, no drop path)
 *   student_out ← student(all crops, one backbone pass per resolution, one head pass)
 *   loss ← DINO loss (centering + sharpening); stop with a clear error if it is not finite
 *   backward; per-tensor clipping (3.0); cancel last-layer gradients while epoch < freeze_last_layer
 *   AdamW with this iteration's lr and weight decay (none on biases and 1-D tensors)
 *   teacher ← m·teacher + (1 − m)·student  (one fused dispatch per arena chunk)
 *   center ← 0.9·center + 0.1·mean(teacher_out)                 (inside the loss)
 *
 * Mixed precision (`precision: 'f16'`, as DINO's --use_fp16): the models' Linear layers compute in
 * f16 with f32 accumulation (models/nn.ts `Precision`), the loss is f32; backward runs on loss·S,
 * the gradients are unscaled and checked, and an overflow skips the rest of the step (clip, AdamW,
 * EMA) with the center restored, halving S (engine/loss-scale.ts). One more readback (the norm).
 *
 * Schedules are precomputed per iteration (train/schedules.ts). Student and teacher parameters live
 * in two parameter arenas of the same layout, so AdamW, clipping and the EMA each touch every
 * tensor in one dispatch per chunk; the only readback in a step is the loss (one float).
 *
 * The trainer holds no global state: several can run in one process on one or several engines.
 */
import { validateTrainConfig } from './validate.js';
import type { Engine } from '../engine/engine.js';
import { Rng } from '../engine/random.js';
import type { Tensor } from '../engine/tensor.js';
import * as ops from '../engine/ops/index.js';
import { AdamW, clipGradients, dinoDecayMask, emaUpdate, ParamArena } from '../engine/optim.js';
import { DINOHead, dinoHeadConfig } from '../models/dino-head.js';
import { MultiCropWrapper } from '../models/multicrop.js';
import type { Module, ModuleContext } from '../models/nn.js';
import { VisionTransformer, vitConfig, type ViTArch } from '../models/vit.js';
import { MultiCropAugmenter, type MultiCropOptions } from './augment.js';
import type { ImageLike } from '../kernels/augment.js';
import { DinoLoss } from './loss.js';
import { dinoSchedules, type DinoSchedules } from './schedules.js';
import { koleoLoss } from './dinov2/koleo.js';
import { DynamicLossScaler } from '../engine/loss-scale.js';

/** Everything that defines a run. Defaults are DINO's except where the CPU default config says. */
export interface TrainConfig {
  /** 'vit_tiny' | 'vit_small' | 'vit_base', or 'custom' with embedDim/depth/numHeads below. */
  arch: ViTArch | 'custom';
  embedDim: number;
  depth: number;
  numHeads: number;
  patchSize: number;
  dropPathRate: number;
  /** Prototypes K of the head (DINO: 65536). */
  outDim: number;
  headHidden: number;
  headBottleneck: number;
  normLastLayer: boolean;
  /** BatchNorm after each hidden Linear of the head (DINO's --use_bn_in_head). */
  useBnInHead: boolean;
  epochs: number;
  /**
   * Iterations per epoch, the unit of every schedule (warm-ups, cosine decays, the teacher
   * temperature's warm-up, freezing the last layer); 0 = one pass over the training data, as in
   * DINO. A fixed length (DINOv2's OFFICIAL_EPOCH_LENGTH) makes a run's length independent of the
   * dataset's size; the data loader then simply goes on into its next pass.
   */
  epochLength: number;
  batchSize: number;
  /** Base lr before the linear scaling rule lr·batch/256 (DINO: 5e-4). */
  lr: number;
  minLr: number;
  warmupEpochs: number;
  weightDecay: number;
  weightDecayEnd: number;
  momentumTeacher: number;
  /** Per-tensor gradient clipping (0 disables). */
  clipGrad: number;
  freezeLastLayer: number;
  studentTemp: number;
  teacherTemp: number;
  warmupTeacherTemp: number;
  warmupTeacherTempEpochs: number;
  centerMomentum: number;
  /** Teacher targets: 'center' (DINO's EMA centering + softmax) or 'sinkhorn_knopp' (DINOv2). */
  centering: 'center' | 'sinkhorn_knopp';
  /**
   * Weight of DINOv2's KoLeo regulariser on the student's global-crop CLS backbone outputs, one
   * crop at a time (train/dinov2/koleo.ts); 0 (DINO) leaves it out of the step altogether.
   */
  koleoWeight: number;
  globalSize: number;
  localSize: number;
  localCrops: number;
  globalScale: [number, number];
  localScale: [number, number];
  /**
   * Overrides of DINO's augmentation parameters (colour jitter strengths, grayscale and blur
   * probabilities, blur sigma in crop pixels, ...): see MultiCropOptions. Empty = DINO's.
   */
  augment: Partial<Omit<MultiCropOptions, 'globalSize' | 'localSize' | 'localCrops' | 'globalScale' | 'localScale'>>;
  seed: number;
  /**
   * 'f32', or 'f16': mixed-precision training (as torch.autocast with a GradScaler). The Linear
   * layers of student and teacher multiply f16 inputs and f16 copies of the f32 master weights
   * with f32 accumulation (models/nn.ts `Precision`); norms, attention, the head's output, the
   * loss, the KoLeo term and the optimizer stay f32. The loss is scaled before the backward
   * (engine/loss-scale.ts); a step whose gradients overflow is skipped whole (no AdamW step, no
   * EMA, the center kept) and halves the scale.
   */
  precision: 'f32' | 'f16';
}

/** DINO's official defaults (main_dino.py) for a ViT-S/16 run. */
export const DINO_DEFAULTS: TrainConfig = {
  arch: 'vit_small',
  embedDim: 384,
  depth: 12,
  numHeads: 6,
  patchSize: 16,
  dropPathRate: 0.1,
  outDim: 65536,
  headHidden: 2048,
  headBottleneck: 256,
  normLastLayer: true,
  useBnInHead: false,
  epochs: 100,
  epochLength: 0,
  batchSize: 64,
  lr: 5e-4,
  minLr: 1e-6,
  warmupEpochs: 10,
  weightDecay: 0.04,
  weightDecayEnd: 0.4,
  momentumTeacher: 0.996,
  clipGrad: 3.0,
  freezeLastLayer: 1,
  studentTemp: 0.1,
  teacherTemp: 0.04,
  warmupTeacherTemp: 0.04,
  warmupTeacherTempEpochs: 0,
  centerMomentum: 0.9,
  centering: 'center',
  koleoWeight: 0,
  globalSize: 224,
  localSize: 96,
  localCrops: 8,
  globalScale: [0.4, 1],
  localScale: [0.05, 0.4],
  augment: {},
  seed: 0,
  precision: 'f32',
};

/**
 * The default of `webdino train`: a small ViT sized so that the run on the embedded 64 px dataset
 * finishes within 15 minutes on two CPU cores (lavapipe, ~0.9 s per step of 32 images).
 * What differs from DINO's defaults, and why (measurements in bench/lab/dino-learning-probes.md):
 * - ViT dim 64, depth 4, 2 heads, patch 8 on 32 px global and 16 px local crops (4×4 and 2×2
 *   tokens; patch 4 runs ~3× slower, so only a third of the steps would fit); head hidden 512 and
 *   bottleneck 128.
 * - Teacher targets that neither flatten nor collapse onto a few prototypes, on real images too
 *   (bench/lab/real-data-probes.md): BatchNorm in the head (DINO's use_bn_in_head) and DINOv2's
 *   Sinkhorn-Knopp targets with K = 64 prototypes. At initialisation this small ViT gives nearly
 *   the same CLS token for every image, so the head's logits differ between images by much less
 *   than the teacher temperature: with centering the targets then either stay near uniform or
 *   split each batch onto one or two prototypes along one cue (Fashion-MNIST: batch marginal
 *   0.7 nats within 75 steps), and k-NN falls below its value at initialisation. The BatchNorm
 *   scales the differences between images to unit size whatever they are in the backbone;
 *   Sinkhorn-Knopp shares each batch evenly over the prototypes, and with 64 teacher rows per
 *   batch (2 × 32) and K = 64 a row may be one prototype, so targets are sharp and balanced.
 * - Base lr 4e-3 (peak 5e-4 after the linear scaling rule at batch 32: DINO's 5e-4 base would
 *   peak at 6e-5, too little for a short run) and teacher momentum 0.99 instead of 0.996 (a short
 *   run with a small batch; DINO's help text advises adjusting it with the batch size).
 * - Teacher temperature 0.02 throughout instead of 0.04 → 0.07: at initialisation this small
 *   model's outputs differ little between images, and DINO's 0.04 sharpens too little to
 *   bootstrap; the targets drift to uniform (entropy → ln K) within 100 steps.
 * - No brightness or contrast jitter (saturation 0.2 and hue 0.1 stay): with it, a model this
 *   small cannot yet predict the teacher across differently lit views, and uniform collapse follows
 *   within 75 steps even on plain grey shapes; without it the same run sharpens (measured).
 *   On the coloured embedded data, with the jitter (and KoLeo 0.5, blur σ 0.1–0.5 px) k-NN falls to
 *   28.7 %, below its 31.5 % at initialisation. Grey images are another matter: without the jitter
 *   they get no photometric augmentation at all, and CPU_GREY_IMAGE_CONFIG puts it back for them,
 *   with KoLeo (bench/lab/real-data-probes.md).
 * - 5 epochs of 156 iterations (780 steps): one pass over the embedded 5000 training images per
 *   epoch, and the same length on any other data (epochLength), so a large set such as
 *   Fashion-MNIST (60 000 images, 1875 batches per pass) keeps the 15-minute budget and its
 *   warm-up, freezing of the last layer and teacher-temperature warm-up keep their length in steps.
 *   Everything else is DINO's default.
 */
export const CPU_DEFAULT_CONFIG: Partial<TrainConfig> = {
  arch: 'custom',
  embedDim: 64,
  depth: 4,
  numHeads: 2,
  patchSize: 8,
  outDim: 64,
  headHidden: 512,
  headBottleneck: 128,
  useBnInHead: true,
  centering: 'sinkhorn_knopp',
  epochs: 5,
  epochLength: 156,
  batchSize: 32,
  lr: 4e-3,
  warmupEpochs: 1,
  momentumTeacher: 0.99,
  warmupTeacherTempEpochs: 1,
  globalSize: 32,
  localSize: 16,
  localCrops: 6,
  globalScale: [0.4, 1],
  localScale: [0.05, 0.4],
  teacherTemp: 0.02,
  warmupTeacherTemp: 0.02,
  augment: { brightness: 0, contrast: 0 },
};

/**
 * What the CPU default changes when the training images are grey (`isGreyscale`: every sampled
 * pixel has R = G = B, as in MNIST, Fashion-MNIST, scans, X-rays). `webdino train` applies it on its
 * own and says so; library users call `cpuDefaultConfig(await isGreyscale(dataset))`.
 * - DINO's brightness and contrast jitter (0.4, 0.4) back on. On grey images saturation, hue and the
 *   random grayscale do nothing, so CPU_DEFAULT_CONFIG's colour augmentation is none at all: two
 *   crops of one image keep their intensity histogram and the student can match the teacher by it.
 *   The reason CPU_DEFAULT_CONFIG leaves them out (targets that do not sharpen on the coloured
 *   embedded data) does not hold with Sinkhorn-Knopp targets on grey sets (per-image entropy stays
 *   near 2.4 of ln 64 on Fashion-MNIST).
 * - Gaussian blur σ 0.1–0.5 px instead of DINO's 0.1–2.0: DINO's range is sized for 224 px crops;
 *   σ = 2 px on a 32 px crop of a 28 px image removes most of the detail of a digit or a garment.
 * - DINOv2's KoLeo regulariser at 0.5 on the student's global-crop CLS outputs. The jitter takes
 *   away the intensity cues that tell digits apart at this model size, and without KoLeo the
 *   teacher's targets flatten towards uniform (upscaled 8×8 digits: k-NN 4 points below
 *   initialisation); KoLeo keeps the CLS tokens of a batch apart, so the targets stay distinct.
 * Measured in bench/lab/real-data-probes.md ("grey images"): Fashion-MNIST, MNIST and the 8×8
 * digits all gain over 10 points of k-NN over initialisation with the three together.
 */
export const CPU_GREY_IMAGE_CONFIG: Partial<TrainConfig> = {
  augment: { brightness: 0.4, contrast: 0.4, blurSigma: [0.1, 0.5] },
  koleoWeight: 0.5,
};

/** The CPU default for training images that are grey (`isGreyscale`) or not. */
export function cpuDefaultConfig(grey: boolean): Partial<TrainConfig> {
  if (!grey) return CPU_DEFAULT_CONFIG;
  return { ...CPU_DEFAULT_CONFIG, ...CPU_GREY_IMAGE_CONFIG, augment: { ...CPU_DEFAULT_CONFIG.augment, ...CPU_GREY_IMAGE_CONFIG.augment } };
}

/** The iterations per epoch of a run whose data loader gives `batchesPerPass` batches per pass. */
export function itersPerEpochOf(config: Pick<TrainConfig, 'epochLength'>, batchesPerPass: number): number {
  return config.epochLength > 0 ? config.epochLength : batchesPerPass;
}

/** What one step reports. */
export interface StepResult {
  iteration: number;
  epoch: number;
  loss: number;
  lr: number;
  weightDecay: number;
  momentum: number;
  teacherTemp: number;
  /** Images in the batch. */
  images: number;
  /** Mean entropy (nats) of the teacher's sharpened output distribution; ln K means collapse to uniform, 0 to one prototype. */
  teacherEntropy: number;
  /** Entropy (nats) of the batch-mean teacher distribution: near 0 with a low teacherEntropy means every image went to one prototype. */
  teacherMarginalEntropy: number;
  /** Mixed precision only: the loss scale this step's gradients were computed with. */
  lossScale?: number;
  /** Mixed precision only: the gradients overflowed, so nothing was updated (the scale halves). */
  skipped?: boolean;
}

/** The loss became NaN or infinite: training stops, the last checkpoint stays as it was. */
export class NonFiniteLossError extends Error {
  constructor(
    readonly loss: number,
    readonly iteration: number,
  ) {
    super(
      `webdino train: the loss is ${loss} at iteration ${iteration}; stopping (the last checkpoint is kept). ` +
        'Try a lower --lr, a larger --warmup-epochs, or --clip-grad 3.',
    );
    this.name = 'NonFiniteLossError';
  }
}

type Model = MultiCropWrapper<VisionTransformer, DINOHead>;

/** Fills the architecture fields from a preset name. */
export function resolveConfig(partial: Partial<TrainConfig> = {}): TrainConfig {
  const c = { ...DINO_DEFAULTS, ...partial };
  if (c.arch !== 'custom') {
    const v = vitConfig(c.arch);
    c.embedDim = v.embedDim;
    c.depth = v.depth;
    c.numHeads = v.numHeads;
  }
  return c;
}

function buildModel(ctx: ModuleContext, c: TrainConfig, dropPathRate: number): Model {
  const backbone = new VisionTransformer(
    ctx,
    vitConfig({ embedDim: c.embedDim, depth: c.depth, numHeads: c.numHeads }, { imgSize: c.globalSize, patchSize: c.patchSize, dropPathRate }),
  );
  const head = new DINOHead(
    ctx,
    dinoHeadConfig({ inDim: c.embedDim, outDim: c.outDim, hiddenDim: c.headHidden, bottleneckDim: c.headBottleneck, normLastLayer: c.normLastLayer, useBn: c.useBnInHead }),
  );
  return new MultiCropWrapper(ctx, backbone, head);
}

/** Moves every parameter of `m` into `arena` (same order for student and teacher). */
function moveToArena(m: Module, arena: ParamArena, requiresGrad: boolean | null): void {
  for (const [name, t] of m.namedParameters()) {
    const view = arena.add(name, t, undefined, { requiresGrad: requiresGrad ?? t.requiresGrad });
    const wasTrainable = t.requiresGrad;
    const old = m.replaceTensor(name, view);
    view.requiresGrad = requiresGrad ?? wasTrainable;
    old.dispose();
  }
}

export class DinoTrainer {
  readonly config: TrainConfig;
  readonly student: Model;
  readonly teacher: Model;
  readonly studentParams: ParamArena;
  readonly teacherParams: ParamArena;
  readonly optimizer: AdamW;
  readonly loss: DinoLoss;
  readonly augmenter: MultiCropAugmenter;
  /** Generator of the augmentation parameters (checkpointed). */
  augRng: Rng;
  /** The dynamic loss scale of mixed-precision training (checkpointed); null at f32. */
  readonly lossScaler: DynamicLossScaler | null;
  /** Iterations done so far (the next step uses schedules[iteration]). */
  iteration = 0;
  private schedules: DinoSchedules | null = null;
  private itersPerEpoch = 0;

  constructor(
    readonly engine: Engine,
    config: Partial<TrainConfig> = {},
  ) {
    const c = (this.config = resolveConfig(config));
    validateTrainConfig(c);
    const initRng = new Rng(c.seed);
    this.student = buildModel({ engine, rng: initRng }, c, c.dropPathRate);
    // The teacher starts as a copy of the student and has no drop path (DINO builds it without).
    this.teacher = buildModel({ engine, rng: new Rng(c.seed) }, c, 0);
    const capacity = this.student.numParameters() + 64 * this.student.namedParameters().length;
    this.studentParams = new ParamArena(engine, { capacity, label: 'student' });
    this.teacherParams = new ParamArena(engine, { capacity, requiresGrad: false, label: 'teacher' });
    moveToArena(this.student, this.studentParams, null);
    moveToArena(this.teacher, this.teacherParams, false);
    this.teacherParams.copyFrom(this.studentParams);
    this.teacher.train(); // DINO never switches the teacher to eval; it has no dropout anyway
    // Mixed precision: both models compute their matmuls in f16 (the teacher too, as under DINO's
    // torch.cuda.amp.autocast); the arenas keep f32 master weights. GradScaler's defaults.
    if (c.precision === 'f16') {
      this.student.setPrecision('f16');
      this.teacher.setPrecision('f16');
    }
    this.lossScaler = c.precision === 'f16' ? new DynamicLossScaler() : null;
    this.optimizer = new AdamW(this.studentParams, { lr: 0, weightDecay: c.weightDecay, wdMask: dinoDecayMask });
    this.loss = new DinoLoss(engine, { outDim: c.outDim, ncrops: 2 + c.localCrops, studentTemp: c.studentTemp, centerMomentum: c.centerMomentum, centering: c.centering });
    this.augmenter = new MultiCropAugmenter(engine, {
      ...c.augment,
      globalSize: c.globalSize,
      localSize: c.localSize,
      localCrops: c.localCrops,
      globalScale: c.globalScale,
      localScale: c.localScale,
    });
    this.augRng = new Rng(c.seed + 1);
  }

  /** Precomputes the schedules for a run of `config.epochs` epochs of `itersPerEpoch` iterations. */
  setItersPerEpoch(itersPerEpoch: number): void {
    const c = this.config;
    this.itersPerEpoch = itersPerEpoch;
    this.schedules = dinoSchedules({ ...c, itersPerEpoch });
  }

  get totalIterations(): number {
    return this.config.epochs * this.itersPerEpoch;
  }

  get epoch(): number {
    return this.itersPerEpoch ? Math.floor(this.iteration / this.itersPerEpoch) : 0;
  }

  /** Augments a batch of decoded images on the GPU and runs one step. */
  async stepImages(images: readonly ImageLike[]): Promise<StepResult> {
    return this.engine.scope(async () => {
      const { globals, locals } = this.augmenter.augment(images, this.augRng);
      return this.step(globals, locals);
    });
  }

  /**
   * One DINO step on given crops: `globals` (2B, 3, G, G) and `locals` (nB, 3, L, L) or null, rows
   * crop-major. Intermediate tensors are freed before it returns.
   */
  async step(globals: Tensor, locals: Tensor | null): Promise<StepResult> {
    if (!this.schedules) throw new Error('DinoTrainer: call setItersPerEpoch() before training');
    const it = this.iteration;
    if (it >= this.schedules.lr.length) throw new Error(`DinoTrainer: iteration ${it} is past the end of the schedule (${this.schedules.lr.length})`);
    const c = this.config;
    const epoch = this.epoch;
    const s = this.schedules;
    const lr = s.lr[it];
    const weightDecay = s.wd[it];
    const momentum = s.momentum[it];
    const teacherTemp = s.teacherTemp[Math.min(epoch, s.teacherTemp.length - 1)];
    const e = this.engine;
    let teacherEntropy = NaN;
    let teacherMarginalEntropy = NaN;
    const scaler = this.lossScaler;
    const lossScale = scaler?.scale;
    let skipped = false;
    const lossValue = await e.scope(async () => {
      const teacherOut = e.noGrad(() => this.teacher.forward([globals]));
      const studentOut = c.koleoWeight > 0 ? this.studentWithKoleo(globals, locals) : { out: this.student.forward(locals ? [globals, locals] : [globals]), koleo: null };
      // The loss updates the center as it runs (DINO's order); keep the old one so that a
      // non-finite loss leaves the state as it was (a NaN teacher output would poison the center).
      // Sinkhorn-Knopp never touches the center, so nothing needs saving then.
      const center = this.loss.center;
      const savedCenter = c.centering === 'sinkhorn_knopp' ? null : e.empty(center.shape, { label: 'center-saved' });
      if (savedCenter) e.device.copy(center.buffer, center.offset * 4, savedCenter.buffer, 0, center.size * 4);
      const dinoLoss = this.loss.forward(studentOut.out, teacherOut, teacherTemp);
      const loss = studentOut.koleo ? dinoLoss.add(studentOut.koleo.mul(c.koleoWeight)) : dinoLoss;
      // One readback per step: the loss and the teacher entropy together.
      const ent = this.loss.lastTeacherEntropy ?? e.full([], NaN);
      const marg = this.loss.lastTeacherMarginalEntropy ?? e.full([], NaN);
      const [value, entValue, margValue] = await ops.concat([loss.reshape(1), ent.reshape(1), marg.reshape(1)], 0).toArray();
      teacherEntropy = entValue;
      teacherMarginalEntropy = margValue;
      if (!Number.isFinite(value)) {
        if (savedCenter) e.device.copy(savedCenter.buffer, 0, center.buffer, center.offset * 4, center.size * 4);
        throw new NonFiniteLossError(value, it);
      }
      const arena = this.studentParams;
      if (scaler) {
        // Mixed precision: backward of loss·S (f16 gradients would underflow otherwise), then the
        // gathered gradients are divided by S and their norm read back. On overflow the whole step
        // is skipped, as GradScaler skips optimizer.step(): no update of the student, the teacher
        // or the center (restored as for a non-finite loss); the scaler halved S.
        scaler.scaleLoss(loss).backward();
        skipped = !(await scaler.unscale(arena)).step;
        if (skipped) {
          if (savedCenter) e.device.copy(savedCenter.buffer, 0, center.buffer, center.offset * 4, center.size * 4);
          this.optimizer.zeroGrad();
          return value;
        }
      } else {
        loss.backward();
        arena.gatherGrads();
      }
      if (c.clipGrad > 0) clipGradients(arena, c.clipGrad);
      if (epoch < c.freezeLastLayer) arena.cancelGradients((n) => n.includes('last_layer'));
      this.optimizer.lr = lr;
      this.optimizer.weightDecay = weightDecay;
      this.optimizer.step();
      this.optimizer.zeroGrad();
      emaUpdate(this.teacherParams, arena, momentum);
      return value;
    });
    // Submit the update now: the GPU runs it while the caller prepares the next batch.
    e.device.flush();
    this.iteration++;
    const result: StepResult = { iteration: it, epoch, loss: lossValue, lr, weightDecay, momentum, teacherTemp, images: globals.shape[0] / 2, teacherEntropy, teacherMarginalEntropy };
    return scaler ? { ...result, lossScale, skipped } : result;
  }

  /**
   * The student's forward of MultiCropWrapper, keeping the global crops' backbone outputs for the
   * KoLeo term: the sum over the two global crops of the KoLeo loss of each crop's B CLS tokens
   * (DINOv2's ssl_meta_arch: two crops of one image are never each other's neighbour).
   */
  private studentWithKoleo(globals: Tensor, locals: Tensor | null): { out: Tensor; koleo: Tensor } {
    const { backbone, head } = this.student;
    const g = backbone.forward(globals); // (2B, D), crop-major
    const feats = locals ? ops.concat([g, backbone.forward(locals)], 0) : g;
    const b = g.shape[0] / 2;
    const koleo = koleoLoss(g.slice(0, 0, b)).add(koleoLoss(g.slice(0, b, 2 * b)));
    return { out: head.forward(feats), koleo };
  }

  /** The teacher backbone (what evaluation uses, as DINO's scripts do). */
  get teacherBackbone(): VisionTransformer {
    return this.teacher.backbone;
  }

  /** Frees every GPU buffer the trainer owns. */
  dispose(): void {
    this.optimizer.dispose();
    this.loss.dispose();
    this.studentParams.dispose();
    this.teacherParams.dispose();
    for (const m of [this.student, this.teacher]) {
      for (const [, b] of m.namedBuffers()) b.dispose();
      m.backbone.dispose();
    }
  }
}
