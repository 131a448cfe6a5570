/**
 * DINO's schedules, precomputed per iteration as the official `utils.cosine_scheduler` does:
 *
 *   warm-up: linspace(startWarmup, base, warmupIters)  (the first iteration gets startWarmup, the
 *            last warm-up iteration reaches base)
 *   then for i in 0..T−1: final + ½(base − final)(1 + cos(π i / T)), T = total − warmupIters
 *   (the denominator is T, not T − 1: the final value is never reached exactly).
 *
 * The teacher temperature is per epoch: linspace(warmupTemp, temp, warmupEpochs), then constant.
 */

/** numpy.linspace(a, b, n) (endpoint included). */
function linspace(a: number, b: number, n: number): number[] {
  if (n <= 0) return [];
  if (n === 1) return [a];
  return Array.from({ length: n }, (_, i) => a + ((b - a) * i) / (n - 1));
}

export interface CosineScheduleOptions {
  warmupEpochs?: number;
  /** Value at the first warm-up iteration (0 in DINO). */
  startWarmupValue?: number;
}

/** One value per iteration: epochs × itersPerEpoch values. */
export function cosineScheduler(base: number, final: number, epochs: number, itersPerEpoch: number, opts: CosineScheduleOptions = {}): Float64Array {
  const warmupIters = Math.round((opts.warmupEpochs ?? 0) * itersPerEpoch);
  const total = epochs * itersPerEpoch;
  const out = new Float64Array(total);
  const warm = linspace(opts.startWarmupValue ?? 0, base, warmupIters);
  for (let i = 0; i < Math.min(warmupIters, total); i++) out[i] = warm[i];
  const T = total - warmupIters;
  for (let i = 0; i < T; i++) out[warmupIters + i] = final + 0.5 * (base - final) * (1 + Math.cos((Math.PI * i) / T));
  return out;
}

/** Teacher temperature per epoch: linear warm-up from warmupTemp to temp, then temp. */
export function teacherTempSchedule(warmupTemp: number, temp: number, warmupEpochs: number, epochs: number): Float64Array {
  const out = new Float64Array(epochs).fill(temp);
  const warm = linspace(warmupTemp, temp, warmupEpochs);
  for (let i = 0; i < Math.min(warm.length, epochs); i++) out[i] = warm[i];
  return out;
}

export interface DinoSchedules {
  lr: Float64Array;
  wd: Float64Array;
  momentum: Float64Array;
  teacherTemp: Float64Array;
}

export interface DinoScheduleConfig {
  epochs: number;
  itersPerEpoch: number;
  /** Base lr before the linear scaling rule (DINO: 5e-4). */
  lr: number;
  batchSize: number;
  minLr: number;
  warmupEpochs: number;
  weightDecay: number;
  weightDecayEnd: number;
  momentumTeacher: number;
  warmupTeacherTemp: number;
  teacherTemp: number;
  warmupTeacherTempEpochs: number;
}

/** Every schedule of a DINO run; the peak lr follows the linear scaling rule lr · batch / 256. */
export function dinoSchedules(c: DinoScheduleConfig): DinoSchedules {
  return {
    lr: cosineScheduler((c.lr * c.batchSize) / 256, c.minLr, c.epochs, c.itersPerEpoch, { warmupEpochs: c.warmupEpochs }),
    wd: cosineScheduler(c.weightDecay, c.weightDecayEnd, c.epochs, c.itersPerEpoch),
    momentum: cosineScheduler(c.momentumTeacher, 1, c.epochs, c.itersPerEpoch),
    teacherTemp: teacherTempSchedule(c.warmupTeacherTemp, c.teacherTemp, c.warmupTeacherTempEpochs, c.epochs),
  };
}
