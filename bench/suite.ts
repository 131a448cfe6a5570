/**
 * The benchmark suite of `webdino bench`: one case per (kernel, shape), each with the work it does
 * per run, so the runner can turn a time into a rate.
 *
 * Work conventions (per run)
 * - matmul [M, K] @ [K, N]: 2·M·N·K flop (one multiply-add = 2).
 * - attention softmax(Q·Kᵀ·s)·V, q/k/v [B, H, N, d]: forward 4·B·H·N²·d flop (Q·Kᵀ and P·V);
 *   forward + backward 12·B·H·N²·d (the backward's four products dV = Pᵀ·dO, dP = dO·Vᵀ,
 *   dQ = dS·K, dK = dSᵀ·Q add 8·B·H·N²·d). Softmax exponentials are not counted: the rate
 *   is "useful" flop/s, comparable across implementations that recompute or not.
 * - memory-bound kernels: bytes that must cross memory at least once (every input read once,
 *   every output written once), f32 = 4 bytes; n = rows·D:
 *     softmax / log-softmax forward: read x, write y → 8·n (+ 4·D with a center);
 *     softmax backward: read y, g, write dx → 12·n;
 *     layernorm forward: 8·n + 8·D (γ, β) + 8·rows (μ, 1/σ); backward (dx, dγ, dβ): read x, g,
 *     write dx → 12·n, + 4·D (γ) + 8·rows (μ, 1/σ) + 8·D (dγ, dβ);
 *     l2-normalise forward 8·n + 4·rows (norms); backward (read y, g, write dx) 12·n + 4·rows;
 *     GELU n: 8·n; mul n: 12·n; GELU backward (read x, g, write dx): 12·n;
 *     AdamW n params: read p, g, m, v, write p, m, v → 28·n;  EMA: read teacher, student,
 *     write teacher → 12·n;  add n: read a, b, write c → 12·n (the reference row of the others).
 *
 * Invariants
 * - The matmul 1024³ case comes first: it is the headline number.
 * - `setup` creates its inputs in the caller's scope (the runner disposes them) and returns the
 *   work to time; the tensors a run creates are disposed by `timeKernel` after each run, and what
 *   a case keeps outside scopes (parameter arenas, optimizer state) by its `dispose`.
 * - Optimizer cases go through engine/optim.ts as training does: a ParamArena (one flat buffer,
 *   one dispatch per step over all tensors), gradients gathered untimed before each step.
 * - Inputs are seeded, so every run of the suite sees the same data.
 */
import type { Engine } from '../engine/engine.js';
import * as ops from '../engine/ops/index.js';
import { ALIGN, AdamW, emaUpdate, ParamArena } from '../engine/optim.js';
import { binaryRaw } from '../kernels/elementwise.js';
import { l2NormalizeBackwardRaw, l2NormalizeForwardRaw, layerNormBackwardRaw, layerNormForwardRaw, layerNormParamGradRaw } from '../kernels/layernorm.js';
import { softmaxBackwardRaw } from '../kernels/softmax.js';
import { stepConfigs, trainStepCase } from './train-step.js';

/** Kernel families, the names `--only` accepts, in the order the suite runs them. */
export const BENCH_KERNELS = ['matmul', 'attention', 'softmax', 'layernorm', 'l2norm', 'elementwise', 'adamw', 'ema', 'add', 'train'] as const;
export type BenchKernel = (typeof BENCH_KERNELS)[number];
/** What runs without `--only`: everything but the training step (minutes per step on a CPU driver). */
export const DEFAULT_KERNELS: readonly BenchKernel[] = BENCH_KERNELS.filter((k) => k !== 'train');

/** What a run computes: a forward kernel, forward then backward, an in-place update, a training step. */
export type BenchPass = 'fwd' | 'bwd' | 'fwd+bwd' | 'update' | 'step';

/** One benchmark: a kernel at one shape. */
export interface BenchCase {
  kernel: BenchKernel;
  pass: BenchPass;
  /** Human-readable shape, e.g. "1024x1024 @ 1024x1024" or "B8 H6 N197 d64". */
  shape: string;
  /** Floating-point operations per run (compute-bound kernels). */
  flops?: number;
  /** Bytes read + written per run (memory-bound kernels). */
  bytes?: number;
  /** Images per run (training steps): the row then also reports images/s. */
  images?: number;
  /** Which clock the row's ms comes from: 'gpu' (timestamps when available, the default) or 'wall'. */
  timing?: 'gpu' | 'wall';
  /** Creates the inputs (in the caller's scope) and returns the work to time. */
  setup(wd: Engine): BenchWork | Promise<BenchWork>;
}

