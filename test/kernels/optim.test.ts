/**
 * The optimizer family against float64: AdamW over several steps with changing hyperparameters
 * (no new pipelines), skipped parameters (no gradient / cancelled / frozen), EMA and lerp, per-tensor
 * norms through the multi-pass reduction, clipping of only the tensors over the limit, checkpoint
 * state round trip, grids folded past the per-dimension cap, and a tiny regression trained end to
 * end with a leak check.
 *
 * Tolerances: AdamW is elementwise, so p, m, v differ from float64 by a few f32 roundings per step:
 * rtol 1e-6 (atol 1e-7 for values near 0, far below the lr = 1e-2 scale of an update; m, a
 * cancelling sum of O(1) gradients, gets atol 2e-7). Norms sum up to 256 squares per f32 partial
 * over 1–3 passes: rtol 1e-5.
 */
import { describe, expect, it } from 'vitest';
import type { Engine } from '../../index.js';
import {
  AdamW,
  type AdamWOptions,
  clipGradients,
  emaUpdate,
  gradNorms,
  lerpInPlace,
  ParamArena,
  tensorNorms,
  totalNorm,
} from '../../engine/optim.js';
import {
  adamwRaw,
  adamwRef,
  type AdamWHyper,
  clipRef,
  clipSegmentsRaw,
  lerpRaw,
  lerpRef,
  normPlan,
  normsRef,
  SegmentLayout,
  segmentNormsRaw,
  totalNormRef,
} from '../../kernels/optim.js';
import { expectClose, getEngine, randn, read } from '../helpers.js';

const numelOf = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/** Parameters of odd sizes (1, 7, 1000, 65537) with a mixed decay mask under DINO's rule. */
const SPECS: { name: string; shape: number[]; decay: boolean }[] = [
  { name: 'scale', shape: [1], decay: false }, // 1-D
  { name: 'fc.bias', shape: [7], decay: false }, // bias
  { name: 'fc.weight', shape: [8, 125], decay: true },
  { name: 'norm.weight', shape: [13], decay: false }, // 1-D
  { name: 'big.weight', shape: [65537, 1], decay: true },
];

/** f64 mirror of one parameter's optimizer state. */
interface RefParam {
  p: Float64Array;
  m: Float64Array;
  v: Float64Array;
  t: number;
  decay: boolean;
}

function makeArena(wd: Engine, specs: typeof SPECS, seed: number, opts: ConstructorParameters<typeof ParamArena>[1] = {}) {
  const arena = new ParamArena(wd, opts);
  const refs: RefParam[] = specs.map((s, k) => {
    const init = randn(numelOf(s.shape), seed + k);
    arena.add(s.name, s.shape, init);
    return { p: Float64Array.from(init), m: new Float64Array(init.length), v: new Float64Array(init.length), t: 0, decay: s.decay };
  });
  return { arena, refs };
}

/** Gives every parameter (or those in `only`) a fresh random gradient; returns the values. */
function setGrads(wd: Engine, arena: ParamArena, seed: number, only?: (name: string) => boolean): (Float32Array | null)[] {
  return arena.entries().map(([name, p], k) => {
    if (only && !only(name)) return null;
    const g = randn(p.size, seed * 1000 + k);
    p.grad = wd.keep(wd.tensor(g, p.shape));
    return g;
  });
}

async function expectArenaMatches(arena: ParamArena, refs: RefParam[], what: string): Promise<void> {
  for (const [k, [name, p]] of arena.entries().entries()) {
    expectClose(await p.toArray(), refs[k].p, 1e-6, 1e-7, `${what}: ${name}`);
  }
}

