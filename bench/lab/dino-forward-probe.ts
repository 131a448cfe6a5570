/**
 * Kernel-lab probe: dispatches and wall time of one DINOv2 / DINOv3 backbone forward (random
 * weights, `createDinoViT`, eval mode, no gradient), the figure behind the fused SiLU/SwiGLU and
 * RoPE kernels (kernels/elementwise.ts `silu`/`swiglu`, kernels/rope.ts). Per preset: one warm-up
 * forward (pipelines compiled), then `reps` timed forwards, each ending with the CLS features read
 * back (so the time covers the GPU work); prints dispatches per forward and the median and minimum
 * wall time, with the load average (the machine is shared: the minimum is the steadier figure).
 * With `grad`, also one forward + backward of sum(CLS) (eval mode, parameters requiring gradients).
 *
 * With `parts`, instead: the replaced pieces alone at ViT-S/16 shapes (batch B, 224 px: N = 1 + 4 +
 * 196 tokens, 6 heads of 64; SwiGLU hidden 1536), the compositions models/layers.ts used before
 * (kept here for the comparison) against the fused ops, timed with engine/timing.ts `timeKernel`
 * (GPU timestamps where available), alternating composed / fused for `rounds` rounds and keeping
 * each one's best median: on a shared machine the load swings more than the difference between
 * two whole forwards, while a few-ms piece timed back to back is comparable.
 *
 *   npx esbuild bench/lab/dino-forward-probe.ts --bundle --platform=node --format=esm --external:webgpu \
 *     --outfile=./.probe.mjs && node ./.probe.mjs [presets=dinov3_vits16,dinov3_vits16plus] [batch=8] \
 *     [size=224] [reps=3] [grad] ; rm ./.probe.mjs
 */
import { loadavg } from 'node:os';
import { createDinoViT, init, ops, Rng, type Tensor } from '../../index.js';
import { timeKernel } from '../../engine/timing.js';

const args = new Map(
  process.argv.slice(2).map((a) => {
    const [k, v] = a.split('=');
    return [k, v ?? 'true'] as [string, string];
  }),
);
const presets = (args.get('presets') ?? 'dinov3_vits16,dinov3_vits16plus').split(',');
const B = Number(args.get('batch') ?? 8);
const S = Number(args.get('size') ?? 224);
const reps = Number(args.get('reps') ?? 3);

const wd = await init();
if (args.has('parts')) {
  await parts();
  wd.destroy();
  process.exit(0);
}
console.log(`adapter: ${wd.device.adapterName()} (${wd.device.variants} kernels); batch ${B} at ${S} px, ${reps} timed forwards`);
for (const preset of presets) {
  const model = createDinoViT({ engine: wd, rng: new Rng(0) }, preset);
  model.eval();
  const x = wd.keep(wd.tensor(new Rng(1).fillUniform(new Float32Array(B * 3 * S * S), -2, 2), [B, 3, S, S]));
  const forward = () => wd.noGrad(() => wd.scope(() => model.forward(x).toArray()));
  await forward(); // compiles the pipelines
  const times: number[] = [];
  let dispatches = 0;
  for (let r = 0; r < reps; r++) {
    const d0 = wd.device.stats.dispatches;
    const t0 = performance.now();
    await forward();
    times.push(performance.now() - t0);
    dispatches = wd.device.stats.dispatches - d0;
  }
  times.sort((a, b) => a - b);
  let line = `${preset.padEnd(18)} forward: ${dispatches} dispatches, median ${times[times.length >> 1].toFixed(0)} ms, min ${times[0].toFixed(0)} ms`;
  if (args.has('grad')) {
    const d0 = wd.device.stats.dispatches;
    const t0 = performance.now();
    await wd.scope(async () => {
      const loss = model.forward(x).sum();
      loss.backward();
      await loss.item();
    });
    line += `; forward+backward: ${wd.device.stats.dispatches - d0} dispatches, ${(performance.now() - t0).toFixed(0)} ms`;
    for (const [, p] of model.namedParameters()) {
      p.grad?.dispose();
      p.grad = null;
    }
  }
  console.log(`${line} (load ${loadavg()[0].toFixed(1)})`);
  x.dispose();
  model.dispose();
}
wd.destroy();

/** The removed composition of RoPE on the packed qkv: x⊙cos + rotate_half(x)⊙sin on q, k, then concat with v. */
function composedRope(qkv: Tensor, sin: Tensor, cos: Tensor): Tensor {
  const x = qkv.slice(0, 0, 2);
  const d = x.shape[x.rank - 1];
  const rot = ops.concat([x.slice(-1, d / 2, d).neg(), x.slice(-1, 0, d / 2)], x.rank - 1);
  return ops.concat([x.mul(cos).add(rot.mul(sin)), qkv.slice(0, 2, 3)], 0);
}

/** The removed composition of the SwiGLU gate: x1·σ(x1) with σ = ½ + ½·tanh(x/2), times x2. */
function composedSwiglu(x1: Tensor, x2: Tensor): Tensor {
  return x1.mul(x1.mul(0.5).tanh().mul(0.5).add(0.5)).mul(x2);
}

async function parts(): Promise<void> {
  const rounds = Number(args.get('rounds') ?? 3);
  const [N, H, d, D, hidden] = [1 + 4 + 196, 6, 64, 384, 1536];
  console.log(`adapter: ${wd.device.adapterName()}; pieces at batch ${B}, ${N} tokens; best median of ${rounds} rounds`);
  const rng = new Rng(3);
  const keep = (shape: number[]) => wd.keep(wd.tensor(rng.fillUniform(new Float32Array(shape.reduce((a, b) => a * b, 1)), -2, 2), shape));
  const proj = keep([B, N, 3 * D]); // the qkv projection's output
  const sin = keep([N, d]);
  const cos = keep([N, d]);
  const x12 = keep([B, N, 2 * hidden]); // DINOv2's packed w12 output; DINOv3's w1, w2 as its halves
  const qkv = () => proj.reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4);
  const x1 = () => x12.slice(-1, 0, hidden);
  const x2 = () => x12.slice(-1, hidden, 2 * hidden);
  const cases: [string, () => unknown][] = [
    ['rope, composed (before)', () => composedRope(qkv(), sin, cos)],
    ['rope, ropePacked (after)', () => ops.ropePacked(qkv(), { sin, cos })],
    ['swiglu gate, composed (before)', () => composedSwiglu(x1(), x2())],
    ['swiglu gate, ops.swiglu (after)', () => ops.swiglu(x1(), x2())],
  ];
  const best = new Map<string, { ms: number; dispatches: number }>();
  await wd.noGrad(async () => {
    for (let r = 0; r < rounds; r++) {
      for (const [name, fn] of cases) {
        const d0 = wd.device.stats.dispatches;
        wd.scope(fn);
        const dispatches = wd.device.stats.dispatches - d0;
        const t = await timeKernel(wd, fn, { warmup: 1, reps: 'auto', budgetMs: 500 });
        const prev = best.get(name);
        if (!prev || t.ms < prev.ms) best.set(name, { ms: t.ms, dispatches });
      }
    }
  });
  for (const [name, b] of best) console.log(`${name.padEnd(34)} ${String(b.dispatches).padStart(3)} dispatches  ${b.ms.toFixed(2)} ms`);
  console.log(`(load ${loadavg()[0].toFixed(1)}; per block: one rope, one gate; a ViT has 12 blocks)`);
  for (const t of [proj, sin, cos, x12]) t.dispose();
}