/** The work of a case, as `setup` returns it. */
export interface BenchWork {
  /** The timed work: records dispatches; tensors it creates or returns are freed after each run. */
  run: () => unknown;
  /** Untimed preparation before each run (e.g. gathering gradients before an optimizer step). */
  beforeEach?: () => unknown;
  /** Frees what the case keeps outside scopes (parameter arenas, optimizer state). */
  dispose?: () => void;
  /** Extra figures from one more untimed run (dispatch counts, memory, a profile): printed under the row. */
  details?: () => Promise<BenchDetails>;
}

/** What `details` returns: JSON fields for the row, and lines to print under it in the table. */
export interface BenchDetails {
  fields: Record<string, unknown>;
  lines: string[];
}

/** Named parameter shapes of a model, for the optimizer cases. */
export interface ParamSet {
  label: string;
  shapes: [string, number[]][];
}

const prod = (xs: readonly number[]): number => xs.reduce((a, b) => a * b, 1);

/** Number of parameters of a set. */
function paramCount(set: Pick<ParamSet, 'shapes'>): number {
  return set.shapes.reduce((a, [, sh]) => a + prod(sh), 0);
}

/** Shapes of one suite size. */
interface Sizes {
  /** Square matmul sizes; the first is the headline. */
  matmulSquare: number[];
  /** [M, K, N] of the ViT-S-like matmul and its label. */
  matmulVit: { mkn: [number, number, number]; label: string };
  attention: { B: number; H: number; N: number; d: number };
  softmax: number[][];
  layernorm: [number, number];
  l2norm: [number, number];
  elementwise: number;
  /** Parameter sets for AdamW and EMA. */
  params: ParamSet[];
  add: number;
}

/**
 * The parameter shapes of a ViT-S/16 backbone (timm / DINO names): 150 tensors, 21 665 664
 * parameters, the scale of a DINO student.
 */
export function vitSmallParams(): ParamSet {
  const D = 384;
  const shapes: [string, number[]][] = [
    ['patch_embed.proj.weight', [D, 3, 16, 16]],
    ['patch_embed.proj.bias', [D]],
    ['cls_token', [1, 1, D]],
    ['pos_embed', [1, 197, D]],
  ];
  for (let i = 0; i < 12; i++) {
    const b = `blocks.${i}`;
    shapes.push(
      [`${b}.norm1.weight`, [D]],
      [`${b}.norm1.bias`, [D]],
      [`${b}.attn.qkv.weight`, [3 * D, D]],
      [`${b}.attn.qkv.bias`, [3 * D]],
      [`${b}.attn.proj.weight`, [D, D]],
      [`${b}.attn.proj.bias`, [D]],
      [`${b}.norm2.weight`, [D]],
      [`${b}.norm2.bias`, [D]],
      [`${b}.mlp.fc1.weight`, [4 * D, D]],
      [`${b}.mlp.fc1.bias`, [4 * D]],
      [`${b}.mlp.fc2.weight`, [D, 4 * D]],
      [`${b}.mlp.fc2.bias`, [D]],
    );
  }
  shapes.push(['norm.weight', [D]], ['norm.bias', [D]]);
  const n = paramCount({ shapes });
  return { label: `ViT-S/16 (${(n / 1e6).toFixed(1)}M params, ${shapes.length} tensors)`, shapes };
}

/** ViT-S/16 at 224²: 197 tokens, width 384, 6 heads of 64, ~22M parameters; batch 8. */
const FULL: Sizes = {
  matmulSquare: [1024, 256, 512, 2048],
  matmulVit: { mkn: [197 * 8, 384, 1152], label: ' (ViT-S qkv, B=8)' },
  attention: { B: 8, H: 6, N: 197, d: 64 },
  softmax: [
    [256, 65536],
    [8, 6, 197, 197],
  ],
  layernorm: [197 * 8, 384],
  l2norm: [4096, 256],
  elementwise: 1 << 22,
  params: [vitSmallParams(), { label: '1 tensor 1024x1024 (1.05M params)', shapes: [['w', [1024, 1024]]] }],
  add: 1 << 22,
};

/** Small shapes, not multiples of any tile, for tests and smoke runs (seconds in total). */
const QUICK: Sizes = {
  matmulSquare: [128, 64],
  matmulVit: { mkn: [67, 48, 71], label: '' },
  attention: { B: 1, H: 2, N: 17, d: 16 },
  softmax: [
    [8, 1000],
    [2, 3, 17, 17],
  ],
  layernorm: [67, 96],
  l2norm: [67, 36],
  elementwise: 65_536,
  params: [
    {
      label: '3 tensors (2199 params)',
      shapes: [
        ['a.weight', [67, 31]],
        ['a.bias', [31]],
        ['b.weight', [13, 7]],
      ],
    },
  ],
  add: 65_536,
};