describe('ParamArena', () => {
  it('gives views into one buffer that work as autograd leaves; freezes its layout on first use', async () => {
    const wd = await getEngine();
    const before = wd.memory().liveBytes;
    const { arena } = makeArena(wd, SPECS, 1);
    const ps = arena.params;
    expect(new Set(ps.map((p) => p.buffer)).size).toBe(1);
    expect(ps.map((p) => p.offset % 64)).toEqual(ps.map(() => 0));
    expect(ps.every((p) => p.requiresGrad)).toBe(true);
    expect(arena.numel).toBe(SPECS.reduce((a, s) => a + numelOf(s.shape), 0));
    expectClose(await arena.get('fc.weight').toArray(), randn(1000, 3), 0, 0, 'initial values');
    expect(() => arena.add('scale', [2])).toThrow(/exists/);
    await wd.scope(async () => {
      const w = arena.get('fc.weight');
      w.mul(2).sum().backward();
      expectClose(await w.grad!.toArray(), new Float32Array(1000).fill(2), 0, 0, 'grad of a view');
    });
    arena.gatherGrads();
    const g = arena.gradOf('fc.weight');
    expectClose(await g.toArray(), new Float32Array(1000).fill(2), 0, 0, 'gathered grad');
    g.dispose();
    expect(() => arena.add('late', [3])).toThrow(/frozen/);
    arena.dispose();
    expect(wd.memory().liveBytes).toBe(before);
  });

  it('opens new chunks when full and still updates every parameter', async () => {
    const wd = await getEngine();
    const { arena, refs } = makeArena(wd, SPECS, 11, { capacity: 64 });
    expect(arena.numChunks).toBeGreaterThan(2);
    const opt = new AdamW(arena, { lr: 1e-2, weightDecay: 0.1 });
    const h: AdamWHyper = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 };
    for (let s = 1; s <= 2; s++) {
      const gs = setGrads(wd, arena, s);
      opt.step();
      opt.zeroGrad();
      refs.forEach((r, k) => adamwRef(r.p, gs[k]!, r.m, r.v, ++r.t, h, r.decay));
    }
    await expectArenaMatches(arena, refs, 'chunked arena');
    opt.dispose();
    arena.dispose();
  });
});

