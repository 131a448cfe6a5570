/**
 * DINOv2's per-iteration schedules (dinov2/utils/utils.py CosineScheduler, train/train.py
 * build_schedulers) and its learning-rate scaling rule (utils/config.py apply_scaling_rules_to_cfg).
 *
 * CosineScheduler(base, final, total, warmup = 0, start = 0, freeze = 0):
 *   [0 × freeze] ++ linspace(start, base, warmup) (both ends included)
 *   ++ final + ½(base − final)(1 + cos(π·i/T)) for i = 0 … T − 1, T = total − warmup − freeze
 *   (the denominator is T: `final` itself is never reached); indices ≥ total return `final`.
 *
 * Everything is per iteration; an "epoch" is `epochLength` iterations (OFFICIAL_EPOCH_LENGTH 1250,
 * independent of the dataset size). With E = epochs·epochLength:
 *   lr           CosineScheduler(lr, min_lr, E, warmup_epochs·L, start 0)
 *   wd           CosineScheduler(weight_decay, weight_decay_end, E)        (0.04 → 0.4)
 *   momentum     CosineScheduler(momentum_teacher, final_momentum_teacher, E)  (0.992 → 1)
 *   teacherTemp  CosineScheduler(teacher_temp, teacher_temp, W, W, start warmup_teacher_temp),
 *                W = warmup_teacher_temp_epochs·L: linear 0.04 → 0.07 over W, then 0.07 (past the end)
 *   lastLayerLr  the lr schedule with its first freeze_last_layer_epochs·L entries set to 0
 *
 * lr = base_lr · √(total batch / 1024) (scaling_rule sqrt_wrt_1024; base_lr 0.004 by default).
 */

/** numpy.linspace(a, b, n), endpoint included. */
function linspace(a: number, b: number, n: number): number[] {
  if (n <= 0) return [];
  if (n === 1) return [a];
  return Array.from({ length: n }, (_, i) => a + ((b - a) * i) / (n - 1));
}

/** One value per iteration, `final` past the end (CosineScheduler). */
export class CosineSchedule {
  readonly values: Float64Array;

  constructor(
    readonly base: number,
    readonly final: number,
    readonly totalIters: number,
    readonly warmupIters = 0,
    readonly startWarmup = 0,
    readonly freezeIters = 0,
  ) {
    if (!(Number.isInteger(totalIters) && Number.isInteger(warmupIters) && Number.isInteger(freezeIters))) {
      throw new Error(`CosineSchedule: iteration counts must be integers (total ${totalIters}, warm-up ${warmupIters}, freeze ${freezeIters})`);
    }
    const T = totalIters - warmupIters - freezeIters;
    if (T < 0) throw new Error(`CosineSchedule: warm-up ${warmupIters} + freeze ${freezeIters} exceed the ${totalIters} iterations`);
    const v = new Float64Array(totalIters);
    linspace(startWarmup, base, warmupIters).forEach((x, i) => (v[freezeIters + i] = x));
    for (let i = 0; i < T; i++) v[freezeIters + warmupIters + i] = final + 0.5 * (base - final) * (1 + Math.cos((Math.PI * i) / T));
    this.values = v;
  }

  /** The value at iteration `it` (`final` at and past the end). */
  at(it: number): number {
    return it >= this.totalIters ? this.final : this.values[it];
  }
}

export interface DinoV2ScheduleConfig {
  epochs: number;
  /** Iterations per "epoch" (OFFICIAL_EPOCH_LENGTH, 1250). */
  epochLength: number;
  /** The peak lr, after the scaling rule ({@link sqrtScaledLr}). */
  lr: number;
  minLr: number;
  warmupEpochs: number;
  weightDecay: number;
  weightDecayEnd: number;
  momentumTeacher: number;
  finalMomentumTeacher: number;
  teacherTemp: number;
  warmupTeacherTemp: number;
  warmupTeacherTempEpochs: number;
  freezeLastLayerEpochs: number;
}

export interface DinoV2Schedules {
  lr: CosineSchedule;
  wd: CosineSchedule;
  momentum: CosineSchedule;
  teacherTemp: CosineSchedule;
  /** The lr schedule with the frozen start (0). */
  lastLayerLr: CosineSchedule;
}

/** Every schedule of a DINOv2 run (build_schedulers). */
export function dinov2Schedules(c: DinoV2ScheduleConfig): DinoV2Schedules {
  const L = c.epochLength;
  const E = c.epochs * L;
  const iters = (epochs: number) => Math.round(epochs * L);
  const lr = () => new CosineSchedule(c.lr, c.minLr, E, iters(c.warmupEpochs), 0);
  const W = iters(c.warmupTeacherTempEpochs);
  const lastLayerLr = lr();
  lastLayerLr.values.fill(0, 0, Math.min(iters(c.freezeLastLayerEpochs), E));
  return {
    lr: lr(),
    wd: new CosineSchedule(c.weightDecay, c.weightDecayEnd, E),
    momentum: new CosineSchedule(c.momentumTeacher, c.finalMomentumTeacher, E),
    teacherTemp: new CosineSchedule(c.teacherTemp, c.teacherTemp, W, W, c.warmupTeacherTemp),
    lastLayerLr,
  };
}

/** sqrt_wrt_1024: base_lr · √(total batch / 1024). */
export function sqrtScaledLr(baseLr: number, totalBatch: number): number {
  return baseLr * Math.sqrt(totalBatch / 1024);
}
