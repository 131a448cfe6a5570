/**
 * Lab probe: attention forward and forward + backward at DINO's short sequences (the CPU default
 * config: N = 17 for 32 px globals, N = 5 for 16 px locals, d = 32) and at ViT-S (N = 197, d = 64),
 * with the packed launch forced on and off (kernels/attention.ts AttentionConsts.packed).
 * Times are CPU-normalised (process CPU ms / cores per run; lavapipe runs in this process), the
 * median of `reps` runs, in interleaved rounds.
 *
 *   npx esbuild bench/lab/attention-probe.ts --bundle --platform=node --format=esm \
 *     --external:webgpu --outfile=dist/attention-probe.mjs && node dist/attention-probe.mjs rounds=3
 */
import { availableParallelism } from 'node:os';
import { init } from '../../index.js';
import * as ops from '../../engine/ops/index.js';
import { median } from '../../engine/timing.js';

const args = Object.fromEntries(process.argv.slice(2).map((a) => (a.includes('=') ? a.split('=') : [a, 'true'])));
const rounds = Number(args.rounds ?? 3);
const reps = Number(args.reps ?? 5);
const cores = availableParallelism();
const wd = await init();
const shapes = [
  { B: 64, H: 2, N: 17, d: 32 },
  { B: 192, H: 2, N: 5, d: 32 },
  { B: 8, H: 6, N: 197, d: 64 },
];
const res = new Map<string, number[]>();
for (let r = 0; r < rounds; r++) {
  for (const s of shapes) {
    for (const packed of [false, true]) {
      for (const pass of ['fwd', 'fwd+bwd', 'vit fwd+bwd']) {
        const ms = await wd.scope(async () => {
          const qkv = [1, 2, 3].map((seed) => wd.randn([s.B, s.H, s.N, s.d], { seed, requiresGrad: pass !== 'fwd' }));
          // ViT's layout: one [B, N, 3·H·d] projection viewed as (3, B, H, N, d), one packed gradient.
          const proj = wd.randn([s.B, s.N, 3 * s.H * s.d], { seed: 5, requiresGrad: true });
          const g = wd.randn([s.B, s.H, s.N, s.d], { seed: 4 });
          const run = () =>
            wd.scope(() => {
              if (pass === 'vit fwd+bwd') {
                const packedQkv = proj.reshape(s.B, s.N, 3, s.H, s.d).permute(2, 0, 3, 1, 4);
                ops.attentionPacked(packedQkv, { packed }).out.backward(g);
                proj.zeroGrad();
                return;
              }
              const { out } = ops.attention(qkv[0], qkv[1], qkv[2], { packed });
              if (pass !== 'fwd') {
                out.backward(g);
                for (const t of qkv) t.zeroGrad();
              }
            });
          run();
          await wd.sync();
          const t: number[] = [];
          for (let i = 0; i < reps; i++) {
            const c0 = process.cpuUsage();
            run();
            await wd.sync();
            const c1 = process.cpuUsage(c0);
            t.push((c1.user + c1.system) / 1000 / cores);
          }
          return median(t);
        });
        const key = `B${s.B} H${s.H} N${s.N} d${s.d} ${pass.padEnd(11)} ${packed ? 'packed' : 'rows  '}`;
        res.set(key, [...(res.get(key) ?? []), ms]);
      }
    }
  }
}
for (const [k, v] of res) console.log(`${k}  ${median(v).toFixed(2).padStart(8)} ms  [${v.map((x) => x.toFixed(1)).join(' ')}]`);
wd.destroy();