describe('AdamW', () => {
  it('matches float64 over steps with changing hyperparameters, without new pipelines', async () => {
    const wd = await getEngine();
    const before = wd.memory().liveBytes;
    const { arena, refs } = makeArena(wd, SPECS, 21);
    const opt = new AdamW(arena, { lr: 1e-2, weightDecay: 0.04 });
    const schedule: AdamWHyper[] = [
      { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.04 },
      { lr: 5e-3, beta1: 0.8, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 },
      { lr: 2e-2, beta1: 0.9, beta2: 0.99, eps: 1e-6, weightDecay: 0.4 },
      { lr: 1e-3, beta1: 0.95, beta2: 0.98, eps: 1e-8, weightDecay: 0 },
    ];
    let pipelines = -1;
    for (const [s, h] of schedule.entries()) {
      Object.assign(opt, h);
      const gs = setGrads(wd, arena, 100 + s);
      opt.step();
      opt.zeroGrad();
      refs.forEach((r, k) => adamwRef(r.p, gs[k]!, r.m, r.v, ++r.t, h, r.decay));
      await expectArenaMatches(arena, refs, `step ${s + 1}`);
      if (s === 0) pipelines = wd.device.stats.pipelines;
      else expect(wd.device.stats.pipelines, 'a hyperparameter change compiled a pipeline').toBe(pipelines);
    }
    const st = opt.state();
    expect(st.step).toBe(4);
    // m is a cancelling sum of O(1) gradients: its absolute error is a few f32 ulps of |g| ~ 1.
    expectClose(await st.m.toArray(), concat(refs.map((r) => r.m)), 1e-6, 2e-7, 'm');
    expectClose(await st.v.toArray(), concat(refs.map((r) => r.v)), 1e-6, 1e-10, 'v');
    st.m.dispose();
    st.v.dispose();
    opt.dispose();
    arena.dispose();
    expect(wd.memory().liveBytes).toBe(before);
  });

  it('skips parameters without a gradient, cancelled or frozen, as PyTorch skips grad None', async () => {
    const wd = await getEngine();
    const arena = new ParamArena(wd);
    const specs = [
      { name: 'blocks.0.weight', shape: [3, 5] },
      { name: 'head.last_layer.weight_v', shape: [4, 4] },
      { name: 'head.last_layer.weight_g', shape: [1, 4], frozen: true },
      { name: 'unused.weight', shape: [2, 7] },
    ];
    const refs: RefParam[] = specs.map((s, k) => {
      const init = randn(numelOf(s.shape), 50 + k);
      arena.add(s.name, s.shape, init, { requiresGrad: !s.frozen });
      return { p: Float64Array.from(init), m: new Float64Array(init.length), v: new Float64Array(init.length), t: 0, decay: true };
    });
    const h: AdamWHyper = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.3 };
    const opt = new AdamW(arena, h);
    // Steps 1-2: the last layer is cancelled (freeze_last_layer); the frozen and unused tensors never get grads.
    for (let s = 1; s <= 4; s++) {
      const gs = setGrads(wd, arena, 200 + s, (n) => !n.includes('weight_g') && !n.startsWith('unused'));
      arena.gatherGrads();
      if (s <= 2) expect(arena.cancelGradients((n) => n.includes('last_layer'))).toBe(2);
      opt.step();
      opt.zeroGrad();
      refs.forEach((r, k) => {
        const skipped = gs[k] === null || (s <= 2 && specs[k].name.includes('last_layer'));
        if (!skipped) adamwRef(r.p, gs[k]!, r.m, r.v, ++r.t, h, r.decay);
      });
      await expectArenaMatches(arena, refs, `step ${s}`);
    }
    const st = opt.state();
    expect(st.paramSteps).toEqual([4, 2, 0, 0]);
    st.m.dispose();
    st.v.dispose();
    expect(await arena.get('head.last_layer.weight_g').toArray()).toEqual(Float32Array.from(randn(4, 52)));
    opt.dispose();
    arena.dispose();
  });

  it('parameter groups in one arena: per-parameter lr and weight-decay multipliers match float64, one dispatch per chunk', async () => {
    const wd = await getEngine();
    // DINOv2-like groups: layer-decayed blocks, a patch-embed factor, no decay on biases and
    // LayerScale, a last layer whose lr multiplier is 0 for the first steps (frozen: m, v still move).
    const groups: Record<string, { lr: number; wd: number }> = {
      'patch_embed.proj.weight': { lr: 0.2 * 0.9 ** 3, wd: 1 },
      'blocks.0.ls1.gamma': { lr: 0.9 ** 2, wd: 0 },
      'blocks.1.attn.qkv.weight': { lr: 0.9, wd: 1 },
      'blocks.1.attn.qkv.bias': { lr: 0.9, wd: 0 },
      'head.last_layer.weight_g': { lr: 0, wd: 1 },
      'norm.weight': { lr: 1, wd: 0.5 },
    };
    const shapes: Record<string, number[]> = {
      'patch_embed.proj.weight': [5, 3, 2, 2],
      'blocks.0.ls1.gamma': [5],
      'blocks.1.attn.qkv.weight': [15, 5],
      'blocks.1.attn.qkv.bias': [15],
      'head.last_layer.weight_g': [33, 1],
      'norm.weight': [5],
    };
    const { arena, refs } = makeArena(
      wd,
      Object.keys(groups).map((name) => ({ name, shape: shapes[name], decay: true })),
      61,
      { capacity: 256 }, // several chunks: the multipliers follow each parameter into its chunk
    );
    expect(arena.numChunks).toBeGreaterThan(1);
    const opt = new AdamW(arena, { lr: 0, multipliers: (n) => groups[n] });
    expect(opt.multipliersOf('blocks.0.ls1.gamma')).toEqual({ lr: 0.81, wd: 0 });
    const names = arena.names;
    const dispatches: number[] = [];
    for (let s = 0; s < 4; s++) {
      if (s === 2) opt.setMultipliers('head.last_layer.weight_g', { lr: 1 }); // unfrozen
      const h: AdamWHyper = { lr: 0.05 / (s + 1), beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.04 + 0.1 * s };
      Object.assign(opt, h);
      const gs = setGrads(wd, arena, 300 + s);
      arena.gatherGrads();
      const before = wd.device.stats.dispatches;
      opt.step();
      dispatches.push(wd.device.stats.dispatches - before);
      opt.zeroGrad();
      refs.forEach((r, k) => {
        const m = opt.multipliersOf(names[k]);
        adamwRef(r.p, gs[k]!, r.m, r.v, ++r.t, h, m.wd, m.lr);
      });
      await expectArenaMatches(arena, refs, `step ${s + 1}`);
      if (s < 2) expect(await arena.get('head.last_layer.weight_g').toArray(), 'lr multiplier 0 keeps the weights').toEqual(Float32Array.from(randn(33, 65)));
    }
    expect(dispatches.every((d) => d === arena.numChunks), `AdamW dispatches per step ${dispatches} for ${arena.numChunks} chunks`).toBe(true);
    const st = opt.state();
    expect(st.paramSteps, 'every parameter stepped, the frozen one too').toEqual(names.map(() => 4));
    // m of the frozen-then-trained last layer moved during the frozen steps too.
    expectClose(await st.m.toArray(), concat(refs.map((r) => r.m)), 1e-6, 2e-7, 'm');
    st.m.dispose();
    st.v.dispose();
    expect(() => new AdamW(arena, { lr: 0, wdMask: () => true, multipliers: () => ({ lr: 1, wd: 1 }) })).toThrow(/either/);
    expect(() => opt.setMultipliers('norm.weight', { lr: -1 })).toThrow(/≥ 0/);
    opt.dispose();
    arena.dispose();
  });

  it('state export / import reproduces the next step exactly', async () => {
    const wd = await getEngine();
    const opts: AdamWOptions = { lr: 3e-3, weightDecay: 0.05, beta2: 0.99 };
    const a = makeArena(wd, SPECS, 31).arena;
    const optA = new AdamW(a, opts);
    for (let s = 0; s < 3; s++) {
      setGrads(wd, a, 300 + s);
      a.gatherGrads();
      if (s === 0) a.cancelGradients(['fc.bias']); // per-parameter step counts differ
      optA.step();
      optA.zeroGrad();
    }
    const st = optA.state();
    const b = makeArena(wd, SPECS, 99).arena;
    b.copyFrom(a);
    const optB = new AdamW(b, opts);
    optB.loadState(st);
    st.m.dispose();
    st.v.dispose();
    for (const arena of [a, b]) setGrads(wd, arena, 400);
    optA.step();
    optB.step();
    for (const name of a.names) expect(await b.get(name).toArray(), name).toEqual(await a.get(name).toArray());
    const [sa, sb] = [optA.state(), optB.state()];
    expect(await sb.m.toArray()).toEqual(await sa.m.toArray());
    expect(await sb.v.toArray()).toEqual(await sa.v.toArray());
    expect(sb.paramSteps).toEqual(sa.paramSteps);
    for (const t of [sa.m, sa.v, sb.m, sb.v]) t.dispose();
    for (const o of [optA, optB]) {
      o.zeroGrad();
      o.dispose();
    }
    a.dispose();
    b.dispose();
  });
});

