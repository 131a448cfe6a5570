/**
 * The webdino side of bench/compare/ort/run.sh: loads an exported model's weights
 * (weights.safetensors, the released flat layout; architecture inferred, no flags, as
 * `webdino embed` does), runs forward_features on its x.npy, times it and writes the outputs next
 * to the model for the agreement check.
 *
 *   node webdino.mjs MODEL_DIR [--reps N]   → {"impl":"webdino",...} on stdout;
 *                                             MODEL_DIR/webdino_cls.npy, webdino_patch.npy
 *
 * Timing: wall clock of one forward with the outputs read back to the host (as ort.mjs times
 * session.run, whose outputs arrive on the host), median of `reps` runs after one warm-up run.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { init } from '../../../index.js';
import { median } from '../../../engine/timing.js';
import { loadBackbone } from '../../../models/backbone-node.js';
import { describeArch } from '../../../models/backbone.js';
import { parseNpy, writeNpy } from '../../../models/io/npy.js';

const [dir, ...rest] = process.argv.slice(2);
if (!dir) {
  console.error('usage: node webdino.mjs MODEL_DIR [--reps N]');
  process.exit(2);
}
const repsAt = rest.indexOf('--reps');
const reps = repsAt >= 0 ? Number(rest[repsAt + 1]) : 3;

const wd = await init();
try {
  const { model, spec } = await loadBackbone(wd, join(dir, 'weights.safetensors'));
  const xa = parseNpy(readFileSync(join(dir, 'x.npy')));
  const x = wd.keep(wd.tensor(xa.data, [...xa.shape]));
  const forward = () =>
    wd.noGrad(() =>
      wd.scope(async () => {
        const f = model.forwardFeatures(x);
        return { cls: await f.xNormClsToken.toArray(), patch: await f.xNormPatchTokens.toArray(), shapes: [f.xNormClsToken.shape, f.xNormPatchTokens.shape] };
      }),
    );
  let out = await forward(); // warm-up: pipelines, buffer pool, the pos_embed resize / RoPE tables
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t = performance.now();
    out = await forward();
    times.push(performance.now() - t);
  }
  writeFileSync(join(dir, 'webdino_cls.npy'), writeNpy({ shape: out.shapes[0], data: out.cls }));
  writeFileSync(join(dir, 'webdino_patch.npy'), writeNpy({ shape: out.shapes[1], data: out.patch }));
  const ms = median(times);
  console.log(
    JSON.stringify({
      impl: 'webdino',
      model: dir.split('/').filter(Boolean).pop(),
      arch: describeArch(spec),
      adapter: wd.device.adapterName(),
      ms,
      reps,
      times,
      imagesPerSec: xa.shape[0] / (ms / 1000),
    }),
  );
  model.dispose();
} finally {
  wd.destroy();
}