function matmulCase(M: number, K: number, N: number, note = ''): BenchCase {
  return {
    kernel: 'matmul',
    pass: 'fwd',
    shape: `${M}x${K} @ ${K}x${N}${note}`,
    flops: 2 * M * N * K,
    setup(wd) {
      const a = wd.randn([M, K], { seed: 1 });
      const b = wd.randn([K, N], { seed: 2 });
      return { run: () => ops.matmul(a, b) };
    },
  };
}

function attentionCases(s: Sizes['attention']): BenchCase[] {
  const { B, H, N, d } = s;
  const shape = `B${B} H${H} N${N} d${d}`;
  const fwdFlops = 4 * B * H * N * N * d;
  const qkv = (wd: Engine, requiresGrad: boolean) =>
    [1, 2, 3].map((seed) => wd.randn([B, H, N, d], { seed, requiresGrad }));
  return [
    {
      kernel: 'attention',
      pass: 'fwd',
      shape,
      flops: fwdFlops,
      setup(wd) {
        const [q, k, v] = qkv(wd, false);
        return { run: () => ops.attention(q, k, v).out };
      },
    },
    {
      kernel: 'attention',
      pass: 'fwd+bwd',
      shape,
      flops: 3 * fwdFlops,
      setup(wd) {
        const [q, k, v] = qkv(wd, true);
        const gOut = wd.randn([B, H, N, d], { seed: 4 });
        return {
          run() {
            ops.attention(q, k, v).out.backward(gOut);
            for (const t of [q, k, v]) t.zeroGrad();
          },
        };
      },
    },
  ];
}

/** Softmax forward over the last axis; `kind` adds DINO's teacher temperature and center, or takes the log. */
function softmaxCase(shape: number[], kind: 'plain' | 'center' | 'log' = 'plain'): BenchCase {
  const n = prod(shape);
  const D = shape[shape.length - 1];
  const label = { plain: '', center: ' (τ 0.04, center)', log: ' (log-softmax, τ 0.1)' }[kind];
  return {
    kernel: 'softmax',
    pass: 'fwd',
    shape: shape.join('x') + label,
    bytes: 8 * n + (kind === 'center' ? 4 * D : 0),
    setup(wd) {
      const x = wd.randn(shape, { seed: 5 });
      if (kind === 'plain') return { run: () => ops.softmax(x, -1) };
      if (kind === 'log') return { run: () => ops.logSoftmax(x, -1, { temperature: 0.1 }) };
      const center = wd.randn([D], { seed: 6 });
      return { run: () => ops.softmax(x, -1, { temperature: 0.04, center }) };
    },
  };
}

/** The softmax backward kernel alone (dx from the saved y and g). */
function softmaxBackwardCase(shape: number[]): BenchCase {
  const n = prod(shape);
  return {
    kernel: 'softmax',
    pass: 'bwd',
    shape: shape.join('x'),
    bytes: 12 * n,
    setup(wd) {
      const y = wd.noGrad(() => ops.softmax(wd.randn(shape, { seed: 5 }), -1));
      const g = wd.randn(shape, { seed: 6 });
      return { run: () => softmaxBackwardRaw(y, g, 1, false) };
    },
  };
}

function layerNormCases([rows, D]: [number, number]): BenchCase[] {
  const n = rows * D;
  const inputs = (wd: Engine) => ({
    x: wd.randn([rows, D], { seed: 6 }),
    w: wd.randn([D], { seed: 7 }),
    b: wd.randn([D], { seed: 8 }),
  });
  return [
    {
      kernel: 'layernorm',
      pass: 'fwd',
      shape: `${rows}x${D}`,
      bytes: 8 * n + 8 * D + 8 * rows,
      setup(wd) {
        const { x, w, b } = inputs(wd);
        return { run: () => ops.layerNorm(x, w, b) };
      },
    },
    {
      kernel: 'layernorm',
      pass: 'bwd',
      shape: `${rows}x${D} (dx, dγ, dβ)`,
      bytes: 12 * n + 12 * D + 8 * rows,
      setup(wd) {
        const { x, w, b } = inputs(wd);
        const { mean, rstd } = layerNormForwardRaw(x, w, b, 1e-6);
        const g = wd.randn([rows, D], { seed: 9 });
        return {
          run: () => {
            layerNormBackwardRaw(x, w, mean, rstd, g);
            layerNormParamGradRaw(x, mean, rstd, g);
          },
        };
      },
    },
  ];
}

function l2NormCases([rows, D]: [number, number]): BenchCase[] {
  const n = rows * D;
  return [
    {
      kernel: 'l2norm',
      pass: 'fwd',
      shape: `${rows}x${D}`,
      bytes: 8 * n + 4 * rows,
      setup(wd) {
        const x = wd.randn([rows, D], { seed: 6 });
        return { run: () => ops.l2Normalize(x) };
      },
    },
    {
      kernel: 'l2norm',
      pass: 'bwd',
      shape: `${rows}x${D}`,
      bytes: 12 * n + 4 * rows,
      setup(wd) {
        const { y, norm } = l2NormalizeForwardRaw(wd.randn([rows, D], { seed: 6 }), 1e-12);
        const g = wd.randn([rows, D], { seed: 7 });
        return { run: () => l2NormalizeBackwardRaw(y, norm, g, 1e-12) };
      },
    },
  ];
}