describe('EMA and lerp', () => {
  it('teacher ← m·teacher + (1−m)·student over every parameter', async () => {
    const wd = await getEngine();
    const student = makeArena(wd, SPECS, 61, { capacity: 2048 });
    const teacher = makeArena(wd, SPECS, 71, { requiresGrad: false, capacity: 2048 });
    expect(teacher.arena.params.every((p) => !p.requiresGrad)).toBe(true);
    let want = teacher.refs.map((r) => r.p);
    for (const m of [0.996, 0.5]) {
      emaUpdate(teacher.arena, student.arena, m);
      want = want.map((t, k) => lerpRef(t, student.refs[k].p, m));
    }
    for (const [k, name] of teacher.arena.names.entries()) {
      expectClose(await teacher.arena.get(name).toArray(), want[k], 1e-6, 1e-7, `teacher ${name}`);
      expectClose(await student.arena.get(name).toArray(), student.refs[k].p, 0, 0, `student ${name} untouched`);
    }
    const other = makeArena(wd, SPECS.slice(1), 0).arena;
    expect(() => emaUpdate(teacher.arena, other, 0.9)).toThrow(/layouts/);
    // A teacher initialised from the student.
    teacher.arena.copyFrom(student.arena);
    expect(await teacher.arena.get('big.weight').toArray()).toEqual(await student.arena.get('big.weight').toArray());
    for (const a of [student.arena, teacher.arena, other]) a.dispose();
  });

  it('lerpInPlace on a tensor pair: offset destination, strided source (DINO center update)', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      const rows = randn(3 * 67, 5);
      const big = wd.tensor(rows, [3, 67]);
      const center = big.slice(0, 1, 2); // offset 67, dense
      const srcData = randn(67, 6);
      const src = wd.tensor(srcData, [67, 1]).transpose(); // [1, 67], strided
      lerpInPlace(center, src, 0.9);
      const want = Float64Array.from(rows);
      want.set(lerpRef(rows.subarray(67, 134), srcData, 0.9), 67);
      expectClose(await big.toArray(), want, 1e-6, 1e-7, 'center');
    });
  });
});

