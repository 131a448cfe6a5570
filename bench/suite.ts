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
 *   every output written once), f32 = 4 bytes:
 *     softmax rows×D: read x, write y → 8·rows·D;  layernorm rows×D: 8·rows·D + 8·D (γ, β);
 *     AdamW n params: read p, g, m, v, write p, m, v → 28·n;  EMA: read teacher, student,
 *     write teacher → 12·n;  add n: read a, b, write c → 12·n.
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

/** Kernel families, the names `--only` accepts, in the order the suite runs them. */
export const BENCH_KERNELS = ['matmul', 'attention', 'softmax', 'layernorm', 'adamw', 'ema', 'add'] as const;
export type BenchKernel = (typeof BENCH_KERNELS)[number];

/** What a run computes: a forward kernel, forward then backward, or an in-place update. */
export type BenchPass = 'fwd' | 'fwd+bwd' | 'update';

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

function softmaxCase(shape: number[]): BenchCase {
  const n = prod(shape);
  return {
    kernel: 'softmax',
    pass: 'fwd',
    shape: shape.join('x'),
    bytes: 8 * n,
    setup(wd) {
      const x = wd.randn(shape, { seed: 5 });
      return { run: () => ops.softmax(x, -1) };
    },
  };
}

function layerNormCase([rows, D]: [number, number]): BenchCase {
  return {
    kernel: 'layernorm',
    pass: 'fwd',
    shape: `${rows}x${D}`,
    bytes: 8 * rows * D + 8 * D,
    setup(wd) {
      const x = wd.randn([rows, D], { seed: 6 });
      const w = wd.randn([D], { seed: 7 });
      const b = wd.randn([D], { seed: 8 });
      return { run: () => ops.layerNorm(x, w, b) };
    },
  };
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
    ...s.softmax.map(softmaxCase),
    layerNormCase(s.layernorm),
    ...s.params.map(adamwCase),
    ...s.params.map(emaCase),
    addCase(s.add),
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