/** Elementwise ops other than add, against which the bench compares them: GELU, mul, GELU's backward. */
function elementwiseCases(n: number): BenchCase[] {
  const x = (wd: Engine) => wd.randn([n], { seed: 9 });
  const y = (wd: Engine) => wd.randn([n], { seed: 10 });
  return [
    { kernel: 'elementwise', pass: 'fwd', shape: `gelu ${n}`, bytes: 8 * n, setup: (wd) => ((a) => ({ run: () => ops.gelu(a) }))(x(wd)) },
    { kernel: 'elementwise', pass: 'fwd', shape: `mul ${n}`, bytes: 12 * n, setup: (wd) => ((a, b) => ({ run: () => ops.mul(a, b) }))(x(wd), y(wd)) },
    {
      kernel: 'elementwise',
      pass: 'bwd',
      shape: `gelu ${n}`,
      bytes: 12 * n,
      setup: (wd) => ((a, g) => ({ run: () => binaryRaw('geluBackward', a, g) }))(x(wd), y(wd)),
    },
  ];
}

function addCase(n: number): BenchCase {
  return {
    kernel: 'add',
    pass: 'fwd',
    shape: String(n),
    bytes: 12 * n,
    setup(wd) {
      const a = wd.randn([n], { seed: 9 });
      const b = wd.randn([n], { seed: 10 });
      return { run: () => ops.add(a, b) };
    },
  };
}

/** The suite in running order: full sizes, or `quick` small ones. */
export function benchCases(quick = false): BenchCase[] {
  const s = quick ? QUICK : FULL;
  const [first, ...restSquare] = s.matmulSquare;
  const [M, K, N] = s.matmulVit.mkn;
  return [
    matmulCase(first, first, first),
    ...restSquare.map((n) => matmulCase(n, n, n)),
    matmulCase(M, K, N, s.matmulVit.label),
    ...attentionCases(s.attention),
    ...s.softmax.map((shape) => softmaxCase(shape)),
    softmaxCase(s.softmax[0], 'center'),
    softmaxCase(s.softmax[0], 'log'),
    softmaxBackwardCase(s.softmax[0]),
    ...layerNormCases(s.layernorm),
    ...l2NormCases(s.l2norm),
    ...elementwiseCases(s.elementwise),
    ...s.params.map(adamwCase),
    ...s.params.map(emaCase),
    addCase(s.add),
    ...stepConfigs(quick).map(trainStepCase),
  ];
}


/** A parameter arena holding `set`, every parameter zero (values do not change the memory traffic). */
function makeArena(wd: Engine, set: ParamSet, requiresGrad: boolean): ParamArena {
  // Capacity with room for the per-tensor alignment padding, so the arena is one chunk.
  const arena = new ParamArena(wd, { capacity: paramCount(set) + ALIGN * set.shapes.length, requiresGrad });
  for (const [name, shape] of set.shapes) arena.add(name, shape);
  return arena;
}

/**
 * AdamW step over a whole parameter arena (engine/optim.ts): every parameter has a gradient,
 * gathered into the flat gradient arena before each run (untimed); the timed step uploads the
 * per-segment table and runs the fused update.
 */
function adamwCase(set: ParamSet): BenchCase {
  return {
    kernel: 'adamw',
    pass: 'update',
    shape: set.label,
    bytes: 28 * paramCount(set),
    setup(wd) {
      const arena = makeArena(wd, set, true);
      for (const p of arena.params) p.grad = wd.keep(wd.full(p.shape, 1e-3));
      const opt = new AdamW(arena, { lr: 1e-4, weightDecay: 0.04 });
      return {
        beforeEach: () => arena.gatherGrads(),
        run: () => opt.step(),
        dispose() {
          opt.dispose();
          arena.dispose();
        },
      };
    },
  };
}

/** teacher ← m·teacher + (1−m)·student over a whole arena (DINO's momentum teacher). */
function emaCase(set: ParamSet): BenchCase {
  return {
    kernel: 'ema',
    pass: 'update',
    shape: set.label,
    bytes: 12 * paramCount(set),
    setup(wd) {
      const student = makeArena(wd, set, true);
      const teacher = makeArena(wd, set, false);
      return {
        run: () => emaUpdate(teacher, student, 0.996),
        dispose() {
          teacher.dispose();
          student.dispose();
        },
      };
    },
  };
}