describe('gradient norms and clipping', () => {
  const normSpecs = [...SPECS, { name: 'empty.weight', shape: [0, 3], decay: true }, { name: 'nograd.weight', shape: [5, 5], decay: true }];

  it('per-tensor norms and the global norm match float64 (1, 2 and 3 reduction passes)', async () => {
    const wd = await getEngine();
    const { arena } = makeArena(wd, normSpecs, 81);
    const gs = setGrads(wd, arena, 7, (n) => n !== 'nograd.weight');
    const data = gs.map((g, k) => g ?? new Float32Array(arena.params[k].size));
    await wd.scope(async () => {
      const norms = gradNorms(arena);
      expect(norms.shape).toEqual([normSpecs.length]);
      const want = normsRef(data);
      expectClose(await norms.toArray(), want, 1e-5, 1e-7, 'arena norms');
      expectClose(await totalNorm(norms).toArray(), [totalNormRef(data)], 1e-5, 0, 'total norm');
      // The list path: parameters outside an arena, one with a transposed (strided) gradient.
      const ps = arena.params;
      const t = wd.tensor(randn(6 * 11, 8), [6, 11]);
      const q = wd.zeros([11, 6], { requiresGrad: true });
      q.grad = t.transpose();
      const listNorms = gradNorms([...ps, q]);
      expectClose(await listNorms.toArray(), [...want, normsRef([randn(66, 8)])[0]], 1e-5, 1e-7, 'list norms');
      expectClose(await tensorNorms([null, t]).toArray(), [0, normsRef([randn(66, 8)])[0]], 1e-5, 0, 'tensorNorms');
    });
    arena.zeroGrad();
    arena.dispose();
  });

  it('clips only the tensors over the max, per tensor (DINO clip_gradients)', async () => {
    const wd = await getEngine();
    const { arena } = makeArena(wd, normSpecs, 91);
    // Scale the gradients so some norms are far below 3, some just below, some above.
    const scales = [0.5, 0.01, 10, 0.05, 0.011, 1, 1];
    const gs = arena.entries().map(([name, p], k) => {
      if (name === 'nograd.weight') return null;
      const g = randn(p.size, 500 + k, scales[k]);
      p.grad = wd.keep(wd.tensor(g, p.shape));
      return g;
    });
    // A parameter without a gradient has a zero segment in the gradient arena.
    const data = gs.map((g, k) => g ?? new Float32Array(arena.params[k].size));
    const ref = clipRef(data, 3);
    const over = Array.from(ref.norms, (n) => n + 1e-6 > 3);
    expect(over.some((o) => o) && over.some((o) => !o)).toBe(true);
    await wd.scope(async () => {
      const norms = clipGradients(arena, 3);
      expectClose(await norms.toArray(), ref.norms, 1e-5, 1e-7, 'norms before clipping');
      for (const [k, name] of arena.names.entries()) {
        const got = await arena.gradOf(name).toArray();
        if (over[k]) {
          expectClose(got, ref.clipped[k], 1e-5, 1e-7, `clipped ${name}`);
          expect(normsRef([got])[0]).toBeCloseTo(3, 4);
        } else {
          expect(got, `${name} is under the max: untouched`).toEqual(Float32Array.from(data[k]));
        }
      }
      // The list path clips each parameter's .grad in place.
      const listNorms = clipGradients(arena.params, 3);
      expectClose(await listNorms.toArray(), ref.norms, 1e-5, 1e-7, 'list norms');
      for (const [k, p] of arena.params.entries()) {
        if (!p.grad) continue;
        const got = await p.grad.toArray();
        if (over[k]) expectClose(got, ref.clipped[k], 1e-5, 1e-7, `list clipped ${k}`);
        else expect(got).toEqual(Float32Array.from(data[k]));
      }
    });
    arena.zeroGrad();
    arena.dispose();
  });
});

describe('kernels with grids folded past the per-dimension cap', () => {
  it('adamw, lerp, norms and clip over x·y grids with idle slots', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      // AdamW: 7000 elements = 1750 vec4 = 438 invocations of 4 vec4 = 2 workgroups of 256; cap 1
      // → a 1×2 grid. The second segment starts at 4100, inside the invocation of vec4 1024–1027
      // (elements 4096–4111), which then looks up each vec4's segment on its own.
      const n = 7000;
      const opts = { maxGroupsPerDim: 1 };
      const p0 = randn(n, 1);
      const g0 = randn(n, 2);
      const p = wd.tensor(p0);
      const g = wd.tensor(g0);
      const m = wd.zeros([n]);
      const v = wd.zeros([n]);
      const layout = new SegmentLayout(wd, [0, 4100], [4000, n - 4100]);
      const h: AdamWHyper = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 };
      const hyper = wd.tensor([1, 1, 1 - 0.9, 1 - 0.999, 1, 0, 1 - 0.9, 1 - 0.999]);
      adamwRaw(p, g, m, v, layout, hyper, h, opts);
      // Elements 4000–4099 are padding of segment 0 (decayed AdamW of p with g: the reference covers them too).
      const want = [Float64Array.from(p0.subarray(0, 4100)), Float64Array.from(p0.subarray(4100))];
      want.forEach((w, s) => adamwRef(w, g0.subarray(s * 4100, s * 4100 + w.length), new Float64Array(w.length), new Float64Array(w.length), 1, h, s === 0));
      expectClose(await p.toArray(), concat(want), 1e-6, 1e-7, 'adamw folded');

      const d = wd.tensor(p0);
      lerpRaw(wd, d.buffer, 0, g.buffer, 0, n, 0.75, { maxGroupsPerDim: 2 }); // vec4: 7 groups on a 2×4 grid
      expectClose(await d.toArray(), lerpRef(p0, g0, 0.75), 1e-6, 1e-7, 'lerp folded');
      const d1 = wd.tensor(p0);
      lerpRaw(wd, d1.buffer, 1, g.buffer, 2, n - 3, 0.75, { maxGroupsPerDim: 2 }); // scalar (odd offsets): 28 groups on 2×14
      const want1 = Float64Array.from(p0);
      want1.set(lerpRef(p0.subarray(1, n - 2), g0.subarray(2, n - 1), 0.75), 1);
      expectClose(await d1.toArray(), want1, 1e-6, 1e-7, 'lerp folded, scalar');

      // Norm blocks: segment sizes around NORM_BLOCK multiples; many blocks on a folded grid.
      const sizes = [1, 255, 256, 257, 65537];
      const starts: number[] = [];
      let end = 0;
      for (const s of sizes) starts.push(end), (end = Math.ceil((end + s) / 64) * 64);
      expect(normPlan(starts, sizes).length).toBe(3);
      const xs = randn(end, 3);
      const x = wd.tensor(xs);
      const lay = new SegmentLayout(wd, starts, sizes);
      const out = wd.empty([2 + sizes.length]);
      segmentNormsRaw(x, lay, out, 2, { maxGroupsPerDim: 1 });
      const segs = sizes.map((s, k) => xs.subarray(starts[k], starts[k] + s));
      expectClose((await out.toArray()).subarray(2), normsRef(segs), 1e-5, 0, 'norms folded');
      clipSegmentsRaw(x, lay, out, 2, 10, { maxGroupsPerDim: 5 });
      const got = await read(x);
      clipRef(segs, 10).clipped.forEach((c, k) => expectClose(got.subarray(starts[k], starts[k] + sizes[k]), c, 1e-5, 1e-7, `clip folded ${k}`));
      layout.dispose();
      lay.dispose();
    });
  });
});

describe('end to end', () => {
  it('a linear model y = x·W trained with AdamW: the loss falls; 100 steps leak nothing', async () => {
    const wd = await getEngine();
    const [B, I, O] = [16, 5, 3];
    const xs = randn(B * I, 1);
    const wTrue = randn(I * O, 2);
    const ys = new Float32Array(B * O);
    for (let b = 0; b < B; b++) for (let o = 0; o < O; o++) for (let i = 0; i < I; i++) ys[b * O + o] += xs[b * I + i] * wTrue[i * O + o];
    const x = wd.keep(wd.tensor(xs, [B, I, 1]));
    const y = wd.keep(wd.tensor(ys, [B, O]));
    const arena = new ParamArena(wd);
    arena.add('pad.weight', [3, 3], 1); // so W sits at a non-zero offset in the arena
    const W = arena.add('linear.weight', [I, O], randn(I * O, 3, 0.1));
    const opt = new AdamW(arena, { lr: 0.05, weightDecay: 0 });
    // x·W without matmul: (x[B, I, 1] * W[I, O]) summed over I.
    const step = (readLoss: boolean) =>
      wd.scope(async () => {
        const loss = x.mul(W).sum(1).sub(y).pow(2).mean();
        loss.backward();
        opt.step();
        opt.zeroGrad();
        return readLoss ? loss.item() : 0;
      });
    const first = await step(true); // also allocates the gradient arena
    await wd.sync();
    const live = wd.memory().liveBytes;
    let last = 0;
    for (let i = 0; i < 100; i++) last = await step(i === 99);
    expect(wd.memory().liveBytes).toBe(live);
    expect(last).toBeLessThan(first / 100);
    expect(await arena.get('pad.weight').toArray()).toEqual(new Float32Array(9).fill(1)); // no grad: untouched
    opt.dispose();
    arena.dispose();
    x.dispose();
    y.dispose();
  });
});

function concat(parts: readonly ArrayLike<number>[]): Float64Array {
  const out = new Float64Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) out.set(Array.from(p), o), (o += p.length);
  return out;
}
